"""Tiny seeded checkpoints and input files for tests (seconds, not minutes)."""
from __future__ import annotations

import os

import pandas as pd

from scripts.demo_corpus import load_reviews
from scripts.demo_vocab import build_vocab, write_vocab

# Sizes over ernie-3.0-medium-zh's configuration (scripts/demo_models.py's
# ERNIE_MEDIUM): task-type embeddings and all.
TINY_ERNIE = dict(vocab_size=6000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=256)


def review_texts(count: int, start: int = 0) -> list[str]:
    return [r.text for r in load_reviews()[start:start + count]]


def tiny_vocab(folder: str, size: int = TINY_ERNIE["vocab_size"]) -> str:
    path = os.path.join(folder, f"vocab_{size}.txt")
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        write_vocab(build_vocab(review_texts(3000), size), path)
    return path


def tiny_classifier(folder: str, seed: int = 0, use_task_id: bool = True) -> str:
    """A 2-layer ERNIE 3.0 classifier saved like a fine-tuned checkpoint
    (without task-type embeddings, as older ERNIE checkpoints are, if asked)."""
    from scripts.demo_models import save_classifier

    model_dir = os.path.join(folder, f"tiny_classifier_{seed}{'' if use_task_id else '_no_task_id'}")
    if not os.path.isfile(os.path.join(model_dir, "model_state.pdparams")):
        save_classifier(model_dir, tiny_vocab(folder), seed=seed, use_task_id=use_task_id, **TINY_ERNIE)
    return model_dir


def write_reviews_csv(path: str, texts: list[str]) -> str:
    pd.DataFrame({"id": [f"t{i}" for i in range(len(texts))], "text": texts}).to_csv(path, index=False)
    return path


TINY_UNIMO = dict(vocab_size=6000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=256,
                  # With the usual 0.02 a 64-wide random model ignores its input and
                  # every source generates the same text; tests would check little.
                  initializer_range=0.1)


def tiny_generator(folder: str, seed: int = 0) -> str:
    """A 2-layer UNIMO-text model saved like a fine-tuned checkpoint."""
    from scripts.demo_models import save_generator

    model_dir = os.path.join(folder, f"tiny_generator_{seed}")
    if not os.path.isfile(os.path.join(model_dir, "model_state.pdparams")):
        vocab_path = os.path.join(folder, "unimo_vocab.txt")
        write_vocab(build_vocab(review_texts(3000), TINY_UNIMO["vocab_size"]), vocab_path, unimo_format=True)
        save_generator(model_dir, vocab_path, seed=seed, **TINY_UNIMO)
    return model_dir
