"""Faults: a killed or stalled worker, Ctrl-C / SIGTERM, an unwritable
output, two runs sharing a cache. The run fails fast with one clear line and
writes nothing, or finishes with every row; no child process outlives it."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

import pipeline
from predictor.checkpoint import WEIGHTS_DIGESTS
from tests.tiny_checkpoints import review_texts, tiny_classifier, write_reviews_csv
from scripts.soak import children, command_name
from worker_processes import WorkerFailed, run_in_order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _job(kind: str, seconds: float = 0.0):
    if kind == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds)
    return seconds


def test_a_killed_worker_is_named_and_the_others_are_stopped():
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"test worker pid \d+ \(killed by SIGKILL\) died"):
        list(run_in_order(pool, _job, [("sleep", 0.2), ("die",), ("sleep", 30)], "test", stall_timeout=60))
    assert time.monotonic() - started < 30
    assert not mp.active_children()  # the sleeping worker was stopped too


def test_a_stalled_worker_stops_the_run():
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    with pytest.raises(WorkerFailed, match="finished nothing for 2s"):
        list(run_in_order(pool, _job, [("sleep", 60)], "test", stall_timeout=2))
    assert not mp.active_children()


def test_a_window_hands_out_calls_only_as_results_are_taken():
    pulled = []

    def calls():
        for index in range(8):
            pulled.append(index)
            yield ("sleep", index / 1000)

    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    results = run_in_order(pool, _job, calls(), "test", window=3)
    assert next(results) == 0.0
    assert len(pulled) == 4  # three handed out at first, one more once the first result was taken
    assert list(results) == [index / 1000 for index in range(1, 8)]
    pool.shutdown()


def test_a_half_written_cache_entry_is_never_used(tmp_path):
    from predictor.conversions.export_cache import cached_export

    key = "0123abcd"
    broken = tmp_path / key  # a killed run's entry: files, but not the marker written last
    broken.mkdir()
    (broken / "inference.json").write_text("half")

    def export_into(folder):
        with open(os.path.join(folder, "inference.json"), "w", encoding="utf-8") as f:
            f.write("whole")

    folder, cached = cached_export(str(tmp_path), key, export_into)
    assert not cached and open(os.path.join(folder, "inference.json"), encoding="utf-8").read() == "whole"
    assert cached_export(str(tmp_path), key, lambda _: pytest.fail("exported twice")) == (folder, True)
    assert sorted(os.listdir(tmp_path)) == [key]  # no staging folder left behind


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def model_dir(workdir):
    return tiny_classifier(workdir)


@pytest.fixture(scope="module")
def long_input(workdir):
    """Enough rows in small batches that prediction lasts a few seconds."""
    return write_reviews_csv(os.path.join(workdir, "many.csv"), review_texts(400) * 40)


def start_run(workdir, model_dir, input_path, output, *options) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="2", PYTHONWARNINGS="ignore", PYTHONFAULTHANDLER="1")
    # A shell starts background jobs with SIGINT ignored, and the run would
    # inherit that from a test session started with `&`: give it Ctrl-C back.
    return subprocess.Popen([sys.executable, "-m", "pipeline", input_path, model_dir,
                             output, "--quiet", "--workers", "2", "--threads", "1", "--token-budget", "64",
                             "--max-seq-len", "64", "--cache-dir", os.path.join(workdir, "exports"), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_workers(run: subprocess.Popen, count: int = 2, predictors: bool = False) -> list[int]:
    """The run's worker processes, once `count` of them exist (the
    multiprocessing resource tracker is not one); with `predictors`, only
    those that have loaded ONNX Runtime (a tokenizer process still on its way
    out looks the same otherwise)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # A pid gone since it was listed has no command line: not a worker.
        workers = [pid for pid in children(run.pid) if "spawn_main" in command_name(pid)
                   and (not predictors or maps_onnx_runtime(pid))]
        if len(workers) >= count:
            return workers
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never started its workers")


def maps_onnx_runtime(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            return "onnxruntime" in f.read()
    except OSError:  # gone
        return False


def test_a_killed_predictor_worker_fails_the_run_and_writes_nothing(workdir, model_dir, long_input):
    output = os.path.join(workdir, "killed.csv")
    run = start_run(workdir, model_dir, long_input, output, "--retries", "0")
    workers = wait_for_workers(run, predictors=True)
    time.sleep(0.5)  # into prediction (which lasts seconds)
    killed_at = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=60)
    assert time.monotonic() - killed_at < 30
    assert run.returncode == 1, stderr
    assert f"pid {workers[0]} (killed by SIGKILL)" in stderr and "nothing written" in stderr
    assert "Traceback" not in stderr
    assert not os.path.exists(output)
    assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                   for pid in workers)


def test_a_retried_run_writes_what_an_undisturbed_run_writes(workdir, model_dir, long_input):
    undisturbed = os.path.join(workdir, "undisturbed.csv")
    run = start_run(workdir, model_dir, long_input, undisturbed)
    assert run.wait(timeout=300) == 0
    output = os.path.join(workdir, "retried.csv")
    run = start_run(workdir, model_dir, long_input, output, "--retries", "1")
    workers = wait_for_workers(run, predictors=True)
    time.sleep(0.5)  # into prediction (which lasts seconds)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert f"pid {workers[0]} (killed by SIGKILL)" in stderr and "retrying" in stderr
    with open(undisturbed, "rb") as a, open(output, "rb") as b:
        assert a.read() == b.read()
    with open(output + ".timing.json", encoding="utf-8") as f:
        retried = json.load(f)["worker_retries"]
    assert len(retried) == 1 and f"pid {workers[0]}" in retried[0]


