"""The contract between the stage wiring (pipeline.py) and a task kind.

A task kind says what its model does with the stages every kind shares:
its options, what it exports and converts, how rows become jobs for its
runner, how outputs merge and become the submission, and what it reports.
Each kind is a subclass in its own room (predictor/classify/task.py,
predictor/generate/task.py), listed in predictor/tasks.py; the methods
here with a body are what a kind that needs nothing more inherits.
"""
from __future__ import annotations

import argparse

import numpy as np


class TaskKind:
    name: str = ""
    # Pruning the embedding table never changes an output (classification);
    # otherwise pruning is asked for explicitly (--prune).
    prune_is_exact: bool = False
    # EngineOptions fields this kind sets differently from their defaults.
    engine_defaults: dict = {}
    max_batch_rows: int | None = None
    # Batches of one length each where the engine runs those faster
    # (EngineOptions.unpadded_batches: unmasked fused attention); a kind whose
    # batches are padded anyway keeps length-sorted ones under the budget.
    one_length_batches: bool = True
    # What --precision auto runs on the GPU (fp32 on the CPU).
    gpu_precision: str = "fp16"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """This kind's own options (an argument group)."""

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        """Raise ValueError for options this kind cannot take together."""

    @staticmethod
    def check_engine(options) -> None:
        """Raise ValueError for EngineOptions this kind cannot run on."""

    def __init__(self, args: argparse.Namespace, checkpoint, options):
        self.args, self.checkpoint, self.options = args, checkpoint, options

    @staticmethod
    def runner(model_dir: str, options, settings):
        """The object a predictor process runs jobs with (`run(job)`)."""
        raise NotImplementedError

    def extra_kept_ids(self) -> list[np.ndarray]:
        """Ids a pruned vocabulary keeps besides those the input uses."""
        return []

    def export_key_parts(self) -> dict:
        return {}

    def export(self, vocab, folder: str) -> None:
        raise NotImplementedError

    def onnx_conversion(self, paddle_dir: str, probe_input, pad_id: int, vocab, threads: int):
        """(cache-key parts, convert_into(folder)) for the ONNX Runtime engine;
        probe_input() gives rows of this input as model input, and their
        batches, when a conversion wants to check itself on them."""
        raise NotImplementedError

    def fp16_model(self, cache_dir: str, onnx_step: dict, model_dir: str, sample_jobs):
        """--precision fp16 on ONNX Runtime: (model folder, report of its check
        against the fp32 model); sample_jobs(n): jobs over n rows of this
        input, drawn at random."""
        raise ValueError(f"--precision fp16 on ONNX Runtime is not available for {self.name}")

    def guarded_model(self, cache_dir: str, onnx_step: dict, model_dir: str, encoded, jobs_for_rows):
        """--precision int8 after conversion: (model folder, report, rows whose
        fp32 outputs came with it, those outputs), or None when this kind's
        INT8 needs no step of its own."""
        return None

    def rerun_in_fp32(self, merged, low_precision_report: dict, run_fp32, fp32_rows: np.ndarray):
        """(outputs, report of the rows run again in fp32, or None), after an
        INT8 or fp16 predict pass whose check is `low_precision_report`."""
        return merged, None

    def runner_settings(self, vocab, token_budget: int):
        return None

    @staticmethod
    def job_token_budget(token_budget: int) -> int:
        return token_budget

    def jobs(self, model_input, batches, pad_id: int):
        raise NotImplementedError

    def batch_outputs(self, results: list) -> list:
        return results

    @staticmethod
    def merge(rows: int, pieces):
        raise NotImplementedError

    def submission(self, ids: list[str], outputs, vocab):
        raise NotImplementedError

    def report(self, results: list, outputs) -> dict:
        return {}

    def write_side_files(self, ids: list[str], result_rows: list, results: list, outputs, vocab) -> None:
        pass
