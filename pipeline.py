"""rows -> token ids -> pruned vocabulary -> static model -> batches -> outputs -> submission.

`bash run.sh INPUT MODEL_DIR OUTPUT [options]` runs `main` here. Each stage is
a call into preprocess/, predictor/ or submit/ that hands the next a plain
value; this file only wires them and times them.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from preprocess.encoded_chunks import EncodedChunks, ScratchSpaceError
from preprocess.encoded_rows import EncodedRows
from preprocess.input_table import CHUNK_ROWS, ColumnNames, InputError, input_format, read_input_chunks
from preprocess.tokenize_shards import Framing, ShardedEncoder
from preprocess.wordpiece import read_vocab
from predictor.batching import length_sorted_batches
from predictor.checkpoint import CheckpointError, read_checkpoint
from predictor.engine import ONNX_TASKS, EngineOptions, choose_engine
from predictor.low_margin import MarginRule, rerun_low_margin_rows
from predictor.pruning import full_vocab, prune_vocab
from predictor.workers import RunnerSpec, WorkerPool, plan_engine_options, visible_gpu_ids
from submit.merge import merge_in_input_order, stack_in_input_order
from submit.submission_frames import classification_frame, generation_frame
from submit.timing_plot import plot_path_for, write_timing_plot
from submit.timing_report import StageTimer, format_table, repeat_summary, run_report
from submit.write_submission import OutputError, write_json, write_jsonl, write_table
from worker_processes import DEFAULT_STALL_TIMEOUT_S, WorkerFailed

REPO = os.path.dirname(os.path.abspath(__file__))


# A retry restarts the predictor processes and redoes only the unfinished
# batches: measured on the demo (see README), it costs seconds where failing
# means running everything again.
DEFAULT_RETRIES = 1

# Measured on the demo (2000 rows, ONNX Runtime fp32, 2 cores, two runs
# each): predict 36.4-37.4 s at 4096 tokens, 35.2-35.7 at 2048, 33.3-34.8 at
# 1024, 34.7-34.8 at 512. Paddle Inference keeps the budget it was tuned at.
DEFAULT_TOKEN_BUDGET = {"onnxruntime": 1024, "paddle": 4096}
# Rows of each of the two batches the ONNX conversion is checked on.
PROBE_ROWS = 6


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
    parser.add_argument("--token-budget", type=int, default=None,
                        help="padded tokens per batch (rows x longest row), for generation per prompt pass; "
                             "default " + ", ".join(f"{n} on {e}" for e, n in DEFAULT_TOKEN_BUDGET.items()))
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                        help="rows read, tokenised and predicted at a time; the tokenised input waits in a "
                             "temporary folder (TMPDIR) when it is more than one chunk, so memory does not grow "
                             "with the row count")
    parser.add_argument("--max-seq-len", type=int, default=128,
                        help="longer inputs are truncated, and counted in the timing report")
    parser.add_argument("--engine", choices=["auto", "paddle", "onnxruntime"], default="auto",
                        help="auto: ONNX Runtime on CPU (the exported programs converted with paddle2onnx and "
                             "checked against the model), Paddle Inference on GPU")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "int8"], default="auto",
                        help="auto: fp16 on GPU, fp32 on CPU; int8 (CPU, ONNX Runtime): classification runs "
                             "under an accuracy guard that keeps layers in fp32 until --min-agreement holds; "
                             "generation gets int8 weights and reports its probe agreement with fp32")
    parser.add_argument("--min-agreement", type=float, default=0.995,
                        help="int8: least label agreement with fp32 on held-back rows of this input")
    parser.add_argument("--tensorrt", action="store_true",
                        help="GPU classification: convert the exported program with paddle.tensorrt (engines "
                             "built for up to --max-batch-rows rows, default 256, of --max-seq-len tokens)")
    parser.add_argument("--prune", action=argparse.BooleanOptionalAction, default=None,
                        help="shrink the word-embedding table (and a tied LM head) to the token ids this input "
                             "uses; default: on for classification (exact), off for generation (a pruned LM "
                             "head cannot say ids outside the kept set: add them with --keep-ids-from)")
    parser.add_argument("--max-batch-rows", type=int, default=None,
                        help="rows per batch at most; default: 64 for generation, no limit for classification "
                             "(256 with --tensorrt)")
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
    parser.add_argument("--stall-timeout", type=float, default=DEFAULT_STALL_TIMEOUT_S,
                        help="seconds without a finished batch before the run is stopped as stalled")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help="with several predictor processes: times a dead or stalled one is replaced, all "
                             "of them restarted from the first unfinished batch (0: the run fails at once)")
    parser.add_argument("--no-plot", action="store_true",
                        help="skip the timing picture (an SVG next to the timing report)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--decode", choices=["greedy", "beam"], default="greedy")
    generation.add_argument("--num-beams", type=int, default=4)
    generation.add_argument("--max-new-tokens", type=int, default=32)
    generation.add_argument("--min-new-tokens", type=int, default=0)
    generation.add_argument("--length-penalty", type=float, default=1.0)
    generation.add_argument("--early-stopping", action="store_true")
    generation.add_argument("--max-title-len", type=int, default=32,
                            help="the pair column is UNIMO's title; it keeps at most this many tokens")
    generation.add_argument("--keep-ids-from", default=None,
                            help="with --prune: a UTF-8 text file (e.g. the training targets) whose tokens the "
                                 "pruned LM head must still be able to say")
    generation.add_argument("--keep-top-n", type=int, default=0,
                            help="with --prune: also keep the first N vocabulary ids (the most frequent)")
    generation.add_argument("--write-margins", action="store_true",
                            help="greedy: also write OUTPUT.margins.jsonl, each step's chosen and runner-up "
                                 "tokens and their logit gap (scripts/check_accuracy.py --margins reads it)")
    args = parser.parse_args(argv)
    for name in ("workers", "tokenizer_workers", "token_budget", "chunk_rows", "repeat", "max_new_tokens", "max_title_len",
                 "max_batch_rows", "stall_timeout"):
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
    if args.tensorrt and args.task == "generate":
        parser.error("--tensorrt is for classification; generation runs the cached decoding loop")
    if args.write_margins and args.decode == "beam":
        parser.error("--write-margins records greedy decoding's runner-up tokens; beam search has no single "
                     "runner-up per step: use --decode greedy")
    try:  # impossible combinations fail here, before any work
        engine_options(args, "classify")
        decode_settings(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def decode_settings(args: argparse.Namespace):
    from predictor.decoding import DecodeSettings

    return DecodeSettings(strategy=args.decode, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                          min_new_tokens=args.min_new_tokens, length_penalty=args.length_penalty,
                          early_stopping=args.early_stopping)


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


def engine_options(args: argparse.Namespace, task: str) -> EngineOptions:
    precision = args.precision if args.precision != "auto" else ("fp16" if args.device == "gpu" else "fp32")
    engine = choose_engine(args.engine, args.device, task)
    if precision == "int8" and task not in ONNX_TASKS:
        raise ValueError(f"--precision int8 is not available for {task}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    # Decoding feeds a new cache length every step. Capacity 0 keys oneDNN's
    # primitives and reordered weights per op instead of per input shape, so
    # they are built once (measured: steps 1.7x faster and 3 GB less memory
    # on the 12-layer demo than with Paddle's default of 10).
    cache_capacity = 0 if task == "generate" else EngineOptions.onednn_cache_capacity
    return EngineOptions(engine=engine, device=args.device, precision=precision, cpu_threads=threads,
                         onednn_cache_capacity=cache_capacity, tensorrt=args.tensorrt)


class ClassifyTask:
    """Right-padded batches -> class probabilities -> id, label, prob_*."""
    name = "classify"
    prune_is_exact = True  # unseen rows of the embedding table are never read
    int8_guard = True      # --precision int8 runs predictor/quantize.py's accuracy guard

    def __init__(self, args: argparse.Namespace, checkpoint):
        from predictor import classify, tensorrt

        if args.write_margins:
            raise CheckpointError(f"{args.model_dir} is a classifier; --write-margins is for generation")
        self.args, self.checkpoint, self.classify, self.tensorrt = args, checkpoint, classify, tensorrt
        self.tensorrt_shapes = tensorrt.shapes_for(args.max_batch_rows, args.max_seq_len) if args.tensorrt else None
        self.max_batch_rows = self.tensorrt_shapes.max_rows if args.tensorrt else args.max_batch_rows

    def extra_kept_ids(self) -> list[np.ndarray]:
        return []

    def export_key_parts(self) -> dict:
        return {"tensorrt": vars(self.tensorrt_shapes)} if self.tensorrt_shapes else {}

    def export(self, vocab, folder: str) -> None:
        def export_into(target: str) -> None:
            self.classify.export_classifier(self.checkpoint, vocab, target)

        if self.tensorrt_shapes is None:
            export_into(folder)
            return
        self.tensorrt.export_converted(export_into, folder, self.classify.INPUT_NAMES, self.tensorrt_shapes,
                                  engine_options(self.args, self.name).precision)

    def onnx_conversion(self, paddle_dir: str, model_input, batches, pad_id: int, vocab, threads: int):
        """(cache-key parts, convert_into(folder)): the program converted and
        probed on a few rows of the longest and of the shortest batch of this
        input, of different lengths each (so the probe has padding)."""
        from predictor.batching import Batch
        from predictor.onnx_conversion import TransformerShape, convert

        config = self.checkpoint.config
        shape = TransformerShape(num_heads=int(config["num_attention_heads"]), hidden_size=int(config["hidden_size"]))
        # Every probe row runs through both Paddle and ONNX Runtime: a handful
        # of rows of both widths shows a fusion that changes outputs as well as
        # whole batches would (demo: 12 rows instead of 61, the same largest
        # difference, the conversion 5.4 -> 3.9 s).
        def spread(batch: Batch) -> Batch:
            picks = np.unique(np.linspace(0, len(batch.rows) - 1, PROBE_ROWS).astype(int))
            return Batch(rows=batch.rows[picks], width=batch.width)

        probe = list(self.jobs(model_input, [spread(batches[0]), spread(batches[-1])], pad_id))
        return {"shape": vars(shape)}, lambda folder: convert(paddle_dir, folder, shape, probe, threads)

    @staticmethod
    def agreement(reference: list, candidate: list) -> float:
        """Label agreement between two runs' per-batch probabilities."""
        return float(np.mean(np.concatenate(reference).argmax(-1) == np.concatenate(candidate).argmax(-1)))

    def runner_settings(self, vocab, token_budget: int):
        return None

    @staticmethod
    def job_token_budget(token_budget: int) -> int:
        return token_budget

    def jobs(self, model_input, batches, pad_id: int):
        for batch in batches:
            ids, types = model_input.padded(batch.rows, pad_id)
            yield {"input_ids": ids, "token_type_ids": types}

    def batch_outputs(self, results: list) -> list:
        return results  # [rows, classes] probabilities per batch

    @staticmethod
    def merge(rows: int, pieces) -> np.ndarray:
        return stack_in_input_order(rows, pieces)

    def submission(self, ids: list[str], outputs: np.ndarray, vocab):
        return classification_frame(ids, outputs, self.classify.class_labels(self.checkpoint.config))

    def report(self, results: list, outputs: list) -> dict:
        return {}

    def write_side_files(self, ids: list[str], result_rows: list, results: list, outputs, vocab) -> None:
        pass


