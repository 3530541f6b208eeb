"""Write a table atomically: a temporary file in the target folder, then a
rename, so a crash or Ctrl-C never leaves a half-written submission."""
from __future__ import annotations

import json
import os
import tempfile

import pandas as pd

from preprocess.input_table import input_format


class OutputError(OSError):
    """The submission (or report) cannot be written: read-only folder, full disk..."""


def new_file_mode() -> int:
    """The mode open() gives a new file under this process's umask (mkstemp's
    0600 would survive the rename and hide the submission from other users)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: str, write) -> None:
    """Call write(temporary_path) and move the result onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        write(tmp_path)
        os.chmod(tmp_path, new_file_mode())
        os.replace(tmp_path, path)
    except BaseException as err:
        if tmp_path and os.path.exists(tmp_path):
            os.remove(tmp_path)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(f"cannot write {path}: {err.strerror or err}; nothing was written") from err
        raise


def write_table(frame: pd.DataFrame, path: str) -> None:
    fmt = input_format(path)  # same three formats as the input side

    def write(tmp_path: str) -> None:
        if fmt == "jsonl":
            frame.to_json(tmp_path, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(tmp_path, sep="," if fmt == "csv" else "\t", index=False)

    write_atomically(path, write)


def write_jsonl(records: list[dict], path: str) -> None:
    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomically(path, write)


def write_json(data: dict, path: str) -> None:
    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")

    write_atomically(path, write)
