"""Predictor processes of this host: one per GPU, or N on CPU (`--workers`);
tokenising in its processes too (ShardedEncoder, preprocess/tokenize_shards.py).

Each process builds its own runner (a Paddle Inference predictor is neither
fork-safe nor shareable across processes) and takes batches from a shared
queue, so a fast worker simply takes more. Processes are spawned, not
forked: Paddle mixes two OpenMP runtimes and CUDA contexts do not survive a
fork. Results carry their batch index; putting rows back in input order is
the merge step's job.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Iterator

from predictor.engines.gpus import visible_gpu_ids
from predictor.engines.options import EngineOptions, EngineUnavailable
from predictor.machines.contract import (JOBS_AHEAD_PER_PROCESS, RunnerSpec, make_runner,
                                         make_runner_in_own_process)
from preprocess.read_ahead import read_ahead
from preprocess.tokenize_shards import Framing, ShardedEncoder
from worker_processes import DEFAULT_STALL_TIMEOUT_S, WorkerFailed, ignore_interrupts, run_in_order, stop


class ThisMachine:
    """The predictor processes of this host (the run without --ray)."""

    def encoder(self, vocab_path: str, framing: Framing, workers: int, retries: int) -> ShardedEncoder:
        # A tokenizer process is not retried: tokenising is seconds.
        return ShardedEncoder(vocab_path, framing, workers=workers)

    def plan(self, options: EngineOptions, workers: int) -> list[EngineOptions]:
        return plan_engine_options(options, workers, visible_gpu_ids() if options.device == "gpu" else None)

    def pool(self, specs: list[RunnerSpec], stall_timeout: float, retries: int) -> "WorkerPool":
        return WorkerPool(specs, stall_timeout, retries)

    def describe(self) -> dict:
        return {"kind": "local processes"}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        pass


def plan_engine_options(base: EngineOptions, workers: int, gpu_ids: list[int] | None = None) -> list[EngineOptions]:
    """One EngineOptions per worker process. On GPU: one process per visible
    GPU (`workers` is ignored); on CPU: `workers` identical processes."""
    if base.device == "gpu":
        if not gpu_ids:
            raise EngineUnavailable("--device gpu but no GPU is visible (nvidia-smi lists none, or "
                                    "CUDA_VISIBLE_DEVICES hides them all): run on a GPU machine or use --device cpu")
        return [base.for_gpu(gpu_id) for gpu_id in gpu_ids]
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [base] * workers


_runner = None  # the runner of this worker process


def _start_worker(specs_queue, all_loaded) -> None:
    global _runner
    ignore_interrupts()
    _runner = make_runner_in_own_process(specs_queue.get())
    all_loaded.wait()


def _run_job(job):
    return _runner.run(job)


def _loaded() -> bool:
    return _runner is not None


class WorkerPool:
    """`map(jobs)` yields each job's result in job order. One spec means the
    work runs in this process: no spawn and no pickling for a single worker.
    With several, a dead or stalled worker stops them all; up to `retries`
    times, fresh processes then take over from the first unfinished job
    (the jobs are pure functions of their inputs, so the output is the same)."""

    def __init__(self, specs: list[RunnerSpec], stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
                 retries: int = 0):
        self._specs = specs
        self._stall_timeout = stall_timeout
        self._retries_left = retries
        self.retried: list[str] = []  # what each retry recovered from
        self._executor = None
        self._local = None
        if len(specs) == 1:
            self._local = make_runner(specs[0])
        else:
            self._start_processes()

    def _start_processes(self) -> None:
        while True:
            try:
                return self._spawn_and_load()
            except WorkerFailed as failure:
                self._executor = None  # run_in_order has stopped every process
                self._use_a_retry(failure)

    def _use_a_retry(self, failure: WorkerFailed) -> None:
        if self._retries_left == 0:
            raise failure
        self._retries_left -= 1
        self.retried.append(str(failure))
        print(f"{failure}; retrying from there in fresh worker processes ({self._retries_left} more retries)",
              file=sys.stderr, flush=True)

    def _spawn_and_load(self) -> None:
        context = mp.get_context("spawn")
        queue = context.Queue()
        for spec in self._specs:
            queue.put(spec)
        # Every process waits at the barrier once its predictor is built, so
        # the first warm-up result means all are loaded: load time is then
        # reported as load, not hidden in the first batches.
        all_loaded = context.Barrier(len(self._specs))
        self._executor = ProcessPoolExecutor(
            max_workers=len(self._specs), mp_context=context, initializer=_start_worker, initargs=(queue, all_loaded)
        )
        try:
            list(run_in_order(self._executor, _loaded, [()] * len(self._specs), "predictor (loading)",
                              self._stall_timeout))
        except BaseException:
            self.close(failed=True)
            raise

    @property
    def processes(self) -> int:
        return len(self._specs)

    def map(self, jobs: Iterable) -> Iterator:
        if self._local is not None:
            # The next job is built (rows gathered and padded) in a thread
            # while this one runs: ONNX Runtime lets go of the GIL inside a
            # run, so a GPU is not left idle while Python pads a batch.
            jobs_ahead = read_ahead(iter(jobs))
            try:
                for job in jobs_ahead:
                    yield self._local.run(job)
            finally:
                jobs_ahead.close()
            return
        jobs = iter(jobs)
        in_flight: deque = deque()  # handed out, result not yet yielded, in order
        while True:
            retried_first = list(in_flight)
            in_flight.clear()

            def calls():
                for job in itertools.chain(retried_first, jobs):
                    in_flight.append(job)
                    yield (job,)

            try:
                for result in run_in_order(self._executor, _run_job, calls(), "predictor", self._stall_timeout,
                                           window=JOBS_AHEAD_PER_PROCESS * len(self._specs)):
                    in_flight.popleft()
                    yield result
                return
            except WorkerFailed as failure:
                self._executor = None  # run_in_order has stopped every process
                self._use_a_retry(failure)
                self._start_processes()

    def close(self, failed: bool = False) -> None:
        """Let the workers exit; after a failure (or Ctrl-C), stop them at once."""
        if self._executor is not None:
            if failed:
                stop(self._executor)
            else:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(failed=exc_type is not None)
