"""rows -> token ids -> pruned vocabulary -> static model -> batches -> outputs -> submission.

`bash run.sh INPUT MODEL_DIR OUTPUT [options]` runs `main` here. Each stage is
a call into preprocess/, predictor/ or submit/ that hands the next a plain
value; this file only wires them and times them.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from preprocess.encoded_chunks import EncodedChunks, ScratchSpaceError
from preprocess.encoded_rows import EncodedRows
from preprocess.input_table import CHUNK_ROWS, ColumnNames, InputChunk, InputError, input_format, read_input_chunks
from preprocess.read_ahead import read_ahead
from preprocess.tokenize_shards import Framing
from preprocess.wordpiece import read_vocab
from predictor.batching import exact_length_batches, length_sorted_batches
from predictor.checkpoint import CheckpointError, read_checkpoint
from predictor.engines.choice import choose_engine
from predictor.engines.options import EngineOptions, EngineUnavailable
from predictor.pruning import full_vocab, prune_vocab
from predictor.task_kind import TaskKind
from predictor.tasks import TASK_KINDS
from predictor.machines.choice import choose_machines
from predictor.machines.contract import ClusterUnavailable, Machines, RunnerSpec
from submit.timing_plot import plot_path_for, write_timing_plot
from submit.timing_report import StageTimer, format_table, repeat_summary, run_report
from submit.write_submission import OutputError, write_json, write_table
from worker_processes import DEFAULT_STALL_TIMEOUT_S, WorkerFailed

REPO = os.path.dirname(os.path.abspath(__file__))


# A retry restarts the predictor processes and redoes only the unfinished
# batches: measured on the demo (see README), it costs seconds where failing
# means running everything again.
DEFAULT_RETRIES = 1

# Padded tokens per batch, by (engine, device). CPU: measured on the demo
# (2000 rows, ONNX Runtime fp32, 2 cores, two runs each): predict 36.4-37.4 s
# at 4096 tokens, 35.2-35.7 at 2048, 33.3-34.8 at 1024, 34.7-34.8 at 512.
# GPU: ONNX Runtime CUDA fp16 on an H200 (docs/benchmarks.md). Paddle
# Inference keeps the budget it was tuned at.
DEFAULT_TOKEN_BUDGET = {("onnxruntime", "cpu"): 1024, ("onnxruntime", "gpu"): 32768,
                        ("paddle", "cpu"): 4096, ("paddle", "gpu"): 4096}

# A GPU run predicts while it tokenises; until its first rows are tokenised
# the GPU waits, so they come as a piece of this many rows (four tokenizer
# processes' worth) before the rest of the first chunk.
FIRST_GPU_PIECE_ROWS = 25_000


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
    parser.add_argument("--task", choices=["auto", *TASK_KINDS], default="auto",
                        help="what the model does; auto reads config.json's architectures")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu runs one predictor process per visible GPU (ONNX Runtime's CUDA provider: "
                             "GPU=1 bash scripts/setup.sh)")
    parser.add_argument("--workers", type=int, default=1,
                        help="CPU predictor processes (ignored on GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"math-library threads per CPU worker; default: cores / workers ({cores} cores here)")
    parser.add_argument("--tokenizer-workers", type=int, default=cores,
                        help="tokenizer processes at most; inputs too small to gain from more use fewer")
    parser.add_argument("--token-budget", type=int, default=None,
                        help="padded tokens per batch (rows x longest row), for generation per prompt pass; "
                             "default " + ", ".join(f"{n} on {e} {d}" for (e, d), n in DEFAULT_TOKEN_BUDGET.items()))
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                        help="rows read, tokenised and predicted at a time; the tokenised input waits in a "
                             "temporary folder (TMPDIR) when it is more than one chunk, so memory does not grow "
                             "with the row count")
    parser.add_argument("--max-seq-len", type=int, default=128,
                        help="longer inputs are truncated, and counted in the timing report")
    parser.add_argument("--engine", choices=["auto", "paddle", "onnxruntime"], default="auto",
                        help="auto: ONNX Runtime (the exported programs converted with paddle2onnx and checked "
                             "against the model; CPU, or its CUDA provider on GPU); paddle: Paddle Inference")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "int8"], default="auto",
                        help="auto: on GPU fp16 for classification (its agreement with fp32 reported, rows near a tie "
                             "re-run in fp32) and fp32 for generation; fp32 on CPU; int8 (CPU, ONNX "
                             "Runtime): classification runs "
                             "under an accuracy guard that keeps layers in fp32 until --min-agreement holds; "
                             "generation gets int8 weights and reports its probe agreement with fp32")
    parser.add_argument("--min-agreement", type=float, default=0.995,
                        help="int8: least label agreement with fp32 on held-back rows of this input")
    parser.add_argument("--tensorrt", action="store_true",
                        help="GPU classification on Paddle Inference: convert the exported program with "
                             "paddle.tensorrt (engines built for up to --max-batch-rows rows, default 256, of "
                             "--max-seq-len tokens)")
    parser.add_argument("--gpu-memory-limit-mb", type=int, default=0,
                        help="GPU, ONNX Runtime: its CUDA memory arena at most this large (0: no limit); a batch "
                             "that does not fit is run in halves"),
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=None,
                        help="shrink the word-embedding table (and a tied LM head) to the token ids this input "
                             "uses; default: on for classification on CPU (exact), off on GPU (the table's size "
                             "costs a GPU nothing, and an unpruned model predicts each chunk while the next is "
                             "tokenised) and for generation (a pruned LM head cannot say ids outside the kept "
                             "set: add them with --keep-ids-from)")
    parser.add_argument("--max-batch-rows", type=int, default=None,
                        help="rows per batch at most; default: 64 for generation (256 on GPU), no limit for "
                             "classification (256 with --tensorrt)")
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
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the predictor processes as actors of a Ray cluster: alone (or 'local'), a Ray "
                             "instance started on this machine for the run; 'auto' or HOST:PORT joins a running "
                             "cluster, whose every node must read --cache-dir at the same path")
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT_S,
                        help="seconds without a finished batch before the run is stopped as stalled")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help="with several predictor processes: times a dead or stalled one is replaced, all "
                             "of them restarted from the first unfinished batch (0: the run fails at once)")
    parser.add_argument("--no-plot", action="store_true",
                        help="skip the timing picture (an SVG next to the timing report)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    for kind in TASK_KINDS.values():
        kind.add_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("workers", "tokenizer_workers", "token_budget", "chunk_rows", "repeat", "max_batch_rows",
                 "stall_timeout"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if args.max_seq_len < 3:
        parser.error("--max-seq-len must be at least 3")
    try:
        input_format(args.output)
    except InputError as err:
        parser.error(f"output {err}")
    try:  # impossible combinations fail here, before any work
        engine_options(args, TASK_KINDS.get(args.task, TaskKind))
        for kind in TASK_KINDS.values():
            kind.check_arguments(args)
    except ValueError as err:
        parser.error(str(err))
    return args


@dataclass
class Progress:
    """A progress bar on stderr for long stages; silent for CI and --quiet."""
    enabled: bool

    def bar(self, total: int, label: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=label, unit="row", disable=not self.enabled, file=sys.stderr, leave=False)


def special_token_ids(vocab_path: str) -> np.ndarray:
    vocab = read_vocab(vocab_path)
    return np.array([vocab[t] for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]") if t in vocab])


def engine_options(args: argparse.Namespace, kind: type[TaskKind]) -> EngineOptions:
    precision = args.precision if args.precision != "auto" else (kind.gpu_precision if args.device == "gpu" else "fp32")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    engine = "paddle" if args.tensorrt and args.engine == "auto" else choose_engine(args.engine, args.device)
    options = EngineOptions(engine=engine, device=args.device, precision=precision, cpu_threads=threads,
                            tensorrt=args.tensorrt, gpu_memory_limit_mb=args.gpu_memory_limit_mb,
                            **kind.engine_defaults)
    kind.check_engine(options)
    return options


def counted(batches: list, results: Iterator, bar) -> Iterator[tuple]:
    """(batch, its result) in order, the progress bar moved by the batch's rows."""
    for batch, result in zip(batches, results):
        bar.update(len(batch.rows))
        yield batch, result