class GenerateTask:
    """Left-padded sources -> cached decoding -> generated ids -> id, text."""
    name = "generate"
    # A pruned LM head cannot emit ids outside the kept set, so pruning can
    # change outputs unless the kept ids cover what the model says.
    prune_is_exact = False
    # INT8 weights are applied when the programs are converted; the report
    # carries the probe's agreement with fp32, and the benchmark measures the
    # run's (exact match, token agreement, BLEU-4).
    int8_guard = False

    def __init__(self, args: argparse.Namespace, checkpoint):
        from predictor import generate

        self.args, self.checkpoint, self.generate = args, checkpoint, generate
        self.decode = decode_settings(args)
        # Decoding batches stay small: every row carries a key/value cache.
        self.max_batch_rows = args.max_batch_rows or 64

    def extra_kept_ids(self) -> list[np.ndarray]:
        kept = []
        if self.args.keep_ids_from:
            from preprocess.wordpiece import FastWordPiece

            with open(self.args.keep_ids_from, encoding="utf-8") as f:
                lines = [line for line in f.read().splitlines() if line.strip()]
            kept += FastWordPiece(self.checkpoint.vocab_path).encode(lines)
        if self.args.keep_top_n:
            # Ernie/UNIMO vocabularies list tokens by corpus frequency.
            kept.append(np.arange(min(self.args.keep_top_n, int(self.checkpoint.config["vocab_size"]))))
        return kept

    def export_key_parts(self) -> dict:
        return {}

    def export(self, vocab, folder: str) -> None:
        self.generate.export_generator(self.checkpoint, vocab, folder)

    def onnx_conversion(self, paddle_dir: str, model_input, batches, pad_id: int, vocab, threads: int):
        """(cache-key parts, convert_into(folder)): both decoding programs
        converted, checked and profiled on the shortest batch of this input
        (a full batch of rows at the least prompt cost)."""
        from predictor.decoder_conversion import convert_generator
        from predictor.engine_onnxruntime import cpu_identity

        precision = engine_options(self.args, self.name).precision
        probe = next(iter(self.jobs(model_input, batches[-1:], pad_id)))
        return ({"precision": precision, "cpu": cpu_identity()},
                lambda folder: convert_generator(paddle_dir, folder, probe, vocab.size, threads, precision))

    def runner_settings(self, vocab, token_budget: int):
        return self.generate.GenerationSettings(self.decode, self.generate.special_ids(self.checkpoint.config, vocab),
                                                prompt_token_budget=token_budget,
                                                record_margins=self.args.write_margins)

    @staticmethod
    def job_token_budget(token_budget: int) -> int:
        # A job is --max-batch-rows sources decoded together (a step's GEMMs
        # want rows); the token budget bounds each prompt pass inside it.
        return sys.maxsize

    def jobs(self, model_input, batches, pad_id: int):
        starts = model_input.offsets
        for batch in batches:
            rows = [(model_input.token_ids[starts[i]:starts[i + 1]], model_input.token_type_ids[starts[i]:starts[i + 1]])
                    for i in batch.rows.tolist()]
            lengths = model_input.lengths[batch.rows]
            ids, types = self.generate.left_padded(rows, lengths, pad_id)
            yield {"input_ids": ids, "token_type_ids": types, "lengths": lengths}

    def batch_outputs(self, results: list) -> list:
        return [decoded.rows for decoded in results]

    @staticmethod
    def merge(rows: int, pieces) -> list:
        return merge_in_input_order(rows, pieces)

    def submission(self, ids: list[str], outputs: list, vocab):
        from submit.detokenize import detokenizer

        to_text = detokenizer(self.checkpoint.vocab_path)
        return generation_frame(ids, [to_text(vocab.to_full(out)) for out in outputs])

    def report(self, results: list, outputs: list) -> dict:
        return {"decode": dict(vars(self.decode)), "generated_tokens": int(sum(len(o) for o in outputs)),
                "decoding": self.generate.decoding_report(results)}

    def write_side_files(self, ids: list[str], result_rows: list, results: list, outputs: list, vocab) -> None:
        if not self.args.write_margins:
            return
        from submit.detokenize import vocab_tokens
        from submit.margins import margin_record, margins_path

        runner_ups = merge_in_input_order(len(ids), zip(result_rows, (r.runner_ups for r in results)))
        id_to_token, eos_id = vocab_tokens(self.checkpoint.vocab_path), int(self.checkpoint.config["eos_token_id"])
        write_jsonl([margin_record(row_id, vocab.to_full(out), vocab.to_full(r.ids), r.gaps, eos_id, id_to_token)
                     for row_id, out, r in zip(ids, outputs, runner_ups)], margins_path(self.args.output))


