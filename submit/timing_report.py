"""Where every second of a run went.

Stages are timed with wall clocks as they run; the report adds throughput
(rows/s, tokens/s) and the facts needed to read the numbers (rows, tokens,
padding, pruning, engine options, machine), and is written as JSON next to
the submission and printed as a short table.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager

STAGES = ("load", "read", "tokenize", "prune", "export", "quantize", "predict", "rerun", "write")
STAGE_TITLES = {
    "load": "environment and model load",
    "read": "read and validate",
    "tokenize": "tokenize",
    "prune": "prune vocabulary",
    "export": "export static model",
    "quantize": "int8 accuracy guard",
    "predict": "predict",
    "rerun": "fp32 re-run, low-margin rows",
    "write": "merge and write",
}


def peak_rss_mb() -> float:
    """The most this process has held resident so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Wall time per stage, and this process's peak resident memory as each
    stage ends, so a report shows which stage set the peak. A stage timed
    inside another counts only toward itself (chunks read while a streaming
    tokenizer pulls them are reading, not tokenising), so the stages still
    add up to the run."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self._start = time.perf_counter()
        self._open: list[list] = []  # [name, running since] of each open stage, innermost last

    @contextmanager
    def stage(self, name: str):
        if name not in STAGE_TITLES:
            raise ValueError(f"unknown stage {name!r}")
        self._pause_innermost()
        self._open.append([name, time.perf_counter()])
        try:
            yield
        finally:
            self._pause_innermost()
            self._open.pop()
            if self._open:
                self._open[-1][1] = time.perf_counter()
            self.peak_rss_mb[name] = round(peak_rss_mb(), 1)

    def _pause_innermost(self) -> None:
        if self._open:
            name, since = self._open[-1]
            now = time.perf_counter()
            self.seconds[name] = self.seconds.get(name, 0.0) + now - since
            self._open[-1][1] = now

    def total(self) -> float:
        return time.perf_counter() - self._start


def machine_facts() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0]}


def run_report(timer: StageTimer, rows: int, tokens: int, extra: dict) -> dict:
    total = timer.total()
    return {
        "stages_s": {name: round(timer.seconds.get(name, 0.0), 4) for name in STAGES},
        # the main process only; worker processes' memory is theirs
        "peak_rss_mb_after": {name: timer.peak_rss_mb[name] for name in STAGES if name in timer.peak_rss_mb},
        "total_s": round(total, 4),
        "rows": rows,
        "tokens": tokens,
        "rows_per_s": round(rows / total, 2) if total else None,
        "tokens_per_s": round(tokens / total, 1) if total else None,
        "machine": machine_facts(),
        **extra,
    }


def repeat_summary(reports: list[dict]) -> dict:
    """Leaderboard-style timing over --repeat runs: min and median per stage."""
    totals = [r["total_s"] for r in reports]
    return {
        "repeats": len(reports),
        "totals_s": totals,
        "total_s_min": min(totals),
        "total_s_median": statistics.median(totals),
        "stages_s_median": {
            name: round(statistics.median(r["stages_s"][name] for r in reports), 4) for name in STAGES
        },
    }


def int8_graph_lines(int8: dict) -> list[str]:
    """What the INT8 model's graph runs, counted from its nodes, and a warning
    when a layer planned as int8 does not run so."""
    census = int8.get("multiplies") or []
    totals = {kind: sum(layer[kind] for layer in census) for kind in ("int8", "fp32_first_token", "fp32")}
    lines = [f"int8 graph: {totals['int8']} matrix multiplies int8, {totals['fp32_first_token']} fp32 on the first "
             f"token, {totals['fp32']} fp32 (encoder layers, attention counted once)"] if census else []
    if int8.get("planned_int8_but_fp32"):
        lines.append(f"WARNING: layers {int8['planned_int8_but_fp32']} were planned int8 but their graph runs "
                     "fp32 multiplies over every token; they are reported as fp32")
    return lines


