"""The timing picture: one panel per question (stages, decoding split,
repeat totals), a real PNG, written atomically next to the JSON."""
from __future__ import annotations

import os

import matplotlib.image

from submit.timing_plot import plot_path_for, write_timing_plot
from submit.timing_report import STAGES


def report(**extra) -> dict:
    stages = dict.fromkeys(STAGES, 0.0)
    stages.update(tokenize=0.8, export=12.0, predict=40.0, write=0.1)
    return {"stages_s": stages, "total_s": 53.2, "rows": 200, "task": "generate",
            "engine": {"precision": "fp32"}, **extra}


def test_plot_path_sits_next_to_the_report():
    assert plot_path_for("out/sub.csv.timing.json") == "out/sub.csv.timing.png"
    assert plot_path_for("out/report") == "out/report.png"


def test_each_question_gets_a_panel_and_the_file_is_a_png(tmp_path):
    heights = []
    for name, extra in [("stages", {}),
                        ("decoding", {"decoding": {"decode_steps": 137, "engine_s": 39.0, "loop_overhead_s": 0.8,
                                                   "loop_overhead_ms_per_step": 5.8}}),
                        ("repeat", {"decoding": {"decode_steps": 137, "engine_s": 39.0, "loop_overhead_s": 0.8,
                                                 "loop_overhead_ms_per_step": 5.8},
                                    "repeat": {"totals_s": [55.0, 53.2, 54.1], "total_s_median": 54.1}})]:
        path = str(tmp_path / f"{name}.png")
        write_timing_plot(report(**extra), path)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        heights.append(matplotlib.image.imread(path).shape[0])
    assert heights[0] < heights[1] < heights[2]  # a panel more each time
    assert sorted(os.listdir(tmp_path)) == ["decoding.png", "repeat.png", "stages.png"]  # no temp files left