TASKS = {"classify": ClassifyTask, "generate": GenerateTask}


def counted(batches: list, results: Iterator, bar) -> Iterator[tuple]:
    """(batch, its result) in order, the progress bar moved by the batch's rows."""
    for batch, result in zip(batches, results):
        bar.update(len(batch.rows))
        yield batch, result


def read_and_tokenize(args: argparse.Namespace, task_name: str, vocab_path: str, encoded: EncodedChunks,
                      timer: StageTimer) -> list[str]:
    """Every row of the input file, a chunk at a time: validated, tokenised
    and put in `encoded`; returns the row ids, the one per-row text kept."""
    framing = Framing(task_name, args.max_seq_len, args.max_title_len)
    chunks = read_input_chunks(args.input, ColumnNames(args.id_column, args.text_column, args.pair_column),
                               args.chunk_rows)
    ids: list[str] = []
    with ShardedEncoder(vocab_path, framing, workers=args.tokenizer_workers) as encoder:
        while True:
            with timer.stage("read"):
                chunk = next(chunks, None)
            if chunk is None:
                return ids
            with timer.stage("tokenize"):
                encoded.append(encoder.encode(chunk.texts, chunk.pairs))
            ids += chunk.ids


def run_once(args: argparse.Namespace, progress: Progress) -> dict:
    # The tokenised input waits on disk between tokenising and predicting.
    with tempfile.TemporaryDirectory(prefix="ernie_rows_") as spill_folder:
        return run_spilled(args, progress, spill_folder)


