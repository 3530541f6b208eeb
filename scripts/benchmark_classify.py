"""Standard method vs the harness on the classification demo, in one run.

    .venv/bin/python -m scripts.benchmark_classify [--rows 2000] [--harness-repeat 3] [-- harness options]

Both sides are timed end to end as a user runs them (a fresh process: imports,
model load, tokenise, predict, write the submission). The harness runs once
cold (empty export cache) and then warm; the standard method (dygraph
PaddleNLP model, its Python tokenizer, batch 32 padded to max_seq_len, one
process) runs once, since it is the slow side. Prints both times, the
speed-ups, label agreement and the largest probability difference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd

from scripts.demo_setup import classify_demo
from submit.accuracy import aligned, classification_agreement
from submit.timing_report import machine_facts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(command: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=REPO, PPNLP_HOME=os.path.join(REPO, ".cache", "paddlenlp"),
               HF_HOME=os.path.join(REPO, ".cache", "huggingface"), GLOG_minloglevel="2", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, harness_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--harness-repeat", type=int, default=3, help="warm harness runs (median reported)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(own)

    demo = classify_demo(args.rows)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_classify_") as tmp:
        standard_out = os.path.join(tmp, "standard.csv")
        harness_out = os.path.join(tmp, "harness.csv")
        harness = ["bash", os.path.join(REPO, "run.sh"), demo.input, demo.model_dir, harness_out, "--quiet",
                   "--max-seq-len", str(args.max_seq_len), "--cache-dir", os.path.join(tmp, "exports"),
                   *harness_options]
        print(f"harness, cold export cache: {' '.join(harness[1:])}", flush=True)
        cold = timed(harness)
        warm = []
        for _ in range(args.harness_repeat):
            warm.append(timed(harness))
        print("standard method (this is the slow part)...", flush=True)
        standard = timed([python, "-m", "scripts.standard_method", demo.input, demo.model_dir, standard_out,
                          "--max-seq-len", str(args.max_seq_len)])
        ours = pd.read_csv(harness_out, dtype={"id": str})
        theirs = aligned(ours, pd.read_csv(standard_out, dtype={"id": str}), "standard submission")
        agreement = classification_agreement(ours, theirs)
        with open(harness_out + ".timing.json", encoding="utf-8") as f:
            stages = json.load(f)["stages_s"]

    warm_median = statistics.median(warm)
    results = {
        "rows": args.rows, "max_seq_len": args.max_seq_len, "harness_options": harness_options,
        "standard_s": round(standard, 2), "harness_cold_s": round(cold, 2),
        "harness_warm_s": [round(w, 2) for w in warm], "harness_warm_median_s": round(warm_median, 2),
        "speedup_cold": round(standard / cold, 2), "speedup_warm": round(standard / warm_median, 2),
        "harness_stages_s_last_run": stages, **agreement, "machine": machine_facts(),
    }
    print(json.dumps(results, indent=2))
    print(f"\nstandard method {standard:.1f}s | harness cold {cold:.1f}s ({standard / cold:.2f}x) | "
          f"harness warm median {warm_median:.1f}s ({standard / warm_median:.2f}x) | "
          f"label agreement {agreement['label_agreement']:.4f} | max prob diff {agreement['max_prob_diff']:.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
