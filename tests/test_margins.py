"""Greedy decoding's runner-up tokens and logit gaps, and what they say about
a row whose text differs from a reference: no model, fixed logits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from predictor.generate.decoding import DecodeSettings, RunnerUpLog, SpecialIds, decode
from scripts import check_accuracy
from submit.accuracy import SubmissionMismatch, divergence, divergence_report
from submit.submission_frames import generation_frame
from submit.write_submission import write_jsonl, write_table

SPECIAL = SpecialIds(unk=0, pad=1, bos=2, eos=3)


class ScriptedEngine:
    """A step engine whose logits are fixed per input row and step."""

    def __init__(self, logits_by_row: list[list[list[float]]]):
        self.logits_by_row = logits_by_row

    def start(self, job) -> np.ndarray:
        self.row_of, self.step = np.arange(len(self.logits_by_row)), 0
        return self._logits()

    def advance(self, tokens: np.ndarray, parent: np.ndarray) -> np.ndarray:
        self.row_of, self.step = self.row_of[parent], self.step + 1
        return self._logits()

    def _logits(self) -> np.ndarray:
        return np.array([self.logits_by_row[row][self.step] for row in self.row_of], dtype=np.float32)


#            unk   pad  bos   eos   4     5     6
ROW_0 = [[9.0, 9.0, 9.0, 0.5, 2.0, 1.25, 0.0],   # 4 over 5 by 0.75 (unk/pad/bos are banned)
         [0.0, 0.0, 0.0, 1.0, 3.0, 3.0, 0.0],    # exact tie: argmax takes 4, the runner-up is 5
         [0.0, 0.0, 0.0, 4.0, 1.0, 2.5, 0.0]]    # eos over 5 by 1.5: the row ends
ROW_1 = [[0.0, 0.0, 0.0, 7.0, 1.0, 0.0, 6.0],    # eos at once, over 6 by 1.0
         [0.0] * 7, [0.0] * 7]


def decoded(logits_by_row, settings=DecodeSettings(max_new_tokens=3)):
    log = RunnerUpLog(len(logits_by_row))
    rows = decode(ScriptedEngine(logits_by_row), None, len(logits_by_row), settings, SPECIAL, log)
    return rows, log.per_row()


def test_gaps_are_the_adjusted_logits_top_two_at_every_step_decided():
    rows, runner_ups = decoded([ROW_0, ROW_1])
    assert [r.tolist() for r in rows] == [[4, 4], []]
    assert runner_ups[0].ids.tolist() == [5, 5, 5]  # the eos step is recorded too
    assert runner_ups[0].gaps.tolist() == [0.75, 0.0, 1.5]
    assert runner_ups[1].ids.tolist() == [6] and runner_ups[1].gaps.tolist() == [1.0]


def test_a_forbidden_eos_is_never_the_runner_up():
    rows, runner_ups = decoded([ROW_1], DecodeSettings(max_new_tokens=2, min_new_tokens=1))
    # Step 0 forbids eos: 6 (6.0) over 4 (1.0). Step 1 is all zeros: eos wins
    # the tie by its lower id, 4 comes second.
    assert rows[0].tolist() == [6]
    assert runner_ups[0].ids.tolist() == [4, 4] and runner_ups[0].gaps.tolist() == [5.0, 0.0]


def test_plain_decode_returns_ids_only_and_beam_search_refuses_to_record():
    settings = DecodeSettings(max_new_tokens=3)
    assert [r.tolist() for r in decode(ScriptedEngine([ROW_0]), None, 1, settings, SPECIAL)] == [[4, 4]]
    with pytest.raises(ValueError, match="greedy decoding only"):
        decode(ScriptedEngine([ROW_0]), None, 1, DecodeSettings(strategy="beam", num_beams=2), SPECIAL,
               RunnerUpLog(1))


def margins(tokens, runner_up, gap):
    return {"tokens": tokens, "runner_up": runner_up, "gap": gap}


TODAY = margins(["今", "天", "很", "好", "[MASK]"], ["明", "日", "不", "吗", "。"], [0.5, 0.3, 2e-5, 0.7, 0.9])


@pytest.mark.parametrize("reference, expected", [
    ("今天不好", {"step": 2, "token": "很", "runner_up": "不", "gap": 2e-5, "tie": True}),
    ("今日很好", {"step": 1, "token": "天", "runner_up": "日", "gap": 0.3, "tie": False}),
    ("今天真好", {"step": 2, "token": "很", "runner_up": "不", "gap_at_least": 2e-5}),
    # The harness ended where the reference goes on: the eos step.
    ("今天很好。", {"step": 4, "token": "[MASK]", "runner_up": "。", "gap": 0.9, "tie": False}),
    # The reference ended where the harness goes on: its eos was not the runner-up.
    ("今天很", {"step": 3, "token": "好", "runner_up": "吗", "gap_at_least": 0.7}),
])
def test_divergence_names_the_first_differing_step_and_its_gap(reference, expected):
    found = divergence("r", "今天很好", reference, TODAY)
    assert {key: found[key] for key in expected} == expected
    assert set(found) - set(expected) == {"id", "reference_continues"}


def test_divergence_reads_positions_as_the_detokenizer_writes_them():
    playing = margins(["play", "##ing", "[MASK]"], ["pay", "##ed", "[MASK]"], [1.0, 5e-5, 2.0])
    found = divergence("w", "playing", "played", playing)
    assert (found["step"], found["gap"], found["tie"], found["reference_continues"]) == (1, 5e-5, True, "ed")
    # A reference that ended where the runner-up was the eos.
    ended = margins(["a", "b", "[MASK]"], ["x", "[MASK]", "c"], [1.0, 3e-6, 2.0])
    assert divergence("e", "a b", "a", ended)["gap"] == 3e-6


def test_divergence_report_counts_ties_and_refuses_a_foreign_margins_file():
    ids, texts = ["r1", "r2", "r3"], ["今天很好"] * 3
    report = divergence_report(ids, texts, ["今天很好", "今天不好", "今天真好"], {i: TODAY for i in ids})
    assert [row["id"] for row in report["rows"]] == ["r2", "r3"]
    assert (report["differing_rows"], report["near_ties"], report["reference_not_runner_up"]) == (2, 1, 1)
    assert (report["largest_gap"], report["largest_gap_at_least"], report["unexplained"]) == (2e-5, 2e-5, 0)
    limited = divergence_report(["x"], ["今天"], ["今天好"], {"x": margins(["今", "天"], ["明", "日"], [1.0, 1.0])})
    assert limited["unexplained"] == 1 and limited["rows"][0]["step"] is None
    with pytest.raises(SubmissionMismatch, match="no row for id"):
        divergence_report(ids, texts, texts, {"r1": TODAY})
    with pytest.raises(SubmissionMismatch, match="spell '今天很好'"):
        divergence_report(["r1"], ["今天"], ["今日"], {"r1": TODAY})


def test_check_accuracy_explains_differences_with_a_margins_file(tmp_path, capsys):
    submission, reference = str(tmp_path / "sub.csv"), str(tmp_path / "ref.jsonl")
    pd.DataFrame({"id": ["a", "b"], "text": ["今天很好", "今天很好"]}).to_csv(submission, index=False)
    pd.DataFrame({"id": ["b", "a"], "text": ["今天不好", "今天很好"]}).to_json(reference, orient="records", lines=True)
    margins_path = str(tmp_path / "sub.csv.margins.jsonl")
    write_jsonl([{"id": row_id, **TODAY} for row_id in ("a", "b")], margins_path)
    assert check_accuracy.main([submission, "--reference", reference, "--margins", margins_path]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["divergence"]["rows"][0]["id"] == "b"
    assert "1 row(s) differ from the reference: 1 fp32 near-tie(s)" in err
    with pytest.raises(SystemExit):
        check_accuracy.main([submission, "--gold", reference, "--margins", margins_path])
    with open(margins_path, "a", encoding="utf-8") as f:
        f.write('{"id": "c"}\n')
    assert check_accuracy.main([submission, "--reference", reference, "--margins", margins_path]) == 2
    assert "line 3: no ['tokens', 'runner_up', 'gap']" in capsys.readouterr().err


# A row the reference decoded to the same ids but wrote otherwise: "##l"
# kept after [unused3772], which the harness's pieces join.
UNUSED = {"tokens": ["好", "[unused3772]", "##l", "[unused6834]", "[MASK]"],
          "runner_up": ["吃", "吃", "[unused1]", "。", "。"], "gap": [0.4, 0.2, 0.6, 0.3, 0.8],
          "pieces": ["好", "[unused3772]", "l", "[unused6834]", ""], "generated_ids": [7, 3772, 91, 6834]}


def test_same_ids_are_text_rendered_differently_and_other_ids_a_decoding_divergence():
    text, rendered = "好[unused3772]l[unused6834]", "好[unused3772]##l[unused6834]"
    found = divergence("g56", text, rendered, UNUSED, reference_ids=[7, 3772, 91, 6834])
    assert found == {"id": "g56", "step": 2, "token": "##l", "same_ids": True, "harness_writes": "l[unused68",
                     "reference_continues": "##l[unused"}
    # Other ids: a decoding divergence, explained by the harness's runner-up and gap.
    decoded = divergence("g58", text, "好吃", UNUSED, reference_ids=[7, 12])
    assert (decoded["same_ids"], decoded["step"], decoded["token"], decoded["gap"]) == (False, 1, "[unused3772]", 0.2)
    report = divergence_report(["g56", "g58", "g64"], [text] * 3, [rendered, "好吃", text],
                               {i: UNUSED for i in ("g56", "g58", "g64")}, [[7, 3772, 91, 6834], [7, 12], [7]])
    assert [(row["id"], row["same_ids"]) for row in report["rows"]] == [("g56", True), ("g58", False)]
    assert (report["same_ids"], report["ids_compared"], report["near_ties"], report["largest_gap"]) == (1, 2, 0, 0.2)
    # Without ids on one side, today's explanation from the text alone.
    older = {key: value for key, value in UNUSED.items() if key != "generated_ids"}
    for margins_record, reference_ids in ((older, [7, 3772, 91, 6834]), (UNUSED, None)):
        assert "same_ids" not in divergence("g56", text, rendered, margins_record, reference_ids)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_check_accuracy_reads_the_references_generated_ids(tmp_path, capsys, suffix):
    submission, reference = str(tmp_path / "sub.csv"), str(tmp_path / f"ref{suffix}")
    text = "好[unused3772]l[unused6834]"
    write_table(generation_frame(["a", "b"], [text, text]), submission)
    write_table(generation_frame(["a", "b"], ["好[unused3772]##l[unused6834]", "好吃"],
                                 [np.array([7, 3772, 91, 6834]), np.array([7, 12])]), reference)
    margins_path = str(tmp_path / "sub.csv.margins.jsonl")
    write_jsonl([{"id": row_id, **UNUSED} for row_id in ("a", "b")], margins_path)
    assert check_accuracy.main([submission, "--reference", reference, "--margins", margins_path]) == 0
    out, err = capsys.readouterr()
    assert [row.get("same_ids") for row in json.loads(out)["divergence"]["rows"]] == [True, False]
    assert "2 row(s) differ from the reference: 1 with the same ids, text rendered differently (at token(s) ##l)" in err
