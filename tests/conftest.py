"""Shared fixtures: the demo reviews and a demo vocab.txt built from them."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# paddlenlp and huggingface_hub write caches under $HOME at import time.
os.environ.setdefault("PPNLP_HOME", "/tmp/ppnlp")
os.environ.setdefault("HF_HOME", "/tmp/hf")
# Plain `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocess.wordpiece import BACKENDS  # noqa: E402
from scripts.demo_corpus import load_reviews  # noqa: E402
from scripts.demo_vocab import build_vocab, write_vocab  # noqa: E402


@pytest.fixture(scope="session")
def demo_texts() -> list[str]:
    return [review.text for review in load_reviews()]


@pytest.fixture(scope="session")
def demo_vocab_file(tmp_path_factory, demo_texts) -> str:
    """vocab.txt of 40000 entries (ernie-3.0-medium-zh's size) from the demo reviews."""
    path = tmp_path_factory.mktemp("demo_vocab") / "vocab.txt"
    write_vocab(build_vocab(demo_texts, 40000), str(path))
    return str(path)


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                 reason=f"{name} is not installed for this Python"))
    for name in BACKENDS
])
def wordpiece_backend(request) -> str:
    """Each WordPiece engine installed here (fast_tokenizer has wheels for Python 3.10 only)."""
    return request.param
