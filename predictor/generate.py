"""Text generation (UNIMO-text): export, the cached step engine, the runner.

A job is a batch of framed sources, left-padded (the last position is every
row's start token, as generate() needs): input_ids and token_type_ids
[B, L] and lengths [B]. The runner returns each row's generated ids in the
model's vocabulary (pruned or not), eos excluded.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from predictor.checkpoint import Checkpoint
from predictor.decoding import DecodeSettings, RunnerUpLog, RunnerUps, SpecialIds, decode
from predictor.engine import EngineOptions
from predictor.engine_paddle import PaddleEngine
from predictor.pruning import PrunedVocab, prune_rows
from predictor.unimo_programs import PROMPT_PROGRAM, STEP_PROGRAM, export_unimo_programs

WORD_EMBEDDINGS = "unimo.embeddings.word_embeddings.weight"
# save_pretrained also stores the tied LM-head weight under its own name.
VOCABULARY_ROWS = (WORD_EMBEDDINGS, "lm_head.decoder_weight", "lm_head.decoder_bias")
# Masked attention logits; exp() of it underflows to exactly 0 in fp32, like
# generate()'s -1e4 / -1e9, so padding never changes a result.
MASKED = -1e9


@dataclass(frozen=True)
class GenerationSettings:
    decode: DecodeSettings
    special: SpecialIds  # in the model's (pruned) vocabulary
    record_margins: bool = False  # greedy only: keep each step's runner-up and logit gap


def special_ids(config: dict, vocab: PrunedVocab) -> SpecialIds:
    """UNIMO's config ids mapped into the (pruned) model vocabulary."""
    return SpecialIds(**{name: int(vocab.old_to_new[int(config[f"{name}_token_id"])])
                         for name in ("unk", "pad", "bos", "eos")})


def build_generator(checkpoint: Checkpoint, vocab: PrunedVocab):
    """The dygraph UNIMOLMHeadModel with the pruned table; the LM head is tied
    to the word embeddings, so it scores only the kept ids."""
    from paddlenlp.transformers import UNIMOConfig, UNIMOLMHeadModel

    config = UNIMOConfig.from_dict(dict(checkpoint.config))
    config.vocab_size = vocab.size
    for name in ("pad", "unk", "bos", "eos", "mask"):
        key = f"{name}_token_id"
        if getattr(config, key, None) is not None:
            setattr(config, key, int(vocab.old_to_new[int(getattr(config, key))]))
    weights = checkpoint.load_weights()
    weights = prune_rows(weights, [name for name in VOCABULARY_ROWS if name in weights], vocab)
    return checkpoint.build_model(UNIMOLMHeadModel, config, weights)


def export_generator(checkpoint: Checkpoint, vocab: PrunedVocab, model_dir: str) -> None:
    export_unimo_programs(build_generator(checkpoint, vocab), model_dir)