@dataclass
class TokenizedInput:
    """What reading the input leaves besides the token ids: every row's id
    (the one per-row text kept) and, once tokenising ended, what tokenised."""
    ids: list[str]
    tokenizer: str = ""


def read_and_tokenize(args: argparse.Namespace, task_name: str, vocab_path: str, encoded: EncodedChunks,
                      timer: StageTimer, machines: Machines, into: TokenizedInput,
                      first_piece_rows: int = 0) -> Iterator[tuple[int, EncodedRows]]:
    """Every row of the input file, a chunk at a time: validated, tokenised
    by the machines' encoder, put in `encoded` and handed on as (first row,
    rows); the row ids go to `into`. With `first_piece_rows`, the first
    chunk is handed on in two, that many rows first."""
    framing = Framing(task_name, args.max_seq_len, args.max_title_len)
    chunks = read_ahead(read_input_chunks(args.input, ColumnNames(args.id_column, args.text_column,
                                                                  args.pair_column), args.chunk_rows))

    def validated() -> Iterator[InputChunk]:
        while True:
            with timer.stage("read"):  # as the encoder pulls: reading, not tokenising
                chunk = next(chunks, None)
            if chunk is None:
                return
            into.ids.extend(chunk.ids)
            if chunk.first_row == 0 and 0 < first_piece_rows < len(chunk):
                yield from chunk.split(first_piece_rows)
            else:
                yield chunk

    with machines.encoder(vocab_path, framing, args.tokenizer_workers, args.retries) as encoder:
        tokenized = encoder.encode_chunks(validated())
        while True:
            with timer.stage("tokenize"):
                rows = next(tokenized, None)
                if rows is None:
                    into.tokenizer = encoder.describe()
                    return
                first_row = len(encoded)
                encoded.append(rows)
            yield first_row, rows


