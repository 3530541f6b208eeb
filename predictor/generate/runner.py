"""Generation's runner (UNIMO-text): one job of framed sources -> each row's
generated ids in the model's vocabulary (pruned or not), eos excluded, and
where the decoding time went.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from predictor.engines.options import EngineOptions, in_halves_when_out_of_memory
from predictor.generate.cached_decoder import cached_decoder
from predictor.generate.decoding import DecodeSettings, RunnerUpLog, RunnerUps, SpecialIds, chooses_on_engine, decode
from predictor.pruning import PrunedVocab

@dataclass(frozen=True)
class GenerationSettings:
    decode: DecodeSettings
    special: SpecialIds  # in the model's (pruned) vocabulary
    prompt_token_budget: int = 1024  # padded tokens per prompt pass
    record_margins: bool = False  # greedy only: keep each step's runner-up and logit gap


def special_ids(config: dict, vocab: PrunedVocab) -> SpecialIds:
    """UNIMO's config ids mapped into the (pruned) model vocabulary."""
    return SpecialIds(**{name: int(vocab.old_to_new[int(config[f"{name}_token_id"])])
                         for name in ("unk", "pad", "bos", "eos")})


@dataclass
class DecodedBatch:
    """One job's generated ids per row, and where its decoding time went."""
    rows: list[np.ndarray]
    steps: int
    engine_s: float   # prompt passes and steps inside the engines
    total_s: float    # the whole loop: engine + Python/numpy between steps
    prompt_s: float   # the prompt passes' share of engine_s
    runner_ups: list[RunnerUps] | None = None  # per row, when the settings record margins
    chosen_on_device: bool = False  # greedy's tokens chosen where the logits lie; only ids came back
    splits: int = 0  # times the job was halved because it did not fit in the GPU's memory


class GenerateRunner:
    def __init__(self, model_dir: str, options: EngineOptions, settings: GenerationSettings):
        # The start token plus every generated token but the last is fed back.
        self.decoder = cached_decoder(model_dir, options, settings.decode.max_new_tokens, settings.prompt_token_budget)
        self.settings = settings

    def run(self, job: dict) -> DecodedBatch:
        """A job that does not fit in the GPU's memory is decoded in halves:
        rows are independent, so the ids are the same."""
        return in_halves_when_out_of_memory(self.run_whole, job, lambda j: len(j["lengths"]), halves, merged)

    def run_whole(self, job: dict) -> DecodedBatch:
        started, engine_before, prompt_before = time.perf_counter(), self.decoder.engine_s, self.decoder.prompt_s
        runner_ups = RunnerUpLog(len(job["lengths"])) if self.settings.record_margins else None
        rows = decode(self.decoder, job, len(job["lengths"]), self.settings.decode, self.settings.special, runner_ups)
        return DecodedBatch(rows, self.decoder.steps, self.decoder.engine_s - engine_before,
                            time.perf_counter() - started, self.decoder.prompt_s - prompt_before,
                            runner_ups.per_row() if runner_ups else None,
                            chooses_on_engine(self.decoder, self.settings.decode, runner_ups))


def halves(job: dict) -> tuple[dict, dict]:
    """A job's first and second half of rows, each's left padding cut to its longest source."""
    def trimmed(rows: slice) -> dict:
        lengths = job["lengths"][rows]
        width = int(lengths.max())
        return {"input_ids": job["input_ids"][rows, -width:], "token_type_ids": job["token_type_ids"][rows, -width:],
                "lengths": lengths}

    half = len(job["lengths"]) // 2
    return trimmed(slice(None, half)), trimmed(slice(half, None))


def merged(a: DecodedBatch, b: DecodedBatch) -> DecodedBatch:
    """Two halves of a job that was split as one."""
    return DecodedBatch(a.rows + b.rows, a.steps + b.steps, a.engine_s + b.engine_s, a.total_s + b.total_s,
                        a.prompt_s + b.prompt_s, a.runner_ups + b.runner_ups if a.runner_ups is not None else None,
                        a.chosen_on_device and b.chosen_on_device, 1 + a.splits + b.splits)


def decoding_report(batches: list[DecodedBatch]) -> dict:
    """Per-step loop overhead next to model time, summed over all batches
    (worker seconds: with several workers they overlap in wall time)."""
    steps = sum(b.steps for b in batches)
    engine_s, total_s = sum(b.engine_s for b in batches), sum(b.total_s for b in batches)
    overhead_s = max(0.0, total_s - engine_s)
    prompt_s = sum(b.prompt_s for b in batches)
    return {"decode_steps": steps, "engine_s": round(engine_s, 3), "prompt_s": round(prompt_s, 3),
            "steps_s": round(engine_s - prompt_s, 3), "loop_overhead_s": round(overhead_s, 3),
            "loop_overhead_ms_per_step": round(1000 * overhead_s / max(steps, 1), 3),
            "loop_overhead_share": round(overhead_s / total_s, 4) if total_s else 0.0,
            "tokens_chosen_on_device": bool(batches) and all(b.chosen_on_device for b in batches),
            "jobs_split_for_memory": sum(b.splits for b in batches)}
