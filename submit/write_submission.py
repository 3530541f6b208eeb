"""Write a table atomically: a temporary file in the target folder, then a
rename, so a crash or Ctrl-C never leaves a half-written submission."""
from __future__ import annotations

import json
import os
import tempfile

import pandas as pd

from preprocess.input_table import input_format


def write_atomically(path: str, write) -> None:
    """Call write(temporary_path) and move the result onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_table(frame: pd.DataFrame, path: str) -> None:
    fmt = input_format(path)  # same three formats as the input side

    def write(tmp_path: str) -> None:
        if fmt == "jsonl":
            frame.to_json(tmp_path, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(tmp_path, sep="," if fmt == "csv" else "\t", index=False)

    write_atomically(path, write)


def write_json(data: dict, path: str) -> None:
    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")

    write_atomically(path, write)
