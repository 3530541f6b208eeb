"""The contract between the stage wiring and a way of running predictors.

`Machines` is a way of running (this host's processes, a Ray cluster):
it gives the run's tokenizer (a `ChunkEncoder`), plans one EngineOptions per
predictor process, opens pools of runners on them and says what it is for
the report. A `RunnerPool` builds one runner
per predictor process (the task kind's `runner(model_dir, options,
settings)`, from a RunnerSpec) and maps jobs to results in job order, so
what is written does not depend on where a job ran.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

from predictor.engines.options import EngineOptions
from preprocess.encoded_rows import EncodedRows
from preprocess.input_table import InputChunk
from preprocess.tokenize_shards import Framing

# Jobs handed out per predictor process ahead of the result awaited: enough
# to keep every process busy, few enough that a chunk's padded batches are
# made as they are needed rather than all at once.
JOBS_AHEAD_PER_PROCESS = 2


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a process needs to build its runner; plain picklable data."""
    task: str             # a name of predictor.tasks.TASK_KINDS
    model_dir: str
    options: EngineOptions
    settings: object = None  # task-specific plain data, e.g. GenerationSettings


def make_runner(spec: RunnerSpec):
    from predictor.machines.host_memory import keep_freed_memory
    from predictor.tasks import TASK_KINDS

    if spec.task not in TASK_KINDS:
        raise ValueError(f"unknown task {spec.task!r}")
    keep_freed_memory()
    return TASK_KINDS[spec.task].runner(spec.model_dir, spec.options, spec.settings)


def make_runner_in_own_process(spec: RunnerSpec):
    """make_runner in a predictor process of its own (a worker, an actor)."""
    # The math library must not start more threads than the engine asked for.
    os.environ["OMP_NUM_THREADS"] = str(spec.options.cpu_threads)
    return make_runner(spec)


class ClusterUnavailable(Exception):
    """The way of running asked for cannot start (Ray missing or out of
    reach, a cluster too small for the predictor processes, a node that
    cannot read the exported model): said in one line, with what to do."""


class RunnerPool(Protocol):
    processes: int       # predictor processes (workers, actors)
    retried: list[str]   # what each retry or restart recovered from

    def map(self, jobs: Iterable) -> Iterator:
        """Each job's result, in job order."""

    def close(self, failed: bool = False) -> None:
        """Let the processes go; after a failure or Ctrl-C, stop them at once."""

    def __enter__(self) -> "RunnerPool": ...

    def __exit__(self, exc_type, exc, traceback) -> None: ...


class ChunkEncoder(Protocol):
    def encode_chunks(self, chunks: Iterable[InputChunk]) -> Iterator[EncodedRows]:
        """One EncodedRows per chunk, in chunk order; rows in input order."""

    def describe(self) -> str:
        """What tokenised, for the timing report."""

    def __enter__(self) -> "ChunkEncoder": ...

    def __exit__(self, exc_type, exc, traceback) -> None: ...


class Machines(Protocol):
    def encoder(self, vocab_path: str, framing: Framing, workers: int, retries: int) -> ChunkEncoder:
        """The run's tokenizer; `workers`: --tokenizer-workers; `retries`:
        --retries, where the way of running retries a tokenizer's work."""

    def plan(self, options: EngineOptions, workers: int) -> list[EngineOptions]:
        """One EngineOptions per predictor process."""

    def pool(self, specs: list[RunnerSpec], stall_timeout: float, retries: int) -> RunnerPool:
        """A pool with one runner per spec, loaded before it is returned."""

    def describe(self) -> dict:
        """What ran the predictors, for the timing report."""

    def __enter__(self) -> "Machines": ...

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Leave the machines as they were found (a Ray instance started for
        the run is stopped)."""
