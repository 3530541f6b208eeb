"""Sequence classification (ERNIE 3.0): export and batch runner.

The exported program takes right-padded token ids and token types and returns
class probabilities. It is a thin forward over the checkpoint's own
ErnieForSequenceClassification parameters, held in paddle.nn layers (as
predictor/generate/unimo_programs.py does for generation), op for op PaddleNLP's
embeddings and post-LayerNorm encoder, with two
differences that change no result beyond fp32 rounding:

- The last layer runs its queries, attention output and feed-forward for the
  first ([CLS]) position only: the pooler reads nothing else, and every
  position's keys and values are computed before that cut. On ERNIE 3.0
  medium (6 layers) that is about 1/7 of the encoder's work.
- Attention is written in the form ONNX Runtime's transformer optimizer
  recognises and fuses into one Attention op: a 0/1 mask from [PAD],
  `(1 - mask) * -10000` added to `q.k / sqrt(d)`. PaddleNLP adds
  `(id == pad) * -1e4` to `(q / sqrt(d)).k`: the same values.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from predictor.checkpoint import Checkpoint
from predictor.engines.choice import open_engine
from predictor.engines.options import EngineOptions, in_halves_when_out_of_memory
from predictor.conversions.export_cache import save_static
from predictor.pruning import PrunedVocab, prune_rows

WORD_EMBEDDINGS = "ernie.embeddings.word_embeddings.weight"
POSITION_EMBEDDINGS = "ernie.embeddings.position_embeddings.weight"
TASK_TYPE_EMBEDDINGS = "ernie.embeddings.task_type_embeddings.weight"
INPUT_NAMES = ("input_ids", "token_type_ids")
MASKED = -10000.0  # ONNX Runtime's Attention fusion matches this mask constant
# PaddleNLP's ErniePretrainedModel sets every LayerNorm's epsilon to this when
# it builds the model, whatever config.json's layer_norm_eps says.
LAYER_NORM_EPSILON = 1e-12
# PaddleNLP's ErnieConfig defaults, for what a config.json leaves out.
ERNIE_CONFIG_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                             hidden_act="gelu", max_position_embeddings=512, type_vocab_size=16,
                             task_type_vocab_size=3, use_task_id=False, task_id=0, pad_token_id=0)


def class_labels(config: dict) -> list[str]:
    id2label = config.get("id2label")
    if id2label:
        return [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label))]
    return [str(i) for i in range(int(config.get("num_labels", 2)))]


def build_classifier(checkpoint: Checkpoint, vocab: PrunedVocab, fold_task_type: bool = True):
    """The checkpoint's classifier parameters, with the pruned table and, with
    `fold_task_type`, the task-type embedding folded into the positions'."""
    pad_id = int(checkpoint.config.get("pad_token_id") or 0)
    config = {**ERNIE_CONFIG_DEFAULTS, **checkpoint.config, "vocab_size": vocab.size,
              "pad_token_id": int(vocab.old_to_new[pad_id]), "num_labels": len(class_labels(checkpoint.config))}
    weights = prune_rows(checkpoint.load_weights(), [WORD_EMBEDDINGS], vocab)
    if fold_task_type and config["use_task_id"]:
        config, weights = task_type_folded(config, weights)
    return checkpoint.build_model(ernie_classifier_parameters, config, weights)


def task_type_folded(config: dict, weights: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, weights) without the task-type embedding: PaddleNLP adds the
    row of `task_id` to every token, so that row is added to every position's
    row instead. Besides a lookup and an add per token, this lets ONNX
    Runtime fuse the embeddings into one EmbedLayerNormalization (it does not
    with a fourth lookup), which the INT8 first-token split and the fused
    graph's speed rely on."""
    task_row = weights[TASK_TYPE_EMBEDDINGS][int(config["task_id"] or 0)]
    folded = {name: table for name, table in weights.items() if name != TASK_TYPE_EMBEDDINGS}
    folded[POSITION_EMBEDDINGS] = weights[POSITION_EMBEDDINGS] + task_row
    return {**config, "use_task_id": False}, folded