def format_table(report: dict) -> str:
    lines = [f"{'stage':<30}{'seconds':>10}"]
    for name in STAGES:
        lines.append(f"{STAGE_TITLES[name]:<30}{report['stages_s'][name]:>10.2f}")
    lines.append(f"{'total':<30}{report['total_s']:>10.2f}")
    lines.append(f"{report['rows']} rows, {report['tokens']} tokens: "
                 f"{report['rows_per_s']} rows/s, {report['tokens_per_s']} tokens/s")
    if report.get("truncated_rows"):
        lines.append(f"{report['truncated_rows']} rows truncated to {report['max_seq_len']} tokens")
    alongside = report.get("alongside_predict_s")
    if alongside:
        lines.append(f"read {alongside['read']:.2f} s and tokenised {alongside['tokenize']:.2f} s in a thread alongside "
                     "prediction; the rows above are the main thread's (tokenize: waiting for a chunk)")
    vocab = report.get("vocab")
    if vocab and vocab.get("pruned"):
        lines.append(f"vocabulary pruned: {vocab['kept']} of {vocab['full']} ids kept, "
                     f"{vocab['embedding_bytes_saved'] / 2**20:.1f} MiB of embeddings saved")
    engine = report.get("engine")
    if engine:
        where = f"GPU x{report.get('workers', 1)}" if engine["device"] == "gpu" else \
            f"cpu, {engine['cpu_threads']} threads per worker"
        lines.append(f"engine: {engine['engine']} ({where}, {engine['precision']})")
    if "engine_busy_s" in report and report["stages_s"]["predict"]:
        # The fp32 re-run's engine time is in the sum too.
        busy, rerun = report["engine_busy_s"], report["stages_s"].get("rerun", 0.0)
        predict = report["stages_s"]["predict"] + rerun
        stages = "predict and fp32 re-run stages" if rerun else "predict stage"
        lines.append(f"engines busy {busy:.2f} s of the {predict:.2f} s {stages} ({busy / predict:.0%}; "
                     f"summed over {report.get('workers', 1)} worker(s))")
    runner = report.get("runner")
    if runner:
        count = report["workers"]
        if runner["kind"] == "ray":
            nodes = ", ".join(f"{node['address']} {node['cpus']:g} CPU" + (f" {node['gpus']:g} GPU" if node["gpus"]
                                                                          else "") for node in runner["nodes"])
            where = ("a Ray instance of this machine" if runner["address"] == "local"
                     else f"the Ray cluster at {runner['address']}")
            lines.append(f"runner: {count} predictor actor{'s' if count != 1 else ''} on {where}; "
                         f"{len(runner['nodes'])} node{'s' if len(runner['nodes']) != 1 else ''}: {nodes}"
                         + (f"; tokenised on {report['tokenizer']}" if "tokenizer" in report else ""))
        else:
            lines.append(f"runner: {count} predictor process{'es' if count != 1 else ''} on this machine")
    onnx = report.get("onnx")
    if onnx and "max_logit_diff" in onnx:  # generation's two decoding programs
        lines.append(f"onnx: decoding programs ({onnx['precision']}), max logit difference from the Paddle model "
                     f"{onnx['max_logit_diff']:.1e} on a {onnx['probe_rows']}-row probe, top-1 agreement "
                     f"{onnx['probe_top1_agreement']:.3f}")
        profile = onnx.get("step_profile")  # the CPU's; a conversion for the GPU has none
        if profile:
            split = ", ".join(f"{name.replace('_', ' ')} {ms:.1f}" for name, ms in profile["ms_per_step"].items())
            lines.append(f"one step of {profile['rows']} rows over a {profile['prompt_width']}-token prompt: "
                         f"{profile['total_ms_per_step']:.1f} ms = {split} (ms, profiled at conversion)")
    elif onnx:
        fused = ", ".join(f"{op} {n}" for op, n in onnx["fused_ops"].items()) or "none"
        kept = "kept" if onnx["fusions_kept"] else "NOT kept (outputs moved; unfused graph runs)"
        lines.append(f"onnx: fusions {kept}: {fused}; max difference from the Paddle program "
                     f"{onnx['fused_max_abs_diff']:.1e}")
    fp16 = report.get("fp16")
    if fp16 and "max_logit_diff" in fp16:  # generation's decoding programs
        lines.append(f"fp16: decoding programs (caches fp16), max logit difference from the fp32 model "
                     f"{fp16['max_logit_diff']:.1e} on a {fp16['probe_rows']}-row probe, top-1 agreement "
                     f"{fp16['probe_top1_agreement']:.3f} (on {fp16['on']}{', cached' if fp16['cached'] else ''})")
    elif fp16:
        lines.append(f"fp16: label agreement with the fp32 model {fp16['label_agreement']:.4f}, largest probability "
                     f"difference {fp16['max_prob_diff']:.1e}, on {fp16['sample_rows']} rows of this input "
                     f"(both on the GPU{', cached' if fp16['cached'] else ''}); fp16 noise in the margin "
                     f"{fp16['margin_rule']['error_scale']:.3f}")
    int8 = report.get("int8")
    if int8:
        if int8["int8"]:
            rule = int8.get("margin_rule")
            rerun = (f", INT8 alone {int8['int8_agreement']:.4f}; low-margin rows re-run in fp32 (INT8 noise in "
                     f"the margin {rule['error_scale']:.3f})" if rule else "")
            first_token = ", the first token's rows fp32" if int8.get("first_token_fp32") else ""
            lines.append(f"int8: layers {int8['int8_layers']} int8{first_token}, {int8['fp32_layers'] or 'none'} "
                         f"fp32; label agreement with fp32 {int8['agreement']:.4f} on {int8['held_back_rows']} held-back rows"
                         f"{rerun} (guard {int8['guard_s']:.1f}s{', cached' if int8['cached'] else ''})")
            lines += int8_graph_lines(int8)
        else:
            lines.append(f"int8: {int8['reason']} (guard {int8['guard_s']:.1f}s)")
    rerun = report.get("rerun")
    if rerun:
        from_guard = rerun.get("fp32_from_guard", 0)
        low = "an INT8" if report.get("int8") else "an fp16"
        lines.append(f"fp32 re-run: {rerun['rows']} of {report['rows']} rows had {low} margin at or under "
                     f"{rerun['threshold']:.3f}" + (f" ({from_guard} more came in fp32 from the guard)"
                                                    if from_guard else "") +
                     f"; expected label agreement with fp32 over all rows {rerun['expected_agreement']:.4f}")
    decoding = report.get("decoding")
    if decoding:
        lines.append(f"decoding: {decoding['decode_steps']} steps, loop overhead "
                     f"{decoding['loop_overhead_ms_per_step']} ms/step "
                     f"({100 * decoding['loop_overhead_share']:.1f}% of decoding time)" +
                     ("; tokens chosen on the device" if decoding.get("tokens_chosen_on_device") else ""))
    return "\n".join(lines)
