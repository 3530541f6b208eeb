"""Length-sorted batching, padding and the in-order merge."""
from __future__ import annotations

import numpy as np
import pytest

from predictor.batching import length_sorted_batches, padding_ratio
from preprocess.encoded_rows import EncodedRows
from submit.merge import MergeError, merge_in_input_order


def test_batches_cover_every_row_once_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 129, size=1000)
    batches = length_sorted_batches(lengths, token_budget=1024)
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(1000))
    for batch in batches:
        assert batch.width == lengths[batch.rows].max()
        assert batch.padded_tokens <= 1024
    # Longest first, so the slowest batches are handed out first.
    assert [b.width for b in batches] == sorted((b.width for b in batches), reverse=True)
    assert padding_ratio(batches, lengths) < 1.05


def test_a_row_longer_than_the_budget_gets_its_own_batch():
    batches = length_sorted_batches(np.array([5, 300, 5]), token_budget=100)
    assert [b.rows.tolist() for b in batches] == [[1], [0, 2]]


def test_max_rows_caps_a_batch():
    batches = length_sorted_batches(np.full(10, 4), token_budget=1000, max_rows=3)
    assert [len(b.rows) for b in batches] == [3, 3, 3, 1]


def test_equal_lengths_keep_input_order():
    batches = length_sorted_batches(np.array([4, 4, 4, 4]), token_budget=8)
    assert [b.rows.tolist() for b in batches] == [[0, 1], [2, 3]]


def test_only_the_rows_asked_for_are_batched():
    lengths = np.array([5, 9, 2, 7, 3])
    batches = length_sorted_batches(lengths, token_budget=14, rows=np.array([0, 2, 3]))
    assert [b.rows.tolist() for b in batches] == [[3, 0], [2]] and [b.width for b in batches] == [7, 2]
    assert length_sorted_batches(lengths, token_budget=14, rows=np.zeros(0, np.int64)) == []


def test_padded_rows_and_flat_layout():
    rows = EncodedRows.from_rows([np.array([1, 5, 2]), np.array([1, 2]), np.array([1, 7, 8, 2])],
                                 [np.zeros(3), np.zeros(2), np.array([0, 0, 1, 1])], [False, False, True])
    assert rows.lengths.tolist() == [3, 2, 4]
    ids, types = rows.padded(np.array([2, 1]), pad_id=0)
    assert ids.tolist() == [[1, 7, 8, 2], [1, 2, 0, 0]]
    assert types.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    both = EncodedRows.concat([rows, rows])
    assert both.row_ids(4).tolist() == [1, 2] and both.truncated.tolist() == [False, False, True] * 2


def test_merge_restores_input_order():
    pieces = [(np.array([2, 0]), ["c", "a"]), (np.array([1]), ["b"])]
    assert merge_in_input_order(3, pieces) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "pieces, message",
    [
        ([(np.array([0, 1]), ["a", "b"])], "1 row(s) got no output, e.g. rows [2]"),
        ([(np.array([0, 1]), ["a", "b"]), (np.array([1, 2]), ["b", "c"])], "rows [1] (0-based) came back more than once"),
        ([(np.array([0, 0, 1, 2]), ["a", "a", "b", "c"])], "rows [0] (0-based) came back more than once"),
        ([(np.array([0, 1, 2]), ["a", "b"])], "returned 2 outputs for 3 rows"),
        ([(np.array([0, 1, 3]), ["a", "b", "d"])], "names row 3 but the input has 3 rows"),
    ],
)
def test_merge_fails_loudly(pieces, message):
    with pytest.raises(MergeError) as caught:
        merge_in_input_order(3, pieces)
    assert message in str(caught.value)
