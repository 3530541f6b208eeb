"""Sharded tokenisation across processes returns rows in input order."""
from __future__ import annotations

import numpy as np

from preprocess.tokenize_shards import Framing, encode_rows, shard_bounds, shard_count


def test_shard_plan():
    assert shard_count(100, workers=4, min_rows_per_shard=30) == 3
    assert shard_count(10, workers=4, min_rows_per_shard=30) == 1
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]


def test_three_processes_equal_one(demo_vocab_file, demo_texts):
    texts, pairs = demo_texts[:90], demo_texts[90:180]
    framing = Framing("classify", max_seq_len=48)
    alone = encode_rows(demo_vocab_file, framing, texts, pairs, workers=1)
    sharded = encode_rows(demo_vocab_file, framing, texts, pairs, workers=3, min_rows_per_shard=30)
    for field in ("token_ids", "token_type_ids", "offsets", "truncated"):
        assert np.array_equal(getattr(alone, field), getattr(sharded, field)), field
    assert len(sharded) == 90 and sharded.truncated.any()
