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


# fp32 keeps about 7 significant digits and a logit is a sum of hundreds of
# rounded products: two correct implementations that add in another order
# (oneDNN's kernels, the dygraph model) can differ in a logit's 5th-6th
# digit, so a choice won by less than this may go either way.
NEAR_TIE_GAP = 1e-4
REFERENCE_CONTEXT_CHARS = 10  # how much of the reference's text a report shows


def first_difference(a: str, b: str) -> int:
    """The first character index where a and b differ; the shorter one's
    length when it is a prefix of the other."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def divergent_step(pieces: list[str], ends: np.ndarray, differ: int) -> int | None:
    """The token whose piece holds character `differ`; when the text ends
    there, the first empty piece after it (the eos step); None when the text
    ended on the token limit."""
    holding = np.flatnonzero(ends > differ)
    if holding.size:
        return int(holding[0])
    return next((i for i, (piece, end) in enumerate(zip(pieces, ends)) if not piece and end == differ), None)


def divergence(row_id: str, text: str, reference_text: str, margins: dict,
               reference_ids: list[int] | None = None) -> dict:
    """Why one row's text differs from the reference's. When both sides carry
    their generated ids and these agree, decoding did not diverge: the text
    was rendered differently ("same_ids"), from the harness's token holding
    the first differing character. Otherwise: the harness's first differing
    step (a token index into margins["tokens"]), its token and runner-up
    there, and the logit gap between them when the reference's text goes on
    with the runner-up's piece (matched by text: "gap" and "tie"); when it
    does not, the reference's token was further down and its gap is at least
    the recorded one ("gap_at_least")."""
    from submit.detokenize import SPECIAL_TOKENS, text_pieces

    tokens, runner_ups, gaps = margins["tokens"], margins["runner_up"], margins["gap"]
    # Margins files without pieces predate them: the default special tokens, no added ones.
    pieces = margins["pieces"] if "pieces" in margins else text_pieces(tokens, SPECIAL_TOKENS)
    if "".join(pieces) != text:
        raise SubmissionMismatch(f"row {row_id}: the margins' tokens spell {''.join(pieces)!r}, the submission "
                                 f"says {text!r}; give the margins file written with this submission")
    differ = first_difference(text, reference_text)
    ends = np.cumsum([len(piece) for piece in pieces])
    step = divergent_step(pieces, ends, differ)
    compared = {}
    if reference_ids is not None and "generated_ids" in margins:
        if margins["generated_ids"] == reference_ids:
            start = differ if step is None else int(ends[step]) - len(pieces[step])
            return {"id": row_id, "step": step, "token": None if step is None else tokens[step], "same_ids": True,
                    "harness_writes": text[start:][:REFERENCE_CONTEXT_CHARS],
                    "reference_continues": reference_text[start:][:REFERENCE_CONTEXT_CHARS]}
        compared = {"same_ids": False}
    if step is None:
        return {"id": row_id, "step": None, **compared,
                "reference_continues": reference_text[differ:][:REFERENCE_CONTEXT_CHARS],
                "unexplained": "the harness stopped at its token limit where the reference goes on: "
                               "were both run with the same --max-new-tokens?"}
    start = int(ends[step]) - len(pieces[step])
    reference_rest = reference_text[start:]
    runner_up_piece = text_pieces(tokens[:step] + [runner_ups[step]], SPECIAL_TOKENS)[-1]
    # An empty piece (eos or another special token) matches only a reference that ended here.
    took_runner_up = reference_rest.startswith(runner_up_piece) if runner_up_piece else not reference_rest
    found = {"id": row_id, "step": step, "token": tokens[step], "runner_up": runner_ups[step], **compared,
             "reference_continues": reference_rest[:REFERENCE_CONTEXT_CHARS]}
    if took_runner_up:
        return {**found, "gap": gaps[step], "tie": gaps[step] < NEAR_TIE_GAP}
    return {**found, "gap_at_least": gaps[step]}


def generated_ids(frame: pd.DataFrame) -> list[list[int]] | None:
    """A generation submission's generated_ids column ("12 7 845" in each
    row, or a JSON list) as id lists; None when it has no such column."""
    from submit.submission_frames import GENERATED_IDS

    if GENERATED_IDS not in frame.columns:
        return None
    rows = []
    for row_id, cell in zip(frame["id"], frame[GENERATED_IDS]):
        try:
            rows.append([int(i) for i in (cell if isinstance(cell, list) else str(cell).split())])
        except ValueError:
            raise SubmissionMismatch(f"row {row_id}: {GENERATED_IDS} {cell!r} is not a list of token ids "
                                     f"(expected integers separated by spaces)") from None
    return rows


def divergence_report(ids: list[str], texts: list[str], reference_texts: list[str], margins: dict[str, dict],
                      reference_ids: list[list[int]] | None = None) -> dict:
    """divergence() for every row whose text differs from the reference, and
    a summary: how many, how many of those had their ids compared and how
    many had the same ids (text rendered differently), how many are fp32
    near-ties, the largest gaps. reference_ids: the reference's
    generated_ids per row, when it has them."""
    missing = [row_id for row_id in ids if row_id not in margins]
    if missing:
        raise SubmissionMismatch(f"the margins file has no row for id(s) {missing[:5]}; give the margins file "
                                 f"written with this submission")
    per_row = reference_ids if reference_ids is not None else [None] * len(ids)
    rows = [divergence(row_id, text, reference_text, margins[row_id], row_ids)
            for row_id, text, reference_text, row_ids in zip(ids, texts, reference_texts, per_row)
            if text != reference_text]
    return {
        "differing_rows": len(rows),
        "ids_compared": sum("same_ids" in row for row in rows),
        "same_ids": sum(bool(row.get("same_ids")) for row in rows),
        "near_ties": sum(bool(row.get("tie")) for row in rows),
        "reference_not_runner_up": sum("gap_at_least" in row for row in rows),
        "unexplained": sum("unexplained" in row for row in rows),
        "largest_gap": max((row["gap"] for row in rows if "gap" in row), default=None),
        "largest_gap_at_least": max((row["gap_at_least"] for row in rows if "gap_at_least" in row), default=None),
        "near_tie_gap": NEAR_TIE_GAP,
        "rows": rows,
    }
