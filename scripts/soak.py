"""Soak: run the harness N times in a row on one input and record, per run,
the wall time, the exit status, whether the submission equals the first
run's, and the peak resident memory of the main process and of every child
(tokenizer and predictor workers), read from /proc while the run lives.

    .venv/bin/python -m scripts.soak INPUT MODEL_DIR --runs 5 [harness options...]

Memory that grows from run to run, or a submission that changes, is what this
is for; it is not a test (it takes minutes) and prints a table and a JSON.

`--kill-worker-after S` SIGKILLs one worker process S seconds into every run
after the first (with --workers 2 and a small input that is a predictor): with
the harness's --retries the run should still write run 1's submission, and the
table shows what the retry cost.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_EVERY_S = 0.1


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most this process has ever held resident."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def run_once(command: list[str], env: dict, kill_worker_after: float | None = None) -> dict:
    started = time.perf_counter()
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    killed = None
    while run.poll() is None:
        if kill_worker_after is not None and killed is None and time.perf_counter() - started > kill_worker_after:
            workers = [pid for pid in children(run.pid) if "spawn_main" in command_name(pid)]
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
        pids = [run.pid]
        while pids:  # the whole tree: run.sh's python and its workers
            pid = pids.pop()
            if "resource_tracker" not in command_name(pid):
                peak = peak_rss_mb(pid)
                if peak:  # 0 or None: not started yet, or gone
                    peaks[pid] = max(peak, peaks.get(pid, 0.0))
            pids += children(pid)
        time.sleep(SAMPLE_EVERY_S)
    stderr = run.stderr.read()
    # run.sh execs the harness in place, so the main process keeps run.pid.
    workers = sorted(round(v, 1) for pid, v in peaks.items() if pid != run.pid)
    return {"seconds": round(time.perf_counter() - started, 2), "status": run.returncode,
            "main_peak_mb": round(peaks.get(run.pid, 0.0), 1), "worker_peaks_mb": workers,
            "error": stderr.strip().splitlines()[-1] if run.returncode else None,
            "killed_worker": killed}


def digest(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--kill-worker-after", type=float, default=None, metavar="S",
                        help="SIGKILL a worker process S seconds into each run after the first")
    args, harness_options = parser.parse_known_args(argv)
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONWARNINGS="ignore")
    results = []
    with tempfile.TemporaryDirectory(prefix="soak_") as scratch:
        output = os.path.join(scratch, "submission" + os.path.splitext(args.input)[1])
        cache = os.path.join(scratch, "exports")  # first run cold, the rest warm
        first = None
        for n in range(1, args.runs + 1):
            if os.path.exists(output):  # a failed run must not be judged by an earlier run's file
                os.remove(output)
            command = ["bash", os.path.join(REPO, "run.sh"), args.input, args.model_dir, output, "--quiet",
                       "--cache-dir", cache, *harness_options]
            result = run_once(command, env, args.kill_worker_after if n > 1 else None)
            result["run"] = n
            result["same_output_as_run_1"] = (first := first or digest(output)) == digest(output)
            results.append(result)
            print(f"run {n}: {result['seconds']:.1f} s, exit {result['status']}, main {result['main_peak_mb']} MB, "
                  f"workers {result['worker_peaks_mb']} MB, same output: {result['same_output_as_run_1']}"
                  + (f", killed worker pid {result['killed_worker']}" if result["killed_worker"] else "")
                  + (f" ({result['error']})" if result["error"] else ""), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command_options": harness_options, "runs": results}, f, indent=2)
    return 0 if all(r["status"] == 0 and r["same_output_as_run_1"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