def waited_for(chunks: Iterator, timer: StageTimer) -> Iterator:
    """`chunks` as they come, the time spent waiting for each timed as tokenising."""
    while True:
        with timer.stage("tokenize"):
            item = next(chunks, None)
        if item is None:
            return
        yield item


def run_once(args: argparse.Namespace, progress: Progress) -> dict:
    timer = StageTimer()
    with contextlib.ExitStack() as left_on_return:
        with timer.stage("load"):  # with --ray, a Ray instance is started or joined here
            machines = left_on_return.enter_context(choose_machines(args.ray))
        # The tokenised input waits on disk between tokenising and predicting.
        spill_folder = left_on_return.enter_context(tempfile.TemporaryDirectory(prefix="ernie_rows_"))
        return run_spilled(args, progress, spill_folder, timer, machines, left_on_return)


def run_spilled(args: argparse.Namespace, progress: Progress, spill_folder: str, timer: StageTimer,
                machines: Machines, left_on_return: contextlib.ExitStack) -> dict:
    with timer.stage("load"):
        checkpoint = read_checkpoint(args.model_dir)
        kind = TASK_KINDS[checkpoint.task if args.task == "auto" else args.task]
        try:
            options = engine_options(args, kind)
        except ValueError as err:  # an option this checkpoint's task cannot take
            raise CheckpointError(f"{args.model_dir}: {err}") from None
        task = kind(args, checkpoint, options)
        options_per_worker = machines.plan(options, args.workers)

    vocab_size = int(checkpoint.config["vocab_size"])
    encoded = EncodedChunks(spill_folder, vocab_size)
    prune = (task.prune_is_exact and options.device == "cpu") if args.prune is None else args.prune
    # With a vocabulary that does not hang on the input (not pruned) and no
    # INT8 guard over the whole input, prediction starts with the first
    # tokenised chunk while a thread reads and tokenises the rest.
    streamed = not prune and options.precision != "int8"
    tokenized = TokenizedInput([])
    if streamed:
        alongside = StageTimer()  # that thread's own stages
        # Reading and tokenising start here, so a warm run's predictors load
        # meanwhile; a GPU idles until the first chunk is tokenised: it gets a small one.
        stream = read_ahead(read_and_tokenize(args, task.name, checkpoint.vocab_path, encoded, alongside, machines,
                                              tokenized, FIRST_GPU_PIECE_ROWS if options.device == "gpu" else 0))
        left_on_return.callback(stream.close)  # a run that fails before the last chunk stops the reader

        @functools.cache
        def first_chunk() -> EncodedRows:
            # Waited for only when needed: a warm run loads its predictors meanwhile.
            with timer.stage("tokenize"):
                return next(stream)[1]

        def sample_source() -> tuple[int, Callable]:
            # The rows there are when a check samples them: the first chunk's.
            return len(first_chunk()), first_chunk().select
    else:
        for _ in read_and_tokenize(args, task.name, checkpoint.vocab_path, encoded, timer, machines, tokenized):
            pass
        first_chunk = functools.cache(lambda: encoded.chunk(0))

        def sample_source() -> tuple[int, Callable]:
            return len(encoded), encoded.gather

    with timer.stage("prune"):
        if prune:
            vocab = prune_vocab(vocab_size, encoded.used_ids(), special_token_ids(checkpoint.vocab_path),
                                *task.extra_kept_ids())
        else:
            vocab = full_vocab(vocab_size)
        pad_id = int(vocab.old_to_new[int(checkpoint.config.get("pad_token_id") or 0)])

    def model_input(rows: EncodedRows) -> EncodedRows:
        return rows.with_token_ids(vocab.to_pruned(rows.token_ids))

    token_budget = args.token_budget or DEFAULT_TOKEN_BUDGET[options.engine, options.device]

    batching = exact_length_batches if options.unpadded_batches and task.one_length_batches else length_sorted_batches

    def batches_for(rows: EncodedRows, only: np.ndarray | None = None, batched_by: Callable | None = None) -> list:
        return (batched_by or batching)(rows.lengths, task.job_token_budget(token_budget), task.max_batch_rows, only)

    def jobs_over(rows: EncodedRows, batched_by: Callable | None = None) -> tuple[list, Iterator]:
        """(batches, jobs) over some tokenised rows; batches index them, 0 to len(rows) - 1."""
        sample = model_input(rows)
        batches = batches_for(sample, batched_by=batched_by)
        return batches, task.jobs(sample, batches, pad_id)

    def jobs_for_rows(rows: np.ndarray, batched_by: Callable | None = None) -> tuple[list, Iterator]:
        """(batches, jobs) over some rows of the input (ascending)."""
        return jobs_over(encoded.gather(rows), batched_by)

    def sample_jobs(count: int) -> list:
        """Jobs over `count` rows of the input drawn at random (seeded), or all of them."""
        rows, gather = sample_source()
        return list(jobs_over(gather(np.sort(np.random.default_rng(0).permutation(rows)[:count])))[1])

    def probe_input() -> tuple[EncodedRows, list]:
        """The first chunk as model input, and its batches."""
        probe = model_input(first_chunk())
        return probe, batches_for(probe)

    with timer.stage("export"):
        from predictor.conversions.export_cache import cached_export, export_key

        key = export_key({"task": task.name, "weights": checkpoint.weights_digest(remembered_in=args.cache_dir),
                          "vocab": vocab.digest(),
                          "precision": "fp32" if options.precision == "int8" else options.precision,
                          "device": options.device, **task.export_key_parts()})
        model_dir, export_cached = cached_export(args.cache_dir, key, lambda folder: task.export(vocab, folder))
        engine_steps = {}
        if options.engine == "onnxruntime":
            from predictor.conversions.onnx_model import cached_onnx_model

            key_parts, convert_into = task.onnx_conversion(model_dir, probe_input, pad_id, vocab, options.cpu_threads)
            model_dir, engine_steps["onnx"] = cached_onnx_model(args.cache_dir, key, key_parts, convert_into)
            if options.precision == "fp16":
                model_dir, engine_steps["fp16"] = task.fp16_model(args.cache_dir, engine_steps["onnx"], model_dir,
                                                                  sample_jobs)

    # Rows whose fp32 outputs came with the INT8 model: not predicted again.
    fp32_dir, fp32_rows, fp32_outputs = model_dir, np.zeros(0, np.int64), None
    with timer.stage("quantize"):
        if options.precision == "int8" and options.engine == "onnxruntime":
            guarded = task.guarded_model(args.cache_dir, engine_steps["onnx"], model_dir, encoded, jobs_for_rows)
            if guarded:
                model_dir, engine_steps["int8"], fp32_rows, fp32_outputs = guarded

    def rows_to_predict(first_row: int, count: int) -> np.ndarray | None:
        """A chunk's rows not already in hand from the INT8 guard (None: all)."""
        if not len(fp32_rows):
            return None
        in_hand = fp32_rows[(fp32_rows >= first_row) & (fp32_rows < first_row + count)] - first_row
        return np.setdiff1d(np.arange(count), in_hand)

    # The predictors stay up until the rows near a tie are re-run (fp16).
    open_until_written = contextlib.ExitStack()
    with timer.stage("load"):
        settings = task.runner_settings(vocab, token_budget)
        pool = open_until_written.enter_context(
            machines.pool([RunnerSpec(task.name, model_dir, o, settings) for o in options_per_worker],
                          args.stall_timeout, args.retries))

    to_predict = itertools.chain([(0, first_chunk())], waited_for(stream, timer)) if streamed else encoded.chunks()
    results, result_rows, rerun_results, batch_count, padded_tokens = [], [], [], 0, 0
    with open_until_written:
        with timer.stage("predict"):
            with progress.bar(None if streamed else len(encoded), "predict") as bar:
                bar.update(len(fp32_rows))
                for first_row, chunk in to_predict:
                    chunk_input = model_input(chunk)
                    batches = batches_for(chunk_input, rows_to_predict(first_row, len(chunk)))
                    for batch, result in counted(batches, pool.map(task.jobs(chunk_input, batches, pad_id)), bar):
                        results.append(result)
                        result_rows.append(batch.rows + first_row)
                    batch_count += len(batches)
                    padded_tokens += sum(batch.padded_tokens for batch in batches)
        ids = tokenized.ids

        with timer.stage("write"):
            pieces = list(zip(result_rows, task.batch_outputs(results)))
            merged = task.merge(len(ids), pieces + [(fp32_rows, fp32_outputs)] if len(fp32_rows) else pieces)

        def fp32_predictors():
            """fp16: the predictors hold the fp32 model too. INT8: fp32 ones take their place."""
            if options.precision == "fp16":
                return contextlib.nullcontext(pool)
            open_until_written.close()
            return machines.pool([RunnerSpec(task.name, fp32_dir, o, settings) for o in options_per_worker],
                                 args.stall_timeout, args.retries)

        def run_fp32(rows: np.ndarray):
            # The fp32 model's attention takes a mask: rows of every length in
            # a few full batches, not a small batch per length.
            rerun_batches, jobs = jobs_for_rows(rows, length_sorted_batches)
            with fp32_predictors() as fp32, progress.bar(len(rows), "fp32 re-run") as bar:
                for _, result in counted(rerun_batches, fp32.map({**job, "fp32": True} for job in jobs), bar):
                    rerun_results.append(result)
            return task.merge(len(rows), zip((b.rows for b in rerun_batches), task.batch_outputs(rerun_results)))

        # Rows whose low-precision (INT8, fp16) answer is near a tie, all
        # together once every row is predicted: re-run as each batch came back
        # (2% of its rows), they cost the GPU a small fp32 call per batch.
        with timer.stage("rerun"):
            low_precision = engine_steps.get("int8") or engine_steps.get("fp16")
            if low_precision:
                merged, rerun = task.rerun_in_fp32(merged, low_precision, run_fp32, fp32_rows)
                if rerun:
                    engine_steps["rerun"] = rerun

    with timer.stage("write"):
        write_table(task.submission(ids, merged, vocab), args.output)
        task.write_side_files(ids, result_rows, results, merged, vocab)

    tokens = encoded.tokens
    return run_report(timer, rows=len(ids), tokens=tokens, extra={
        "task": task.name,
        "truncated_rows": encoded.truncated_rows,
        "max_seq_len": args.max_seq_len,
        "input_chunks": encoded.chunk_count,
        "batches": batch_count,
        "token_budget": token_budget,
        "padding_ratio": round(padded_tokens / tokens, 4) if tokens else 1.0,
        "vocab": {"full": vocab.full_size, "kept": vocab.size, "pruned": not vocab.is_identity,
                  "embedding_bytes_saved": vocab.embedding_bytes_saved(int(checkpoint.config["hidden_size"]))},
        "export_key": key,
        "export_cached": export_cached,
        "engine": options.describe(),
        **engine_steps,
        "runner": machines.describe(),
        "workers": pool.processes,
        "worker_retries": pool.retried,
        "tokenizer_workers": args.tokenizer_workers,
        "tokenizer": tokenized.tokenizer,
        **({"alongside_predict_s": {name: round(alongside.seconds.get(name, 0.0), 4) for name in ("read", "tokenize")}}
           if streamed else {}),
        **task.report(results + rerun_results, merged),
    })


