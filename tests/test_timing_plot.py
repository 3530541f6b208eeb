"""The timing picture: one panel per question (stages, decoding split,
repeat totals), a well-formed SVG, written atomically next to the JSON."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from submit.timing_plot import plot_path_for, write_timing_plot
from submit.timing_report import STAGE_TITLES, STAGES

SVG = "{http://www.w3.org/2000/svg}"


def report(**extra) -> dict:
    stages = dict.fromkeys(STAGES, 0.0)
    stages.update(tokenize=0.8, export=12.0, predict=40.0, write=0.1)
    return {"stages_s": stages, "total_s": 53.2, "rows": 200, "task": "generate",
            "engine": {"precision": "fp32"}, **extra}


DECODING = {"decode_steps": 137, "engine_s": 39.0, "loop_overhead_s": 0.8, "loop_overhead_ms_per_step": 5.8}
REPEAT = {"totals_s": [55.0, 53.2, 54.1], "total_s_median": 54.1}


def test_plot_path_sits_next_to_the_report():
    assert plot_path_for("out/sub.csv.timing.json") == "out/sub.csv.timing.svg"
    assert plot_path_for("out/report") == "out/report.svg"


def test_each_question_gets_a_panel_and_the_file_is_an_svg(tmp_path):
    heights = []
    for name, extra in [("stages", {}),
                        ("decoding", {"decoding": DECODING}),
                        ("repeat", {"decoding": DECODING, "repeat": REPEAT})]:
        path = str(tmp_path / f"{name}.svg")
        write_timing_plot(report(**extra), path)
        root = ET.parse(path).getroot()  # well-formed XML
        assert root.tag == SVG + "svg"
        texts = [t.text for t in root.iter(SVG + "text")]
        titles = [t for t in texts if t.startswith(("where the run's", "decoding:", "total of each"))]
        assert len(titles) == 1 + (name != "stages") + (name == "repeat")  # one panel per question
        assert titles[0] == "where the run's 53.2 s went: 200 rows, generate fp32"
        for stage, seconds in [("tokenize", 0.8), ("export", 12.0), ("predict", 40.0), ("write", 0.1)]:
            assert f"{STAGE_TITLES[stage]}: {seconds:.2f} s" in texts  # legend entry for every stage
        assert f"{STAGE_TITLES['load']}: 0.00 s" not in texts  # stages that took no time are left out
        assert "between stages: 0.30 s" in texts
        assert "12.0 s" in texts and "40.0 s" in texts and "0.8 s" not in texts  # small shares: legend only
        assert "0 s" in texts and "10 s" in texts  # the x axis
        if name != "stages":
            assert "decoding: 137 steps, worker seconds (5.8 ms loop overhead a step)" in texts
            assert "inside the predictors: 39.00 s" in texts and "Python / numpy loop: 0.80 s" in texts
        if name == "repeat":
            assert [t for t in texts if t.startswith("run ")] == ["run 1", "run 2", "run 3"]
            assert any(line.get("stroke-dasharray") for line in root.iter(SVG + "line"))  # the median
        heights.append(float(root.get("height")))
    assert heights[0] < heights[1] < heights[2]  # a panel more each time
    assert sorted(os.listdir(tmp_path)) == ["decoding.svg", "repeat.svg", "stages.svg"]  # no temp files left


def test_text_is_escaped(tmp_path):
    path = str(tmp_path / "odd.svg")
    write_timing_plot(report(task="<a & b>"), path)
    texts = [t.text for t in ET.parse(path).getroot().iter(SVG + "text")]
    assert "where the run's 53.2 s went: 200 rows, <a & b> fp32" in texts


def test_no_plotting_library_is_imported(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; from submit.timing_plot import write_timing_plot; "
            f"write_timing_plot({report()!r}, {str(tmp_path / 'p.svg')!r}); "
            "assert not any(m.split('.')[0] == 'matplotlib' for m in sys.modules), 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
