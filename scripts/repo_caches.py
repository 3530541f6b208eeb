"""Keep PaddleNLP / Hugging Face caches inside the repo, never in $HOME.

run.sh exports the same two variables; entry points run with
`python -m scripts....` call `keep_caches_in_repo()` before paddlenlp is
imported, since paddlenlp creates its home folder at import time.
"""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_ENV = {"PPNLP_HOME": os.path.join(REPO, ".cache", "paddlenlp"),
             "HF_HOME": os.path.join(REPO, ".cache", "huggingface")}


def keep_caches_in_repo() -> None:
    for name, path in CACHE_ENV.items():
        os.environ.setdefault(name, path)
