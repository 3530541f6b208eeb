"""The same run on this host's predictor processes and with --ray, side by side.

    .venv/bin/python -m scripts.ray_timing INPUT MODEL_DIR [--runs 3] [--json FILE] [-- harness options]

One untimed run fills the export cache, then each round runs the harness
locally and with `--ray` (a Ray instance started for the run, stopped at its
end), alternating so that a drifting machine weighs on both alike. Each run
is a fresh `python -m pipeline` process timed from start to exit, as a user
runs it (starting and stopping Ray included). Prints the median wall time of
each side, their ratio, the timing reports' median stage seconds and the
driver's peak memory, and whether every submission is byte-identical to the
first local run's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from scripts.benchmark import timed
from submit.timing_report import machine_facts

SIDES = {"local": [], "ray": ["--ray"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--json", default=None, help="also write the results here")
    argv = sys.argv[1:] if argv is None else argv
    own, harness_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    with tempfile.TemporaryDirectory(prefix="ray_timing_") as tmp:
        def command(side: str, name: str) -> tuple[list[str], str]:
            output = os.path.join(tmp, f"{name}.csv")
            return ([sys.executable, "-m", "pipeline", args.input, args.model_dir, output, "--quiet", "--no-plot",
                     "--cache-dir", os.path.join(tmp, "exports"), *harness_options, *SIDES[side]], output)

        timed(command("local", "warm_up")[0])  # the export, cached for every timed run
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        first = None
        for round_ in range(args.runs):
            for side in SIDES:
                run, output = command(side, f"{side}_{round_}")
                seconds = timed(run)
                with open(output, "rb") as f:
                    written = f.read()
                first = first if first is not None else written
                with open(output + ".timing.json", encoding="utf-8") as f:
                    report = json.load(f)
                runs[side].append({"wall_s": round(seconds, 2), "total_s": report["total_s"],
                                   "stages_s": report["stages_s"], "runner": report["runner"],
                                   "driver_peak_rss_mb": max(report["peak_rss_mb_after"].values()),
                                   "same_bytes_as_first_local": written == first})
                print(f"{side} run {round_ + 1}: {seconds:.2f} s", file=sys.stderr, flush=True)
    summary = {side: {"wall_s": [r["wall_s"] for r in results],
                      "wall_s_median": statistics.median(r["wall_s"] for r in results),
                      "stages_s_median": {name: round(statistics.median(r["stages_s"][name] for r in results), 2)
                                          for name in results[0]["stages_s"]},
                      "driver_peak_rss_mb_max": max(r["driver_peak_rss_mb"] for r in results),
                      "all_same_bytes": all(r["same_bytes_as_first_local"] for r in results)}
               for side, results in runs.items()}
    ratio = summary["ray"]["wall_s_median"] / summary["local"]["wall_s_median"]
    result = {"machine": machine_facts(), "input": args.input, "harness_options": harness_options,
              "runs": runs, "summary": summary, "ray_over_local": round(ratio, 3)}
    for side, numbers in summary.items():
        print(f"{side:>5}: median {numbers['wall_s_median']:.2f} s of {numbers['wall_s']}, stages "
              f"{numbers['stages_s_median']}, driver peak {numbers['driver_peak_rss_mb_max']:.0f} MB, "
              f"same bytes: {numbers['all_same_bytes']}")
    print(f"ray / local: {ratio:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
