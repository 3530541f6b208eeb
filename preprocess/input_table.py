"""Read a test file (csv, tsv or jsonl) and validate it before any model work.

Every problem is reported as an InputError naming the file, the row and the
field, because a competitor fixing a 50k-row file needs to know where to look.
Row numbers are 1-based data rows (the csv/tsv header is not counted); byte
problems, found before parsing, are reported by line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

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


# Rows parsed, validated and handed on at a time: a large file is never
# held whole (text, frame and row lists are per chunk), only its ids.
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class InputChunk:
    first_row: int  # 0-based index of this chunk's first row in the file
    ids: list[str]
    texts: list[str]
    pairs: list[str] | None

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, rows: int) -> list["InputChunk"]:
        """This chunk as two: its first `rows` rows, then the rest."""
        pairs = self.pairs
        return [InputChunk(self.first_row, self.ids[:rows], self.texts[:rows], None if pairs is None else pairs[:rows]),
                InputChunk(self.first_row + rows, self.ids[rows:], self.texts[rows:],
                           None if pairs is None else pairs[rows:])]


def read_input_table(path: str, columns: ColumnNames = ColumnNames()) -> InputTable:
    """The whole file at once (for scripts and small inputs)."""
    ids, texts, pairs = [], [], [] if columns.pair else None
    for chunk in read_input_chunks(path, columns):
        ids += chunk.ids
        texts += chunk.texts
        if pairs is not None:
            pairs += chunk.pairs
    return InputTable(path=os.fspath(path), ids=ids, texts=texts, pairs=pairs)


def read_input_chunks(path: str, columns: ColumnNames = ColumnNames(),
                      chunk_rows: int = CHUNK_ROWS) -> Iterator[InputChunk]:
    """The file's rows, validated, `chunk_rows` at a time. Ids are checked
    for duplicates across the whole file; an empty file raises."""
    fmt = input_format(path)
    wanted = [columns.id, columns.text] + ([columns.pair] if columns.pair else [])
    ids_seen = IdRegistry(path, columns.id)
    first_row = 0
    for frame in _frames(path, fmt, chunk_rows):
        if first_row == 0:
            missing = [name for name in wanted if name not in frame.columns]
            if missing:
                raise InputError(
                    path,
                    f"missing column(s) {missing}; the file has {list(map(str, frame.columns))}. "
                    "Name the right ones with --id-column/--text-column/--pair-column.",
                )
        # A jsonl chunk whose records all lack a field has no such column:
        # its rows then fail as missing values, as in any other chunk.
        frame = frame.reindex(columns=wanted)
        ids = ids_seen.add(frame[columns.id].tolist(), first_row)
        texts = _validated_texts(path, columns.text, frame[columns.text].tolist(), first_row)
        pairs = _validated_texts(path, columns.pair, frame[columns.pair].tolist(), first_row) if columns.pair else None
        yield InputChunk(first_row, ids, texts, pairs)
        first_row += len(ids)
    if first_row == 0:
        raise InputError(path, "the file has no data rows")


def _frames(path: str, fmt: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of at most chunk_rows rows, every value as read."""
    try:
        try:
            if fmt == "jsonl":
                yield from _jsonl_frames(path, chunk_rows)
                return
            # Everything stays a string: no NaN for empty cells, no "NA" -> NaN,
            # no ids turned into floats.
            with pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                             na_filter=False, encoding="utf-8-sig", chunksize=chunk_rows) as reader:
                for frame in reader:
                    yield frame
        except UnicodeDecodeError:
            _decode_strictly(path, fmt)  # finds and names the offending line
            raise
    except OSError as err:
        raise InputError(path, f"cannot read the file ({err.strerror})") from None
    except pd.errors.ParserError as err:
        raise InputError(path, f"cannot parse as {fmt}: {err}") from None
    except pd.errors.EmptyDataError:
        raise InputError(path, "the file is empty") from None


def _jsonl_frames(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # Values stay the Python objects json made: pandas 3 would otherwise store
    # strings in Arrow, which refuses a lone surrogate ("\ud800" is valid
    # JSON) that the tokenizer takes like any other character.
    with open(path, encoding="utf-8-sig") as lines:
        records = []
        for _, record in jsonl_records(path, lines):
            records.append(record)
            if len(records) == chunk_rows:
                yield pd.DataFrame(records, dtype=object)
                records = []
        if records:
            yield pd.DataFrame(records, dtype=object)


def _decode_strictly(path: str, fmt: str) -> None:
    """Raise InputError at the first bytes of `path` that are not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        raw.decode("utf-8-sig")
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


def jsonl_records(path: str, lines: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSON lines read from `path`."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"not valid JSON ({err.msg})", line=line_number) from None
        if not isinstance(record, dict):
            raise InputError(path, "each line must be a JSON object", line=line_number)
        yield line_number, record


class IdRegistry:
    """Every id seen so far in one file, to refuse a duplicate wherever it is."""

    def __init__(self, path: str, field: str):
        self.path, self.field = path, field
        self._first_row_of: dict[str, int] = {}

    def add(self, values: list, first_row: int) -> list[str]:
        ids: list[str] = []
        for row, value in enumerate(values, start=first_row + 1):
            if isinstance(value, bool) or not isinstance(value, (str, int)) or _is_missing(value):
                raise InputError(self.path, f"id must be a string or an integer, got {value!r}", row=row,
                                 field=self.field)
            key = str(value).strip()
            if not key:
                raise InputError(self.path, "id is empty", row=row, field=self.field)
            if key in self._first_row_of:
                raise InputError(self.path, f"duplicate id {key!r} (first seen in row {self._first_row_of[key]})",
                                 row=row, field=self.field)
            self._first_row_of[key] = row
            ids.append(key)
        return ids


def _validated_texts(path: str, field: str, values: list, first_row: int = 0) -> list[str]:
    for row, value in enumerate(values, start=first_row + 1):
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
