"""A large input in chunks: rows read, validated and tokenised a chunk at a
time keep their global row numbers, ids and order."""
from __future__ import annotations

import os

import numpy as np
import pytest

from preprocess.encoded_chunks import EncodedChunks, ScratchSpaceError
from preprocess.encoded_rows import EncodedRows
from preprocess.input_table import ColumnNames, InputError, read_input_chunks


def encoded_rows(lengths: list[int], seed: int) -> EncodedRows:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(0, 50, size=n) for n in lengths]
    return EncodedRows.from_rows(ids, [np.arange(n) % 2 for n in lengths], [n > 5 for n in lengths])


def test_chunks_keep_every_row_and_gather_picks_rows_across_them(tmp_path):
    parts = [encoded_rows([3, 7, 2], 0), encoded_rows([4, 1], 1), encoded_rows([6, 6, 2, 9], 2)]
    whole = EncodedRows.concat(parts)
    chunked = EncodedChunks(str(tmp_path), vocab_size=50)
    for part in parts:
        chunked.append(part)
    assert len(chunked) == 9 and chunked.chunk_count == 3 and len(os.listdir(tmp_path)) == 3
    assert [first for first, _ in chunked.chunks()] == [0, 3, 5]
    back = EncodedRows.concat([rows for _, rows in chunked.chunks()])
    for name in ("token_ids", "token_type_ids", "offsets", "truncated"):
        assert np.array_equal(getattr(back, name), getattr(whole, name))
    assert np.array_equal(chunked.lengths, whole.lengths) and chunked.tokens == int(whole.lengths.sum())
    assert chunked.truncated_rows == 4
    assert np.array_equal(chunked.used_ids(), np.unique(whole.token_ids))
    picked = chunked.gather(np.array([1, 4, 5, 8]))
    for out_row, row in enumerate([1, 4, 5, 8]):
        assert np.array_equal(picked.row_ids(out_row), whole.row_ids(row))
    with pytest.raises(ValueError):
        chunked.gather(np.array([4, 1]))


def test_one_chunk_stays_in_memory_and_the_digest_ignores_chunking(tmp_path):
    parts = [encoded_rows([3, 7, 2], 0), encoded_rows([4, 1], 1)]
    alone = EncodedChunks(str(tmp_path / "one"), vocab_size=50)  # the folder is never made: no disk
    alone.append(EncodedRows.concat(parts))
    assert alone.chunk_count == 1 and not os.path.exists(tmp_path / "one")
    os.makedirs(tmp_path / "two")
    chunked = EncodedChunks(str(tmp_path / "two"), vocab_size=50)
    for part in parts:
        chunked.append(part)
    assert chunked.digest() == alone.digest()
    other = EncodedChunks(str(tmp_path / "one"), vocab_size=50)
    other.append(encoded_rows([3, 7, 2, 4, 1], 5))
    assert other.digest() != alone.digest()


def test_a_full_scratch_folder_is_a_clear_error(tmp_path):
    chunked = EncodedChunks(str(tmp_path / "missing"), vocab_size=50)
    chunked.append(encoded_rows([3], 0))
    with pytest.raises(ScratchSpaceError, match="cannot keep the tokenised input in .*TMPDIR"):
        chunked.append(encoded_rows([3], 1))


def test_input_chunks_number_rows_across_the_whole_file(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,text\n" + "".join(f"{i},文本{i}\n" for i in range(7)), encoding="utf-8")
    chunks = list(read_input_chunks(str(path), ColumnNames(), chunk_rows=3))
    assert [c.first_row for c in chunks] == [0, 3, 6] and [len(c) for c in chunks] == [3, 3, 1]
    assert sum((c.ids for c in chunks), []) == [str(i) for i in range(7)]
    path.write_text("id,text\n1,好\n2,坏\n3,中\n4,\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 4, field 'text': text is empty"):
        list(read_input_chunks(str(path), ColumnNames(), chunk_rows=2))
    path.write_text("id,text\n1,好\n2,坏\n3,中\n1,又\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 4, field 'id': duplicate id '1' \(first seen in row 1\)"):
        list(read_input_chunks(str(path), ColumnNames(), chunk_rows=2))


def test_jsonl_chunks_and_a_field_missing_from_a_whole_chunk(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "text": "好"}\n{"id": 2, "text": "坏"}\n{"id": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match="row 3, field 'text': text must be a string, got nothing"):
        list(read_input_chunks(str(path), ColumnNames(), chunk_rows=2))
