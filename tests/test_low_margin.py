"""INT8 rows re-run in fp32 where the margin is low: the offset, the noise
scale, the threshold set on the run's own margins, and that the re-run
replaces exactly the rows it names."""
from __future__ import annotations

import numpy as np

from predictor.classify.low_margin import (MarginRule, corrected, cross_checked_agreement, fit_margin_rule, margins,
                                  rerun_low_margin_rows, rerun_threshold, rows_to_rerun)

BUDGET = 0.0025  # half of what --min-agreement 0.995 allows


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def fp32_and_int8(rows=400, shift=0.8, noise=0.3, seed=0):
    """fp32 logits, and 'INT8' ones with a shared shift and per-row noise."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(rows, 3))
    noisy = logits + np.array([shift, 0.0, -shift]) + rng.normal(0, noise, size=logits.shape)
    return softmax(logits), softmax(noisy)


def test_offset_undoes_a_shared_shift_and_every_moved_row_is_rerun():
    reference, candidate = fp32_and_int8()
    rule = fit_margin_rule(reference, candidate, BUDGET)
    assert np.allclose(rule.offset, [-0.8, 0.0, 0.8], atol=0.06)
    fixed = corrected(candidate, rule.offset)
    moved = fixed.argmax(-1) != reference.argmax(-1)
    assert moved.any() and set(np.flatnonzero(moved)) <= set(rows_to_rerun(fixed, rule).tolist())


def test_the_error_scale_is_the_noise_in_the_margin():
    reference, candidate = fp32_and_int8(rows=2000, noise=0.3)
    rule = fit_margin_rule(reference, candidate, BUDGET)
    # Independent noise of 0.3 on each of two classes: 0.3 * sqrt(2) on their
    # difference, raised a little to an upper confidence bound.
    assert 0.3 * np.sqrt(2) <= rule.error_scale <= 0.3 * np.sqrt(2) * 1.15


def test_a_rule_fitted_on_a_small_sample_keeps_the_labels_of_a_large_input():
    reference, candidate = fp32_and_int8(rows=20000, noise=0.4, seed=3)
    sample = np.random.default_rng(0).choice(20000, 256, replace=False)
    rule = fit_margin_rule(reference[sample], candidate[sample], BUDGET)
    fixed = corrected(candidate, rule.offset)
    threshold, expected = rerun_threshold(margins(fixed), rule)
    rerun = rows_to_rerun(fixed, rule)
    same = fixed.argmax(-1) == reference.argmax(-1)
    same[rerun] = True
    assert expected >= 1 - BUDGET and same.mean() >= 0.995
    assert 0 < len(rerun) < 0.5 * len(fixed)  # only the rows near a tie
    assert margins(fixed)[rerun].max() <= threshold < margins(fixed)[np.setdiff1d(np.arange(20000), rerun)].min()


def test_rerun_replaces_exactly_the_low_margin_rows_in_input_order():
    reference, candidate = fp32_and_int8(rows=50)
    rule = MarginRule(offset=(0.0, 0.0, 0.0), error_scale=0.0, floor=1.0, max_disagreement=0.0)
    asked = []

    def run_fp32(rows):
        asked.append(rows.copy())
        return list(reference[rows])

    merged, report = rerun_low_margin_rows(list(candidate), rule, run_fp32)
    low = np.flatnonzero(margins(candidate) <= 1.0)
    assert len(asked) == 1 and np.array_equal(asked[0], low) and report["rows"] == len(low)
    merged = np.stack(merged)
    assert np.array_equal(merged[low], reference[low])
    high = np.setdiff1d(np.arange(50), low)
    assert np.allclose(merged[high], candidate[high], atol=1e-6)


def test_rows_already_in_fp32_are_neither_corrected_nor_rerun_and_count_as_agreeing():
    reference, candidate = fp32_and_int8(rows=50)
    in_fp32 = np.arange(0, 50, 5)
    merged = candidate.copy()
    merged[in_fp32] = reference[in_fp32]
    rule = MarginRule(offset=(0.2, -0.1, -0.1), error_scale=0.0, floor=1.0, max_disagreement=0.0)
    asked = []

    def run_fp32(rows):
        asked.append(rows.copy())
        return reference[rows]

    out, report = rerun_low_margin_rows(merged, rule, run_fp32, in_fp32)
    int8_rows = np.setdiff1d(np.arange(50), in_fp32)
    low = int8_rows[margins(corrected(candidate[int8_rows], rule.offset)) <= 1.0]
    assert len(asked) == 1 and np.array_equal(asked[0], low) and report["rows"] == len(low)
    assert np.array_equal(out[in_fp32], reference[in_fp32]) and np.array_equal(out[low], reference[low])
    # The budget of expected moved labels is a share of every row, those already in fp32 included.
    row_margins = np.array([0.1, 0.5, 3.0])
    loose = MarginRule((0.0, 0.0), error_scale=1.0, floor=0.0, max_disagreement=0.1)
    assert rerun_threshold(row_margins, loose, rows=30)[0] < rerun_threshold(row_margins, loose)[0]


def test_no_rerun_when_nothing_is_low():
    _, candidate = fp32_and_int8(rows=20)
    merged, report = rerun_low_margin_rows(list(candidate), MarginRule((0.0, 0.0, 0.0), 0.0, -1.0, 0.0),
                                           lambda rows: (_ for _ in ()).throw(AssertionError("ran fp32")))
    assert report["rows"] == 0 and np.allclose(np.stack(merged), candidate, atol=1e-6)


def test_cross_checked_agreement_judges_rows_the_rule_was_not_fitted_on():
    reference, candidate = fp32_and_int8(rows=600, noise=0.5)
    plain = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    checked = cross_checked_agreement(reference, candidate, BUDGET)
    assert plain < checked <= 1.0
    assert cross_checked_agreement(reference, reference, BUDGET) == 1.0
