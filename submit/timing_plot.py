"""The timing report as a picture, written next to its JSON.

One horizontal bar per question a reader asks first: where did this run's
wall time go (stages, in order), for generation how decoding time splits
between the predictors and the Python loop, and with --repeat how the runs'
totals compare.

The picture is an SVG built as plain text: no plotting library to import or
render with (matplotlib cost about half a second of every run), so writing it
takes milliseconds. Any browser shows it.
"""
from __future__ import annotations

import math
from xml.sax.saxutils import escape

from submit.timing_report import STAGE_TITLES, STAGES
from submit.write_submission import write_atomically

# Stages shorter than this share of the run are still drawn, but their
# seconds are only in the legend (no room for a label inside the bar).
LABEL_INSIDE_SHARE = 0.08

# matplotlib's "tab10" colours, the ones the PNG version used.
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
REPEAT_COLOUR = "#4c72b0"

WIDTH = 1100
PLOT_LEFT = 70  # room for the "run N" labels of the repeat panel
PLOT_RIGHT = WIDTH - 30
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
TITLE_HEIGHT = 30  # title line above each panel's bars
AXIS_HEIGHT = 30  # axis line, ticks and their labels under the bars
BAR_HEIGHT = 36  # the stacked bars
LEGEND_COLUMNS = 3
LEGEND_ROW = 18
RUN_ROW = 26  # one bar per run in the repeat panel
PANEL_GAP = 16


def plot_path_for(timing_path: str) -> str:
    return (timing_path[:-len(".json")] if timing_path.endswith(".json") else timing_path) + ".svg"


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "start", halo: bool = False) -> str:
    """Text vertically centred on y (dy rather than dominant-baseline, which renderers treat unevenly)."""
    outline = ' stroke="white" stroke-width="3" paint-order="stroke"' if halo else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" dy="0.35em" font-size="{size}" text-anchor="{anchor}"{outline}>'
            f'{escape(text)}</text>')


def _ticks(limit: float) -> list[float]:
    """A few round values from 0 to limit (steps of 1, 2 or 5 times a power of ten)."""
    if limit <= 0:
        return [0.0]
    rough = limit / 6
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    return [round(i * step, 10) for i in range(int(limit / step + 1e-9) + 1)]


def _x_axis(top: float, limit: float) -> list[str]:
    """The axis line under a panel's bars, with tick marks and "N s" labels."""
    scale = (PLOT_RIGHT - PLOT_LEFT) / limit
    parts = [f'<line x1="{PLOT_LEFT}" y1="{top:.1f}" x2="{PLOT_RIGHT}" y2="{top:.1f}" stroke="#333" stroke-width="1"/>']
    for tick in _ticks(limit):
        x = PLOT_LEFT + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{top + 5:.1f}" stroke="#333" stroke-width="1"/>')
        parts.append(_text(x, top + 16, f"{tick:g} s", size=10, anchor="middle"))
    return parts


def _stacked_bar_height(parts: list[tuple[str, float]]) -> float:
    legend_rows = math.ceil(len(parts) / LEGEND_COLUMNS)
    return TITLE_HEIGHT + BAR_HEIGHT + AXIS_HEIGHT + 8 + legend_rows * LEGEND_ROW


