"""Offline accuracy of a submission: against gold labels/targets and against a
reference submission (e.g. the plain fp32 run), before anything is uploaded.

Rows are matched by id, never by position, and a submission that lacks or
repeats an id is rejected: an accuracy figure over the wrong rows is worse
than none.
"""
from __future__ import annotations

import collections
import math

import numpy as np
import pandas as pd


class SubmissionMismatch(ValueError):
    pass


def aligned(submission: pd.DataFrame, other: pd.DataFrame, what: str) -> pd.DataFrame:
    """`other` reordered to the submission's ids; fails on any id difference."""
    for name, frame in (("submission", submission), (what, other)):
        if "id" not in frame.columns:
            raise SubmissionMismatch(f"{name} has no 'id' column (columns: {list(frame.columns)})")
        duplicated = frame["id"][frame["id"].duplicated()]
        if len(duplicated):
            raise SubmissionMismatch(f"{name} repeats id(s) {duplicated.head(5).tolist()}")
    ours, theirs = set(submission["id"]), set(other["id"])
    if ours != theirs:
        missing, extra = sorted(theirs - ours)[:5], sorted(ours - theirs)[:5]
        raise SubmissionMismatch(f"ids differ from the {what}: missing from submission {missing}, "
                                 f"not in {what} {extra}")
    return other.set_index("id").loc[submission["id"]].reset_index()


def classification_metrics(predicted: list, gold: list) -> dict:
    predicted, gold = np.asarray(predicted, dtype=str), np.asarray(gold, dtype=str)
    f1s = []
    for label in sorted(set(gold) | set(predicted)):
        tp = np.sum((predicted == label) & (gold == label))
        fp = np.sum((predicted == label) & (gold != label))
        fn = np.sum((predicted != label) & (gold == label))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float(np.mean(predicted == gold)), "macro_f1": float(np.mean(f1s))}


def probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith("prob_")]


def classification_agreement(submission: pd.DataFrame, reference: pd.DataFrame) -> dict:
    columns = probability_columns(submission)
    if columns != probability_columns(reference):
        raise SubmissionMismatch(f"probability columns differ: {columns} vs {probability_columns(reference)}")
    result = {"label_agreement": float(np.mean(submission["label"].astype(str) == reference["label"].astype(str)))}
    if columns:
        diff = np.abs(submission[columns].to_numpy(float) - reference[columns].to_numpy(float))
        result["max_prob_diff"] = float(diff.max())
    return result


def bleu4(hypotheses: list[list[str]], references: list[list[str]]) -> float:
    """Corpus BLEU-4 with uniform weights and the brevity penalty (Papineni et
    al.), one reference per hypothesis; tokens are characters/wordpieces."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += len(ref)
        for n in range(1, 5):
            hyp_ngrams = collections.Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            ref_ngrams = collections.Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matches[n - 1] += sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return brevity * math.exp(log_precision)


def generation_metrics(generated: list[str], targets: list[str]) -> dict:
    """Exact-match rate, token-level agreement (position by position over the
    longer text) and BLEU-4, all over characters; generated Chinese text is
    written without spaces, so characters are its tokens."""
    hyps = [list(str(t).replace(" ", "")) for t in generated]
    refs = [list(str(t).replace(" ", "")) for t in targets]
    same_tokens = sum(sum(a == b for a, b in zip(h, r)) for h, r in zip(hyps, refs))
    all_tokens = sum(max(len(h), len(r)) for h, r in zip(hyps, refs))
    return {
        "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs)])),
        "token_agreement": same_tokens / all_tokens if all_tokens else 1.0,
        "bleu4": bleu4(hyps, refs),
    }
