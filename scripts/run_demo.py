"""`bash run.sh` with no arguments: the built-in demo, end to end.

    bash run.sh [demo] [harness options]      classification: 2000 real reviews, ERNIE 3.0 medium shape
    bash run.sh generate-demo [options]       generation: 200 reviews as sources, unimo-text shape

Builds the demo data and checkpoint on first use, runs the harness on them,
and for classification checks the submission against the gold labels, as a
competitor would. Extra arguments go to the harness (e.g. `--workers 2`).
"""
from __future__ import annotations

import sys

import pipeline
from scripts import check_accuracy
from scripts.demo_setup import classify_demo, generate_demo

DEMOS = {"demo": classify_demo, "generate-demo": generate_demo}


def main(argv: list[str]) -> int:
    mode, extra = (argv[0], argv[1:]) if argv else ("demo", [])
    if mode not in DEMOS:
        print(f"unknown demo {mode!r}; choose from {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    print("preparing the demo data and checkpoint (first run only)...", flush=True)
    paths = DEMOS[mode]()
    status = pipeline.main([paths.input, paths.model_dir, paths.output, *extra])
    if status or paths.gold is None:
        return status
    print("accuracy against the gold labels (a seeded encoder whose head was fitted on other reviews: "
              "expect about 0.67):")
    return check_accuracy.main([paths.output, "--gold", paths.gold])


if __name__ == "__main__":
    pipeline.exit_with(main(sys.argv[1:]))
