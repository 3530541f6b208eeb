"""Embedding pruning: keep only the vocabulary rows this data can reach.

A test set touches a few thousand of the 18k-40k vocabulary ids. Keeping those
rows (plus the special tokens, plus any ids a generator may need to emit)
shrinks the word-embedding table, and for a generator whose LM head is tied
to that table it also shrinks the softmax over the vocabulary on every step.
Kept ids stay in ascending order, so [PAD]=0 stays 0 and the map is monotone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrunedVocab:
    kept_ids: np.ndarray    # int64, ascending: new id i is old id kept_ids[i]
    old_to_new: np.ndarray  # int64 [full_size]; -1 where the row was dropped

    @property
    def size(self) -> int:
        return len(self.kept_ids)

    @property
    def full_size(self) -> int:
        return len(self.old_to_new)

    @property
    def is_identity(self) -> bool:
        return self.size == self.full_size

    def to_pruned(self, old_ids: np.ndarray) -> np.ndarray:
        new_ids = self.old_to_new[old_ids]
        if new_ids.size and new_ids.min() < 0:
            dropped = np.unique(np.asarray(old_ids)[new_ids < 0])[:10]
            raise ValueError(f"token ids {dropped.tolist()} were pruned away but occur in the input")
        return new_ids

    def to_full(self, new_ids: np.ndarray) -> np.ndarray:
        return self.kept_ids[new_ids]

    def digest(self) -> str:
        return hashlib.blake2b(self.kept_ids.tobytes(), digest_size=16).hexdigest()

    def embedding_bytes_saved(self, hidden_size: int, bytes_per_value: int = 4) -> int:
        return (self.full_size - self.size) * hidden_size * bytes_per_value


def full_vocab(full_size: int) -> PrunedVocab:
    ids = np.arange(full_size, dtype=np.int64)
    return PrunedVocab(kept_ids=ids, old_to_new=ids.copy())


def prune_vocab(full_size: int, *id_sets: np.ndarray) -> PrunedVocab:
    kept = np.unique(np.concatenate([np.asarray(ids, dtype=np.int64).ravel() for ids in id_sets]))
    if kept.size and (kept[0] < 0 or kept[-1] >= full_size):
        raise ValueError(f"token ids must lie in [0, {full_size}); got {kept[0]}..{kept[-1]}")
    old_to_new = np.full(full_size, -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept), dtype=np.int64)
    return PrunedVocab(kept_ids=kept, old_to_new=old_to_new)


def prune_rows(weights: dict[str, np.ndarray], names: list[str], vocab: PrunedVocab) -> dict[str, np.ndarray]:
    """A copy of `weights` with the vocabulary axis (axis 0) of `names` cut
    down to the kept ids; everything else shared, not copied."""
    pruned = dict(weights)
    for name in names:
        table = weights[name]
        if table.shape[0] != vocab.full_size:
            raise ValueError(f"{name} has {table.shape[0]} rows, expected the vocabulary size {vocab.full_size}")
        pruned[name] = np.ascontiguousarray(table[vocab.kept_ids])
    return pruned
