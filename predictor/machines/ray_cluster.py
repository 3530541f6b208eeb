"""Predictor processes as actors of a Ray cluster (`--ray [ADDRESS]`), and
tokenising as a Ray Data operator on it (ray_data_tokenize.py).

`--ray` alone starts a Ray instance on this machine for the run and stops
it after; `--ray auto` or `--ray HOST:PORT` joins a running cluster. Every
predictor process is an actor (`num_cpus` = its threads on the CPU, one GPU
each with `--device gpu`) that builds its task kind's runner once from the
model folder in the export cache, which every node must read at the same
path. Jobs go out in calls (one job, or as many short ones as fill
CALL_S) through a bounded window, each call to the actor with the fewest
unanswered, and results come back in job order, so the submission is the
local run's byte for byte.

Faults are Ray's to repair where it can: an actor that dies is restarted
(`max_restarts`) and the jobs it held are run again (`max_task_retries`),
both `--retries` times, with identical outputs because a job is a pure
function of its input. A node lost when no other node has room for its
actors, or an actor out of restarts, ends the run with one line naming it
(WorkerFailed). Nothing here knows the task kind or the device beyond the
resources an actor asks for.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import socket
import time
from collections import deque
from typing import Iterable, Iterator

import ray

from predictor.engines.options import EngineOptions, EngineUnavailable
from predictor.machines.contract import (JOBS_AHEAD_PER_PROCESS, ClusterUnavailable, RunnerSpec,
                                         make_runner_in_own_process)
from predictor.machines.ray_data_tokenize import RayDataEncoder
from preprocess.tokenize_shards import Framing
from worker_processes import WorkerFailed, first_line, ignore_interrupts

# `--ray` with no address: a Ray instance of this machine, for this run
# (ray.init's own name for it).
LOCAL_INSTANCE = "local"

# How often a wait for a result stops to look for lost nodes (seconds).
NODE_CHECK_S = 1.0

# A call to an actor costs about 2 ms of the driver's and the actor's time
# (1,000,000 short rows on the tiny test model, 12,346 jobs of about 1 ms
# each: predict 38.8 s one job per call, 11.8 s in one local process), so
# jobs shorter than CALL_S go several to a call, as many as the last call's
# jobs took on average fit in CALL_S; an ERNIE batch (tens of ms or more)
# goes alone.
CALL_S = 0.05
MAX_JOBS_PER_CALL = 64


class RayCluster:
    """Started or joined on entry, stopped or left on exit."""

    def __init__(self, address: str):
        self.address = address

    def __enter__(self) -> "RayCluster":
        # ray.init puts a SIGTERM handler of its own in place of the run's.
        sigterm = signal.getsignal(signal.SIGTERM)
        quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
        try:
            if self.address == LOCAL_INSTANCE:
                # A new instance turns on token authentication and warns that
                # it did: the run's own instance needs no word of it.
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                ray.init(address=LOCAL_INSTANCE, num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
            else:
                why = unreachable(self.address)
                if why:
                    raise ClusterUnavailable(f"--ray {self.address}: no Ray head answers there ({why}): start one "
                                             "with `ray start --head`, or give --ray alone for an instance of this "
                                             "machine")
                ray.init(address=self.address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise ClusterUnavailable(f"--ray {self.address}: cannot start or join Ray: {first_line(err)}") from None
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        ray.shutdown()

    def encoder(self, vocab_path: str, framing: Framing, workers: int, retries: int) -> RayDataEncoder:
        """Ray Data tasks as the cluster has room for (--tokenizer-workers
        is this host's)."""
        return RayDataEncoder(vocab_path, framing, retries)

    def plan(self, options: EngineOptions, workers: int) -> list[EngineOptions]:
        """`workers` actors on the CPU; with --device gpu one per GPU of the
        cluster, each seeing only the GPU Ray gives it (its device 0)."""
        if options.device != "gpu":
            return [options] * workers
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus == 0:
            raise EngineUnavailable(f"--device gpu but the Ray cluster ({self.address}) has no GPU: add GPU nodes "
                                    "(ray start --num-gpus N) or use --device cpu")
        return [options.for_gpu(0)] * gpus

    def pool(self, specs: list[RunnerSpec], stall_timeout: float, retries: int) -> "RayActorPool":
        return RayActorPool(specs, stall_timeout, retries)

    def describe(self) -> dict:
        return {"kind": "ray", "address": self.address,
                "nodes": [{"address": node["NodeManagerAddress"], "id": node["NodeID"][:8],
                           "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0)}
                          for node in ray.nodes() if node["Alive"]]}


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why HOST:PORT takes no connection, or None (also for the forms Ray
    reads otherwise, such as `auto`). Ray itself waits minutes for a head
    that is not there, printing retries."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in host:
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__


def actor_resources(options: EngineOptions) -> dict:
    if options.device == "gpu":
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": options.cpu_threads, "num_gpus": 0}


def unplaced(demands: list[dict], nodes: list[dict]) -> int:
    """How many of the actors asking for `demands` no node among `nodes`
    (ray.nodes() entries) can hold: first fit, largest first, over what each
    node has in all (the actors of this run included)."""
    room = [{"num_cpus": node["Resources"].get("CPU", 0), "num_gpus": node["Resources"].get("GPU", 0)}
            for node in nodes]
    left_out = 0
    for demand in sorted(demands, key=lambda d: (d["num_gpus"], d["num_cpus"]), reverse=True):
        node = next((r for r in room if all(r[k] >= v for k, v in demand.items())), None)
        if node is None:
            left_out += 1
            continue
        for k, v in demand.items():
            node[k] -= v
    return left_out


@ray.remote
class PredictorActor:
    """One predictor process: its runner, built once, runs one job at a time."""

    def __init__(self, spec: RunnerSpec):
        ignore_interrupts()  # Ctrl-C is the driver's; it kills the actors
        self.runner, self.error = None, None
        if not os.path.isdir(spec.model_dir):
            self.error = ClusterUnavailable(
                f"node {ray.util.get_node_ip_address()} cannot read the exported model {spec.model_dir}: every node "
                "must see --cache-dir at the same path (a shared file system)")
            return
        try:
            self.runner = make_runner_in_own_process(spec)
        except EngineUnavailable as err:  # said in one line by the driver, as in a local run
            self.error = err

    def ready(self) -> tuple:
        return os.getpid(), ray.get_runtime_context().get_node_id(), self.error

    def run(self, jobs: list) -> tuple[list, float]:
        """Each job's result, and the seconds they took together."""
        if self.runner is None:
            raise self.error
        started = time.perf_counter()
        results = [self.runner.run(job) for job in jobs]
        return results, time.perf_counter() - started


class RayActorPool:
    """The RunnerPool of a Ray cluster: one PredictorActor per spec."""

    def __init__(self, specs: list[RunnerSpec], stall_timeout: float, retries: int):
        self.processes = len(specs)
        self.retried: list[str] = []
        self._stall_timeout, self._retries = stall_timeout, retries
        self._demands = [actor_resources(spec.options) for spec in specs]
        alive = [node for node in ray.nodes() if node["Alive"]]
        self._nodes_at_start = {node["NodeID"] for node in alive}
        missing = unplaced(self._demands, alive)
        if missing:
            cpus = sorted({d["num_cpus"] for d in self._demands})
            raise ClusterUnavailable(
                f"the Ray cluster cannot hold {len(specs)} predictor actors of {cpus[-1]:g} CPU"
                f"{' and 1 GPU' if self._demands[0]['num_gpus'] else ''} each ({missing} would wait for room): "
                f"{describe_room()}; lower --workers or --threads, or add nodes")
        self._actors = [
            PredictorActor.options(**demand, max_restarts=retries, max_task_retries=retries,
                                   scheduling_strategy="SPREAD").remote(
                RunnerSpec(spec.task, os.path.abspath(spec.model_dir), spec.options, spec.settings))
            for spec, demand in zip(specs, self._demands)]
        self._placed: list[tuple] = []  # (pid, node id) of each actor as it loaded
        try:
            loaded = [self._result(actor.ready.remote(), index, "while loading")
                      for index, actor in enumerate(self._actors)]
        except BaseException:
            self.close(failed=True)
            raise
        errors = [error for _, _, error in loaded if error is not None]
        if errors:
            self.close(failed=True)
            raise errors[0]
        self._placed = [(pid, node) for pid, node, _ in loaded]

    def map(self, jobs: Iterable) -> Iterator:
        jobs = iter(jobs)
        in_flight: deque = deque()  # (result ref, actor index, first job index, jobs), in job order
        unanswered = [0] * len(self._actors)  # calls per actor
        handed_out, jobs_per_call = 0, 1

        def hand_out() -> None:
            nonlocal handed_out
            while len(in_flight) < JOBS_AHEAD_PER_PROCESS * len(self._actors):
                call = list(itertools.islice(jobs, jobs_per_call))
                if not call:
                    return
                index = unanswered.index(min(unanswered))
                in_flight.append((self._actors[index].run.remote(call), index, handed_out, len(call)))
                unanswered[index] += 1
                handed_out += len(call)

        hand_out()
        while in_flight:
            ref, index, first, count = in_flight[0]
            results, seconds = self._result(ref, index, f"jobs {first} to {first + count - 1} never finished")
            in_flight.popleft()
            unanswered[index] -= 1
            jobs_per_call = max(1, min(MAX_JOBS_PER_CALL, math.floor(CALL_S * count / max(seconds, 1e-6))))
            hand_out()
            yield from results

    def _result(self, ref, index: int, waiting_for: str):
        """The value of `ref`, actor `index`'s; a dead actor Ray will not
        restart, a lost node whose actors have nowhere to go, or
        --stall-timeout seconds without the value raise WorkerFailed."""
        waited = 0.0
        while not ray.wait([ref], timeout=NODE_CHECK_S)[0]:
            waited += NODE_CHECK_S
            self._check_nodes()
            if waited >= self._stall_timeout:
                raise WorkerFailed(f"predictor actor {index} finished nothing for {self._stall_timeout:.0f}s "
                                   f"({waiting_for}); stopped the actors (--stall-timeout)")
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as err:
            where, cause = "", first_line(err)
            if self._placed:
                pid, node = self._placed[index]
                where = f" (pid {pid} on node {node_name(node)})"
                if node in self._lost_nodes():
                    cause = "its node was lost"
            raise WorkerFailed(f"predictor actor {index}{where} died and Ray did not bring it back "
                               f"(--retries {self._retries} restarts each): {cause}; {waiting_for}") from None

    def _lost_nodes(self) -> set[str]:
        """Ids of the nodes alive when this pool started that are no longer."""
        return self._nodes_at_start - {node["NodeID"] for node in ray.nodes() if node["Alive"]}

    def _check_nodes(self) -> None:
        lost = self._lost_nodes()
        if not lost or not unplaced(self._demands, [node for node in ray.nodes() if node["Alive"]]):
            return  # nothing lost, or Ray restarts the lost actors on the nodes left
        raise WorkerFailed(f"node {', '.join(sorted(node_name(node) for node in lost))} was lost and the nodes "
                           f"left have no room for its predictor actors ({describe_room()})")

    def close(self, failed: bool = False) -> None:
        if not failed and self._placed:
            self._note_restarts()
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001  already gone with its node
                pass
        self._actors = []

    def _note_restarts(self) -> None:
        """Actors Ray restarted on the way (their process changed), for the report."""
        try:
            now = ray.get([actor.ready.remote() for actor in self._actors], timeout=self._stall_timeout)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return
        for index, ((pid, node), (pid_now, node_now, _)) in enumerate(zip(self._placed, now)):
            if pid_now != pid:
                self.retried.append(f"predictor actor {index} restarted by Ray: pid {pid} on node {node_name(node)} "
                                    f"-> pid {pid_now} on node {node_name(node_now)}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(failed=exc_type is not None)


def node_name(node_id: str) -> str:
    """A node as people find it: its address and the start of its id (nodes
    of one machine share the address)."""
    address = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id), "?")
    return f"{address} ({node_id[:8]})"


def describe_room() -> str:
    nodes = [node for node in ray.nodes() if node["Alive"]]
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} with "
            + ", ".join(f"{node['Resources'].get('CPU', 0):g} CPU"
                        + (f" {node['Resources']['GPU']:g} GPU" if node["Resources"].get("GPU") else "")
                        for node in nodes))
