"""--ray on a two-node Ray cluster started in this process
(ray.cluster_utils.Cluster, one CPU each): tokenising on Ray Data gives the
local processes' rows chunk for chunk, the submission is the local run's
byte for byte (classification fp32 over several chunks and INT8,
generation), a killed actor is restarted and its jobs retried with the same
bytes, bad input is refused as in a local run, and a node lost with no room
left names itself."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

# Ray gives a node the address other hosts reach it by; on Linux that can
# only be changed by treating the host as a laptop, which keeps every node,
# driver and actor of these tests on 127.0.0.1. Read when ray is imported.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray.cluster_utils import Cluster  # noqa: E402

import pipeline  # noqa: E402
from tests.tiny_checkpoints import review_texts, tiny_classifier, tiny_generator, write_reviews_csv  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two predictor processes, one thread each: one actor per node on the cluster.
SPREAD = ["--workers", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ray"))


@pytest.fixture(scope="module")
def classifier(workdir):
    return tiny_classifier(workdir)


def run_harness(workdir, model_dir, input_path, name, *options) -> tuple[bytes, dict]:
    output = os.path.join(workdir, f"{name}.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--no-plot", "--max-seq-len", "64",
                          "--cache-dir", os.path.join(workdir, "exports"), *options]) == 0
    with open(output, "rb") as f, open(output + ".timing.json", encoding="utf-8") as timing:
        return f.read(), json.load(timing)


def local_and_ray(workdir, model_dir, input_path, name, cluster, *options) -> tuple[dict, dict]:
    local, local_report = run_harness(workdir, model_dir, input_path, f"{name}_local", *SPREAD, *options)
    on_ray, ray_report = run_harness(workdir, model_dir, input_path, f"{name}_ray", *SPREAD, *options,
                                     "--ray", cluster.address)
    assert on_ray == local
    assert ray_report["runner"]["kind"] == "ray" and len(ray_report["runner"]["nodes"]) == 2
    assert ray_report["input_chunks"] == local_report["input_chunks"]
    chunks = ray_report["input_chunks"]  # one Ray Data task each; one small chunk stays on the driver
    assert ray_report["tokenizer"] == (f"ray data, {chunks} tasks" if chunks > 1 else "the driver")
    assert local_report["tokenizer"] == "the main process"
    assert ray_report["workers"] == 2 and ray_report["worker_retries"] == []
    return local_report, ray_report


def test_ray_data_tokenises_each_chunk_as_the_local_processes_do(workdir, classifier, cluster):
    from predictor.machines.ray_cluster import RayCluster
    from preprocess.input_table import ColumnNames, read_input_chunks
    from preprocess.tokenize_shards import Framing, ShardedEncoder

    # .jsonl, with a text holding a lone surrogate ("\ud800"), which Arrow
    # refuses and the reader keeps.
    input_path = os.path.join(workdir, "pairs.jsonl")
    texts = review_texts(229, start=700) + ["坏\ud800了"]
    with open(input_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"p{i}", "text": text, "pair": pair}) + "\n"
                     for i, (text, pair) in enumerate(zip(texts, texts[::-1])))
    vocab_path = os.path.join(classifier, "vocab.txt")
    framing = Framing("classify", max_seq_len=48)

    def chunks():  # five chunks, the last one short
        return read_input_chunks(input_path, ColumnNames(pair="pair"), chunk_rows=50)

    with ShardedEncoder(vocab_path, framing, workers=2, min_rows_per_shard=10) as local:
        expected = list(local.encode_chunks(chunks()))
    with RayCluster(cluster.address) as machines, machines.encoder(vocab_path, framing, 2, 1) as on_ray:
        got = list(on_ray.encode_chunks(chunks()))
        assert on_ray.describe() == "ray data, 5 tasks"
        # An input of one chunk too small to pay for a task stays on the driver, as locally.
        with machines.encoder(vocab_path, framing, 2, 1) as small:
            one = list(small.encode_chunks(read_input_chunks(input_path, ColumnNames(pair="pair"))))
            assert small.describe() == "the driver"
        assert len(one) == 1 and np.array_equal(one[0].token_ids, np.concatenate([w.token_ids for w in expected]))
    assert [len(rows) for rows in got] == [50, 50, 50, 50, 30]
    assert any(rows.truncated.any() for rows in got)
    for want, rows in zip(expected, got, strict=True):
        for field in ("token_ids", "token_type_ids", "offsets", "truncated"):
            assert getattr(rows, field).dtype == getattr(want, field).dtype, field
            assert np.array_equal(getattr(rows, field), getattr(want, field)), field


def test_classification_fp32_on_ray_writes_the_local_run_s_bytes(workdir, classifier, cluster):
    input_path = write_reviews_csv(os.path.join(workdir, "fp32.csv"), review_texts(120, start=100))
    local, on_ray = local_and_ray(workdir, classifier, input_path, "fp32", cluster, "--token-budget", "256",
                                  "--chunk-rows", "50")
    assert on_ray["input_chunks"] == 3
    assert on_ray["batches"] == local["batches"] > 2


def test_classification_int8_on_ray_writes_the_local_run_s_bytes(workdir, classifier, cluster, monkeypatch):
    from predictor.classify import low_margin

    # The tiny model's margins are all alike: every third INT8 row is called
    # low, so the fp32 re-run runs on the actors too.
    monkeypatch.setattr(low_margin, "low_margin_rows",
                        lambda probabilities, rule, rows=None: (np.arange(len(probabilities)) % 3 == 0, 0.0, 1.0))
    input_path = write_reviews_csv(os.path.join(workdir, "int8.csv"), review_texts(600, start=100))
    _, on_ray = local_and_ray(workdir, classifier, input_path, "int8", cluster, "--precision", "int8")
    assert on_ray["int8"]["cached"]  # the guard ran once, on the driver of the local run
    assert on_ray["rerun"]["rows"] == 115 and on_ray["rerun"]["fp32_from_guard"] == 256


def test_generation_on_ray_writes_the_local_run_s_bytes(workdir, cluster):
    input_path = write_reviews_csv(os.path.join(workdir, "sources.csv"), review_texts(24, start=500))
    local_and_ray(workdir, tiny_generator(workdir), input_path, "generate", cluster, "--max-batch-rows", "4",
                  "--max-new-tokens", "8")


def test_bad_input_on_ray_is_refused_as_locally(workdir, classifier, cluster, capsys):
    bad = os.path.join(workdir, "bad.csv")
    with open(bad, "w", encoding="utf-8") as f:
        f.write("id,text\n1,好\n1,坏\n")
    said = []
    for name, options in (("local", []), ("ray", ["--ray", cluster.address])):
        output = os.path.join(workdir, f"bad_{name}.csv")
        assert pipeline.main([bad, classifier, output, "--quiet", *options]) == 2
        said.append(capsys.readouterr().err)
        assert not os.path.exists(output)
    assert said[0] == said[1] and "bad.csv, row 2, field 'id': duplicate id '1'" in said[0]


def test_an_address_where_no_ray_head_answers_is_one_line_and_exit_2(workdir, classifier, capsys):
    input_path = write_reviews_csv(os.path.join(workdir, "few.csv"), review_texts(3))
    output = os.path.join(workdir, "no_head.csv")
    assert pipeline.main([input_path, classifier, output, "--quiet", "--ray", "127.0.0.1:1"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: --ray 127.0.0.1:1: no Ray head answers there") and said.count("\n") == 1, said
    assert not os.path.exists(output)


def start_run(workdir, model_dir, input_path, output, cluster, *options) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_minloglevel="2", PYTHONWARNINGS="ignore", PYTHONFAULTHANDLER="1")
    return subprocess.Popen([sys.executable, "-m", "pipeline", input_path, model_dir, output, "--quiet", "--no-plot",
                             "--token-budget", "64", "--max-seq-len", "64", "--cache-dir",
                             os.path.join(workdir, "exports"), "--ray", cluster.address, *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def processes_titled(title: bytes) -> list[int]:
    """Pids of the processes whose command line starts with `title` (Ray
    titles an actor's process `ray::PredictorActor`, and
    `ray::PredictorActor.run` while it runs a job)."""
    found = []
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(title):
                    found.append(pid)
        except OSError:
            continue
    return found


def actors_running_a_job(run: subprocess.Popen, count: int) -> list[int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = processes_titled(b"ray::PredictorActor.run")
        if len(busy) >= count:
            return busy
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    raise AssertionError("no predictor actor ever ran a job")


@pytest.fixture(scope="module")
def long_input(workdir):
    """Enough rows in small batches that prediction lasts a few seconds."""
    return write_reviews_csv(os.path.join(workdir, "many.csv"), review_texts(400) * 10)


def test_a_killed_actor_is_restarted_and_the_run_writes_the_undisturbed_bytes(workdir, classifier, cluster,
                                                                             long_input):
    undisturbed, _ = run_harness(workdir, classifier, long_input, "undisturbed", *SPREAD, "--token-budget", "64")
    output = os.path.join(workdir, "actor_killed.csv")
    run = start_run(workdir, classifier, long_input, output, cluster, *SPREAD, "--retries", "1")
    killed = actors_running_a_job(run, 1)[0]
    os.kill(killed, signal.SIGKILL)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    with open(output, "rb") as f:
        assert f.read() == undisturbed
    with open(output + ".timing.json", encoding="utf-8") as f:
        restarted = json.load(f)["worker_retries"]
    assert len(restarted) == 1 and f"pid {killed} " in restarted[0], restarted


def test_a_lost_node_with_no_room_left_ends_the_run_naming_it(workdir, classifier, cluster, long_input):
    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    output = os.path.join(workdir, "node_lost.csv")
    # Three actors of one CPU on three nodes of one CPU: one on each.
    run = start_run(workdir, classifier, long_input, output, cluster, "--workers", "3", "--threads", "1")
    actors_running_a_job(run, 1)
    cluster.remove_node(extra)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stderr
    said = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "was lost" in said[0] and said[0].endswith("nothing written"), stderr
    assert "Traceback" not in stderr
    assert not os.path.exists(output)


def test_interrupt_on_ray_stops_the_actors_and_writes_nothing(workdir, classifier, cluster, long_input):
    output = os.path.join(workdir, "interrupted.csv")
    run = start_run(workdir, classifier, long_input, output, cluster, *SPREAD)
    actors_running_a_job(run, 1)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert stderr.strip() == "interrupted; nothing written" and not os.path.exists(output)
    deadline = time.monotonic() + 30
    while processes_titled(b"ray::PredictorActor") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_titled(b"ray::PredictorActor")
