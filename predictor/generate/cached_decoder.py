"""Generation's step engine: the prompt and step programs over a key/value
cache that stays in the engine's memory, on any engine behind the seam.

A job is a batch of framed sources, left-padded (the last position is every
row's start token, as generate() needs): input_ids and token_type_ids
[B, L] and lengths [B].
"""
from __future__ import annotations

import os
import time

import numpy as np

from predictor.batching import length_sorted_batches
from predictor.engines.choice import open_engine
from predictor.engines.options import EngineOptions
from predictor.generate.unimo_programs import PROMPT_PROGRAM, STEP_PROGRAM

# Masked attention logits; exp() of it underflows to exactly 0 in fp32, like
# generate()'s -1e4 / -1e9, so padding never changes a result.
MASKED = -1e9
# fp16 programs cast their masks to fp16, where -1e9 is -inf: a padded prompt
# position that may see nothing would then average -inf into NaN, and its
# keys and values would carry it into every later layer's sums. -1e4 is
# finite in fp16 and still underflows exp() to exactly 0.
FP16_MASKED = -1e4

def left_padded(rows, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, types) [len(rows), longest], each row right-aligned."""
    width = int(lengths.max())
    ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    types = np.zeros((len(lengths), width), dtype=np.int64)
    for i, (row_ids, row_types) in enumerate(rows):
        ids[i, width - len(row_ids):] = row_ids
        types[i, width - len(row_types):] = row_types
    return ids, types


def prompt_bias(lengths: np.ndarray, width: int, masked: float = MASKED) -> np.ndarray:
    """[rows, width - 1]: what the start token (and every step after it) may
    see of the left-padded prompt: its row's source, not the padding."""
    bias = np.full((len(lengths), width - 1), masked, dtype=np.float32)
    for i, length in enumerate(lengths.tolist()):
        bias[i, width - length:] = 0.0
    return bias


def prompt_inputs(job: dict, masked: float = MASKED) -> list[np.ndarray]:
    """The prompt program's inputs.

    As gen_encode lays them out: positions count 0.. over the source and
    restart at 0 on the start token; every position sees the whole source,
    only the start token sees itself, nothing sees padding."""
    ids, lengths = job["input_ids"], job["lengths"]
    rows, width = ids.shape
    positions = np.zeros_like(ids)
    mask = np.full((rows, 1, width, width), masked, dtype=np.float32)
    for i, length in enumerate(lengths.tolist()):
        first = width - length
        positions[i, first:width - 1] = np.arange(length - 1)
        mask[i, 0, first:, first:width - 1] = 0.0
        mask[i, 0, width - 1, width - 1] = 0.0
    return [ids, job["token_type_ids"], positions, mask]