def test_a_killed_tokenizer_worker_fails_the_run_and_writes_nothing(workdir, model_dir):
    # Two tokenizer shards need at least 2 x 20000 rows; these take seconds.
    input_path = write_reviews_csv(os.path.join(workdir, "huge.csv"), review_texts(4000) * 30)
    output = os.path.join(workdir, "tokenizer_killed.csv")
    run = start_run(workdir, model_dir, input_path, output, "--tokenizer-workers", "2")
    tokenizers = wait_for_workers(run)  # the first child processes are the tokenizer's
    time.sleep(0.5)
    os.kill(tokenizers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert f"tokenizer worker pid {tokenizers[0]} (killed by SIGKILL) died" in stderr, stderr
    assert "Traceback" not in stderr and not os.path.exists(output)


@pytest.mark.parametrize("sent, status, said", [(signal.SIGINT, 130, "interrupted; nothing written"),
                                                (signal.SIGTERM, 143, "terminated; nothing written")])
def test_interrupt_exits_cleanly_with_nothing_left_behind(workdir, model_dir, long_input, sent, status, said):
    output = os.path.join(workdir, "out", f"interrupted_{sent}.csv")
    run = start_run(workdir, model_dir, long_input, output)
    workers = wait_for_workers(run, predictors=True)
    time.sleep(0.5)
    run.send_signal(sent)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == status, stderr
    assert said in stderr and "Traceback" not in stderr
    folder = os.path.dirname(output)
    assert not os.path.exists(output) and (not os.path.isdir(folder) or not os.listdir(folder))
    time.sleep(0.5)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    assert not [name for name in os.listdir(os.path.join(workdir, "exports")) if name.startswith(".")]


def test_an_unwritable_output_is_a_clear_error_and_no_file(workdir, model_dir):
    input_path = write_reviews_csv(os.path.join(workdir, "few.csv"), review_texts(5))
    not_a_folder = os.path.join(workdir, "few.csv")  # a file where the output's folder should be
    output = os.path.join(not_a_folder, "submission.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--cache-dir",
                          os.path.join(workdir, "exports")]) == 2
    assert not os.path.exists(output)


def test_a_full_disk_is_a_clear_error_and_no_partial_file(workdir, model_dir):
    """A file-size limit stands in for a full disk: writes past it fail with
    EFBIG (Python ignores SIGXFSZ), as writes to a full disk fail with ENOSPC."""
    input_path = write_reviews_csv(os.path.join(workdir, "disk.csv"), review_texts(200))
    cache = os.path.join(workdir, "exports")
    assert pipeline.main([input_path, model_dir, os.path.join(workdir, "disk_warm.csv"), "--quiet", "--no-plot",
                          "--cache-dir", cache]) == 0  # the export is cached: the limited run writes only its output
    folder = os.path.join(workdir, "disk_out")
    os.makedirs(folder)
    limit = 2000  # bytes; the submission of 200 rows is larger
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="2", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "pipeline", input_path, model_dir, os.path.join(folder, "sub.csv"),
                           "--quiet", "--no-plot", "--cache-dir", cache], capture_output=True, text=True, env=env,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)), timeout=300)
    assert done.returncode == 2, done.stderr
    assert "cannot write" in done.stderr and "sub.csv" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(folder) == []  # no submission, no temporary file


def test_the_submission_gets_the_umask_mode(workdir, model_dir):
    input_path = write_reviews_csv(os.path.join(workdir, "mode.csv"), review_texts(5))
    output = os.path.join(workdir, "mode_out.csv")
    previous = os.umask(0o022)
    try:
        assert pipeline.main([input_path, model_dir, output, "--quiet", "--cache-dir",
                              os.path.join(workdir, "exports")]) == 0
    finally:
        os.umask(previous)
    assert os.stat(output).st_mode & 0o777 == 0o644


def test_two_runs_sharing_a_cold_cache_both_finish_with_equal_outputs(workdir, model_dir):
    input_path = write_reviews_csv(os.path.join(workdir, "shared.csv"), review_texts(300, start=50))
    cache = os.path.join(workdir, "shared_exports")
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="2", PYTHONWARNINGS="ignore", PYTHONFAULTHANDLER="1")
    runs = [subprocess.Popen([sys.executable, "-m", "pipeline", input_path, model_dir,
                              os.path.join(workdir, f"shared_{i}.csv"), "--quiet", "--cache-dir", cache],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    first, second = (pd.read_csv(os.path.join(workdir, f"shared_{i}.csv")) for i in range(2))
    pd.testing.assert_frame_equal(first, second)
    entries = [name for name in os.listdir(cache) if name != WEIGHTS_DIGESTS]
    assert entries and not [name for name in entries if name.startswith(".")]
    assert all(os.path.isfile(os.path.join(cache, name, "export.json")) for name in entries)
