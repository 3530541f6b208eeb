"""The timing report as a picture, written next to its JSON.

One horizontal bar per question a reader asks first: where did this run's
wall time go (stages, in order), for generation how decoding time splits
between the predictors and the Python loop, and with --repeat how the runs'
totals compare.
"""
from __future__ import annotations

from submit.timing_report import STAGE_TITLES, STAGES
from submit.write_submission import write_atomically

# Stages shorter than this share of the run are still drawn, but their
# seconds are only in the legend (no room for a label inside the bar).
LABEL_INSIDE_SHARE = 0.08


def plot_path_for(timing_path: str) -> str:
    return (timing_path[:-len(".json")] if timing_path.endswith(".json") else timing_path) + ".png"


def _stacked_bar(axis, parts: list[tuple[str, float]], title: str, colours) -> None:
    total = sum(seconds for _, seconds in parts) or 1.0
    left = 0.0
    for (name, seconds), colour in zip(parts, colours):
        axis.barh(0, seconds, left=left, color=colour, edgecolor="white", label=f"{name}: {seconds:.2f} s")
        if seconds / total >= LABEL_INSIDE_SHARE:
            axis.text(left + seconds / 2, 0, f"{seconds:.1f} s", ha="center", va="center", fontsize=9)
        left += seconds
    axis.set_title(title, loc="left", fontsize=10)
    axis.set_yticks([])
    axis.xaxis.set_major_formatter(lambda x, _: f"{x:g} s")
    axis.set_xlim(0, total * 1.01)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize=8, frameon=False)


def _stage_panel(axis, report: dict, colours) -> None:
    parts = [(STAGE_TITLES[name], report["stages_s"][name]) for name in STAGES if report["stages_s"][name] > 0]
    outside = report["total_s"] - sum(seconds for _, seconds in parts)
    if outside > 0.005:
        parts.append(("between stages", outside))
    _stacked_bar(axis, parts, f"where the run's {report['total_s']:.1f} s went: {report['rows']} rows, "
                              f"{report.get('task', '')} {report.get('engine', {}).get('precision', '')}".rstrip(),
                 colours)


def _decoding_panel(axis, decoding: dict, colours) -> None:
    parts = [("inside the predictors", decoding["engine_s"]), ("Python / numpy loop", decoding["loop_overhead_s"])]
    _stacked_bar(axis, parts, f"decoding: {decoding['decode_steps']} steps, worker seconds "
                              f"({decoding['loop_overhead_ms_per_step']} ms loop overhead a step)", colours)


def _repeat_panel(axis, totals: list[float], median: float) -> None:
    runs = list(range(1, len(totals) + 1))
    axis.barh(runs, totals, color="#4c72b0")
    for run, total in zip(runs, totals):
        axis.text(total, run, f" {total:.1f} s", va="center", fontsize=8)
    axis.axvline(median, color="black", linestyle="--", linewidth=1)
    axis.set_yticks(runs, [f"run {r}" for r in runs])
    axis.invert_yaxis()
    axis.set_xlim(0, max(totals) * 1.15)
    axis.xaxis.set_major_formatter(lambda x, _: f"{x:g} s")
    axis.set_title(f"total of each of the {len(totals)} runs (--repeat); dashed line: median {median:.1f} s",
                   loc="left", fontsize=10)


def write_timing_plot(report: dict, path: str) -> None:
    """PNG of the report: stages, decoding split (generation), repeat totals."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors
    panels = ["stages"] + (["decoding"] if report.get("decoding") else []) + \
             (["repeat"] if report.get("repeat") else [])
    heights = [2.2 if p != "repeat" else 0.5 + 0.35 * len(report["repeat"]["totals_s"]) for p in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights) + 0.3),
                                gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    for panel, axis in zip(panels, axes[:, 0]):
        if panel == "stages":
            _stage_panel(axis, report, colours)
        elif panel == "decoding":
            _decoding_panel(axis, report["decoding"], colours[6:])
        else:
            _repeat_panel(axis, report["repeat"]["totals_s"], report["repeat"]["total_s_median"])

    def write(tmp_path: str) -> None:
        figure.savefig(tmp_path, format="png", dpi=110)

    try:
        write_atomically(path, write)
    finally:
        plt.close(figure)
