"""Seeded demo checkpoints in PaddleNLP's format, built from a config.

There is no model hub here, so the demo models have the real models' shapes
and random weights from a fixed seed; they are saved with save_pretrained so
the harness reads them exactly as it reads a user's fine-tuned checkpoint.
The demo classifier's head is then fitted (logistic regression on the seeded
encoder's pooled output over labelled reviews), so its labels depend on the
input as a fine-tuned model's do, and accuracy and INT8 agreement mean
something.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# PaddleNLP's own configuration of ernie-3.0-medium-zh (a test checks it
# against the installed paddlenlp's): with task-type embeddings, as every
# ERNIE 3.0 checkpoint has them.
ERNIE_MEDIUM = dict(attention_probs_dropout_prob=0.1, hidden_act="gelu", hidden_dropout_prob=0.1, hidden_size=768,
                    intermediate_size=3072, initializer_range=0.02, max_position_embeddings=2048,
                    num_attention_heads=12, num_hidden_layers=6, task_type_vocab_size=16, type_vocab_size=4,
                    use_task_id=True, vocab_size=40000)
LABELS = {0: "negative", 1: "positive"}


def save_classifier(model_dir: str, vocab_path: str, seed: int = 0,
                    fit_on: Sequence[tuple[str, int]] = (), max_seq_len: int = 128, **shape) -> HeadFit | None:
    """Seeded encoder; with `fit_on` (text, label) pairs the classifier head is
    fitted to them (fit_head), so the labels depend on the input."""
    import paddle
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer

    config = ErnieConfig(**{**ERNIE_MEDIUM, **shape}, num_labels=len(LABELS),
                         id2label={str(k): v for k, v in LABELS.items()},
                         label2id={v: k for k, v in LABELS.items()})
    paddle.seed(seed)
    model = ErnieForSequenceClassification(config)
    model.eval()
    tokenizer = ErnieTokenizer(vocab_file=vocab_path)
    fit = fit_head(model, tokenizer, fit_on, max_seq_len) if fit_on else None
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return fit


@dataclass(frozen=True)
class HeadFit:
    rows: int
    train_accuracy: float
    held_out_accuracy: float  # on the last fifth of `fit_on`, fitted on the rest first


def pooled_features(model, tokenizer, texts: Sequence[str], max_seq_len: int, batch_rows: int = 32) -> np.ndarray:
    """The pooler's output for each text, exactly what the head reads."""
    import paddle

    # Paddle sets OMP_NUM_THREADS=1 at import, so dygraph would use one core:
    # 800 demo reviews took 256 s on 1 thread, 160 s on 2 (2-core Zen 3).
    paddle.base.core.set_num_threads(os.cpu_count() or 1)
    try:
        return _pooled_features(model, tokenizer, texts, max_seq_len, batch_rows)
    finally:
        paddle.base.core.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _pooled_features(model, tokenizer, texts: Sequence[str], max_seq_len: int, batch_rows: int) -> np.ndarray:
    import paddle

    encoded = [tokenizer(text, max_length=max_seq_len, truncation=True)["input_ids"] for text in texts]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")  # less padding per batch
    pad = int(model.config.pad_token_id or 0)
    features = np.zeros((len(texts), model.config.hidden_size), dtype=np.float64)
    with paddle.no_grad():
        for start in range(0, len(order), batch_rows):
            rows = order[start:start + batch_rows]
            width = max(len(encoded[r]) for r in rows)
            ids = np.full((len(rows), width), pad, dtype=np.int64)
            for i, r in enumerate(rows):
                ids[i, :len(encoded[r])] = encoded[r]
            _, pooled = model.ernie(paddle.to_tensor(ids), token_type_ids=paddle.zeros_like(paddle.to_tensor(ids)))
            features[rows] = pooled.numpy()
    return features


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 10.0, steps: int = 25) -> tuple[np.ndarray, float]:
    """Ridge-penalised logistic regression by Newton's method: (w, b) with
    P(y=1) = sigmoid(x @ w + b)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        theta -= np.linalg.solve(hessian, gradient)
    return theta[:-1], float(theta[-1])


def fit_head(model, tokenizer, fit_on: Sequence[tuple[str, int]], max_seq_len: int) -> HeadFit:
    """Fits the two-class head on the pooled output of the seeded encoder
    (fitted_head), so the saved checkpoint is a plain PaddleNLP classifier."""
    import paddle

    texts, labels = [t for t, _ in fit_on], np.array([label for _, label in fit_on], dtype=np.float64)
    weight, bias, fit = fitted_head(pooled_features(model, tokenizer, texts, max_seq_len), labels)
    head = model.classifier
    head.weight.set_value(paddle.to_tensor(weight))
    head.bias.set_value(paddle.to_tensor(bias))
    return fit


def fitted_head(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, HeadFit]:
    """(weight [hidden, 2], bias [2], fit) of a two-class head over pooled
    features (the GPU benchmark fits its graphs' heads with this too).

    Features are standardised for the fit, and the scaling is folded back into
    the head's weights.
    """
    labels = np.asarray(labels, dtype=np.float64)
    mean, std = features.mean(0), features.std(0) + 1e-6
    scaled = (features - mean) / std

    def accuracy(w, b, x, y):
        return float(np.mean(((x @ w + b) > 0) == (y > 0.5)))

    split = len(labels) * 4 // 5
    w, b = logistic_regression(scaled[:split], labels[:split])
    held_out = accuracy(w, b, scaled[split:], labels[split:])
    w, b = logistic_regression(scaled, labels)
    # softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)] for z = x.w + b.
    weight = (w / std) / 2
    bias = (b - float(mean @ (w / std))) / 2
    return (np.stack([-weight, weight], axis=1).astype("float32"), np.array([-bias, bias], dtype="float32"),
            HeadFit(len(labels), accuracy(w, b, scaled, labels), held_out))


# unimo-text-1.0's shape; the special ids are the demo vocab's ([MASK] ends a
# generation, as in unimo-text).
UNIMO_TEXT = dict(vocab_size=18000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="relu", max_position_embeddings=512, type_vocab_size=4,
                  normalize_before=False, pad_token_id=0, bos_token_id=1, eos_token_id=3, mask_token_id=3,
                  unk_token_id=4)
# A random LM head almost never picks [MASK]; raising its bias lets some
# generations end early, as a trained model's do, so the demo exercises
# finished rows leaving the batch.
EOS_BIAS_BOOST = 1.25


def save_generator(model_dir: str, vocab_path: str, seed: int = 0, eos_bias_boost: float = EOS_BIAS_BOOST,
                   **shape) -> None:
    """vocab_path must be in UNIMO's `token<TAB>id` format."""
    import paddle
    from paddlenlp.transformers import UNIMOConfig, UNIMOLMHeadModel, UNIMOTokenizer

    config = UNIMOConfig(**{**UNIMO_TEXT, **shape})
    paddle.seed(seed)
    model = UNIMOLMHeadModel(config)
    model.eval()
    with paddle.no_grad():
        # decoder_bias starts at zero; random values make the bias path matter.
        bias = paddle.normal(0.0, 0.02, model.lm_head.decoder_bias.shape)
        bias[config.eos_token_id] += eos_bias_boost
        model.lm_head.decoder_bias.set_value(bias)
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir)
    UNIMOTokenizer(vocab_path).save_pretrained(model_dir)
