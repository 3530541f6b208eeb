"""Tokenise the input rows in contiguous shards across worker processes.

Each worker builds its own FastWordPiece (neither WordPiece engine crosses
process boundaries) and frames its rows for the task; shards come back as
EncodedRows and are concatenated in shard order, so row i of the result is
row i of the input. Spawning a process costs a fraction of a second, so
small inputs are tokenised in this process (see `shard_count`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from preprocess.encoded_rows import EncodedRows
from preprocess.framing import frame_for_generation, frame_single_or_pair
from preprocess.wordpiece import FastWordPiece
from worker_processes import SpawnedPool, ignore_interrupts

if TYPE_CHECKING:  # pandas, which the tokenizer processes need not import (1.5 s on a 16-core Xeon)
    from preprocess.input_table import InputChunk

# Below this many rows per extra process, spawning costs more than it saves:
# FastWordPiece does 6-10k reviews per second per process, and a worker costs
# about a second to start (spawn, imports, the tokenizer's tables), once per
# run since the processes live across chunks. A chunk of 100,000 rows then
# goes to 16 processes on a 16-core machine (tokenising 200,000 reviews there
# took 10 s on 5 processes under the earlier rule of 20,000 rows a process),
# while inputs of a few thousand rows stay in this process.
MIN_ROWS_PER_SHARD = 6_000


@dataclass(frozen=True)
class Framing:
    """How a row's texts become model input: the task's special-token layout."""
    task: str         # "classify" | "generate"
    max_seq_len: int
    max_title_len: int = 32  # generation: the pair column is UNIMO's title

    @property
    def keeps_special_tokens_whole(self) -> bool:
        # Classification checkpoints are tokenised through ErnieTokenizer.__call__
        # after from_pretrained, which keeps "[SEP]" typed in the text as one
        # token; UNIMO's gen_encode calls _tokenize, which splits it like text.
        return self.task == "classify"


def shard_count(rows: int, workers: int, min_rows_per_shard: int = MIN_ROWS_PER_SHARD) -> int:
    return max(1, min(workers, rows // min_rows_per_shard))


def shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, rows, shards + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class ShardedEncoder:
    """encode(texts, pairs) -> EncodedRows, call after call (a large input
    comes in chunks): each call's rows are split into contiguous shards
    across tokenizer processes that live until close(); a call too small to
    gain from them runs in this process."""

    def __init__(self, vocab_path: str, framing: Framing, workers: int = 1,
                 min_rows_per_shard: int = MIN_ROWS_PER_SHARD):
        self.vocab_path, self.framing, self.workers = vocab_path, framing, workers
        self.min_rows_per_shard = min_rows_per_shard
        self._local: FastWordPiece | None = None
        self._pool: SpawnedPool | None = None
        self.processes = 0  # the most tokenizer processes a call used (0: this process alone)

    def encode(self, texts: list[str], pairs: list[str] | None) -> EncodedRows:
        shards = shard_bounds(len(texts), shard_count(len(texts), self.workers, self.min_rows_per_shard))
        jobs = [(texts[a:b], pairs[a:b] if pairs is not None else None) for a, b in shards]
        if len(jobs) == 1:
            if self._local is None:
                self._local = wordpiece_for(self.vocab_path, self.framing)
            return encode_shard(self._local, self.framing, *jobs[0])
        self.processes = max(self.processes, len(jobs))
        if self._pool is None:
            # Processes start as calls need them (a small first call starts few), up to `workers`.
            self._pool = SpawnedPool(self.workers, initializer=_start_worker, initargs=(self.vocab_path, self.framing))
        return EncodedRows.concat(self._pool.map(_encode_in_worker, [(self.framing, *job) for job in jobs],
                                                 "tokenizer"))

    def encode_chunks(self, chunks: Iterable[InputChunk]) -> Iterator[EncodedRows]:
        """Each chunk's rows, encoded as it comes."""
        for chunk in chunks:
            yield self.encode(chunk.texts, chunk.pairs)

    def describe(self) -> str:
        return f"{self.processes} local processes" if self.processes else "the main process"

    def close(self, failed: bool = False) -> None:
        if self._pool is not None:
            self._pool.close(failed)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(failed=exc_type is not None)


