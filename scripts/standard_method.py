"""The standard method the harness is measured against, and checked against.

What a competitor writes first with PaddleNLP: load the checkpoint with
from_pretrained, tokenise with the model's own (Python) tokenizer, pad every
row to max_seq_len, run the dygraph model in fixed batches of 32 in one
process. It is the fp32 reference for accuracy checks and the baseline of
scripts/benchmark_classify.py.
"""
from __future__ import annotations

import numpy as np


def classify_standard(model_dir: str, texts: list[str], pairs: list[str] | None = None,
                      max_seq_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """Class probabilities [rows, classes] in input order."""
    import paddle
    from paddlenlp.transformers import ErnieForSequenceClassification, ErnieTokenizer

    tokenizer = ErnieTokenizer.from_pretrained(model_dir)
    model = ErnieForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    probabilities = []
    with paddle.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size],
                                text_pair=pairs[start:start + batch_size] if pairs else None,
                                max_length=max_seq_len, padding="max_length", truncation=True)
            logits = model(paddle.to_tensor(encoded["input_ids"]), paddle.to_tensor(encoded["token_type_ids"]))
            probabilities.append(paddle.nn.functional.softmax(logits, axis=-1).numpy())
    return np.concatenate(probabilities)


def main(argv: list[str] | None = None) -> int:
    """python -m scripts.standard_method INPUT MODEL_DIR OUTPUT [--max-seq-len N]:
    the standard method end to end, writing a submission like the harness's."""
    import argparse
    import json
    import os

    from predictor.classify import class_labels
    from preprocess.input_table import read_input_table
    from submit.submission_frames import classification_frame
    from submit.write_submission import write_table

    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("output")
    parser.add_argument("--max-seq-len", type=int, default=128)
    args = parser.parse_args(argv)
    table = read_input_table(args.input)
    probabilities = classify_standard(args.model_dir, table.texts, table.pairs, args.max_seq_len)
    with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as f:
        labels = class_labels(json.load(f))
    write_table(classification_frame(table.ids, probabilities, labels), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
