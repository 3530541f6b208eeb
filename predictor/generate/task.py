"""Text generation (UNIMO-text) as a task kind: left-padded sources ->
cached decoding -> generated ids -> id, text."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from predictor.checkpoint import CheckpointError
from predictor.task_kind import TaskKind
from submit.merge import merge_in_input_order
from submit.submission_frames import generation_frame
from submit.write_submission import write_jsonl


def decode_settings(args: argparse.Namespace):
    from predictor.generate.decoding import DecodeSettings

    return DecodeSettings(strategy=args.decode, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                          min_new_tokens=args.min_new_tokens, length_penalty=args.length_penalty,
                          early_stopping=args.early_stopping)


class GenerateTask(TaskKind):
    name = "generate"
    # A pruned LM head cannot emit ids outside the kept set, so pruning can
    # change outputs unless the kept ids cover what the model says. INT8
    # weights are applied when the programs are converted; the report carries
    # the probe's agreement with fp32, and the benchmark measures the run's
    # (exact match, token agreement, BLEU-4).
    prune_is_exact = False
    # fp16 decoding changes whole texts: one token flipped at a near-tie
    # changes every token after it. On an H200 the demo's 2,000 rows forced to
    # 32 tokens came out 88.4% identical to fp32 for a 14% shorter run (10.3 s
    # against 11.9 s), so the GPU decodes in fp32 unless fp16 is asked for.
    gpu_precision = "fp32"
    # Decoding feeds a new cache length every step. Capacity 0 keys oneDNN's
    # primitives and reordered weights per op instead of per input shape, so
    # they are built once (measured: steps 1.7x faster and 3 GB less memory
    # on the 12-layer demo than with Paddle's default of 10).
    engine_defaults = {"onednn_cache_capacity": 0}
    # Prompts are left-padded and masked anyway, and a job of one length only
    # would hold few rows for the steps.
    one_length_batches = False

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
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

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        for name in ("max_new_tokens", "max_title_len"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if args.tensorrt and args.task == "generate":
            raise ValueError("--tensorrt is for classification; generation runs the cached decoding loop")
        if args.write_margins and args.decode == "beam":
            raise ValueError("--write-margins records greedy decoding's runner-up tokens; beam search has no "
                             "single runner-up per step: use --decode greedy")
        decode_settings(args)

    def __init__(self, args: argparse.Namespace, checkpoint, options):
        from submit.detokenize import checkpoint_tokens

        super().__init__(args, checkpoint, options)
        self.decode = decode_settings(args)
        try:  # at load, so that an unreadable tokenizer file stops the run before its work
            self.tokens = checkpoint_tokens(checkpoint.vocab_path)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
        # Every row carries a key/value cache: jobs stay small on the CPU. On
        # the GPU a step's GEMMs want more rows: on an H200, jobs of 512 rows
        # predicted 1.16x faster than 256 (fp32, the same ids), 1,024 no
        # faster than 512; a job that does not fit is decoded in halves.
        self.max_batch_rows = args.max_batch_rows or (512 if options.device == "gpu" else 64)

    @staticmethod
    def runner(model_dir: str, options, settings):
        from predictor.generate.runner import GenerateRunner

        return GenerateRunner(model_dir, options, settings)

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

    def export(self, vocab, folder: str) -> None:
        from predictor.generate.export import export_generator

        export_generator(self.checkpoint, vocab, folder)

    def onnx_conversion(self, paddle_dir: str, probe_input, pad_id: int, vocab, threads: int):
        """(cache-key parts, convert_into(folder)): both decoding programs
        converted, checked and, for the CPU, profiled on the shortest batch of
        this input (a full batch of rows at the least prompt cost). For the
        GPU the fp32 programs, fused for it; fp16 is a step of its own
        (fp16_model)."""
        from predictor.conversions.onnx_model import TransformerShape
        from predictor.generate.onnx_decoder import convert_generator
        from predictor.engines.onnx_runtime import cpu_identity

        if self.options.device == "gpu":
            config = self.checkpoint.config
            shape = TransformerShape(int(config["num_attention_heads"]), int(config["hidden_size"]))
            return ({"precision": "fp32", "device": "gpu", "fused_for": vars(shape)},
                    lambda folder: convert_generator(paddle_dir, folder, None, vocab.size, threads, "fp32", shape))
        precision = self.options.precision
        def convert_into(folder: str) -> dict:
            model_input, batches = probe_input()
            probe = next(iter(self.jobs(model_input, batches[-1:], pad_id)))
            return convert_generator(paddle_dir, folder, probe, vocab.size, threads, precision)

        return {"precision": precision, "cpu": cpu_identity()}, convert_into

    def fp16_model(self, cache_dir: str, onnx_step: dict, model_dir: str, sample_jobs):
        """The decoding programs in fp16 (caches fp16, masks and logits fp32),
        with the probe's agreement with the eager fp32 layer, measured on
        this run's GPU."""
        from predictor.conversions.fp16 import cached_fp16
        from predictor.engines.onnx_runtime import GpuPlacement
        from predictor.generate.onnx_decoder import convert_fp16_decoder

        # The check runs in this process, outside any --gpu-memory-limit-mb.
        gpu = GpuPlacement(self.options.gpu_id)
        return cached_fp16(cache_dir, onnx_step["key"], lambda folder: convert_fp16_decoder(model_dir, folder, gpu),
                           check=2)

    def runner_settings(self, vocab, token_budget: int):
        from predictor.generate.runner import GenerationSettings, special_ids

        return GenerationSettings(self.decode, special_ids(self.checkpoint.config, vocab),
                                  prompt_token_budget=token_budget, record_margins=self.args.write_margins)

    @staticmethod
    def job_token_budget(token_budget: int) -> int:
        # A job is --max-batch-rows sources decoded together (a step's GEMMs
        # want rows); the token budget bounds each prompt pass inside it.
        return sys.maxsize

    def jobs(self, model_input, batches, pad_id: int):
        from predictor.generate.cached_decoder import left_padded

        starts = model_input.offsets
        for batch in batches:
            rows = [(model_input.token_ids[starts[i]:starts[i + 1]], model_input.token_type_ids[starts[i]:starts[i + 1]])
                    for i in batch.rows.tolist()]
            lengths = model_input.lengths[batch.rows]
            ids, types = left_padded(rows, lengths, pad_id)
            yield {"input_ids": ids, "token_type_ids": types, "lengths": lengths}

    def batch_outputs(self, results: list) -> list:
        return [decoded.rows for decoded in results]

    @staticmethod
    def merge(rows: int, pieces) -> list:
        return merge_in_input_order(rows, pieces)

    def submission(self, ids: list[str], outputs: list, vocab):
        return generation_frame(ids, [self.tokens.text(vocab.to_full(out)) for out in outputs])

    def report(self, results: list, outputs: list) -> dict:
        from predictor.generate.runner import decoding_report

        decoding = decoding_report(results)
        return {"decode": dict(vars(self.decode)), "generated_tokens": int(sum(len(o) for o in outputs)),
                "decoding": decoding, "engine_busy_s": decoding["engine_s"]}

    def write_side_files(self, ids: list[str], result_rows: list, results: list, outputs: list, vocab) -> None:
        if not self.args.write_margins:
            return
        from submit.margins import margin_record, margins_path

        runner_ups = merge_in_input_order(len(ids), zip(result_rows, (r.runner_ups for r in results)))
        eos_id = int(self.checkpoint.config["eos_token_id"])
        write_jsonl([margin_record(row_id, vocab.to_full(out), vocab.to_full(r.ids), r.gaps, eos_id, self.tokens)
                     for row_id, out, r in zip(ids, outputs, runner_ups)], margins_path(self.args.output))
