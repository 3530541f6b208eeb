"""Child processes of a run (tokenizer shards, predictor workers): faults
become one clear error, never a hang.

A worker killed or crashed breaks its ProcessPoolExecutor; the run then
names the dead process and what it held, stops every other worker and ends
without writing a submission. A worker that finishes nothing for
`stall_timeout` seconds is treated the same way. Workers ignore SIGINT, so
Ctrl-C reaches the main process alone, which stops them and says so once.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

# Generous: a batch of the largest ERNIE on 2 cores takes seconds; a stuck
# worker should still not hold a leaderboard slot for long.
DEFAULT_STALL_TIMEOUT_S = 600.0


class WorkerFailed(RuntimeError):
    """A child process died or stalled; the run stops and writes nothing."""


def ignore_interrupts() -> None:
    """In a worker: leave Ctrl-C to the main process, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def first_line(err: BaseException) -> str:
    """An error's first line, for a one-line message (or its type's name)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def worker_processes(executor: ProcessPoolExecutor, known: list = ()) -> list:
    """`known` and the pool's live processes (shutdown() forgets them, so
    callers keep the ones they saw)."""
    current = (getattr(executor, "_processes", None) or {}).values()
    return list(known) + [p for p in current if p not in known]


def culprits(processes: list, wait_s: float = 2.0) -> str:
    """The processes that died on their own. A broken pool SIGTERMs the rest,
    which are not the cause; if SIGTERM is all there is, someone sent it.
    A killed process closes its pipes a moment before it can be reaped, so
    its exit status is waited for briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        own = [p for p in dead if p.exitcode != -signal.SIGTERM]
        if own or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return ", ".join(f"pid {p.pid} ({describe_exit(p.exitcode)})" for p in own or dead) or "a worker process"


def stop(executor: ProcessPoolExecutor, known: list = ()) -> None:
    """Stop every worker now: pending work is cancelled and live processes
    are terminated (killed if they linger), so no child outlives the run.
    `known` adds processes a broken pool has already forgotten."""
    processes = worker_processes(executor, known)
    call_queue = getattr(executor, "_call_queue", None)  # shutdown() forgets both
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        if not _reaped(process, 5.0):
            process.kill()
            _reaped(process, 5.0)
    _drain_until_done(call_queue, manager)


def _drain_until_done(call_queue, manager, timeout: float = 10.0) -> None:
    """A worker killed while the pool's feeder thread is writing a large job
    into the call queue's pipe leaves that thread blocked for good (CPython
    3.10 and 3.11), and with it the pool's manager thread, which joins it,
    and the interpreter's exit, which joins the manager: the run printed its
    error and then never ended. Every worker is gone now, so nobody else reads
    that pipe: read and drop its bytes (raw: a dead reader may have left half
    a message) until the manager thread has finished."""
    reader = getattr(call_queue, "_reader", None)
    if reader is None or manager is None:
        return
    deadline = time.monotonic() + timeout
    while manager.is_alive() and time.monotonic() < deadline:
        try:
            if reader.poll(0.05):
                os.read(reader.fileno(), 1 << 20)
        except (OSError, EOFError, ValueError):
            return


def _reaped(process, timeout: float) -> bool:
    """Wait until the process has exited and been reaped. join() alone can
    return early: a dying process closes its pipes before it can be reaped."""
    deadline = time.monotonic() + timeout
    while process.exitcode is None and time.monotonic() < deadline:
        process.join(timeout=0.02)
    return process.exitcode is not None


def _died(executor: ProcessPoolExecutor, processes: list, what: str, job: str) -> WorkerFailed:
    everyone = worker_processes(executor, processes)
    culprit = culprits(everyone)  # before stop(), whose SIGTERMs would blur the cause
    stop(executor, everyone)
    return WorkerFailed(f"{what} worker {culprit} died; {job}")


def run_in_order(executor: ProcessPoolExecutor, fn: Callable, calls: Iterable[tuple], what: str,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT_S, window: int | None = None) -> Iterator:
    """fn(*args) for each args of `calls` on the workers, results in order.
    With `window`, at most that many calls are handed out ahead of the
    result being waited for, so the calls (e.g. padded batches, made on
    demand) are not all in memory at once. A dead or stalled worker, noticed
    while submitting or while waiting, raises WorkerFailed naming the process
    and the job (0-based) it was waiting on."""
    total = f" of {len(calls)}" if hasattr(calls, "__len__") else ""
    calls = iter(calls)
    processes: list = []  # submit() starts them; stop() makes the pool forget them
    pending: deque[Future] = deque()
    handed_out = 0

    def hand_out() -> None:
        nonlocal processes, handed_out
        try:
            while window is None or len(pending) < window:
                args = next(calls, None)
                if args is None:
                    return
                pending.append(executor.submit(fn, *args))
                handed_out += 1
                processes = worker_processes(executor, processes)
        except BrokenProcessPool:
            raise _died(executor, processes, what, f"before job {handed_out} could be handed out") from None

    hand_out()
    index = 0
    while pending:
        try:
            result = pending.popleft().result(timeout=stall_timeout)
        except BrokenProcessPool:
            raise _died(executor, processes, what, f"job {index}{total} never finished") from None
        except FutureTimeout:
            stop(executor, processes)
            raise WorkerFailed(f"{what} workers finished nothing for {stall_timeout:.0f}s (job {index}{total}); "
                               "stopped them (--stall-timeout)") from None
        index += 1
        hand_out()
        yield result


class SpawnedPool:
    """Up to `processes` spawned workers, kept across `map` calls (each call's
    results in order); a failure or an interrupt stops them all (see
    run_in_order). Use as a context manager."""

    def __init__(self, processes: int, initializer: Callable = ignore_interrupts, initargs: tuple = ()):
        self._executor = ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"), initializer=initializer,
                                             initargs=initargs)

    def map(self, fn: Callable, calls: list[tuple], what: str) -> list:
        try:
            return list(run_in_order(self._executor, fn, calls, what))
        except BaseException:
            stop(self._executor)
            raise

    def close(self, failed: bool = False) -> None:
        if failed:
            stop(self._executor)
        else:
            self._executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(failed=exc_type is not None)
