"""The PyTorch generation peer (scripts/gpu_torch_generation.py) chooses the
harness's greedy tokens on a tiny UNIMO-text model, on the CPU: its own
decoding loop, and transformers' generate() driving the same model (the
generate() side, when that Python has transformers).

torch is rarely in the project's venv: the peer runs as its own process under
a Python that has it (this one if it can import torch, else $TORCH_PYTHON),
as on the GPU machine; without either the test is skipped.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import pipeline
from scripts import gpu_torch_generation
from tests.tiny_checkpoints import review_texts, tiny_generator, write_reviews_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SEQ_LEN = 64
TORCH_PYTHON = sys.executable if importlib.util.find_spec("torch") else os.environ.get("TORCH_PYTHON")

pytestmark = pytest.mark.skipif(not TORCH_PYTHON, reason="no Python with torch (set TORCH_PYTHON to one)")


def has_transformers() -> bool:
    return bool(TORCH_PYTHON) and subprocess.run([TORCH_PYTHON, "-c", "import transformers"],
                                                 capture_output=True).returncode == 0


SIDES = ["fp32", pytest.param("fp32-generate", marks=pytest.mark.skipif(
    not has_transformers(), reason="the Python with torch has no transformers"))]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("torch_generation"))
    model_dir = tiny_generator(workdir)
    sources = write_reviews_csv(os.path.join(workdir, "sources.csv"), review_texts(11, start=500) + ["好"])
    folder = os.path.join(workdir, "prepared")
    gpu_torch_generation.prepare(folder, sources, model_dir, MAX_SEQ_LEN, 32, None)
    return workdir, model_dir, sources, folder


def harness(workdir, model_dir, sources, name, *options) -> tuple[pd.DataFrame, list[list[int]]]:
    output = os.path.join(workdir, f"{name}.csv")
    assert pipeline.main([sources, model_dir, output, "--quiet", "--max-seq-len", str(MAX_SEQ_LEN), "--cache-dir",
                          os.path.join(workdir, "exports"), "--write-margins", *options]) == 0
    with open(output + ".margins.jsonl", encoding="utf-8") as f:
        ids = [json.loads(line)["generated_ids"] for line in f]
    return pd.read_csv(output, dtype={"id": str}, keep_default_na=False), ids


def torch_peer(folder, out, side, *options) -> pd.DataFrame:
    subprocess.run([TORCH_PYTHON, "-m", "scripts.gpu_torch_generation", "--prepared", folder, "--out", out,
                    "--device", "cpu", "--sides", side, "--warm-passes", "0", *options],
                   cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), check=True, capture_output=True)
    return pd.read_csv(os.path.join(out, f"torch_{side}.csv"), dtype={"id": str, "generated_ids": str},
                       keep_default_na=False)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("min_new_tokens, max_new_tokens", [(10, 10), (2, 12)])
def test_torch_greedy_ids_equal_the_harness(prepared, side, min_new_tokens, max_new_tokens):
    workdir, model_dir, sources, folder = prepared
    lengths = ["--min-new-tokens", str(min_new_tokens), "--max-new-tokens", str(max_new_tokens),
               "--max-batch-rows", "5", "--generate-batch-rows", "4"]
    submission, harness_ids = harness(workdir, model_dir, sources, f"harness_{min_new_tokens}", *lengths[:-2])
    ours = torch_peer(folder, os.path.join(workdir, f"torch_{side}_{min_new_tokens}"), side, *lengths)
    assert ours["id"].tolist() == submission["id"].tolist()
    assert [[int(i) for i in cell.split()] for cell in ours["generated_ids"]] == harness_ids
    assert ours["text"].tolist() == submission["text"].tolist()
    if min_new_tokens < max_new_tokens:  # rows that end early are covered
        assert min(len(ids) for ids in harness_ids) < max_new_tokens
    else:
        assert all(len(ids) == max_new_tokens for ids in harness_ids)
