"""Sequence classification as a task kind: right-padded batches -> class
probabilities -> id, label, prob_*; --precision int8 under the accuracy
guard, rows near a tie run again in fp32."""
from __future__ import annotations

import sys

import numpy as np

from predictor.checkpoint import CheckpointError
from predictor.task_kind import TaskKind
from submit.merge import stack_in_input_order
from submit.submission_frames import classification_frame

# Rows of each of the two batches the ONNX conversion is checked on.
PROBE_ROWS = 6


class ClassifyTask(TaskKind):
    name = "classify"
    prune_is_exact = True  # unseen rows of the embedding table are never read

    def __init__(self, args, checkpoint, options):
        from predictor.conversions import tensorrt

        if args.write_margins:
            raise CheckpointError(f"{args.model_dir} is a classifier; --write-margins is for generation")
        super().__init__(args, checkpoint, options)
        self.tensorrt_shapes = tensorrt.shapes_for(args.max_batch_rows, args.max_seq_len) if args.tensorrt else None
        self.max_batch_rows = self.tensorrt_shapes.max_rows if args.tensorrt else args.max_batch_rows

    @staticmethod
    def runner(model_dir: str, options, settings):
        from predictor.classify.classifier import ClassifyRunner

        return ClassifyRunner(model_dir, options, settings)

    def runner_settings(self, vocab, token_budget: int):
        """fp16 on a GPU: the fp32 model's folder, which each predictor holds
        too, so the rows near a tie are re-run by the same processes."""
        return getattr(self, "fp32_beside", None)

    def export_key_parts(self) -> dict:
        return {"tensorrt": vars(self.tensorrt_shapes)} if self.tensorrt_shapes else {}

    def export(self, vocab, folder: str) -> None:
        from predictor.classify.classifier import INPUT_NAMES, export_classifier
        from predictor.conversions.tensorrt import export_converted

        def export_into(target: str) -> None:
            export_classifier(self.checkpoint, vocab, target)

        if self.tensorrt_shapes is None:
            export_into(folder)
            return
        export_converted(export_into, folder, INPUT_NAMES, self.tensorrt_shapes, self.options.precision)

    def onnx_conversion(self, paddle_dir: str, probe_input, pad_id: int, vocab, threads: int):
        """(cache-key parts, convert_into(folder)): the program converted and
        probed on a few rows of the longest and of the shortest batch of this
        input, of different lengths each (so the probe has padding)."""
        from predictor.batching import Batch
        from predictor.conversions.onnx_model import TransformerShape, convert

        config = self.checkpoint.config
        shape = TransformerShape(num_heads=int(config["num_attention_heads"]), hidden_size=int(config["hidden_size"]))
        # Every probe row runs through both Paddle and ONNX Runtime: a handful
        # of rows of both widths shows a fusion that changes outputs as well as
        # whole batches would (demo: 12 rows instead of 61, the same largest
        # difference, the conversion 5.4 -> 3.9 s).
        def spread(batch: Batch) -> Batch:
            picks = np.unique(np.linspace(0, len(batch.rows) - 1, PROBE_ROWS).astype(int))
            return Batch(rows=batch.rows[picks], width=batch.width)

        def convert_into(folder: str) -> dict:
            model_input, batches = probe_input()
            probe = list(self.jobs(model_input, [spread(batches[0]), spread(batches[-1])], pad_id))
            return convert(paddle_dir, folder, shape, probe, threads)

        return {"shape": vars(shape)}, convert_into

    def fp16_model(self, cache_dir: str, onnx_step: dict, model_dir: str, sample_jobs):
        from predictor.conversions.fp16 import SAMPLE_ROWS, cached_fp16_model
        from predictor.engines.onnx_runtime import GpuPlacement

        def sample() -> list[dict]:
            return [job for job in sample_jobs(SAMPLE_ROWS) if job["unpadded"]]

        # The check runs in this process, outside any --gpu-memory-limit-mb (a
        # predictor worker's cap, which its batches are split to fit).
        fp16_dir, report = cached_fp16_model(cache_dir, onnx_step["key"], model_dir, sample,
                                             GpuPlacement(self.options.gpu_id))
        self.fp32_beside = model_dir
        return fp16_dir, report

    def guarded_model(self, cache_dir: str, onnx_step: dict, model_dir: str, encoded, jobs_for_rows):
        """The INT8 model the guard allows (predictor/classify/int8_guard.py),
        measured on held-back rows of this input, whose fp32 outputs come with it."""
        from predictor.classify import int8_guard

        def guard_samples() -> int8_guard.GuardSamples:
            held_back, calibration = int8_guard.guard_rows(len(encoded))
            held_back_batches, held_back_jobs = jobs_for_rows(held_back)
            in_feed_order = np.concatenate([held_back[batch.rows] for batch in held_back_batches])
            return int8_guard.GuardSamples(list(held_back_jobs), list(jobs_for_rows(calibration)[1]), in_feed_order,
                                           len(calibration))

        int8_dir, report = int8_guard.cached_int8_model(
            cache_dir, onnx_step["key"], model_dir, encoded.digest(), guard_samples, self.options.cpu_threads,
            int8_guard.GuardSettings.for_this_cpu(self.args.min_agreement))
        if report.get("planned_int8_but_fp32"):
            from submit.timing_report import int8_graph_lines

            print(int8_graph_lines(report)[-1], file=sys.stderr)
        return (int8_dir, report, *int8_guard.held_back_fp32(int8_dir))

    def rerun_in_fp32(self, merged, low_precision_report: dict, run_fp32, fp32_rows: np.ndarray):
        from predictor.classify.low_margin import MarginRule, rerun_low_margin_rows

        if not low_precision_report.get("margin_rule"):
            return merged, None
        return rerun_low_margin_rows(merged, MarginRule.from_dict(low_precision_report["margin_rule"]), run_fp32,
                                     fp32_rows)

    def batch_outputs(self, results: list) -> list:
        return [batch.probabilities for batch in results]

    def report(self, results: list, outputs) -> dict:
        return {"engine_busy_s": round(sum(batch.engine_s for batch in results), 3),
                "out_of_memory_splits": sum(batch.splits for batch in results)}

    def jobs(self, model_input, batches, pad_id: int):
        for batch in batches:
            ids, types = model_input.padded(batch.rows, pad_id)
            # No padding and no [PAD] inside a text: attention needs no mask.
            yield {"input_ids": ids, "token_type_ids": types, "unpadded": not (ids == pad_id).any()}

    @staticmethod
    def merge(rows: int, pieces) -> np.ndarray:
        return stack_in_input_order(rows, pieces)  # [rows, classes] probabilities

    def submission(self, ids: list[str], outputs: np.ndarray, vocab):
        from predictor.classify.classifier import class_labels

        return classification_frame(ids, outputs, class_labels(self.checkpoint.config))