def ernie_classifier_parameters(config: dict):
    """A paddle.nn.Layer holding ErnieForSequenceClassification's parameters
    under PaddleNLP's names (ernie.embeddings.*, ernie.encoder.layers.N.*,
    ernie.pooler.dense, classifier), built from paddle.nn alone: importing
    paddlenlp costs a cold export about 3 s, for layers that are these very
    paddle.nn classes, built as PaddleNLP's ErnieModel builds them.
    `config` is the checkpoint's config.json over ERNIE_CONFIG_DEFAULTS
    (vocab_size and pad_token_id as kept, num_labels set)."""
    import types

    import paddle
    from paddle import nn

    hidden = int(config["hidden_size"])

    class Embeddings(nn.Layer):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(int(config["vocab_size"]), hidden,
                                                padding_idx=int(config["pad_token_id"]))
            self.position_embeddings = nn.Embedding(int(config["max_position_embeddings"]), hidden)
            if int(config["type_vocab_size"]) > 0:
                self.token_type_embeddings = nn.Embedding(int(config["type_vocab_size"]), hidden)
            if config["use_task_id"]:
                self.task_type_embeddings = nn.Embedding(int(config["task_type_vocab_size"]), hidden)
            self.layer_norm = nn.LayerNorm(hidden, epsilon=LAYER_NORM_EPSILON)

    class Pooler(nn.Layer):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, hidden)

        def forward(self, hidden_states):  # PaddleNLP's ErniePooler: [CLS] -> dense -> tanh
            return paddle.tanh(self.dense(hidden_states[:, 0]))

    class Ernie(nn.Layer):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = nn.Layer()
            self.encoder.layers = nn.LayerList([
                nn.TransformerEncoderLayer(hidden, int(config["num_attention_heads"]), int(config["intermediate_size"]),
                                           dropout=0.0, activation=config["hidden_act"],
                                           attn_dropout=0.0, act_dropout=0.0, normalize_before=False,
                                           layer_norm_eps=LAYER_NORM_EPSILON)
                for _ in range(int(config["num_hidden_layers"]))])
            self.pooler = Pooler()

    class Classifier(nn.Layer):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(**config)
            self.ernie = Ernie()
            self.classifier = nn.Linear(hidden, int(config["num_labels"]))

    return Classifier()


