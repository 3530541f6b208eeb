"""The offline accuracy check: metrics, id alignment, thresholds, exit codes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scripts import check_accuracy
from submit.accuracy import SubmissionMismatch, aligned, bleu4, classification_metrics, generation_metrics


def test_classification_metrics():
    metrics = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert metrics["accuracy"] == 0.75
    # F1(a) = 2/3, F1(b) = 0.8
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_alignment_is_by_id_and_refuses_other_rows():
    submission = pd.DataFrame({"id": ["x", "y"], "label": ["a", "b"]})
    gold = pd.DataFrame({"id": ["y", "x"], "label": ["b", "a"]})
    assert aligned(submission, gold, "gold")["label"].tolist() == ["a", "b"]
    with pytest.raises(SubmissionMismatch, match="missing from submission \\['z'\\]"):
        aligned(submission, pd.DataFrame({"id": ["x", "y", "z"], "label": ["a", "b", "c"]}), "gold")
    with pytest.raises(SubmissionMismatch, match="repeats id"):
        aligned(pd.DataFrame({"id": ["x", "x"]}), gold, "gold")


def test_bleu4_and_generation_metrics():
    assert bleu4([list("今天天气很好")], [list("今天天气很好")]) == pytest.approx(1.0)
    assert bleu4([list("完全不同的")], [list("今天天气很好")]) == 0.0
    metrics = generation_metrics(["今天天气很好", "好吃"], ["今天天气很好", "好看"])
    assert metrics["exact_match"] == 0.5
    assert metrics["token_agreement"] == pytest.approx(7 / 8)


def write_csv(tmp_path, name, frame):
    path = str(tmp_path / name)
    frame.to_csv(path, index=False)
    return path


def test_check_accuracy_exit_codes(tmp_path, capsys):
    submission = write_csv(tmp_path, "sub.csv", pd.DataFrame(
        {"id": ["1", "2"], "label": ["pos", "neg"], "prob_neg": [0.2, 0.9], "prob_pos": [0.8, 0.1]}))
    reference = write_csv(tmp_path, "ref.csv", pd.DataFrame(
        {"id": ["2", "1"], "label": ["neg", "pos"], "prob_neg": [0.9, 0.2 + 3e-6], "prob_pos": [0.1, 0.8 - 3e-6]}))
    gold = write_csv(tmp_path, "gold.csv", pd.DataFrame({"id": ["1", "2"], "label": ["pos", "pos"]}))
    assert check_accuracy.main([submission, "--gold", gold, "--reference", reference,
                                "--min-accuracy", "0.5", "--max-prob-diff", "1e-5"]) == 0
    assert check_accuracy.main([submission, "--gold", gold, "--min-accuracy", "0.9"]) == 1
    assert "vs_gold.accuracy = 0.5 fails --min-accuracy 0.9" in capsys.readouterr().err
    assert check_accuracy.main([submission, "--reference", reference, "--max-prob-diff", "1e-6"]) == 1
    short = write_csv(tmp_path, "short.csv", pd.DataFrame({"id": ["1"], "label": ["pos"]}))
    assert check_accuracy.main([short, "--gold", gold]) == 2


def test_check_accuracy_for_generation(tmp_path):
    submission = write_csv(tmp_path, "gen.csv", pd.DataFrame({"id": ["a", "b"], "text": ["很好", "不错"]}))
    reference = write_csv(tmp_path, "gen_ref.csv", pd.DataFrame({"id": ["a", "b"], "text": ["很好", "不好"]}))
    assert check_accuracy.main([submission, "--reference", reference, "--min-exact-match", "0.5"]) == 0
    assert check_accuracy.main([submission, "--reference", reference, "--min-exact-match", "0.6"]) == 1
    results = check_accuracy.score(check_accuracy.read_table(submission), None,
                                   check_accuracy.read_table(reference), None)
    assert results["task"] == "generate" and np.isclose(results["vs_reference"]["token_agreement"], 0.75)
