"""The whole input's token ids, tokenised chunk by chunk and kept on disk.

Pruning needs every token id the input uses before the model can be
exported, and prediction needs the ids again afterwards; holding them all in
memory made a run's peak grow with the row count (1.5 GB for a million short
rows). Each chunk is written to a temporary folder as it is tokenised (ids as
int32, token types as int8) and read back one chunk at a time to predict;
what stays in memory is per row only its length, plus the set of ids used.
An input of one chunk stays in memory and touches no disk.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterator

import numpy as np

from preprocess.encoded_rows import EncodedRows


class ScratchSpaceError(OSError):
    """The tokenised input cannot be written to its temporary folder."""


class EncodedChunks:
    def __init__(self, folder: str, vocab_size: int):
        self.folder = folder
        self._only_chunk: EncodedRows | None = None  # held while there is just one
        self.used = np.zeros(vocab_size, dtype=bool)  # ids any row uses
        self.truncated_rows = 0
        self._starts: list[int] = [0]                 # first row of each chunk, then the row count
        self._lengths: list[np.ndarray] = []
        # ids, token types, lengths: each hashed as one stream, so chunk edges do not count
        self._digests = [hashlib.blake2b(digest_size=16) for _ in range(3)]

    def append(self, chunk: EncodedRows) -> None:
        if chunk.token_ids.size and (chunk.token_ids.min() < 0 or chunk.token_ids.max() >= len(self.used)):
            raise ValueError(f"token ids must lie in [0, {len(self.used)})")
        if self.chunk_count == 0:
            self._only_chunk = chunk
        else:
            if self._only_chunk is not None:
                self._save(0, self._only_chunk)
                self._only_chunk = None
            self._save(self.chunk_count, chunk)
        self.used[chunk.token_ids] = True
        self.truncated_rows += int(chunk.truncated.sum())
        self._starts.append(self._starts[-1] + len(chunk))
        self._lengths.append(chunk.lengths.astype(np.int32))
        for digest, array in zip(self._digests, (chunk.token_ids, chunk.token_type_ids, chunk.lengths)):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def chunk_count(self) -> int:
        return len(self._lengths)

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)

    @property
    def tokens(self) -> int:
        return int(sum(int(lengths.sum()) for lengths in self._lengths))

    def used_ids(self) -> np.ndarray:
        return np.flatnonzero(self.used)

    def digest(self) -> str:
        """Content hash of every row's ids and types, independent of chunking."""
        return hashlib.blake2b(b"".join(d.digest() for d in self._digests), digest_size=16).hexdigest()

    def chunk(self, index: int) -> EncodedRows:
        if self._only_chunk is not None and index == 0:
            return self._only_chunk
        with np.load(self._path(index)) as saved:
            return EncodedRows(saved["ids"].astype(np.int64), saved["types"].astype(np.int64), saved["offsets"],
                               saved["truncated"])

    def chunks(self) -> Iterator[tuple[int, EncodedRows]]:
        """(first row, that chunk's rows) for each chunk, in input order."""
        for index in range(self.chunk_count):
            yield self._starts[index], self.chunk(index)

    def gather(self, rows: np.ndarray) -> EncodedRows:
        """The given rows (ascending input indices) as one EncodedRows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(self)):
            raise ValueError("rows must be distinct, ascending and inside the input")
        which = np.searchsorted(self._starts, rows, side="right") - 1
        if not rows.size:
            return EncodedRows.from_rows([], [], [])
        return EncodedRows.concat([self.chunk(index).select(rows[which == index] - self._starts[index])
                                   for index in np.unique(which).tolist()])

    def _save(self, index: int, chunk: EncodedRows) -> None:
        try:
            np.savez(self._path(index), ids=chunk.token_ids.astype(np.int32), types=chunk.token_type_ids.astype(np.int8),
                     offsets=chunk.offsets, truncated=chunk.truncated)
        except OSError as err:
            raise ScratchSpaceError(f"cannot keep the tokenised input in {self.folder}: {err.strerror or err}; "
                                    "free space there or point TMPDIR at a folder with room") from None

    def _path(self, index: int) -> str:
        return os.path.join(self.folder, f"chunk_{index:06d}.npz")