def _stacked_bar(top: float, parts: list[tuple[str, float]], title: str, colours) -> list[str]:
    total = sum(seconds for _, seconds in parts) or 1.0
    limit = total * 1.01
    scale = (PLOT_RIGHT - PLOT_LEFT) / limit
    svg = [_text(PLOT_LEFT, top + 14, title, size=13)]
    bar_top = top + TITLE_HEIGHT
    left = 0.0
    for (name, seconds), colour in zip(parts, colours):
        x, width = PLOT_LEFT + left * scale, seconds * scale
        svg.append(f'<rect x="{x:.1f}" y="{bar_top:.1f}" width="{width:.1f}" height="{BAR_HEIGHT}" '
                   f'fill="{colour}" stroke="white" stroke-width="1"/>')
        if seconds / total >= LABEL_INSIDE_SHARE:
            svg.append(_text(x + width / 2, bar_top + BAR_HEIGHT / 2, f"{seconds:.1f} s", anchor="middle"))
        left += seconds
    svg += _x_axis(bar_top + BAR_HEIGHT, limit)
    legend_top = bar_top + BAR_HEIGHT + AXIS_HEIGHT + 8
    column_width = (PLOT_RIGHT - PLOT_LEFT) / LEGEND_COLUMNS
    for i, ((name, seconds), colour) in enumerate(zip(parts, colours)):
        x = PLOT_LEFT + (i % LEGEND_COLUMNS) * column_width
        y = legend_top + (i // LEGEND_COLUMNS) * LEGEND_ROW
        svg.append(f'<rect x="{x:.1f}" y="{y + 3:.1f}" width="12" height="12" fill="{colour}"/>')
        svg.append(_text(x + 18, y + 9, f"{name}: {seconds:.2f} s"))
    return svg


def _stage_parts(report: dict) -> tuple[list[tuple[str, float]], str]:
    parts = [(STAGE_TITLES[name], report["stages_s"][name]) for name in STAGES if report["stages_s"][name] > 0]
    outside = report["total_s"] - sum(seconds for _, seconds in parts)
    if outside > 0.005:
        parts.append(("between stages", outside))
    title = (f"where the run's {report['total_s']:.1f} s went: {report['rows']} rows, "
             f"{report.get('task', '')} {report.get('engine', {}).get('precision', '')}").rstrip()
    return parts, title


def _decoding_parts(decoding: dict) -> tuple[list[tuple[str, float]], str]:
    parts = [("inside the predictors", decoding["engine_s"]), ("Python / numpy loop", decoding["loop_overhead_s"])]
    title = (f"decoding: {decoding['decode_steps']} steps, worker seconds "
             f"({decoding['loop_overhead_ms_per_step']} ms loop overhead a step)")
    return parts, title


def _repeat_height(totals: list[float]) -> float:
    return TITLE_HEIGHT + len(totals) * RUN_ROW + AXIS_HEIGHT


def _repeat_panel(top: float, totals: list[float], median: float) -> list[str]:
    limit = (max(totals) * 1.15) or 1.0
    scale = (PLOT_RIGHT - PLOT_LEFT) / limit
    svg = [_text(PLOT_LEFT, top + 14, f"total of each of the {len(totals)} runs (--repeat); "
                                      f"dashed line: median {median:.1f} s", size=13)]
    bars_top = top + TITLE_HEIGHT
    bars_bottom = bars_top + len(totals) * RUN_ROW
    labels = []
    for i, total in enumerate(totals):
        y = bars_top + i * RUN_ROW
        svg.append(f'<rect x="{PLOT_LEFT}" y="{y + 3:.1f}" width="{total * scale:.1f}" height="{RUN_ROW - 6}" '
                   f'fill="{REPEAT_COLOUR}"/>')
        labels.append(_text(PLOT_LEFT - 8, y + RUN_ROW / 2, f"run {i + 1}", anchor="end"))
        labels.append(_text(PLOT_LEFT + total * scale + 4, y + RUN_ROW / 2, f"{total:.1f} s", size=10, halo=True))
    x = PLOT_LEFT + median * scale
    svg.append(f'<line x1="{x:.1f}" y1="{bars_top:.1f}" x2="{x:.1f}" y2="{bars_bottom:.1f}" stroke="black" '
               f'stroke-width="1" stroke-dasharray="5,3"/>')  # under the labels, which have a white halo
    svg += labels
    svg += _x_axis(bars_bottom, limit)
    return svg


def timing_svg(report: dict) -> str:
    """The SVG text of the report: stages, decoding split (generation), repeat totals."""
    bars = [(*_stage_parts(report), TAB10)]
    if report.get("decoding"):
        bars.append((*_decoding_parts(report["decoding"]), TAB10[6:]))
    body: list[str] = []
    top = float(PANEL_GAP)
    for parts, title, colours in bars:
        body += _stacked_bar(top, parts, title, colours)
        top += _stacked_bar_height(parts) + PANEL_GAP
    if report.get("repeat"):
        totals = report["repeat"]["totals_s"]
        body += _repeat_panel(top, totals, report["repeat"]["total_s_median"])
        top += _repeat_height(totals) + PANEL_GAP
    height = math.ceil(top)
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{FONT}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>',
        *body,
        "</svg>",
        "",
    ])


def write_timing_plot(report: dict, path: str) -> None:
    """SVG of the report: stages, decoding split (generation), repeat totals."""
    svg = timing_svg(report)

    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(svg)

    write_atomically(path, write)