def encode_rows(vocab_path: str, framing: Framing, texts: list[str], pairs: list[str] | None,
                workers: int = 1, min_rows_per_shard: int = MIN_ROWS_PER_SHARD) -> EncodedRows:
    with ShardedEncoder(vocab_path, framing, workers, min_rows_per_shard) as encoder:
        return encoder.encode(texts, pairs)


# A word longer than this many characters is one [UNK]; shorter, it gives at
# most one token per character. So when a text is cut mid-word, only its last
# WORD_TAIL tokens can differ from the uncut text's.
WORD_TAIL = 101
# First guess at characters per kept token when cutting; doubled until enough.
CUT_CHARS_PER_TOKEN = 8


def encode_bounded(wordpiece: FastWordPiece, texts, max_tokens: int) -> list[np.ndarray]:
    """Each text's first ids, exactly as in the uncut text's, at least
    max_tokens + 1 of them where the text has that many (so truncation is
    still seen and counted). A long text is tokenised from a prefix that
    grows until it yields max_tokens + WORD_TAIL ids: a 1 MB row then costs
    milliseconds and kilobytes, not seconds and hundreds of MB."""
    cut = (max_tokens + WORD_TAIL) * CUT_CHARS_PER_TOKEN
    ids = wordpiece.encode([text if len(text) <= cut else text[:cut] for text in texts])
    for i, text in enumerate(texts):
        prefix = cut
        while len(text) > prefix and len(ids[i]) < max_tokens + WORD_TAIL:
            prefix *= 2
            ids[i] = wordpiece.encode([text[:prefix]])[0]
        if len(text) > prefix:  # cut: drop the tail the cut may have changed
            ids[i] = ids[i][:max_tokens + 1]
    return ids


def encode_shard(wordpiece: FastWordPiece, framing: Framing, texts, pairs) -> EncodedRows:
    # No segment keeps more than max_seq_len ids, whatever the framing.
    ids_a = encode_bounded(wordpiece, texts, framing.max_seq_len)
    ids_b = encode_bounded(wordpiece, pairs, framing.max_seq_len) if pairs is not None else [None] * len(texts)
    frame = _framer(wordpiece, framing)
    framed = [frame(a, b) for a, b in zip(ids_a, ids_b)]
    return EncodedRows.from_rows([f[0] for f in framed], [f[1] for f in framed], [f[2] for f in framed])


def _framer(wordpiece: FastWordPiece, framing: Framing):
    if framing.task == "classify":
        return lambda a, b: frame_single_or_pair(a, b, framing.max_seq_len, wordpiece.cls_id, wordpiece.sep_id)
    if framing.task == "generate":
        return lambda a, b: frame_for_generation(a, b, framing.max_seq_len, framing.max_title_len,
                                                 wordpiece.cls_id, wordpiece.sep_id)
    raise ValueError(f"unknown task {framing.task!r}")


_wordpiece: FastWordPiece | None = None


def _start_worker(vocab_path: str, framing: Framing) -> None:
    global _wordpiece
    ignore_interrupts()
    # Parallelism comes from the processes; one engine thread each.
    _wordpiece = wordpiece_for(vocab_path, framing, num_threads=1)


def _encode_in_worker(framing: Framing, texts, pairs) -> EncodedRows:
    return encode_shard(_wordpiece, framing, texts, pairs)


def wordpiece_for(vocab_path: str, framing: Framing, num_threads: int | None = None,
                  backend: str | None = None) -> FastWordPiece:
    return FastWordPiece(vocab_path, keep_special_tokens_whole=framing.keeps_special_tokens_whole,
                         num_threads=num_threads, backend=backend)
