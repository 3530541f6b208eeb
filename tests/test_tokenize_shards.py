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


def test_long_texts_are_tokenised_from_a_prefix_with_the_same_first_ids(demo_vocab_file, demo_texts):
    from preprocess.wordpiece import FastWordPiece
    from preprocess.tokenize_shards import WORD_TAIL, encode_bounded

    wordpiece = FastWordPiece(demo_vocab_file, keep_special_tokens_whole=True)
    chinese = "".join(demo_texts)
    texts = [
        demo_texts[0],                                           # short: untouched
        chinese[:60_000],                                        # one char, one token
        ("Tokenisation of English words, 12345 and more. " * 3000),
        "x" * 30_000 + " tail",                                  # one endless word: [UNK]
        " " * 20_000 + chinese[:3000],                           # deleted characters first
        ("[SEP]好" * 5000),                                       # special tokens kept whole
    ]
    for max_tokens in (16, 128):
        full = wordpiece.encode(texts)
        bounded = encode_bounded(wordpiece, texts, max_tokens)
        assert np.array_equal(bounded[0], full[0])
        for got, want in zip(bounded, full):
            assert len(got) >= min(len(want), max_tokens + 1)
            assert np.array_equal(got[:max_tokens + 1], want[:max_tokens + 1])
        assert all(len(ids) <= max(max_tokens + WORD_TAIL, len(want)) for ids, want in zip(bounded, full))
