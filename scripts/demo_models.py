"""Seeded demo checkpoints in PaddleNLP's format, built from a config.

There is no model hub here, so the demo models have the real models' shapes
and random weights from a fixed seed; they are saved with save_pretrained so
the harness reads them exactly as it reads a user's fine-tuned checkpoint.
"""
from __future__ import annotations

import os

# ernie-3.0-medium-zh's shape.
ERNIE_MEDIUM = dict(vocab_size=40000, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=2048, type_vocab_size=4,
                    hidden_act="gelu", pad_token_id=0)
LABELS = {0: "negative", 1: "positive"}


def save_classifier(model_dir: str, vocab_path: str, seed: int = 0, **shape) -> None:
    import paddle
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer

    config = ErnieConfig(**{**ERNIE_MEDIUM, **shape}, num_labels=len(LABELS),
                         id2label={str(k): v for k, v in LABELS.items()},
                         label2id={v: k for k, v in LABELS.items()})
    paddle.seed(seed)
    model = ErnieForSequenceClassification(config)
    model.eval()
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    ErnieTokenizer(vocab_file=vocab_path).save_pretrained(model_dir)
