"""Check a submission offline before you upload it.

    python -m scripts.check_accuracy SUBMISSION [--gold GOLD] [--reference REF] [thresholds]

Classification submissions (id, label, prob_*) are scored against gold labels
(accuracy, macro-F1) and against a reference submission (label agreement, max
probability difference). Generation submissions (id, text) are scored against
a reference submission or gold targets (exact match, token agreement,
BLEU-4). Exits 1 when a threshold you pass is not met, 2 on unusable files.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from preprocess.input_table import InputError, input_format
from submit.accuracy import (SubmissionMismatch, aligned, classification_agreement, classification_metrics,
                             generation_metrics)

# metric -> (threshold flag, passes(value, threshold))
THRESHOLDS = {
    "accuracy": ("min_accuracy", lambda v, t: v >= t),
    "macro_f1": ("min_macro_f1", lambda v, t: v >= t),
    "label_agreement": ("min_agreement", lambda v, t: v >= t),
    "max_prob_diff": ("max_prob_diff", lambda v, t: v <= t),
    "exact_match": ("min_exact_match", lambda v, t: v >= t),
    "token_agreement": ("min_token_agreement", lambda v, t: v >= t),
    "bleu4": ("min_bleu4", lambda v, t: v >= t),
}


def read_table(path: str) -> pd.DataFrame:
    fmt = input_format(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False).astype({"id": str})
    return pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype={"id": str}, keep_default_na=False)


def score(submission: pd.DataFrame, gold: pd.DataFrame | None, reference: pd.DataFrame | None,
          gold_column: str | None) -> dict:
    generated = "text" in submission.columns and "label" not in submission.columns
    results: dict = {"task": "generate" if generated else "classify", "rows": len(submission)}
    if gold is not None:
        gold = aligned(submission, gold, "gold file")
        column = gold_column or ("target" if generated else "label")
        if column not in gold.columns:
            raise SubmissionMismatch(f"gold file has no '{column}' column (columns: {list(gold.columns)})")
        if generated:
            results["vs_gold"] = generation_metrics(submission["text"].tolist(), gold[column].tolist())
        else:
            results["vs_gold"] = classification_metrics(submission["label"].tolist(), gold[column].tolist())
    if reference is not None:
        reference = aligned(submission, reference, "reference submission")
        if generated:
            results["vs_reference"] = generation_metrics(submission["text"].tolist(), reference["text"].tolist())
        else:
            results["vs_reference"] = classification_agreement(submission, reference)
    return results


def failed_thresholds(results: dict, args: argparse.Namespace) -> list[str]:
    failures = []
    for section in ("vs_gold", "vs_reference"):
        for metric, value in results.get(section, {}).items():
            flag, passes = THRESHOLDS[metric]
            threshold = getattr(args, flag)
            if threshold is not None and not passes(value, threshold):
                failures.append(f"{section}.{metric} = {value:.6g} fails --{flag.replace('_', '-')} {threshold}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission")
    parser.add_argument("--gold", help="file with id and the gold label (classification) or target (generation)")
    parser.add_argument("--gold-column", help="gold column name; default label or target")
    parser.add_argument("--reference", help="a reference submission, e.g. the plain fp32 run")
    for flag, _ in THRESHOLDS.values():
        parser.add_argument("--" + flag.replace("_", "-"), type=float, default=None)
    args = parser.parse_args(argv)
    if not args.gold and not args.reference:
        parser.error("give --gold, --reference or both")
    try:
        results = score(read_table(args.submission), read_table(args.gold) if args.gold else None,
                        read_table(args.reference) if args.reference else None, args.gold_column)
    except (SubmissionMismatch, InputError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2))
    failures = failed_thresholds(results, args)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
