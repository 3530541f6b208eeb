"""Reading and validating test files: every bad input names file, row, field."""
from __future__ import annotations

import json

import pytest

from preprocess.input_table import ColumnNames, InputError, read_input_chunks, read_input_table


def write(tmp_path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def jsonl(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


def test_reads_the_three_formats_alike(tmp_path):
    rows = [{"id": "a", "text": "好评，NA"}, {"id": "b", "text": "差评"}]
    paths = [
        write(tmp_path, "in.csv", "id,text\na,\"好评，NA\"\nb,差评\n"),
        write(tmp_path, "in.tsv", "id\ttext\na\t好评，NA\nb\t差评\n"),
        write(tmp_path, "in.jsonl", jsonl(rows)),
    ]
    for path in paths:
        table = read_input_table(path)
        assert table.ids == ["a", "b"]
        # "NA" stays text: pandas must not turn it into a missing value.
        assert table.texts == ["好评，NA", "差评"]
        assert table.pairs is None


def test_numeric_ids_keep_their_spelling_and_pairs_are_read(tmp_path):
    path = write(tmp_path, "in.csv", "qid,q,p\n007,问题一,段落一\n10,问题二,段落二\n")
    table = read_input_table(path, ColumnNames(id="qid", text="q", pair="p"))
    assert table.ids == ["007", "10"]
    assert table.pairs == ["段落一", "段落二"]


def test_jsonl_integer_ids(tmp_path):
    table = read_input_table(write(tmp_path, "in.jsonl", jsonl([{"id": 3, "text": "好"}, {"id": 4, "text": "坏"}])))
    assert table.ids == ["3", "4"]


def test_utf8_bom_is_accepted(tmp_path):
    table = read_input_table(write(tmp_path, "in.csv", "\ufeffid,text\n1,好\n".encode("utf-8")))
    assert table.ids == ["1"]


@pytest.mark.parametrize(
    "name, content, columns, expected",
    [
        ("in.csv", "id,sentence\n1,好\n", ColumnNames(), "missing column(s) ['text']"),
        ("in.csv", "id,text\n1,好\n2,\n", ColumnNames(), "row 2, field 'text': text is empty"),
        ("in.csv", "id,text\n1,好\n2,   \n", ColumnNames(), "row 2, field 'text': text is empty"),
        ("in.csv", "id,text\n1,好\n2,坏\n1,中\n", ColumnNames(),
         "row 3, field 'id': duplicate id '1' (first seen in row 1)"),
        ("in.csv", "id,text\n1,好\n,坏\n", ColumnNames(), "row 2, field 'id': id is empty"),
        ("in.csv", "id,text,title\n1,好,\n", ColumnNames(pair="title"), "row 1, field 'title': text is empty"),
        ("in.jsonl", jsonl([{"id": 1, "text": "好"}, {"id": 2, "text": 5}]), ColumnNames(),
         "row 2, field 'text': text must be a string, got int 5"),
        ("in.jsonl", jsonl([{"id": 1, "text": "好"}, {"id": 2, "text": None}]), ColumnNames(),
         "row 2, field 'text': text must be a string, got nothing (missing value)"),
        ("in.jsonl", jsonl([{"id": 1, "text": "好"}, {"id": 2}]), ColumnNames(),
         "row 2, field 'text': text must be a string, got nothing (missing value)"),
        ("in.jsonl", '{"id": 1, "text": "好"}\n{"id": 2, "text": \n', ColumnNames(), "line 2: not valid JSON"),
        ("in.jsonl", '["a", "b"]\n', ColumnNames(), "line 1: each line must be a JSON object"),
        ("in.csv", "", ColumnNames(), "the file is empty"),
        ("in.csv", "id,text\n", ColumnNames(), "the file has no data rows"),
        ("in.txt", "id,text\n1,好\n", ColumnNames(), "unknown file type '.txt'"),
    ],
)
def test_bad_input_names_file_row_and_field(tmp_path, name, content, columns, expected):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as caught:
        read_input_table(path, columns)
    assert str(caught.value).startswith(path)
    assert expected in str(caught.value)


def test_undecodable_bytes_name_line_and_column(tmp_path):
    content = "id,text\n1,好\n2,".encode() + b"\xff\xfe bad" + b"\n3,ok\n"
    path = write(tmp_path, "in.csv", content)
    with pytest.raises(InputError) as caught:
        read_input_table(path)
    message = str(caught.value)
    assert "line 3" in message and "field 'text'" in message and "not valid UTF-8" in message


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the file"):
        read_input_table(str(tmp_path / "nope.csv"))


def test_a_lone_surrogate_in_jsonl_is_read_as_the_text_it_is(tmp_path):
    # Valid JSON, not valid UTF-8 once encoded: the tokenizer takes it like any
    # character, so the reader must not refuse it (pandas 3's Arrow strings would).
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": "bad \\ud800 x"}\n', encoding="utf-8")
    chunks = list(read_input_chunks(str(path)))
    assert [c.ids for c in chunks] == [["1", "2"]]
    assert chunks[0].texts == ["ok", "bad \ud800 x"]
