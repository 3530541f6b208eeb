"""Greedy decoding's runner-up tokens and logit gaps, and what they say about
a row whose text differs from a reference: no model, fixed logits."""
from __future__ import annotations

import numpy as np
import pytest

from predictor.decoding import DecodeSettings, RunnerUpLog, SpecialIds, decode

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