def run_spilled(args: argparse.Namespace, progress: Progress, spill_folder: str) -> dict:
    timer = StageTimer()
    with timer.stage("load"):
        checkpoint = read_checkpoint(args.model_dir)
        task = TASKS[checkpoint.task if args.task == "auto" else args.task](args, checkpoint)
        try:
            options = engine_options(args, task.name)
        except ValueError as err:  # an option this checkpoint's task cannot take
            raise CheckpointError(f"{args.model_dir}: {err}") from None
        gpu_ids = visible_gpu_ids() if options.device == "gpu" else None
        options_per_worker = plan_engine_options(options, args.workers, gpu_ids)

    encoded = EncodedChunks(spill_folder, int(checkpoint.config["vocab_size"]))
    ids = read_and_tokenize(args, task.name, checkpoint.vocab_path, encoded, timer)

    with timer.stage("prune"):
        vocab_size = int(checkpoint.config["vocab_size"])
        prune = task.prune_is_exact if args.prune is None else args.prune
        if prune:
            vocab = prune_vocab(vocab_size, encoded.used_ids(), special_token_ids(checkpoint.vocab_path),
                                *task.extra_kept_ids())
        else:
            vocab = full_vocab(vocab_size)
        pad_id = int(vocab.old_to_new[int(checkpoint.config.get("pad_token_id") or 0)])

    def model_input(rows: EncodedRows) -> EncodedRows:
        return rows.with_token_ids(vocab.to_pruned(rows.token_ids))

    token_budget = args.token_budget or DEFAULT_TOKEN_BUDGET[options.engine]

    def batches_for(rows: EncodedRows, only: np.ndarray | None = None) -> list:
        return length_sorted_batches(rows.lengths, task.job_token_budget(token_budget), task.max_batch_rows, only)

    with timer.stage("export"):
        from predictor.export import cached_export, export_key

        key = export_key({"task": task.name, "weights": checkpoint.weights_digest(remembered_in=args.cache_dir),
                          "vocab": vocab.digest(),
                          "precision": "fp32" if options.precision == "int8" else options.precision,
                          "device": options.device, **task.export_key_parts()})
        model_dir, export_cached = cached_export(args.cache_dir, key, lambda folder: task.export(vocab, folder))
        engine_steps = {}
        if options.engine == "onnxruntime":
            from predictor.onnx_conversion import cached_onnx_model

            first_chunk = model_input(encoded.chunk(0))
            key_parts, convert_into = task.onnx_conversion(model_dir, first_chunk, batches_for(first_chunk), pad_id,
                                                           vocab, options.cpu_threads)
            model_dir, engine_steps["onnx"] = cached_onnx_model(args.cache_dir, key, key_parts, convert_into)

    def jobs_for_rows(rows: np.ndarray) -> tuple[list, Iterator]:
        """(batches, jobs) over some rows of the input (ascending); batches
        index `rows`, 0 to len(rows) - 1."""
        sample = model_input(encoded.gather(rows))
        batches = batches_for(sample)
        return batches, task.jobs(sample, batches, pad_id)

    # Rows whose fp32 outputs the INT8 guard already computed: not predicted again.
    fp32_rows, fp32_outputs = np.zeros(0, np.int64), None
    with timer.stage("quantize"):
        if options.precision == "int8" and task.int8_guard:
            from predictor.quantize import GuardSamples, GuardSettings, cached_int8_model, guard_rows, held_back_fp32

            def guard_samples() -> GuardSamples:
                held_back, calibration = guard_rows(len(encoded))
                held_back_batches, held_back_jobs = jobs_for_rows(held_back)
                in_feed_order = np.concatenate([held_back[batch.rows] for batch in held_back_batches])
                return GuardSamples(list(held_back_jobs), list(jobs_for_rows(calibration)[1]), in_feed_order,
                                    len(calibration))

            fp32_dir = model_dir
            model_dir, engine_steps["int8"] = cached_int8_model(
                args.cache_dir, engine_steps["onnx"]["key"], model_dir, encoded.digest(), guard_samples,
                options.cpu_threads, GuardSettings.for_this_cpu(args.min_agreement))
            fp32_rows, fp32_outputs = held_back_fp32(model_dir)
            if engine_steps["int8"].get("planned_int8_but_fp32"):
                from submit.timing_report import int8_graph_lines

                print(int8_graph_lines(engine_steps["int8"])[-1], file=sys.stderr)
    to_predict = np.ones(len(ids), dtype=bool)
    to_predict[fp32_rows] = False

    with timer.stage("load"):
        settings = task.runner_settings(vocab, token_budget)
        pool = WorkerPool([RunnerSpec(task.name, model_dir, o, settings) for o in options_per_worker],
                          args.stall_timeout, args.retries)

    results, result_rows, batch_count, padded_tokens = [], [], 0, 0
    with timer.stage("predict"), pool:
        with progress.bar(len(ids), "predict") as bar:
            bar.update(len(fp32_rows))
            for first_row, chunk in encoded.chunks():
                chunk_input = model_input(chunk)
                batches = batches_for(chunk_input, np.flatnonzero(to_predict[first_row:first_row + len(chunk)]))
                for batch, result in counted(batches, pool.map(task.jobs(chunk_input, batches, pad_id)), bar):
                    results.append(result)
                    result_rows.append(batch.rows + first_row)
                batch_count += len(batches)
                padded_tokens += sum(batch.padded_tokens for batch in batches)

    with timer.stage("write"):
        pieces = list(zip(result_rows, task.batch_outputs(results)))
        merged = task.merge(len(ids), pieces + [(fp32_rows, fp32_outputs)] if len(fp32_rows) else pieces)

    with timer.stage("rerun"):
        rule = (engine_steps.get("int8") or {}).get("margin_rule")
        if rule:
            def run_fp32(rows: np.ndarray):
                rerun_batches, jobs = jobs_for_rows(rows)
                with WorkerPool([RunnerSpec(task.name, fp32_dir, o, settings) for o in options_per_worker],
                                args.stall_timeout, args.retries) as fp32:
                    with progress.bar(len(rows), "fp32 re-run") as bar:
                        results_fp32 = [result for _, result in counted(rerun_batches, fp32.map(jobs), bar)]
                return task.merge(len(rows), zip((b.rows for b in rerun_batches), task.batch_outputs(results_fp32)))

            merged, engine_steps["rerun"] = rerun_low_margin_rows(merged, MarginRule.from_dict(rule), run_fp32,
                                                                  fp32_rows)

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
        "workers": pool.processes,
        "worker_retries": pool.retried,
        "tokenizer_workers": args.tokenizer_workers,
        **task.report(results, merged),
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
    except (InputError, CheckpointError, OutputError, ScratchSpaceError) as err:
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