def left_padded(rows, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, types) [len(rows), longest], each row right-aligned."""
    width = int(lengths.max())
    ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    types = np.zeros((len(lengths), width), dtype=np.int64)
    for i, (row_ids, row_types) in enumerate(rows):
        ids[i, width - len(row_ids):] = row_ids
        types[i, width - len(row_types):] = row_types
    return ids, types


def prompt_inputs(job: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """The prompt program's inputs and the steps' bias over the prompt cache.

    As gen_encode lays them out: positions count 0.. over the source and
    restart at 0 on the start token; every position sees the whole source,
    only the start token sees itself, nothing sees padding."""
    ids, lengths = job["input_ids"], job["lengths"]
    rows, width = ids.shape
    positions = np.zeros_like(ids)
    mask = np.full((rows, 1, width, width), MASKED, dtype=np.float32)
    for i, length in enumerate(lengths.tolist()):
        first = width - length
        positions[i, first:width - 1] = np.arange(length - 1)
        mask[i, 0, first:, first:width - 1] = 0.0
        mask[i, 0, width - 1, width - 1] = 0.0
    return [ids, job["token_type_ids"], positions, mask], mask[:, 0, -1, :-1].copy()


class CachedDecoder:
    """The step engine over the prompt and step programs.

    Caches stay paddle Tensors between steps (predictor.run on tensors feeds
    them straight back); the prompt part is re-indexed only when sources leave
    the batch, the generated part is gathered inside the step program."""

    def __init__(self, model_dir: str, options: EngineOptions):
        import paddle

        self._paddle = paddle
        self.prompt_engine = PaddleEngine(os.path.join(model_dir, PROMPT_PROGRAM), options)
        self.step_engine = PaddleEngine(os.path.join(model_dir, STEP_PROGRAM), options)
        self.engine_s = 0.0  # running total inside the predictors, for the loop-overhead figure

    def _timed_run(self, engine: PaddleEngine, inputs: list) -> list:
        started = time.perf_counter()
        outputs = engine.run_tensors(inputs)
        self.engine_s += time.perf_counter() - started
        return outputs

    def start(self, job: dict) -> np.ndarray:
        paddle = self._paddle
        inputs, self.prompt_bias = prompt_inputs(job)
        outputs = self._timed_run(self.prompt_engine, [paddle.to_tensor(x) for x in inputs])
        layers2 = (len(outputs) - 1) // 2
        self.prompt_cache, self.generated_cache = outputs[1:1 + layers2], outputs[1 + layers2:]
        self.cache_source = np.arange(len(job["lengths"]))  # source of each prompt-cache row
        self.row_source = self.cache_source.copy()          # source of each live row
        self.steps = 0
        return outputs[0].numpy()

    def advance(self, tokens: np.ndarray, parent: np.ndarray) -> np.ndarray:
        paddle = self._paddle
        self.row_source = self.row_source[parent]
        # Rows are source-major; keep the prompt cache to the sources still live.
        _, first = np.unique(self.row_source, return_index=True)
        live_sources = self.row_source[np.sort(first)]
        if len(live_sources) != len(self.cache_source) or (live_sources != self.cache_source).any():
            keep = np.searchsorted(self.cache_source, live_sources)
            index = paddle.to_tensor(keep)
            self.prompt_cache = [paddle.index_select(c, index, axis=0) for c in self.prompt_cache]
            self.prompt_bias = self.prompt_bias[keep]
            self.cache_source = live_sources
        self.steps += 1
        rows = len(parent)
        # generate() repeats the start token's type (1) and counts positions on
        # from its 0.
        feeds = [tokens.reshape(rows, 1), np.ones((rows, 1), np.int64), np.full((rows, 1), self.steps, np.int64),
                 self.prompt_bias, parent.astype(np.int64)]
        outputs = self._timed_run(self.step_engine, [paddle.to_tensor(x) for x in feeds]
                                  + self.prompt_cache + self.generated_cache)
        self.generated_cache = outputs[1:]
        return outputs[0].numpy()


@dataclass
class DecodedBatch:
    """One job's generated ids per row, and where its decoding time went."""
    rows: list[np.ndarray]
    steps: int
    engine_s: float   # prompt pass and steps inside the predictors
    total_s: float    # the whole loop: engine + Python/numpy between steps
    runner_ups: list[RunnerUps] | None = None  # per row, when the settings record margins


class GenerateRunner:
    def __init__(self, model_dir: str, options: EngineOptions, settings: GenerationSettings):
        self.decoder = CachedDecoder(model_dir, options)
        self.settings = settings

    def run(self, job: dict) -> DecodedBatch:
        started, engine_before = time.perf_counter(), self.decoder.engine_s
        runner_ups = RunnerUpLog(len(job["lengths"])) if self.settings.record_margins else None
        rows = decode(self.decoder, job, len(job["lengths"]), self.settings.decode, self.settings.special, runner_ups)
        return DecodedBatch(rows, self.decoder.steps, self.decoder.engine_s - engine_before,
                            time.perf_counter() - started, runner_ups.per_row() if runner_ups else None)


def decoding_report(batches: list[DecodedBatch]) -> dict:
    """Per-step loop overhead next to model time, summed over all batches
    (worker seconds: with several workers they overlap in wall time)."""
    steps = sum(b.steps for b in batches)
    engine_s, total_s = sum(b.engine_s for b in batches), sum(b.total_s for b in batches)
    overhead_s = max(0.0, total_s - engine_s)
    return {"decode_steps": steps, "engine_s": round(engine_s, 3), "loop_overhead_s": round(overhead_s, 3),
            "loop_overhead_ms_per_step": round(1000 * overhead_s / max(steps, 1), 3),
            "loop_overhead_share": round(overhead_s / total_s, 4) if total_s else 0.0}
