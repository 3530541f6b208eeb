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