class Terminated(BaseException):
    """SIGTERM, handled like Ctrl-C."""


def raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        reports = [run_once(args, progress) for _ in range(args.repeat)]
        report = dict(reports[-1])
        if args.repeat > 1:
            report["repeat"] = repeat_summary(reports)
        timing_path = args.timing or args.output + ".timing.json"
        write_json(report, timing_path)
        plot_path = None if args.no_plot else plot_path_for(timing_path)
        if plot_path:
            write_timing_plot(report, plot_path)
    except (InputError, CheckpointError, OutputError, ScratchSpaceError, EngineUnavailable, ClusterUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkerFailed as err:
        print(f"error: {err}; nothing written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated; nothing written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if not args.quiet:
        print(format_table(report))
        if args.repeat > 1:
            summary = report["repeat"]
            print(f"{summary['repeats']} runs: total min {summary['total_s_min']:.2f}s, "
                  f"median {summary['total_s_median']:.2f}s")
        print(f"wrote {args.output} ({report['rows']} rows) and {timing_path}" +
              (f" (picture: {plot_path})" if plot_path else ""))
    return 0


def exit_with(status: int) -> None:
    """End the process with `status`. After a dead worker or an interrupt the
    run has stopped its workers and removed its temporary files; CPython's
    exit hooks for process pools would still join the pools' manager threads,
    which after a killed worker can hang or print tracebacks, so a failed run
    leaves without them."""
    if status in (1, 130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    exit_with(main())
