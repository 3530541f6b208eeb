"""The probe a converted decoder is checked against: fixed left-padded rows
of different lengths, decoded by the eager layer at export (the prompt pass
and PROBE_STEPS steps), their logits kept beside the programs.
"""
from __future__ import annotations

import os

import numpy as np

from predictor.generate.cached_decoder import CachedDecoder, left_padded
from predictor.generate.unimo_programs import PROMPT_PROGRAM, STEP_PROGRAM, EagerProgram

PROBE_STEPS = 4
PROBE_FILE = "probe_reference.npz"
PROBE_LENGTHS = (11, 6, 2)


def probe_logits(decoder, job: dict, steps: int) -> list[np.ndarray]:
    """Logits of the prompt pass and `steps` steps, every row fed token 5 + step
    (any fixed ids do: both sides must agree on the same arithmetic)."""
    rows = len(job["lengths"])
    logits = [decoder.start(job)]
    for step in range(steps):
        logits.append(decoder.advance(np.full(rows, 5 + step, np.int64), np.arange(rows)))
    return logits


def probe_job(vocab_size: int) -> dict:
    """Fixed, left-padded rows of PROBE_LENGTHS ids; the last position is the
    start token (token type 1), as a framed source's is."""
    ids = np.random.default_rng(0).integers(5, vocab_size, size=sum(PROBE_LENGTHS))
    rows, first = [], 0
    for length in PROBE_LENGTHS:
        types = np.zeros(length, np.int64)
        types[-1] = 1
        rows.append((ids[first:first + length], types))
        first += length
    lengths = np.asarray(PROBE_LENGTHS, np.int64)
    padded_ids, padded_types = left_padded(rows, lengths, pad_id=0)
    return {"input_ids": padded_ids, "token_type_ids": padded_types, "lengths": lengths}


def write_probe_reference(thin, model_dir: str, vocab_size: int) -> None:
    decoder = CachedDecoder(EagerProgram(thin, PROMPT_PROGRAM), EagerProgram(thin, STEP_PROGRAM), PROBE_STEPS + 1)
    logits = probe_logits(decoder, probe_job(vocab_size), PROBE_STEPS)
    np.savez(os.path.join(model_dir, PROBE_FILE), *logits)


def read_probe_reference(model_dir: str) -> list[np.ndarray]:
    with np.load(os.path.join(model_dir, PROBE_FILE)) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]
