"""Sequence classification (ERNIE 3.0): export and batch runner.

The exported program takes right-padded token ids and token types and returns
class probabilities. The attention mask is derived from [PAD] inside the
network (PaddleNLP's ErnieModel does this from config.pad_token_id), so a
pruned model only needs its pad id remapped.
"""
from __future__ import annotations

import numpy as np

from predictor.checkpoint import Checkpoint
from predictor.engine import Engine, EngineOptions
from predictor.export import save_static
from predictor.pruning import PrunedVocab, prune_rows

WORD_EMBEDDINGS = "ernie.embeddings.word_embeddings.weight"
INPUT_NAMES = ("input_ids", "token_type_ids")


def class_labels(config: dict) -> list[str]:
    id2label = config.get("id2label")
    if id2label:
        return [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label))]
    return [str(i) for i in range(int(config.get("num_labels", 2)))]


def build_classifier(checkpoint: Checkpoint, vocab: PrunedVocab):
    """The dygraph ErnieForSequenceClassification with the pruned table."""
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification

    config = ErnieConfig.from_dict(dict(checkpoint.config))
    pad_id = int(config.pad_token_id or 0)
    config.vocab_size = vocab.size
    config.pad_token_id = int(vocab.old_to_new[pad_id])
    config.num_labels = len(class_labels(checkpoint.config))
    weights = prune_rows(checkpoint.load_weights(), [WORD_EMBEDDINGS], vocab)
    return checkpoint.build_model(ErnieForSequenceClassification, config, weights)


def export_classifier(checkpoint: Checkpoint, vocab: PrunedVocab, model_dir: str) -> None:
    import paddle

    class ProbabilitiesOf(paddle.nn.Layer):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids, token_type_ids):
            logits = self.classifier(input_ids=input_ids, token_type_ids=token_type_ids)
            return paddle.nn.functional.softmax(logits, axis=-1)

    specs = [paddle.static.InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    save_static(ProbabilitiesOf(build_classifier(checkpoint, vocab)), specs, model_dir)


class ClassifyRunner:
    """Runs padded batches through the exported classifier in one process."""

    def __init__(self, model_dir: str, options: EngineOptions):
        self.engine = Engine(model_dir, options)

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        (probabilities,) = self.engine.run(batch)
        return probabilities
