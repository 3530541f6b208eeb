"""Check a submission offline before you upload it.

    python -m scripts.check_accuracy SUBMISSION [--gold GOLD] [--reference REF] [--margins MARGINS] [thresholds]

Classification submissions (id, label, prob_*) are scored against gold labels
(accuracy, macro-F1) and against a reference submission (label agreement, max
probability difference). Generation submissions (id, text) are scored against
a reference submission or gold targets (exact match, token agreement,
BLEU-4); with --margins (the run's OUTPUT.margins.jsonl, from --write-margins)
each generated row that differs from the reference is explained: when the
reference has a generated_ids column (the standard method writes one) and the
ids agree, as the same ids with the text rendered differently; else by its
first differing step and the harness's logit gap there, a near-tie or not.
Exits 1 when a threshold you pass is not met, 2 on unusable files.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from preprocess.input_table import InputError, input_format, jsonl_records
from submit.accuracy import (SubmissionMismatch, aligned, classification_agreement, classification_metrics,
                             divergence_report, generated_ids, generation_metrics)

MARGIN_FIELDS = ("id", "tokens", "runner_up", "gap")

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


def read_margins(path: str) -> dict[str, dict]:
    """OUTPUT.margins.jsonl (submit/margins.py) by row id."""
    margins = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line_number, record in jsonl_records(path, text.splitlines()):
        missing = [name for name in MARGIN_FIELDS if name not in record]
        if missing:
            raise InputError(path, f"no {missing} (expected the file --write-margins writes)", line=line_number)
        margins[str(record["id"])] = record
    return margins


def score(submission: pd.DataFrame, gold: pd.DataFrame | None, reference: pd.DataFrame | None,
          gold_column: str | None, margins: dict[str, dict] | None = None) -> dict:
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
            texts, reference_texts = submission["text"].astype(str).tolist(), reference["text"].astype(str).tolist()
            results["vs_reference"] = generation_metrics(texts, reference_texts)
            if margins is not None:
                results["divergence"] = divergence_report(submission["id"].tolist(), texts, reference_texts, margins,
                                                          generated_ids(reference))
        else:
            results["vs_reference"] = classification_agreement(submission, reference)
    if margins is not None and "divergence" not in results:
        raise SubmissionMismatch("--margins explains a generation submission's differences from --reference; "
                                 "this submission has labels")
    return results


def divergence_summary(report: dict) -> str:
    def shown(gap: float | None) -> str:
        return "none" if gap is None else f"{gap:.3g}"

    line = f"{report['differing_rows']} row(s) differ from the reference: "
    if report["same_ids"]:
        tokens = sorted({str(row["token"]) for row in report["rows"] if row.get("same_ids")})
        line += (f"{report['same_ids']} with the same ids, text rendered differently (at token(s) "
                 f"{', '.join(tokens[:5])}); ")
    line += (f"{report['near_ties']} fp32 near-tie(s) (gap < {report['near_tie_gap']:g}), "
             f"largest gap {shown(report['largest_gap'])}")
    if report["reference_not_runner_up"]:
        line += (f"; {report['reference_not_runner_up']} where the reference's token was not the harness's "
                 f"runner-up (gap at least {shown(report['largest_gap_at_least'])})")
    if report["unexplained"]:
        line += f"; {report['unexplained']} unexplained (see rows)"
    return line


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
    parser.add_argument("--margins", help="generation: the run's OUTPUT.margins.jsonl (--write-margins); explains "
                                          "each row that differs from --reference")
    for flag, _ in THRESHOLDS.values():
        parser.add_argument("--" + flag.replace("_", "-"), type=float, default=None)
    args = parser.parse_args(argv)
    if not args.gold and not args.reference:
        parser.error("give --gold, --reference or both")
    if args.margins and not args.reference:
        parser.error("--margins explains rows that differ from a reference: give --reference too")
    try:
        results = score(read_table(args.submission), read_table(args.gold) if args.gold else None,
                        read_table(args.reference) if args.reference else None, args.gold_column,
                        read_margins(args.margins) if args.margins else None)
    except (SubmissionMismatch, InputError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if "divergence" in results:
        print(divergence_summary(results["divergence"]), file=sys.stderr)
    failures = failed_thresholds(results, args)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
