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


def test_engine_busy_is_set_against_predict_and_the_fp32_rerun_that_it_includes():
    from submit.timing_report import STAGES, format_table

    stages = {**dict.fromkeys(STAGES, 0.0), "predict": 4.0, "rerun": 1.0}
    report = {"stages_s": stages, "total_s": 5.0, "rows": 10, "tokens": 100, "rows_per_s": 2.0, "tokens_per_s": 20.0,
              "engine_busy_s": 4.5, "workers": 1}
    assert "engines busy 4.50 s of the 5.00 s predict and fp32 re-run stages (90%" in format_table(report)
    report["stages_s"]["rerun"] = 0.0
    assert "engines busy 4.50 s of the 4.00 s predict stage (112%" in format_table(report)
