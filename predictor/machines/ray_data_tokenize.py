"""Tokenising as a Ray Data operator (`--ray`).

The driver reads and validates the whole input first, a chunk at a time,
with the project's own reader (preprocess/input_table.py), and puts each
chunk's texts into Ray's object store as one block of `--chunk-rows` rows:
a pandas frame of Python strings, since Arrow refuses a string that is not
valid UTF-8 (a lone surrogate, which a .jsonl row may spell as "\\ud800")
where the local run tokenises it. The reader stays on the driver because
its checks run across the file (a duplicate id is one seen in any earlier
chunk) and its messages name the file, line, row and field: bad input then
stops with the local run's one line, before any tokenising. What the
driver keeps of a chunk is its ids, as in a local run; the texts wait in
the object store (the cluster's memory, spilled to disk by Ray when full),
not in the driver.

Then one Dataset: `map_batches` over the blocks on CPU tasks, one task per
block, each worker process building its FastWordPiece once and reusing it
for every block it gets (Ray reuses task processes). Tasks, not a pool of
actors (a callable class with `concurrency`): the same throughput on a
million short rows, and a first block seconds sooner, since an actor is a
new process where a task takes one Ray has started already (measured on 2
cores: 2.1-3.7 s against 4.8-4.9 s for the 5,000-row demo's one block,
a fresh Ray instance each time). The blocks come back
in input order (`preserve_order`), each as one EncodedRows that the caller
appends to EncodedChunks (spilled to disk, its ids added to the vocabulary
union), so the driver holds one chunk's tokens at a time, never the token
table.
"""
from __future__ import annotations

import itertools
import logging
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data

from preprocess.encoded_rows import EncodedRows
from preprocess.input_table import InputChunk
from preprocess.tokenize_shards import Framing, ShardedEncoder, encode_shard, shard_count, wordpiece_for
from preprocess.wordpiece import FastWordPiece, choose_backend
from worker_processes import WorkerFailed, first_line

# Each Ray worker process's tokenizers, built on its first block.
_wordpieces: dict[tuple, FastWordPiece] = {}


def encode_block(block: pd.DataFrame, vocab_path: str, framing: Framing, backend: str) -> pa.Table:
    """One block of texts (and pairs) -> its rows' ids, types and truncation."""
    key = (vocab_path, framing, backend)
    if key not in _wordpieces:
        # Parallelism comes from the tasks; one engine thread each.
        _wordpieces[key] = wordpiece_for(vocab_path, framing, num_threads=1, backend=backend)
    pairs = block["pair"].tolist() if "pair" in block.columns else None
    return rows_as_table(encode_shard(_wordpieces[key], framing, block["text"].tolist(), pairs))


def rows_as_table(rows: EncodedRows) -> pa.Table:
    # Ids fit int32 and types int8, as on disk (encoded_chunks.py): 5 bytes
    # a token through the object store instead of 16.
    offsets = pa.array(rows.offsets, pa.int64())
    return pa.table({
        "token_ids": pa.LargeListArray.from_arrays(offsets, pa.array(rows.token_ids.astype(np.int32))),
        "token_type_ids": pa.LargeListArray.from_arrays(offsets, pa.array(rows.token_type_ids.astype(np.int8))),
        "truncated": pa.array(rows.truncated, pa.bool_()),
    })


def table_as_rows(table: pa.Table) -> EncodedRows:
    ids, types = (table.column(name).combine_chunks() for name in ("token_ids", "token_type_ids"))
    offsets = np.asarray(ids.offsets, dtype=np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    return EncodedRows(token_ids=np.asarray(ids.values)[start:end].astype(np.int64),
                       token_type_ids=np.asarray(types.values)[start:end].astype(np.int64),
                       offsets=offsets - start,
                       truncated=table.column("truncated").to_numpy(zero_copy_only=False).astype(bool))


class RayDataEncoder:
    """The ChunkEncoder of a Ray cluster: Ray Data tasks over the blocks."""

    def __init__(self, vocab_path: str, framing: Framing, retries: int):
        self.vocab_path, self.framing, self.retries = vocab_path, framing, retries
        self.tasks = 0

    def encode_chunks(self, chunks: Iterable[InputChunk]) -> Iterator[EncodedRows]:
        chunks = iter(chunks)
        first, second = next(chunks, None), next(chunks, None)
        if first is not None and second is None and shard_count(len(first), workers=2) == 1:
            # One chunk too small for a second process to pay for its start:
            # tokenised here by the local encoder, in its own process (a Ray
            # Data task costs 2-4 s more on the 5,000-row demo).
            self.tasks = 0
            with ShardedEncoder(self.vocab_path, self.framing) as here:
                yield here.encode(first.texts, first.pairs)
            return
        blocks, sizes = [], []
        # every chunk read and validated before any task starts
        for chunk in itertools.chain([c for c in (first, second) if c is not None], chunks):
            columns = {"text": chunk.texts} if chunk.pairs is None else {"text": chunk.texts, "pair": chunk.pairs}
            blocks.append(ray.put(pd.DataFrame(columns, dtype=object)))  # pandas 3 would make Arrow strings
            sizes.append(len(chunk))
        quiet_ray_data()
        tokenized = ray.data.from_pandas_refs(blocks).map_batches(
            encode_block, batch_size=None, batch_format="pandas", zero_copy_batch=True,
            fn_kwargs={"vocab_path": self.vocab_path, "framing": self.framing,
                       "backend": choose_backend()},  # the driver's engine, WORDPIECE_BACKEND included
            # Ray Data retries a task whose process died without end by
            # default: a crash on one block would then never stop the run.
            max_retries=self.retries)
        del blocks  # held by the dataset until tokenising ends
        self.tasks = len(sizes)
        try:
            yield from chunks_of(tokenized.iter_batches(batch_size=None, batch_format="pyarrow",
                                                        prefetch_batches=0), sizes)
        except ray.exceptions.RayError as err:
            raise WorkerFailed(f"tokenizing on Ray Data failed: {first_line(err)}") from None

    def describe(self) -> str:
        if not self.tasks:
            return "the driver"
        return f"ray data, {self.tasks} task{'s' if self.tasks != 1 else ''}"

    def __enter__(self) -> "RayDataEncoder":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        pass


def chunks_of(tables: Iterable[pa.Table], sizes: list[int]) -> Iterator[EncodedRows]:
    """The output blocks put back into the input's chunks (Ray Data may cut
    a large block in two): the chunks are what batches are made within, so
    they must be the local run's for its bytes."""
    pending: list[pa.Table] = []
    held = 0
    sizes = iter(sizes)
    size = next(sizes, None)
    for table in tables:
        pending.append(table)
        held += len(table)
        while size is not None and held >= size:
            joined = pa.concat_tables(pending)
            yield table_as_rows(joined.slice(0, size))
            pending, held = [joined.slice(size)], held - size
            size = next(sizes, None)


def quiet_ray_data() -> None:
    """Order kept; no progress bars, execution plans or notes on the run's terminal."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
