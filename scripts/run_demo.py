"""`bash run.sh` with no arguments: the built-in demo, end to end.

Builds the demo data and checkpoint on first use, runs the harness on them,
then checks the submission against the gold labels, as a competitor would.
Extra arguments go to the harness (e.g. `bash run.sh demo --workers 2`).
"""
from __future__ import annotations

import sys

import pipeline
from scripts import check_accuracy
from scripts.demo_setup import classify_demo


def main(argv: list[str]) -> int:
    mode, extra = (argv[0], argv[1:]) if argv else ("demo", [])
    if mode != "demo":
        print(f"unknown demo {mode!r}", file=sys.stderr)
        return 2
    print("preparing the demo data and checkpoint (first run only)...", flush=True)
    paths = classify_demo()
    status = pipeline.main([paths.input, paths.model_dir, paths.output, *extra])
    if status:
        return status
    print("accuracy against the gold labels (a seeded random model: expect about chance):")
    return check_accuracy.main([paths.output, "--gold", paths.gold])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
