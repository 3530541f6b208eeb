"""Token ids of every input row as flat arrays plus cumulative offsets.

The same layout as text-embeddings-inference's batches: one concatenation of
all rows' ids and `offsets[i]:offsets[i+1]` marking row i. It pickles as a
handful of arrays (cheap to move between processes) and padding is left to
whoever builds a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodedRows:
    token_ids: np.ndarray       # int64 [total_tokens]
    token_type_ids: np.ndarray  # int64 [total_tokens]
    offsets: np.ndarray         # int64 [rows + 1]
    truncated: np.ndarray       # bool [rows]: the row lost tokens to max_seq_len

    @classmethod
    def from_rows(cls, ids: list[np.ndarray], types: list[np.ndarray], truncated: list[bool]) -> "EncodedRows":
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(
            token_ids=np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64),
            token_type_ids=np.concatenate(types).astype(np.int64) if types else np.zeros(0, np.int64),
            offsets=offsets,
            truncated=np.asarray(truncated, dtype=bool),
        )

    @classmethod
    def concat(cls, parts: list["EncodedRows"]) -> "EncodedRows":
        offsets = [np.zeros(1, np.int64)]
        base = 0
        for part in parts:
            offsets.append(part.offsets[1:] + base)
            base += int(part.offsets[-1])
        return cls(
            token_ids=np.concatenate([p.token_ids for p in parts]),
            token_type_ids=np.concatenate([p.token_type_ids for p in parts]),
            offsets=np.concatenate(offsets),
            truncated=np.concatenate([p.truncated for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self, i: int) -> np.ndarray:
        return self.token_ids[self.offsets[i]:self.offsets[i + 1]]

    def padded(self, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """[len(rows), longest] token ids and token types, right-padded."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for out_row, (row, length) in enumerate(zip(rows, lengths)):
            start = self.offsets[row]
            ids[out_row, :length] = self.token_ids[start:start + length]
            types[out_row, :length] = self.token_type_ids[start:start + length]
        return ids, types

    def select(self, rows: np.ndarray) -> "EncodedRows":
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # each kept token's place in the flat arrays: its row's start plus its position in the row
        where = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return EncodedRows(self.token_ids[where], self.token_type_ids[where], offsets, self.truncated[rows])

    def with_token_ids(self, token_ids: np.ndarray) -> "EncodedRows":
        return EncodedRows(token_ids, self.token_type_ids, self.offsets, self.truncated)