class CachedDecoder:
    """The step engine over the prompt and step programs, on any engine.

    The cache stays in the engine's memory between steps (Paddle Tensors, or
    numpy arrays that ONNX Runtime reads in place on the CPU). Per layer, the
    prompt part is one [S, H, L-1, D] block per batch, re-indexed only when
    sources leave; the generated part is a [R, H, W, D] buffer that each step
    writes one position of. When the buffer is full it is copied into one of
    twice the width (at most `max_positions`), so the copies over a whole
    generation are linear in its length, and a step's attention reads at
    most twice the positions written."""

    FIRST_WIDTH = 16
    # Rows that finish (greedy) stay in the engine's batch as idle rows until
    # fewer than this share of it is live; then the batch is compacted. So a
    # step wastes under a quarter of its rows, and a job's prompt cache
    # (hundreds of MB) is copied a few times instead of at every finished row
    # (measured on the demo: loop overhead 36 ms a step when compacting at
    # every finish).
    COMPACT_BELOW = 0.75

    def __init__(self, prompt_engine, step_engine, max_positions: int, prompt_token_budget: int = 1024,
                 precision: str = "fp32"):
        self.prompt_engine, self.step_engine = prompt_engine, step_engine
        self.masked = FP16_MASKED if precision == "fp16" else MASKED
        self.prompt_token_budget = prompt_token_budget
        self.arrays = step_engine.arrays
        self.max_positions = max_positions
        self.engine_s = 0.0  # running total inside the engines, for the loop-overhead figure
        self.prompt_s = 0.0  # the prompt passes' part of it
        # Greedy's choice is taken where the logits lie when that is a
        # device's memory (decoding.StepEngine): only ids cross back. On the
        # host numpy's argmax reads the logits in place already.
        self.chooses_greedy = hasattr(self.arrays, "greedy_ids")

    def _result(self, logits, choose_greedy: tuple | None) -> np.ndarray:
        """The logits on the host, or with `choose_greedy` (ids, values) only
        each row's greedy choice."""
        if choose_greedy is None:
            return self.arrays.to_numpy(logits)
        return self.arrays.greedy_ids(logits, *choose_greedy)

    def _timed_run(self, engine, inputs: list) -> list:
        started = time.perf_counter()
        outputs = engine.run_resident(inputs)
        self.engine_s += time.perf_counter() - started
        return outputs

    def _prompt(self, job: dict, choose_greedy: tuple | None = None) -> tuple[np.ndarray, list, list]:
        """(last-position logits, or greedy's ids with `choose_greedy`, prompt
        cache, start-token keys/values) of a job, the prompt run in
        length-sorted chunks of at most `prompt_token_budget` padded tokens:
        a job keeps many rows together for the steps (their GEMMs want rows),
        while each prompt pass pads only to its own chunk's longest source.
        Each chunk's cache is placed right-aligned (as left padding) in one
        block as wide as the job's."""
        lengths = job["lengths"]
        width = job["input_ids"].shape[1]
        order = np.argsort(-lengths, kind="stable")
        logits, prompt_parts, start_parts, placed = [], [], [], []
        for chunk in length_sorted_batches(lengths[order], self.prompt_token_budget):
            rows = order[chunk.rows]
            chunk_job = {"input_ids": job["input_ids"][rows, width - chunk.width:],
                         "token_type_ids": job["token_type_ids"][rows, width - chunk.width:], "lengths": lengths[rows]}
            engine_before = self.engine_s
            outputs = self._timed_run(self.prompt_engine, prompt_inputs(chunk_job, self.masked))
            self.prompt_s += self.engine_s - engine_before
            layers2 = (len(outputs) - 1) // 2
            logits.append(self._result(outputs[0], choose_greedy))
            prompt_parts.append(outputs[1:1 + layers2])
            start_parts.append(outputs[1 + layers2:])
            placed.append(rows)
        back = np.argsort(np.concatenate(placed))  # chunk order -> job order

        def in_job_order(parts: list[list], part_width: int) -> list:
            blocks = self.arrays.stack_rows(parts, part_width)
            if (back == np.arange(len(back))).all():  # jobs arrive longest first: nothing to reorder
                return blocks
            return self.arrays.take_rows(blocks, back)

        return np.concatenate(logits)[back], in_job_order(prompt_parts, width - 1), in_job_order(start_parts, 1)

    def start(self, job: dict, choose_greedy: tuple | None = None) -> np.ndarray:
        # The last job's cache goes before this one's is made: two would
        # double the peak, and make this job fault in fresh memory.
        self.prompt_cache = self.generated = None
        self.prompt_bias = prompt_bias(job["lengths"], job["input_ids"].shape[1], self.masked)
        logits, self.prompt_cache, start_part = self._prompt(job, choose_greedy)
        # The start token's keys/values, zeros on the right: the generated buffers.
        self.width = min(self.FIRST_WIDTH, self.max_positions)  # positions each generated buffer holds
        self.generated = self.arrays.widened(start_part, self.width)
        self.written = 1  # positions of the generated buffer holding keys/values
        self.cache_source = np.arange(len(job["lengths"]))  # source of each prompt-cache row
        self.row_source = self.cache_source.copy()          # source of each engine row
        self.slots = np.arange(len(job["lengths"]))         # engine row of each decoder row
        self.steps = 0
        return logits

    def _follow(self, parent: np.ndarray) -> None:
        """Reorder the generated buffers to the new rows, and keep the prompt
        cache to the sources still live (rows are source-major)."""
        if len(parent) != len(self.row_source) or (parent != np.arange(len(parent))).any():
            self.generated = self.arrays.take_rows(self.generated, parent)
        self.row_source = self.row_source[parent]
        _, first = np.unique(self.row_source, return_index=True)
        live_sources = self.row_source[np.sort(first)]
        if len(live_sources) != len(self.cache_source) or (live_sources != self.cache_source).any():
            keep = np.searchsorted(self.cache_source, live_sources)
            self.prompt_cache = self.arrays.take_rows(self.prompt_cache, keep)
            self.prompt_bias = self.prompt_bias[keep]
            self.cache_source = live_sources

    def advance(self, tokens: np.ndarray, parent: np.ndarray, choose_greedy: tuple | None = None) -> np.ndarray:
        slots = self.slots[parent]
        rows_dropped_only = bool(np.all(np.diff(slots) > 0))  # no reordering, no row repeated
        if rows_dropped_only and len(slots) >= self.COMPACT_BELOW * len(self.row_source):
            self.slots = slots  # finished rows idle in place
        else:
            self._follow(slots)
            self.slots = np.arange(len(slots))
        if self.written == self.width:
            self.width = min(2 * self.width, self.max_positions)
            self.generated = self.arrays.widened(self.generated, self.width)
        width = self.width
        self.steps += 1
        rows = len(self.row_source)
        fed = np.zeros(rows, np.int64)  # idle rows are fed id 0; their outputs are never read
        fed[self.slots] = tokens
        generated_bias = np.full((rows, width), self.masked, dtype=np.float32)
        generated_bias[:, :self.written] = 0.0
        # generate() repeats the start token's type (1) and counts positions on
        # from its 0.
        feeds = [fed.reshape(rows, 1), np.ones((rows, 1), np.int64),
                 np.full((rows, 1), self.steps, np.int64), self.prompt_bias, generated_bias]
        outputs = self._timed_run(self.step_engine, feeds + self.prompt_cache + self.generated)
        self.generated = self.arrays.put_position(self.generated, self.written, outputs[1:])
        self.written += 1
        # Idle rows are chosen for too (the overrides are the same for every
        # row): cheaper than gathering the live rows' logits first.
        return self._result(outputs[0], choose_greedy)[self.slots]


def cached_decoder(model_dir: str, options: EngineOptions, max_positions: int,
                   prompt_token_budget: int = 1024) -> CachedDecoder:
    """A CachedDecoder over the programs exported (and perhaps converted) under model_dir."""
    return CachedDecoder(open_engine(os.path.join(model_dir, PROMPT_PROGRAM), options),
                         open_engine(os.path.join(model_dir, STEP_PROGRAM), options), max_positions,
                         prompt_token_budget, options.precision)
