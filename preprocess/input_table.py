"""Read a test file (csv, tsv or jsonl) and validate it before any model work.

Every problem is reported as an InputError naming the file, the row and the
field, because a competitor fixing a 50k-row file needs to know where to look.
Row numbers are 1-based data rows (the csv/tsv header is not counted); byte
problems, found before parsing, are reported by line.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Iterator

import pandas as pd

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


class InputError(ValueError):
    """A problem in the user's input file, with where it is and what to do."""

    def __init__(self, path: str, problem: str, row: int | None = None, field: str | None = None,
                 line: int | None = None):
        where = [os.fspath(path)]
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(", ".join(where) + f": {problem}")
        self.path, self.row, self.field, self.line = path, row, field, line


@dataclass(frozen=True)
class ColumnNames:
    id: str = "id"
    text: str = "text"
    pair: str | None = None  # second text (classification) or title/context (generation)


@dataclass(frozen=True)
class InputTable:
    path: str
    ids: list[str]
    texts: list[str]
    pairs: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)


def input_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InputError(path, f"unknown file type '{ext}'; expected one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def read_input_table(path: str, columns: ColumnNames = ColumnNames()) -> InputTable:
    fmt = input_format(path)
    text = _decode_strictly(path, fmt)
    frame = _parse(path, fmt, text)
    if len(frame) == 0:
        raise InputError(path, "the file has no data rows")
    wanted = [columns.id, columns.text] + ([columns.pair] if columns.pair else [])
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {missing}; the file has {list(map(str, frame.columns))}. "
            "Name the right ones with --id-column/--text-column/--pair-column.",
        )
    ids = _validated_ids(path, columns.id, frame[columns.id].tolist())
    texts = _validated_texts(path, columns.text, frame[columns.text].tolist())
    pairs = _validated_texts(path, columns.pair, frame[columns.pair].tolist()) if columns.pair else None
    return InputTable(path=os.fspath(path), ids=ids, texts=texts, pairs=pairs)


def _decode_strictly(path: str, fmt: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise InputError(path, f"cannot read the file ({err.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw.count(b"\n", 0, err.start) + 1
        field = None
        if fmt in ("csv", "tsv"):
            header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
            sep = "," if fmt == "csv" else "\t"
            names = header.split(sep)
            index = raw[line_start:err.start].count(sep.encode())
            field = names[index] if index < len(names) else None
        raise InputError(
            path,
            f"bytes {raw[err.start:err.end]!r} are not valid UTF-8; re-save the file as UTF-8",
            line=line, field=field,
        ) from None


def _parse(path: str, fmt: str, text: str) -> pd.DataFrame:
    try:
        if fmt == "jsonl":
            return _parse_jsonl(path, text)
        # Everything stays a string: no NaN for empty cells, no "NA" -> NaN, no
        # ids turned into floats.
        return pd.read_csv(io.StringIO(text), sep="," if fmt == "csv" else "\t", dtype=str,
                           keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as err:
        raise InputError(path, f"cannot parse as {fmt}: {err}") from None
    except pd.errors.EmptyDataError:
        raise InputError(path, "the file is empty") from None


def _parse_jsonl(path: str, text: str) -> pd.DataFrame:
    return pd.DataFrame.from_records([record for _, record in jsonl_records(path, text)])


def jsonl_records(path: str, text: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSON-lines `text` read from `path`."""
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"not valid JSON ({err.msg})", line=line_number) from None
        if not isinstance(record, dict):
            raise InputError(path, "each line must be a JSON object", line=line_number)
        yield line_number, record


def _validated_ids(path: str, field: str, values: list) -> list[str]:
    ids: list[str] = []
    first_row_of: dict[str, int] = {}
    for row, value in enumerate(values, start=1):
        if isinstance(value, bool) or not isinstance(value, (str, int)) or _is_missing(value):
            raise InputError(path, f"id must be a string or an integer, got {value!r}", row=row, field=field)
        key = str(value).strip()
        if not key:
            raise InputError(path, "id is empty", row=row, field=field)
        if key in first_row_of:
            raise InputError(path, f"duplicate id {key!r} (first seen in row {first_row_of[key]})",
                             row=row, field=field)
        first_row_of[key] = row
        ids.append(key)
    return ids


def _validated_texts(path: str, field: str, values: list) -> list[str]:
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str):
            raise InputError(path, f"text must be a string, got {_describe(value)}", row=row, field=field)
        if not value.strip():
            raise InputError(path, "text is empty", row=row, field=field)
    return values


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _describe(value) -> str:
    if _is_missing(value):
        return "nothing (missing value)"
    return f"{type(value).__name__} {value!r}"
