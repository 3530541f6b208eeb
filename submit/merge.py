"""Put per-batch outputs back in input order, proving nothing was lost.

Batches are formed in length order and may finish in any order; the
submission must hold every input row exactly once, so a row seen twice or
never is a bug in the run, and the run stops rather than write a wrong file.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


class MergeError(RuntimeError):
    pass


def merge_in_input_order(n_rows: int, pieces: Iterable[tuple[np.ndarray, Sequence]]) -> list:
    """`pieces` are (row indices, outputs for those rows); returns a list of
    n_rows outputs in input order."""
    merged: list = [None] * n_rows
    for rows, outputs in _checked(n_rows, pieces):
        for row, output in zip(rows.tolist(), outputs):
            merged[row] = output
    return merged


def stack_in_input_order(n_rows: int, pieces: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The same for outputs of one shape per row (e.g. class probabilities):
    one [n_rows, ...] array, without a Python object per row."""
    stacked = None
    for rows, outputs in _checked(n_rows, pieces):
        if stacked is None:
            stacked = np.empty((n_rows, *np.shape(outputs)[1:]), dtype=np.asarray(outputs).dtype)
        stacked[rows] = outputs
    return stacked if stacked is not None else np.empty((0,))


def _checked(n_rows: int, pieces: Iterable[tuple[np.ndarray, Sequence]]):
    """Each piece, after checking it names rows of the input none named
    before; at the end, that every row was named."""
    filled = np.zeros(n_rows, dtype=bool)
    for rows, outputs in pieces:
        rows = np.asarray(rows)
        if len(rows) != len(outputs):
            raise MergeError(f"a batch returned {len(outputs)} outputs for {len(rows)} rows")
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise MergeError(f"a batch names row {int(rows.max())} but the input has {n_rows} rows")
        if filled[rows].any() or len(np.unique(rows)) != len(rows):
            twice = sorted(set(rows[filled[rows]].tolist()) | _repeated(rows))[:10]
            raise MergeError(f"rows {twice} (0-based) came back more than once")
        filled[rows] = True
        yield rows, outputs
    if not filled.all():
        missing = np.flatnonzero(~filled)
        raise MergeError(f"{len(missing)} row(s) got no output, e.g. rows {missing[:10].tolist()} (0-based)")


def _repeated(rows: np.ndarray) -> set:
    values, counts = np.unique(rows, return_counts=True)
    return set(values[counts > 1].tolist())
