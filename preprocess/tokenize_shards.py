"""Tokenise the input rows in contiguous shards across worker processes.

Each worker builds its own FastWordPiece (neither WordPiece engine crosses
process boundaries) and frames its rows for the task; shards come back as
EncodedRows and are concatenated in shard order, so row i of the result is
row i of the input. Spawning a process costs a fraction of a second, so
small inputs are tokenised in this process (see `shard_count`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess.encoded_rows import EncodedRows
from preprocess.framing import frame_for_generation, frame_single_or_pair
from preprocess.wordpiece import FastWordPiece
from worker_processes import ignore_interrupts, in_spawned_processes

# Below this many rows per extra process, spawning costs more than it saves
# (FastWordPiece does ~6k reviews per second per process, and each worker
# spends ~0.4 s building its tokenizer).
MIN_ROWS_PER_SHARD = 20_000


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


def encode_rows(vocab_path: str, framing: Framing, texts: list[str], pairs: list[str] | None,
                workers: int = 1, min_rows_per_shard: int = MIN_ROWS_PER_SHARD) -> EncodedRows:
    shards = shard_bounds(len(texts), shard_count(len(texts), workers, min_rows_per_shard))
    jobs = [(texts[a:b], pairs[a:b] if pairs is not None else None) for a, b in shards]
    if len(jobs) == 1:
        return _encode_shard(_wordpiece_for(vocab_path, framing), framing, *jobs[0])
    parts = in_spawned_processes(_encode_in_worker, [(framing, *job) for job in jobs], "tokenizer",
                                 initializer=_start_worker, initargs=(vocab_path, framing))
    return EncodedRows.concat(parts)


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


def _encode_shard(wordpiece: FastWordPiece, framing: Framing, texts, pairs) -> EncodedRows:
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
    _wordpiece = _wordpiece_for(vocab_path, framing, num_threads=1)


def _encode_in_worker(framing: Framing, texts, pairs) -> EncodedRows:
    return _encode_shard(_wordpiece, framing, texts, pairs)


def _wordpiece_for(vocab_path: str, framing: Framing, num_threads: int | None = None) -> FastWordPiece:
    return FastWordPiece(vocab_path, keep_special_tokens_whole=framing.keeps_special_tokens_whole,
                         num_threads=num_threads)