def probabilities_layer(classifier):
    """ids, types -> class probabilities, over `classifier`'s parameters."""
    import paddle
    import paddle.nn.functional as F

    ernie = classifier.ernie
    config = classifier.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads

    class Probabilities(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.classifier = classifier

        def split_heads(self, x, projection):  # [B, S, hidden] -> [B, H, S, D]
            return paddle.transpose(paddle.reshape(projection(x), [0, 0, heads, head_dim]), [0, 2, 1, 3])

        def embed(self, input_ids, token_type_ids):
            """PaddleNLP's ErnieEmbeddings: word + position (+ token type) (+ task type), normed."""
            e = ernie.embeddings
            ones = paddle.ones_like(input_ids)
            x = e.word_embeddings(input_ids) + e.position_embeddings(paddle.cumsum(ones, axis=1) - ones)
            if hasattr(e, "token_type_embeddings"):
                x = x + e.token_type_embeddings(token_type_ids)
            if hasattr(e, "task_type_embeddings"):
                x = x + e.task_type_embeddings(ones * int(config.task_id or 0))
            return e.layer_norm(x)

        def forward(self, input_ids, token_type_ids):
            real = paddle.cast(input_ids != config.pad_token_id, "float32")  # [B, L]
            # Two single-axis unsqueezes, Sub and Mul: the mask pattern the fusion needs.
            bias = paddle.unsqueeze(paddle.unsqueeze(real, 1), 1)
            bias = paddle.multiply(paddle.subtract(paddle.full([1], 1.0, "float32"), bias),
                                   paddle.full([1], MASKED, "float32"))
            scale = paddle.full([1], float(head_dim) ** 0.5, "float32")
            x = self.embed(input_ids, token_type_ids)
            last = len(ernie.encoder.layers) - 1
            for i, layer in enumerate(ernie.encoder.layers):
                attn = layer.self_attn
                k, v = self.split_heads(x, attn.k_proj), self.split_heads(x, attn.v_proj)
                if i == last:
                    x = x[:, :1, :]
                q = self.split_heads(x, attn.q_proj)
                scores = paddle.divide(paddle.matmul(q, k, transpose_y=True), scale) + bias
                attended = paddle.transpose(paddle.matmul(F.softmax(scores), v), [0, 2, 1, 3])
                x = layer.norm1(x + attn.out_proj(paddle.reshape(attended, [0, 0, heads * head_dim])))
                x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
            logits = self.classifier.classifier(ernie.pooler(x))
            return F.softmax(logits, axis=-1)

    return Probabilities()


def export_classifier(checkpoint: Checkpoint, vocab: PrunedVocab, model_dir: str) -> None:
    import paddle

    specs = [paddle.static.InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    save_static(probabilities_layer(build_classifier(checkpoint, vocab)), specs, model_dir)


@dataclass
class ClassifiedBatch:
    probabilities: np.ndarray  # [rows, classes]
    engine_s: float            # inside the engines (on a GPU: the device busy, copies included)
    splits: int = 0            # halvings after running out of device memory


class ClassifyRunner:
    """Runs batches through the exported classifier in one process: a batch
    flagged `unpadded` through the model's unmasked graph when it has one
    (fp16 on a GPU), a batch flagged `fp32` through the fp32 model of
    `fp32_dir` when one is held beside a low-precision model (rows near a tie,
    re-run once every row is predicted: predictor/classify/low_margin.py). A
    batch that does not fit in the GPU's memory is run in halves (rows are
    independent, so the outputs are the same)."""

    def __init__(self, model_dir: str, options: EngineOptions, fp32_dir: str | None = None):
        from predictor.conversions.fp16 import UNMASKED

        self.engine = open_engine(model_dir, options)
        unmasked = os.path.join(model_dir, UNMASKED)
        self.unmasked = open_engine(unmasked, options) if os.path.isdir(unmasked) else None
        self.fp32 = open_engine(fp32_dir, options) if fp32_dir else None

    def run(self, batch: dict) -> ClassifiedBatch:
        return in_halves_when_out_of_memory(self.run_whole, batch, lambda b: len(b["input_ids"]), halves, merged)

    def run_whole(self, batch: dict) -> ClassifiedBatch:
        started = time.perf_counter()
        if batch.get("fp32") and self.fp32:
            engine = self.fp32
        else:
            engine = self.unmasked if self.unmasked and batch.get("unpadded") else self.engine
        (probabilities,) = engine.run(batch)
        return ClassifiedBatch(probabilities, time.perf_counter() - started)


def merged(first: ClassifiedBatch, second: ClassifiedBatch) -> ClassifiedBatch:
    """Two halves of a batch that was split as one."""
    return ClassifiedBatch(np.concatenate([first.probabilities, second.probabilities]),
                           first.engine_s + second.engine_s, 1 + first.splits + second.splits)


def halves(batch: dict) -> tuple[dict, dict]:
    """The batch's first and second half of rows (its flags kept)."""
    def part(rows: slice) -> dict:
        return {**batch, **{name: value[rows] for name, value in arrays(batch).items()}}

    half = len(batch["input_ids"]) // 2
    return part(slice(None, half)), part(slice(half, None))


def arrays(batch: dict) -> dict[str, np.ndarray]:
    """The batch's per-row arrays (not its flags)."""
    return {name: value for name, value in batch.items() if isinstance(value, np.ndarray)}
