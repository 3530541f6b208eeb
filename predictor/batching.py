"""Length-sorted batches under a token budget.

Rows are sorted longest first and packed while `rows x longest` (what a padded
engine really computes) stays within the budget, so padding only reaches the
longest row of its own batch. Longest-first also hands the slowest batches out
first, which keeps worker processes evenly loaded at the end of a run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # int64 indices into the input, in the batch's order
    width: int        # padded length (the longest row)

    @property
    def padded_tokens(self) -> int:
        return len(self.rows) * self.width


def length_sorted_batches(lengths: np.ndarray, token_budget: int, max_rows: int | None = None,
                          rows: np.ndarray | None = None) -> list[Batch]:
    """Batches of `rows` (ascending indices into `lengths`; default every row)."""
    if token_budget < 1:
        raise ValueError(f"token budget must be positive, got {token_budget}")
    lengths = np.asarray(lengths)
    rows = np.arange(len(lengths)) if rows is None else np.asarray(rows, dtype=np.int64)
    # Stable sort: equal lengths keep input order, so batches are reproducible.
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    batches: list[Batch] = []
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])
        count = max(1, token_budget // max(width, 1))
        if max_rows is not None:
            count = min(count, max_rows)
        batches.append(Batch(rows=order[start:start + count].astype(np.int64), width=width))
        start += count
    return batches


def exact_length_batches(lengths: np.ndarray, token_budget: int, max_rows: int | None = None,
                         rows: np.ndarray | None = None) -> list[Batch]:
    """Batches of rows of one length each (longest first), as many rows as the
    budget holds: nothing is padded, so an engine can skip the attention mask
    (on a GPU, the fused attention kernels refuse a mask: docs/design.md)."""
    lengths = np.asarray(lengths)
    rows = np.arange(len(lengths)) if rows is None else np.asarray(rows, dtype=np.int64)
    batches: list[Batch] = []
    for width in np.unique(lengths[rows])[::-1].tolist():
        same = rows[lengths[rows] == width]  # ascending: input order within a length
        batches += length_sorted_batches(lengths, token_budget, max_rows, same)
    return batches


def padding_ratio(batches: list[Batch], lengths: np.ndarray) -> float:
    """Padded tokens over real tokens (1.0 means no padding at all)."""
    real = int(np.sum(lengths))
    return sum(b.padded_tokens for b in batches) / real if real else 1.0
