"""Generation's export: UNIMOLMHeadModel's parameters with the pruned
vocabulary -> the two cached-decoding programs, and the eager layer's
logits on a fixed probe beside them (predictor/generate/probe.py).
"""
from __future__ import annotations

from predictor.checkpoint import Checkpoint
from predictor.generate.probe import write_probe_reference
from predictor.generate.unimo_programs import export_unimo_programs, unimo_parameters
from predictor.pruning import PrunedVocab, prune_rows

WORD_EMBEDDINGS = "unimo.embeddings.word_embeddings.weight"
# save_pretrained also stores the tied LM-head weight under its own name.
VOCABULARY_ROWS = (WORD_EMBEDDINGS, "lm_head.decoder_weight", "lm_head.decoder_bias")

def build_generator(checkpoint: Checkpoint, vocab: PrunedVocab):
    """UNIMOLMHeadModel's parameters in dygraph with the pruned table; the LM
    head is tied to the word embeddings, so it scores only the kept ids."""
    weights = checkpoint.load_weights()
    weights = prune_rows(weights, [name for name in VOCABULARY_ROWS if name in weights], vocab)
    return checkpoint.build_model(unimo_parameters, dict(checkpoint.config, vocab_size=vocab.size), weights)


def export_generator(checkpoint: Checkpoint, vocab: PrunedVocab, model_dir: str) -> None:
    """The two decoding programs, and the eager thin layer's logits on a small
    probe beside them (what a conversion to another engine is checked against)."""
    thin = export_unimo_programs(build_generator(checkpoint, vocab), model_dir)
    write_probe_reference(thin, model_dir, vocab.size)
