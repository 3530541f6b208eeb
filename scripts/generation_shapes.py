"""Batch shape for generation on this machine: rows decoded together x padded tokens per prompt pass.

    .venv/bin/python -m scripts.generation_shapes [--rows 200] [--grid 32:1024,64:1024,...]

Runs the harness (whole processes, export cache warmed first, so only
decoding differs) over the generation demo with every length forced to
--max-new-tokens, once per shape of `--max-batch-rows R --token-budget T`,
and prints the predict stage and where its engine time went (prompt passes
vs steps, from each run's timing report). Not a test: timings move by up to
30% run to run on a shared machine, so compare shapes within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from scripts.benchmark import REPO, timed
from scripts.demo_setup import generate_demo
from scripts.repo_caches import keep_caches_in_repo
from submit.timing_report import machine_facts

DEFAULT_GRID = "64:1024,32:1024,128:1024,200:1024,64:512,64:2048"


def main(argv: list[str] | None = None) -> int:
    keep_caches_in_repo()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="demo sources")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--grid", default=DEFAULT_GRID, help="rows:token_budget pairs, comma-separated")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    demo = generate_demo(args.rows)
    shapes = [tuple(int(x) for x in pair.split(":")) for pair in args.grid.split(",")]
    forced = ["--min-new-tokens", str(args.max_new_tokens), "--max-new-tokens", str(args.max_new_tokens)]
    results = []
    with tempfile.TemporaryDirectory(prefix="shapes_") as tmp:
        def harness(rows: int, budget: int) -> list[str]:
            return ["bash", os.path.join(REPO, "run.sh"), demo.input, demo.model_dir, os.path.join(tmp, "out.csv"),
                    "--quiet", "--no-plot", "--cache-dir", os.path.join(tmp, "exports"), *forced,
                    "--max-batch-rows", str(rows), "--token-budget", str(budget)]

        subprocess.run(harness(*shapes[0]), check=True, stdout=subprocess.DEVNULL)  # export and convert once
        for rows, budget in shapes:
            wall = timed(harness(rows, budget))
            with open(os.path.join(tmp, "out.csv.timing.json"), encoding="utf-8") as f:
                report = json.load(f)
            decoding = report["decoding"]
            results.append({"max_batch_rows": rows, "token_budget": budget, "wall_s": round(wall, 2),
                            "predict_s": report["stages_s"]["predict"], "engine_s": decoding["engine_s"],
                            "prompt_s": decoding.get("prompt_s"), "steps_s": decoding.get("steps_s"),
                            "jobs": report["batches"]})
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'rows':>5} {'budget':>7} {'jobs':>5} {'predict s':>10} {'prompt s':>9} {'steps s':>8}")
    for r in results:
        print(f"{r['max_batch_rows']:>5} {r['token_budget']:>7} {r['jobs']:>5} {r['predict_s']:>10.1f} "
              f"{r['prompt_s']:>9.1f} {r['steps_s']:>8.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"shapes": results, "machine": machine_facts()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
