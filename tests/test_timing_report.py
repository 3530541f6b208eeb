"""Stage timing: a stage timed inside another counts only toward itself."""
from __future__ import annotations

import time

from submit.timing_report import StageTimer


def test_a_stage_inside_another_is_not_counted_twice():
    timer = StageTimer()
    with timer.stage("tokenize"):
        time.sleep(0.05)
        with timer.stage("read"):  # a chunk read while the tokenizer pulls it
            time.sleep(0.2)
        time.sleep(0.05)
    assert 0.2 <= timer.seconds["read"] < 0.3
    assert 0.1 <= timer.seconds["tokenize"] < 0.2
    assert timer.seconds["read"] + timer.seconds["tokenize"] <= timer.total()
    assert set(timer.peak_rss_mb) == {"read", "tokenize"}
