"""Dygraph layer -> static inference program, cached on disk.

The cache key covers everything the program depends on (weights content,
kept vocabulary ids, precision, task options, Paddle version and this
export format), so a repeated run on the same data and checkpoint skips
tracing and saving entirely, and any change produces a fresh export.
Exports are written to a temporary folder and renamed into place, so an
interrupted run never leaves a half-written program in the cache.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from typing import Callable

from predictor.engines.paddle_inference import PROGRAM_FILE

# Bump when the exported programs' inputs/outputs change meaning.
EXPORT_FORMAT = 3


def package_version(*distributions: str) -> str:
    """The installed version of the first of `distributions` present, read from
    package metadata: importing paddle only to learn its version would cost a
    warm run about a second."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "absent"


def export_key(parts: dict) -> str:
    keyed = dict(parts, export_format=EXPORT_FORMAT, paddle=package_version("paddlepaddle", "paddlepaddle-gpu"))
    return hashlib.blake2b(json.dumps(keyed, sort_keys=True).encode(), digest_size=12).hexdigest()


COMPLETE_MARKER = "export.json"  # written last: its presence means the export is whole


def is_exported(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, COMPLETE_MARKER))


def save_static(layer, input_specs: list, model_dir: str) -> None:
    """Trace `layer.forward` over `input_specs` and save it under model_dir."""
    import paddle

    layer.eval()
    static_layer = paddle.jit.to_static(layer, input_spec=input_specs, full_graph=True)
    paddle.jit.save(static_layer, os.path.join(model_dir, os.path.splitext(PROGRAM_FILE)[0]))


def cached_export(cache_dir: str, key: str, export_into: Callable[[str], None]) -> tuple[str, bool]:
    """The folder of the export for `key`, running `export_into(folder)` only
    on a cache miss. Returns (folder, was_cached)."""
    final_dir = os.path.join(cache_dir, key)
    if is_exported(final_dir):
        return final_dir, True
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir)
    try:
        export_into(staging)
        with open(os.path.join(staging, COMPLETE_MARKER), "w", encoding="utf-8") as f:
            json.dump({"key": key}, f)
        if is_exported(final_dir):  # a concurrent run finished the same export first: use it, never delete it
            return final_dir, False
        if os.path.isdir(final_dir):  # a broken leftover from an older interrupted run
            shutil.rmtree(final_dir, ignore_errors=True)
        try:
            os.replace(staging, final_dir)
        except OSError:
            if not is_exported(final_dir):  # not a concurrent run's complete export: a real failure
                raise
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return final_dir, False
