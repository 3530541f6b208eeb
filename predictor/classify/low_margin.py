"""INT8 classification that keeps fp32's labels: trust only confident rows.

On an input-sensitive classifier, INT8 noise moves a label only where fp32's
decision is close: a row whose top two classes are far apart keeps its label.
So the INT8 outputs are used where the top-1/top-2 log-probability margin is
wide, and rows under a threshold are run again in fp32 (an adaptive mix of
precisions per row, where the guard's layer mix is one per model).

Fitted on the guard's held-back rows (where fp32 and INT8 outputs are both
known):

- offset: INT8 also shifts every row's logits the same way (rounding the
  weights is one fixed error); the mean log-probability difference from fp32
  per class undoes that. Measured on the demo classifier: label agreement of
  plain INT8 0.866 -> 0.951 with the offset alone.
- error scale: what is left is per-row noise in the margin between fp32's two
  top classes. On the demo classifier it is independent of the margin itself
  (correlation -0.02 over 2000 rows) and close to normal (its 99.9% quantile
  3.4 standard deviations), so a row whose INT8 margin is m keeps fp32's
  label unless its noise exceeds m: it moves with probability about
  Q(m / scale).
- floor: the widest corrected margin among held-back rows whose label still
  moved; rows at or under it are always re-run, whatever the noise model says.

The threshold is then set on the run's own INT8 margins, all rows at once:
the lowest margin above which the expected share of moved labels is within
`max_disagreement` (half of what --min-agreement allows), and not under the
floor. The threshold it replaced (the widest moved held-back margin x 1.5)
depended on which few rows moved in the sample: on the demo classifier with
full 8-bit weights it left 0.9855 agreement in one run; over 200 draws of
256 held-back rows this rule re-ran 20-39% of rows and kept 0.9975-1.0 of
fp32's labels (scripts/cpu_engines.py measures this on any input).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

# The error scale is the RMS of the held-back rows' margin errors raised to an
# upper confidence bound (about 95%: the RMS of n normal draws has a relative
# standard error of 1/sqrt(2n)).
SCALE_CONFIDENCE_SDS = 2.0
TINY = 1e-30


@dataclass(frozen=True)
class MarginRule:
    offset: tuple[float, ...]  # added to each class's log-probability
    error_scale: float         # INT8's noise in the top-two log-probability margin (one standard deviation)
    floor: float               # rows with a corrected margin at or under this are always re-run
    max_disagreement: float    # expected share of rows whose INT8 label may differ from fp32's

    def as_dict(self) -> dict:
        return {"offset": [round(v, 6) for v in self.offset], "error_scale": round(self.error_scale, 6),
                "floor": round(self.floor, 6), "max_disagreement": self.max_disagreement}

    @classmethod
    def from_dict(cls, data: dict) -> "MarginRule":
        return cls(tuple(float(v) for v in data["offset"]), float(data["error_scale"]), float(data["floor"]),
                   float(data["max_disagreement"]))


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probabilities.astype(np.float64), TINY))


def corrected(probabilities: np.ndarray, offset) -> np.ndarray:
    """Probabilities with `offset` added to the log-probabilities, renormalised."""
    shifted = log_probabilities(probabilities) + np.asarray(offset, dtype=np.float64)
    shifted -= shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(probabilities.dtype)


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 log-probability per row."""
    top2 = np.sort(log_probabilities(probabilities), axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def margin_errors(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row: the candidate's log-probability margin between fp32's two top
    classes, minus fp32's own."""
    lf, lc = log_probabilities(reference), log_probabilities(candidate)
    top2 = np.argsort(-lf, axis=-1)[:, :2]
    rows = np.arange(len(lf))
    first, second = top2[:, 0], top2[:, 1]
    return (lc[rows, first] - lc[rows, second]) - (lf[rows, first] - lf[rows, second])


def fit_margin_rule(reference: np.ndarray, candidate: np.ndarray, max_disagreement: float) -> MarginRule:
    """The rule for `candidate` (INT8) probabilities of rows whose fp32
    probabilities are `reference`."""
    difference = log_probabilities(reference) - log_probabilities(candidate)
    offset = difference.mean(axis=0)
    offset -= offset.mean()  # log-probabilities are defined up to a constant
    fixed = corrected(candidate, offset)
    errors = margin_errors(reference, fixed)
    scale = float(np.sqrt(np.mean(errors ** 2))) * (1 + SCALE_CONFIDENCE_SDS / math.sqrt(2 * len(errors)))
    moved = fixed.argmax(-1) != reference.argmax(-1)
    floor = float(margins(fixed)[moved].max()) if moved.any() else 0.0
    return MarginRule(tuple(float(v) for v in offset), scale, floor, max_disagreement)


def chance_moved(row_margins: np.ndarray, scale: float) -> np.ndarray:
    """Probability that fp32's label differs, per row of this INT8 margin:
    the normal tail Q(margin / scale)."""
    if scale <= 0:
        return np.zeros(len(row_margins))
    erfc = np.frompyfunc(math.erfc, 1, 1)
    return 0.5 * erfc(np.asarray(row_margins, dtype=np.float64) / (scale * math.sqrt(2))).astype(np.float64)


def rerun_threshold(row_margins: np.ndarray, rule: MarginRule, rows: int | None = None) -> tuple[float, float]:
    """(threshold, expected agreement with fp32 once rows at or under it are
    re-run) for these rows' corrected margins, out of `rows` in all (default:
    these; the others already hold fp32 outputs)."""
    rows = len(row_margins) if rows is None else rows
    ordered = np.sort(row_margins)
    # kept_moved[i]: expected moved rows if rows i.. keep their INT8 label.
    kept_moved = np.append(np.cumsum(chance_moved(ordered, rule.error_scale)[::-1])[::-1], 0.0)
    first_kept = int(np.flatnonzero(kept_moved <= rule.max_disagreement * rows)[0])
    threshold = max(float(ordered[first_kept - 1]) if first_kept else -1.0, rule.floor)
    first_kept = int(np.searchsorted(ordered, threshold, side="right"))
    return threshold, 1.0 - float(kept_moved[first_kept]) / max(rows, 1)


def low_margin_rows(probabilities: np.ndarray, rule: MarginRule, rows: int | None = None
                    ) -> tuple[np.ndarray, float, float]:
    """(indices of the rows of these corrected probabilities to run again in
    fp32, the threshold, the expected agreement with fp32 after the re-run),
    out of `rows` in all (see rerun_threshold)."""
    row_margins = margins(probabilities)
    threshold, expected_agreement = rerun_threshold(row_margins, rule, rows)
    return np.flatnonzero(row_margins <= threshold), threshold, expected_agreement


def rows_to_rerun(probabilities: np.ndarray, rule: MarginRule) -> np.ndarray:
    return low_margin_rows(probabilities, rule)[0]


def cross_checked_agreement(reference: np.ndarray, candidate: np.ndarray, max_disagreement: float, folds: int = 2,
                            seed: int = 0) -> float:
    """Label agreement with fp32 after the re-run, on rows the rule was not
    fitted on: each fold is judged by a rule fitted on the other rows (the
    rule fitted on all rows leaves none of them moved, by construction)."""
    order = np.random.default_rng(seed).permutation(len(reference))
    kept = 0
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        rule = fit_margin_rule(reference[rest], candidate[rest], max_disagreement)
        fixed = corrected(candidate[fold], rule.offset)
        same = fixed.argmax(-1) == reference[fold].argmax(-1)
        same[rows_to_rerun(fixed, rule)] = True
        kept += int(same.sum())
    return kept / len(reference)


def rerun_low_margin_rows(merged: np.ndarray, rule: MarginRule, run_fp32: Callable[[np.ndarray], np.ndarray],
                          fp32_rows: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Probabilities in input order ([rows, classes]), INT8 except at
    `fp32_rows` -> the offset applied to the INT8 rows, and those at or under
    the threshold replaced by `run_fp32(rows)` (their fp32 outputs, in the
    order of `rows`, which ascend); also a report of what was re-run, how
    many rows came in fp32 already and the agreement with fp32 the rule
    expects over all rows."""
    probabilities = np.array(merged)
    int8_rows = np.setdiff1d(np.arange(len(probabilities)), [] if fp32_rows is None else fp32_rows)
    probabilities[int8_rows] = corrected(probabilities[int8_rows], rule.offset)
    low, threshold, expected_agreement = low_margin_rows(probabilities[int8_rows], rule, len(probabilities))
    rows = int8_rows[low]
    if rows.size:
        probabilities[rows] = np.asarray(run_fp32(rows))
    return probabilities, {"rows": int(rows.size), "threshold": round(threshold, 6),
                           "expected_agreement": round(expected_agreement, 5),
                           "fp32_from_guard": len(probabilities) - len(int8_rows)}
