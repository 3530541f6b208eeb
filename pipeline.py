"""rows -> token ids -> pruned vocabulary -> static model -> batches -> outputs -> submission.

`bash run.sh INPUT MODEL_DIR OUTPUT [options]` runs `main` here. Each stage is
a call into preprocess/, predictor/ or submit/ that hands the next a plain
value; this file only wires them and times them.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from preprocess.input_table import ColumnNames, InputError, input_format, read_input_table
from preprocess.tokenize_shards import Framing, encode_rows
from preprocess.wordpiece import read_vocab
from predictor.batching import length_sorted_batches, padding_ratio
from predictor.checkpoint import CheckpointError, read_checkpoint
from predictor.engine import EngineOptions
from predictor.pruning import full_vocab, prune_vocab
from predictor.workers import RunnerSpec, WorkerPool, plan_engine_options, visible_gpu_ids
from submit.merge import merge_in_input_order
from submit.submission_frames import classification_frame
from submit.timing_report import StageTimer, format_table, repeat_summary, run_report
from submit.write_submission import write_json, write_table

REPO = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str]) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="bash run.sh",
        description="Turn a test file and a fine-tuned Ernie checkpoint into a submission file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("input", help="test file: .csv, .tsv or .jsonl")
    parser.add_argument("model_dir", help="PaddleNLP checkpoint folder (config.json, model_state.pdparams, vocab.txt)")
    parser.add_argument("output", help="submission file to write: .csv, .tsv or .jsonl")
    parser.add_argument("--task", choices=["auto", "classify", "generate"], default="auto",
                        help="what the model does; auto reads config.json's architectures")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu runs one worker process per visible GPU (needs paddlepaddle-gpu)")
    parser.add_argument("--workers", type=int, default=1,
                        help="CPU predictor processes (ignored on GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"math-library threads per CPU worker; default: cores / workers ({cores} cores here)")
    parser.add_argument("--tokenizer-workers", type=int, default=cores,
                        help="tokenizer processes at most; inputs too small to gain from more use fewer")
    parser.add_argument("--token-budget", type=int, default=4096,
                        help="padded tokens per batch (rows x longest row)")
    parser.add_argument("--max-seq-len", type=int, default=128,
                        help="longer inputs are truncated, and counted in the timing report")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16"], default="auto",
                        help="auto: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                        help="shrink the word-embedding table to the token ids this input uses")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--pair-column", default=None,
                        help="second text (classification) or title/context (generation)")
    parser.add_argument("--cache-dir", default=os.path.join(REPO, ".cache", "exports"),
                        help="where exported static models are kept between runs")
    parser.add_argument("--timing", default=None,
                        help="timing report JSON; default: OUTPUT + .timing.json")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run N times and report min and median (leaderboard-style timing)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    args = parser.parse_args(argv)
    for name in ("workers", "tokenizer_workers", "token_budget", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_seq_len < 3:
        parser.error("--max-seq-len must be at least 3")
    try:
        input_format(args.output)
    except InputError as err:
        parser.error(f"output {err}")
    return args


def special_token_ids(vocab_path: str) -> np.ndarray:
    vocab = read_vocab(vocab_path)
    return np.array([vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]") if t in vocab])


def engine_options(args: argparse.Namespace) -> EngineOptions:
    precision = args.precision if args.precision != "auto" else ("fp16" if args.device == "gpu" else "fp32")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    return EngineOptions(device=args.device, precision=precision, cpu_threads=threads)


@dataclass
class Progress:
    """A progress bar on stderr for long stages; silent for CI and --quiet."""
    enabled: bool

    def bar(self, total: int, label: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=label, unit="batch", disable=not self.enabled, file=sys.stderr, leave=False)


def run_once(args: argparse.Namespace, progress: Progress) -> dict:
    timer = StageTimer()
    with timer.stage("load"):
        checkpoint = read_checkpoint(args.model_dir)
        task = checkpoint.task if args.task == "auto" else args.task
        if task != "classify":
            raise SystemExit("generation is not wired into the pipeline yet")
        options = engine_options(args)
        gpu_ids = visible_gpu_ids() if options.device == "gpu" else None
        options_per_worker = plan_engine_options(options, args.workers, gpu_ids)

    with timer.stage("read"):
        table = read_input_table(args.input, ColumnNames(args.id_column, args.text_column, args.pair_column))

    with timer.stage("tokenize"):
        encoded = encode_rows(checkpoint.vocab_path, Framing(task, args.max_seq_len), table.texts, table.pairs,
                              workers=args.tokenizer_workers)

    with timer.stage("prune"):
        vocab_size = int(checkpoint.config["vocab_size"])
        if args.prune:
            vocab = prune_vocab(vocab_size, encoded.token_ids, special_token_ids(checkpoint.vocab_path))
        else:
            vocab = full_vocab(vocab_size)
        model_input = encoded.with_token_ids(vocab.to_pruned(encoded.token_ids))
        pad_id = int(vocab.old_to_new[int(checkpoint.config.get("pad_token_id") or 0)])

    with timer.stage("export"):
        from predictor import classify
        from predictor.export import cached_export, export_key

        key = export_key({"task": task, "weights": checkpoint.weights_digest(), "vocab": vocab.digest(),
                          "precision": options.precision, "device": options.device})
        model_dir, export_cached = cached_export(
            args.cache_dir, key, lambda folder: classify.export_classifier(checkpoint, vocab, folder))

    with timer.stage("load"):
        specs = [RunnerSpec(task, model_dir, o) for o in options_per_worker]
        pool = WorkerPool(specs)

    with timer.stage("predict"), pool:
        batches = length_sorted_batches(model_input.lengths, args.token_budget)
        jobs = ({"input_ids": ids, "token_type_ids": types}
                for ids, types in (model_input.padded(b.rows, pad_id) for b in batches))
        with progress.bar(len(batches), "predict") as bar:
            outputs = list(pool.map(jobs, on_done=bar.update))

    with timer.stage("write"):
        probabilities = np.stack(merge_in_input_order(len(table), zip((b.rows for b in batches), outputs)))
        write_table(classification_frame(table.ids, probabilities, classify.class_labels(checkpoint.config)),
                    args.output)

    return run_report(timer, rows=len(table), tokens=int(encoded.lengths.sum()), extra={
        "task": task,
        "truncated_rows": int(encoded.truncated.sum()),
        "max_seq_len": args.max_seq_len,
        "batches": len(batches),
        "padding_ratio": round(padding_ratio(batches, encoded.lengths), 4),
        "vocab": {"full": vocab.full_size, "kept": vocab.size,
                  "embedding_bytes_saved": vocab.embedding_bytes_saved(int(checkpoint.config["hidden_size"]))},
        "export_cached": export_cached,
        "engine": options.describe(),
        "workers": pool.processes,
        "tokenizer_workers": args.tokenizer_workers,
    })


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        reports = [run_once(args, progress) for _ in range(args.repeat)]
    except (InputError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = dict(reports[-1])
    if args.repeat > 1:
        report["repeat"] = repeat_summary(reports)
    timing_path = args.timing or args.output + ".timing.json"
    write_json(report, timing_path)
    if not args.quiet:
        print(format_table(report))
        if args.repeat > 1:
            summary = report["repeat"]
            print(f"{summary['repeats']} runs: total min {summary['total_s_min']:.2f}s, "
                  f"median {summary['total_s_median']:.2f}s")
        print(f"wrote {args.output} ({report['rows']} rows) and {timing_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
