"""The standard method vs the harness on a demo workload, in one run.

    .venv/bin/python -m scripts.benchmark classify [--rows 2000] [-- harness options]
    .venv/bin/python -m scripts.benchmark generate [--rows 200] [--decode beam] [-- harness options]
    .venv/bin/python -m scripts.benchmark tokenizer               (every demo review, each WordPiece engine installed)

Both sides are timed end to end as a user runs them: a fresh process that
imports, loads the checkpoint, tokenises, predicts and writes the submission.
The harness runs with an empty export cache (cold: tracing and saving the
static model counted; classify --cold-repeat N: N such runs, the cache
emptied before each, and N cold runs of each ONNX Runtime peer, medians
reported) and then warm, each against the ONNX Runtime peer of the same
precision and temperature (the peer converts once into its own cache and
reuses it: cold from an empty cache, warm from it); the standard method (see
scripts/standard_method.py) runs once, since it is the slow side, with as
many math threads as the harness uses (all cores; --standard-threads). Prints both
times, the speed-ups and how far the harness's output is from the standard
method's: label agreement and the largest probability difference for
classification; exact match, token agreement and BLEU-4 for generation, with
vocabulary pruning off (the default) and, in a last run, on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scripts.demo_setup import classify_demo, generate_demo
from scripts.repo_caches import keep_caches_in_repo
from submit.accuracy import aligned, classification_agreement, classification_metrics, generation_metrics
from submit.timing_report import machine_facts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = {"classify": (classify_demo, 2000), "generate": (generate_demo, 200)}


def timed(command: list[str], **extra_env: str) -> float:
    env = dict(os.environ, **extra_env, PYTHONPATH=REPO, GLOG_minloglevel="2", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def compare(task: str, ours_path: str, theirs_path: str) -> dict:
    ours = pd.read_csv(ours_path, dtype={"id": str}, keep_default_na=False)
    theirs = aligned(ours, pd.read_csv(theirs_path, dtype={"id": str}, keep_default_na=False), "standard output")
    if task == "classify":
        return classification_agreement(ours, theirs)
    return generation_metrics(ours["text"].tolist(), theirs["text"].tolist())


def tokenizer_benchmark() -> dict:
    """The harness's WordPiece, on each engine installed, against paddlenlp's
    ErnieTokenizer on every demo review, one process and one thread each:
    speed, and how many id lists differ."""
    from paddlenlp.transformers import ErnieTokenizer

    from preprocess.wordpiece import BACKENDS, FastWordPiece
    from scripts.demo_corpus import load_reviews
    from scripts.demo_models import ERNIE_MEDIUM
    from scripts.demo_setup import DEMO_DIR, demo_vocab_path

    texts = [review.text for review in load_reviews()]
    # The demo classifier's vocab, without fitting its head.
    vocab_path = demo_vocab_path(DEMO_DIR, ERNIE_MEDIUM["vocab_size"], unimo_format=False)
    slow = ErnieTokenizer(vocab_file=vocab_path)
    started = time.perf_counter()
    slow_ids = [slow.convert_tokens_to_ids(slow.tokenize(text)) for text in texts]
    slow_s = time.perf_counter() - started
    results = {"texts": len(texts), "python": platform.python_version(), "ernie_tokenizer_s": round(slow_s, 2),
               "ernie_ids_digest": ids_digest(slow_ids)}
    for backend in BACKENDS:
        try:
            fast = FastWordPiece(vocab_path, num_threads=1, backend=backend)
        except ImportError as e:
            results[backend] = f"not installed ({e})"
            continue
        started = time.perf_counter()
        fast_ids = fast.encode(texts)
        fast_s = time.perf_counter() - started
        results[backend] = {"harness_s": round(fast_s, 2), "speedup": round(slow_s / fast_s, 2),
                            "differing_texts": sum(a.tolist() != b for a, b in zip(fast_ids, slow_ids)),
                            "ids_digest": ids_digest(fast_ids)}
    return results


def ids_digest(ids: list) -> str:
    """Short digest of every id list (lengths included), to compare runs across Pythons and engines."""
    digest = hashlib.sha256(np.array([len(x) for x in ids], dtype=np.int64).tobytes())
    for x in ids:
        digest.update(np.asarray(x, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Contender:
    name: str
    command: list[str]
    output: str
    precision: str        # fp32 | int8: harness rows are compared with the peer of the same precision
    runs: int = 1         # more than one: the median is reported
    env: tuple = ()       # extra environment, (name, value) pairs
    empty_before: str = ""  # a folder emptied before each run (a cold run's export cache)


def classify_contenders(args, demo, shared: list[str], harness_options: list[str], tmp: str) -> list[Contender]:
    """Every classification side, as whole processes, in the order they run.
    Each harness precision gets its own empty export cache, so its cold run
    pays for export, ONNX conversion and (INT8) the guard."""
    def out(name: str) -> str:
        return os.path.join(tmp, name + ".csv")

    def cache(name: str) -> str:
        return os.path.join(tmp, name + "_exports")

    def harness(name: str, *extra: str) -> list[str]:
        return ["bash", os.path.join(REPO, "run.sh"), demo.input, demo.model_dir, out(name), "--quiet",
                "--cache-dir", cache(name), *shared, *harness_options, *extra]

    def peer(name: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "scripts.onnx_runtime_peer", demo.input, demo.model_dir, out(name), *extra,
                "--max-seq-len", str(args.max_seq_len)]

    sides = []
    if not args.no_standard:
        sides.append(Contender("standard method (dygraph)", [sys.executable, "-m", "scripts.standard_method",
                                                              demo.input, demo.model_dir, out("standard"), *shared],
                               out("standard"), "fp32", env=(("OMP_NUM_THREADS", str(args.standard_threads)),)))
    for precision, extra in (("fp32", ()), ("int8", ("--precision", "int8"))):
        name = f"harness_{precision}"
        command = harness(name, *extra)
        sides.append(Contender(f"harness {precision}, cold", command, out(name), precision, runs=args.cold_repeat,
                               empty_before=cache(name)))
        sides.append(Contender(f"harness {precision}, warm", command, out(name), precision, runs=args.harness_repeat))
    # The peers convert once and reuse, as a deployment does: cold from an
    # empty conversion cache, then warm from it.
    for precision, extra in (("fp32", ()), ("int8", ("--int8",))):
        name = f"peer_{precision}"
        command = peer(name, *extra, "--cache-dir", cache(name))
        sides.append(Contender(f"ONNX Runtime peer {precision}, cold", command, out(name), precision,
                               runs=args.cold_repeat, empty_before=cache(name)))
        sides.append(Contender(f"ONNX Runtime peer {precision}, warm", command, out(name), precision,
                               runs=args.harness_repeat))
    return sides


def classify_benchmark(args, demo, shared: list[str], harness_options: list[str], tmp: str) -> dict:
    """Seconds, ratios and agreement of every side; the fp32 reference is the
    standard method (PaddleNLP's own model) or, with --no-standard, the harness
    in fp32."""
    sides = []
    for side in classify_contenders(args, demo, shared, harness_options, tmp):
        print(f"{side.name}: {' '.join(side.command)}", flush=True)
        seconds = []
        for _ in range(side.runs):
            if side.empty_before:
                shutil.rmtree(side.empty_before, ignore_errors=True)
            seconds.append(timed(side.command, **dict(side.env)))
        sides.append({"side": side, "seconds": seconds, "median": statistics.median(seconds),
                      "frame": pd.read_csv(side.output, dtype={"id": str}, keep_default_na=False)})
    reference = sides[0]
    gold = pd.read_csv(demo.gold, dtype={"id": str, "label": str}, keep_default_na=False) if demo.gold else None
    # Like with like: each harness side against the peer of its precision and temperature.
    peers = {(s["side"].precision, temperature(s["side"].name)): s["median"] for s in sides
             if "peer" in s["side"].name}
    rows = []
    for s in sides:
        frame = s["frame"]
        row = {"side": s["side"].name, "seconds": round(s["median"], 2), "runs": [round(x, 2) for x in s["seconds"]],
               **classification_agreement(frame, aligned(frame, reference["frame"], "reference"))}
        row["speedup_vs_reference"] = round(reference["median"] / s["median"], 2)
        if s["side"].name.startswith("harness"):
            row["ratio_vs_peer_same_precision"] = round(peers[s["side"].precision, temperature(s["side"].name)]
                                                        / s["median"], 2)
        if gold is not None:
            row["accuracy_vs_gold"] = classification_metrics(
                frame["label"].tolist(), aligned(frame, gold, "gold")["label"].tolist())["accuracy"]
        rows.append(row)
    return {"reference": reference["side"].name, "sides": rows}


def temperature(side_name: str) -> str:
    return "cold" if side_name.endswith("cold") else "warm"


def print_classify_table(results: dict) -> None:
    print(f"\nreference for agreement: {results['reference']}")
    print(f"{'side':<34}{'seconds':>9}{'vs ref':>8}{'vs peer':>9}{'agree':>8}{'max dp':>10}{'acc':>7}")
    for r in results["sides"]:
        peer = f"{r['ratio_vs_peer_same_precision']:.2f}x" if "ratio_vs_peer_same_precision" in r else ""
        print(f"{r['side']:<34}{r['seconds']:>9.1f}{r['speedup_vs_reference']:>7.2f}x{peer:>9}"
              f"{r['label_agreement']:>8.4f}{r['max_prob_diff']:>10.1e}{r.get('accuracy_vs_gold', float('nan')):>7.3f}")


def main(argv: list[str] | None = None) -> int:
    keep_caches_in_repo()  # for this process and, inherited, every one it starts
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tokenizer"]:
        print(json.dumps(tokenizer_benchmark(), indent=2))
        return 0
    own, harness_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(DEMOS))
    parser.add_argument("--rows", type=int, default=None, help="demo rows; default 2000 (classify), 200 (generate)")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--min-new-tokens", type=int, default=0,
                        help="generation, both sides; equal to --max-new-tokens forces every row's length")
    parser.add_argument("--no-int8", action="store_true", help="generation: skip the harness's INT8 runs")
    parser.add_argument("--decode", choices=["greedy", "beam"], default="greedy", help="generation, both sides")
    parser.add_argument("--num-beams", type=int, default=4, help="generation with --decode beam, both sides")
    parser.add_argument("--harness-repeat", type=int, default=3, help="warm harness runs (median reported)")
    parser.add_argument("--cold-repeat", type=int, default=1,
                        help="classify: runs of the harness from an empty export cache, and of each ONNX Runtime "
                             "peer (every side starts afresh as a process), median reported")
    parser.add_argument("--standard-threads", type=int, default=os.cpu_count() or 1,
                        help="math threads of the standard method's process (OMP_NUM_THREADS); Paddle's "
                             "dygraph CPU kernels use one unless told, which would flatter the harness")
    parser.add_argument("--no-standard", action="store_true",
                        help="classify: skip the standard method; the harness's fp32 run is then the reference")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(own)
    make_demo, default_rows = DEMOS[args.task]
    rows = args.rows or default_rows
    demo = make_demo(rows)
    shared = ["--max-seq-len", str(args.max_seq_len)]
    if args.task == "generate":
        shared += ["--max-new-tokens", str(args.max_new_tokens), "--min-new-tokens", str(args.min_new_tokens),
                   "--decode", args.decode, "--num-beams", str(args.num_beams)]

    if args.task == "classify":
        with tempfile.TemporaryDirectory(prefix="benchmark_") as tmp:
            results = {"task": "classify", "rows": rows, "harness_options": harness_options,
                       "standard_threads": args.standard_threads,
                       **classify_benchmark(args, demo, shared, harness_options, tmp), "machine": machine_facts()}
        print(json.dumps(results, indent=2, ensure_ascii=False))
        print_classify_table(results)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2, ensure_ascii=False)
        return 0

    with tempfile.TemporaryDirectory(prefix="benchmark_") as tmp:
        def harness(output: str, *extra: str) -> list[str]:
            return ["bash", os.path.join(REPO, "run.sh"), demo.input, demo.model_dir, output, "--quiet",
                    "--cache-dir", os.path.join(tmp, "exports"), *shared, *harness_options, *extra]

        ours, theirs = os.path.join(tmp, "harness.csv"), os.path.join(tmp, "standard.csv")
        # Greedy runs record each step's runner-up, so every row that differs
        # from generate() comes with its fp32 logit gap (a fraction of a ms a step).
        margins = ["--write-margins"] if args.task == "generate" and args.decode == "greedy" else []
        print(f"harness, cold export cache: {' '.join(harness(ours, *margins)[1:])}", flush=True)
        cold = timed(harness(ours, *margins))
        with open(ours + ".timing.json", encoding="utf-8") as f:
            cold_report = json.load(f)
        warm = [timed(harness(ours, *margins)) for _ in range(args.harness_repeat)]
        with open(ours + ".timing.json", encoding="utf-8") as f:
            stages = json.load(f)["stages_s"]
        print("standard method (the slow part)...", flush=True)
        standard = timed([sys.executable, "-m", "scripts.standard_method", demo.input, demo.model_dir, theirs,
                          *shared], OMP_NUM_THREADS=str(args.standard_threads))
        results = {"task": args.task, "rows": rows, "harness_options": harness_options,
                   "standard_threads": args.standard_threads, "standard_s": round(standard, 2), "harness_cold_s": round(cold, 2),
                   "harness_warm_s": [round(w, 2) for w in warm]}
        warm_median = statistics.median(warm)
        results.update(harness_warm_median_s=round(warm_median, 2), speedup_cold=round(standard / cold, 2),
                       speedup_warm=round(standard / warm_median, 2), harness_stages_s_last_run=stages,
                       vs_standard=compare(args.task, ours, theirs))
        if args.task == "generate":
            results["harness_cold_stages_s"] = cold_report["stages_s"]
            results["conversion"] = cold_report.get("onnx")
            with open(ours + ".timing.json", encoding="utf-8") as f:
                results["decoding_last_run"] = json.load(f)["decoding"]
            if margins:
                from scripts.check_accuracy import read_margins, read_table, score

                scored = score(read_table(ours), None, read_table(theirs), None, read_margins(ours + ".margins.jsonl"))
                results["divergence_vs_standard"] = scored["divergence"]
            if not args.no_int8:
                int8 = os.path.join(tmp, "harness_int8.csv")
                results["harness_int8_cold_s"] = round(timed(harness(int8, "--precision", "int8")), 2)
                results["harness_int8_warm_s"] = round(timed(harness(int8, "--precision", "int8")), 2)
                with open(int8 + ".timing.json", encoding="utf-8") as f:
                    results["int8_conversion"] = json.load(f).get("onnx")
                results["int8_vs_harness_fp32"] = compare(args.task, int8, ours)
                results["int8_vs_standard"] = compare(args.task, int8, theirs)
                results["speedup_int8_warm"] = round(standard / results["harness_int8_warm_s"], 2)
            pruned = os.path.join(tmp, "harness_pruned.csv")
            results["harness_pruned_s"] = round(timed(harness(pruned, "--prune")), 2)
            with open(pruned + ".timing.json", encoding="utf-8") as f:
                results["pruned_vocab"] = json.load(f)["vocab"]
            results["pruned_vs_standard"] = compare(args.task, pruned, theirs)
    results["machine"] = machine_facts()

    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\nstandard method {standard:.1f}s | harness cold {cold:.1f}s ({standard / cold:.2f}x) | "
          f"harness warm median {warm_median:.1f}s ({standard / warm_median:.2f}x) | "
          f"vs standard {json.dumps(results['vs_standard'])}")
    if "harness_int8_warm_s" in results:
        print(f"harness int8 cold {results['harness_int8_cold_s']:.1f}s, warm {results['harness_int8_warm_s']:.1f}s "
              f"({results['speedup_int8_warm']:.2f}x) | vs harness fp32 {json.dumps(results['int8_vs_harness_fp32'])}")
    if "divergence_vs_standard" in results:
        from scripts.check_accuracy import divergence_summary

        print(f"vs the standard method: {divergence_summary(results['divergence_vs_standard'])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
