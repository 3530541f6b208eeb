"""The ONNX Runtime engine: conversion equal to the Paddle program, the INT8
accuracy guard's decisions, and the cache keys of every export step."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest

import pipeline
from predictor.checkpoint import read_checkpoint
from predictor.classify.classifier import export_classifier
from predictor.engines.choice import choose_engine
from predictor.engines.options import EngineOptions
from predictor.engines.onnx_runtime import ONNX_FILE, adopt_session, load_session
from predictor.engines.paddle_inference import PaddleEngine
from predictor.conversions.onnx_model import TransformerShape, convert, run_session
from predictor.pruning import full_vocab
from predictor.classify import int8_guard
from predictor.conversions.first_token import split_first_token
from predictor.classify.int8_guard import GuardSamples, GuardSettings, quantise_guarded
from predictor.conversions import int8_weights
from predictor.conversions.int8_weights import quantised, weighted_nodes_by_layer
from tests.tiny_checkpoints import TINY_ERNIE, review_texts, tiny_classifier, write_reviews_csv

SHAPE = TransformerShape(num_heads=TINY_ERNIE["num_attention_heads"], hidden_size=TINY_ERNIE["hidden_size"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def feeds():
    """Right-padded batches of random ids, one with a [PAD] inside a row."""
    rng = np.random.default_rng(0)
    batches = []
    for rows, width in ((5, 30), (3, 9)):
        ids = rng.integers(5, TINY_ERNIE["vocab_size"], size=(rows, width))
        ids[:, 0] = 1
        ids[1, width // 2:] = 0
        ids[2, 3] = 0
        batches.append({"input_ids": ids, "token_type_ids": np.zeros_like(ids)})
    return batches


@pytest.fixture(scope="module")
def paddle_dir(workdir):
    folder = os.path.join(workdir, "paddle")
    export_classifier(read_checkpoint(tiny_classifier(workdir)), full_vocab(TINY_ERNIE["vocab_size"]), folder)
    return folder


@pytest.fixture(scope="module")
def onnx_dir(workdir, paddle_dir, feeds):
    folder = os.path.join(workdir, "onnx")
    os.makedirs(folder)
    convert(paddle_dir, folder, SHAPE, feeds, threads=1)
    return folder


def test_auto_engine_is_onnx_runtime_and_paddle_when_asked():
    assert choose_engine("auto", "cpu") == "onnxruntime"
    assert choose_engine("auto", "gpu") == "onnxruntime"
    assert choose_engine("paddle", "cpu") == "paddle"
    assert EngineOptions(engine="onnxruntime", device="gpu", precision="fp16").device == "gpu"
    with pytest.raises(ValueError, match="int8 runs on the ONNX Runtime engine on CPU"):
        EngineOptions(engine="paddle", precision="int8")
    with pytest.raises(ValueError, match="int8 runs on the ONNX Runtime engine on CPU"):
        EngineOptions(engine="onnxruntime", device="gpu", precision="int8")


def test_fused_onnx_model_equals_the_paddle_program(onnx_dir, paddle_dir, feeds):
    with open(os.path.join(onnx_dir, "conversion.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["fusions_kept"] is True
    # Every layer but the last (which attends from [CLS] only) fuses into one Attention op.
    assert report["fused_ops"]["Attention"] == TINY_ERNIE["num_hidden_layers"] - 1
    assert report["fused_ops"]["SkipLayerNormalization"] == 2 * TINY_ERNIE["num_hidden_layers"]
    paddle_engine = PaddleEngine(paddle_dir, EngineOptions())
    got = run_session(os.path.join(onnx_dir, ONNX_FILE), feeds, threads=1)
    for batch, outputs in zip(feeds, got):
        assert np.abs(outputs[0] - paddle_engine.run(batch)[0]).max() < 1e-5


def guard(onnx_dir, folder, feeds, min_agreement, agreement):
    os.makedirs(folder)
    # The feeds' 8 rows, as input rows 10..17 in reverse (feed order need not be input order).
    samples = GuardSamples(held_back=feeds, calibration=feeds[:1], held_back_rows=np.arange(17, 9, -1),
                           calibration_rows=5)
    return quantise_guarded(onnx_dir, folder, samples, threads=1, settings=GuardSettings(min_agreement=min_agreement),
                            agreement=agreement)


def int8_ops(folder) -> set[str]:
    ops = {node.op_type for node in onnx.load(os.path.join(folder, ONNX_FILE)).graph.node}
    return ops & {"DynamicQuantizeMatMul", "QAttention"}


def closeness(reference, candidate) -> float:
    """A stand-in agreement that falls with every quantised layer (scaled:
    a tiny random classifier's probabilities move by 1e-5 or less)."""
    return 1.0 - 100.0 * float(np.abs(reference - candidate).max())


def test_guard_quantises_every_layer_when_agreement_holds(workdir, onnx_dir, feeds):
    report = guard(onnx_dir, os.path.join(workdir, "int8_all"), feeds, 0.0, closeness)
    assert report["int8"] is True and report["fp32_layers"] == []
    assert report["int8_layers"] == list(range(TINY_ERNIE["num_hidden_layers"]))
    assert len(report["attempts"]) == 1
    # Agreement holds, and the low-margin rule is still fitted: it bounds the
    # labels expected to move over all rows, which the held-back rows cannot.
    assert report["margin_rule"]["error_scale"] > 0 and 0 <= report["rerun_fraction"] <= 1
    assert int8_ops(os.path.join(workdir, "int8_all")) == {"DynamicQuantizeMatMul", "QAttention"}
    # The held-back rows' fp32 outputs are kept for the submission, each with its input row.
    rows, probabilities = int8_guard.held_back_fp32(os.path.join(workdir, "int8_all"))
    fp32 = np.concatenate([outputs[0] for outputs in run_session(os.path.join(onnx_dir, ONNX_FILE), feeds, 1)])
    assert rows.tolist() == list(range(17, 9, -1)) and np.allclose(probabilities, fp32, atol=1e-6)


def test_guard_keeps_the_most_sensitive_layer_in_fp32_when_agreement_is_too_low(workdir, onnx_dir, feeds,
                                                                                 monkeypatch):
    everything = guard(onnx_dir, os.path.join(workdir, "int8_probe"), feeds, 0.0, closeness)
    too_low = everything["attempts"][0]["agreement"]
    # Re-running low-margin rows is ruled out (whether INT8 moves a label on
    # these few rows depends on the CPU's INT8 kernels), so layers must go back.
    monkeypatch.setattr(int8_guard, "cross_checked_agreement", lambda reference, outputs, max_disagreement: 0.0)
    required = too_low + 1e-5  # the report rounds agreement to 5 decimals
    report = guard(onnx_dir, os.path.join(workdir, "int8_guarded"), feeds, required, closeness)
    assert report["attempts"][0]["int8_agreement"] == too_low and report["attempts"][0]["cost"] is None
    most_sensitive = int(np.argmax(report["layer_sensitivity"]))
    assert report["attempts"][1]["fp32_layers"] == [most_sensitive]
    assert most_sensitive in report["fp32_layers"]
    if report["int8"]:
        assert report["agreement"] >= required and report["int8_layers"] and report["margin_rule"]
    else:  # nothing passed: the fp32 model runs, and the report says why
        assert "running fp32" in report["reason"] and not int8_ops(os.path.join(workdir, "int8_guarded"))


def test_guard_falls_back_to_fp32_when_nothing_holds(workdir, onnx_dir, feeds):
    report = guard(onnx_dir, os.path.join(workdir, "int8_never"), feeds, 1.0, lambda reference, candidate: 0.5)
    assert report["int8"] is False and report["int8_layers"] == []
    assert not int8_ops(os.path.join(workdir, "int8_never"))


def test_layers_are_found_in_the_fused_graph(onnx_dir):
    layers, head = weighted_nodes_by_layer(onnx.load(os.path.join(onnx_dir, ONNX_FILE)))
    assert len(layers) == TINY_ERNIE["num_hidden_layers"]
    # Fused layers: Attention + out-projection + two feed-forward MatMuls; the
    # last layer's q/k/v stay three MatMuls (queries from [CLS] only).
    assert [len(group) for group in layers] == [4, 6]


def test_a_model_file_is_opened_once_per_process_until_it_changes(workdir, onnx_dir):
    path = os.path.join(workdir, "sessions", ONNX_FILE)
    os.makedirs(os.path.dirname(path))
    shutil.copyfile(os.path.join(onnx_dir, ONNX_FILE), path)
    first = load_session(path, 1)
    assert load_session(path, 1) is first and load_session(path, 2) is not first
    moved = os.path.join(workdir, "sessions_moved")
    os.replace(os.path.dirname(path), moved)  # as a finished export enters the cache
    assert load_session(os.path.join(moved, ONNX_FILE), 1) is first
    model = onnx.load(os.path.join(moved, ONNX_FILE))
    model.doc_string = "rewritten"
    onnx.save(model, os.path.join(moved, ONNX_FILE))
    assert load_session(os.path.join(moved, ONNX_FILE), 1) is not first
    # A session opened over bytes just written to a file stands for that file.
    serialised = model.SerializeToString()
    adopted = load_session(serialised, 1)
    written = os.path.join(moved, "written.onnx")
    with open(written, "wb") as f:
        f.write(serialised)
    adopt_session(written, adopted, 1)
    assert load_session(written, 1) is adopted


def test_int8_keeps_the_first_tokens_rows_in_fp32(onnx_dir, feeds):
    fused = onnx.load(os.path.join(onnx_dir, ONNX_FILE))
    layers, _ = weighted_nodes_by_layer(fused)
    split, rest_matmuls = split_first_token(fused)
    # Over every token: layer 0's out-projection and feed-forward, and the
    # last layer's keys and values; its [CLS]-only multiplies are not split.
    assert len(rest_matmuls) == 5 and rest_matmuls <= set(layers[0] + layers[1])
    names = {node.name for node in split.graph.node}
    assert all(name + "_first_token" in names for name in rest_matmuls)
    # Split but all fp32, the graph computes what it computed.
    for whole, parts in zip(run_session(fused.SerializeToString(), feeds, 1),
                            run_session(split.SerializeToString(), feeds, 1)):
        assert np.abs(whole[0] - parts[0]).max() < 1e-6
    int8 = quantised(fused, {name for group in layers for name in group}, reduce_range=False, first_token_fp32=True)
    ops = {node.name: node.op_type for node in int8.graph.node}
    assert sum(op == "DynamicQuantizeMatMul" for op in ops.values()) == 5
    assert all(ops[name + "_first_token"] == "MatMul" for name in rest_matmuls)
    assert list(ops.values()).count("QAttention") == len(layers) - 1
    # The last layer's [CLS]-only multiplies (query, out-projection, feed-forward) stay fp32.
    assert all(ops[name] == "MatMul" for name in layers[1] if name not in rest_matmuls)


def test_int8_splits_graphs_with_separate_embedding_lookups(workdir, feeds):
    """A graph whose embeddings ONNX Runtime did not fuse (a plain
    LayerNormalization after the lookups, as ERNIE 3.0's task-type lookup
    used to leave): the split still runs every multiply over all tokens but
    the first in int8."""
    from predictor.classify.classifier import build_classifier, probabilities_layer
    from predictor.conversions.export_cache import save_static
    import paddle

    checkpoint = read_checkpoint(tiny_classifier(workdir))
    paddle_folder, onnx_folder = os.path.join(workdir, "unfolded_paddle"), os.path.join(workdir, "unfolded_onnx")
    specs = [paddle.static.InputSpec([None, None], "int64", name) for name in ("input_ids", "token_type_ids")]
    save_static(probabilities_layer(build_classifier(checkpoint, full_vocab(TINY_ERNIE["vocab_size"]),
                                                     fold_task_type=False)), specs, paddle_folder)
    os.makedirs(onnx_folder)
    convert(paddle_folder, onnx_folder, SHAPE, feeds, threads=1)
    unfused = onnx.load(os.path.join(onnx_folder, ONNX_FILE))
    assert "EmbedLayerNormalization" not in {node.op_type for node in unfused.graph.node}
    layers, _ = weighted_nodes_by_layer(unfused)
    int8 = quantised(unfused, {name for group in layers for name in group}, reduce_range=False, first_token_fp32=True)
    census = int8_weights.multiplies_by_layer(int8)
    assert [layer["int8"] for layer in census] == [4, 2] and census[0]["fp32"] == 0
    assert int8_weights.layers_not_int8(census, [0, 1]) == []
    # Without the split's stream sources, all of layer 0 would stay fp32: that is what is flagged.
    plain = int8_weights.multiplies_by_layer(unfused)
    assert int8_weights.layers_not_int8(plain, [0, 1]) == [0, 1]


@pytest.mark.parametrize("use_task_id", [True, False])
def test_the_guarded_int8_graph_runs_what_the_guard_reports(workdir, use_task_id):
    """ERNIE 3.0 checkpoints (task-type embeddings) and older ones: the
    embeddings fuse, and the written model's int8 multiplies are those the
    report counts, every one over all tokens but the first."""
    texts = review_texts(300, start=100)
    report = run_pipeline(workdir, f"census_{use_task_id}", tiny_classifier(workdir, use_task_id=use_task_id),
                          texts, "--precision", "int8")
    assert report["onnx"]["fusions_kept"] and report["onnx"]["fused_ops"]["EmbedLayerNormalization"] == 1
    int8 = report["int8"]
    assert int8["int8"] and int8["planned_int8_but_fp32"] == []
    written = onnx.load(os.path.join(workdir, "exports", int8["key"], ONNX_FILE))
    census = int8_weights.multiplies_by_layer(written)
    assert census == int8["multiplies"]
    expected = {0: 4, 1: 2}  # fused layer: attention, out-projection, feed-forward x2; last: keys, values
    assert {layer["layer"]: layer["int8"] for layer in census} == {i: expected[i] for i in int8["int8_layers"]}


def run_pipeline(workdir, name, model_dir, rows, *options) -> dict:
    input_path = write_reviews_csv(os.path.join(workdir, f"{name}.csv"), rows)
    output = os.path.join(workdir, f"{name}_out.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--max-seq-len", "64",
                          "--cache-dir", os.path.join(workdir, "exports"), *options]) == 0
    with open(output + ".timing.json", encoding="utf-8") as f:
        return {**json.load(f), "output": output}


@pytest.mark.parametrize("chunking", [[], ["--chunk-rows", "8"]])
def test_low_margin_rows_are_rerun_in_fp32_and_replace_the_int8_outputs(workdir, monkeypatch, chunking):

    guarded = int8_guard.cached_int8_model

    def every_row_low(*args, **kwargs):  # a rule whose threshold no row clears
        folder, report = guarded(*args, **kwargs)
        return folder, {**report, "margin_rule": {"offset": [0.3, -0.3], "error_scale": 0.0, "floor": 1e9,
                                        "max_disagreement": 0.0}}

    monkeypatch.setattr(int8_guard, "cached_int8_model", every_row_low)
    # 10 of the 30 rows held back: their fp32 outputs come from the guard.
    held_back = np.array([0, 3, 4, 9, 12, 17, 18, 25, 28, 29])
    monkeypatch.setattr(int8_guard, "guard_rows", lambda rows: (held_back, held_back))
    texts = review_texts(30, start=700)
    model = tiny_classifier(workdir)
    fp32 = run_pipeline(workdir, "rerun_fp32", model, texts)
    # In chunks, the guard's samples and the re-run rows are gathered across them.
    int8 = run_pipeline(workdir, "rerun_int8", model, texts, "--precision", "int8", *chunking)
    assert int8["rerun"]["rows"] == 20 and int8["rerun"]["fp32_from_guard"] == 10
    assert int8["input_chunks"] == (4 if chunking else 1)
    expected, got = pd.read_csv(fp32["output"]), pd.read_csv(int8["output"])
    assert got["id"].tolist() == expected["id"].tolist() and got["label"].tolist() == expected["label"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("prob_")]
    assert np.abs(got[probabilities].to_numpy() - expected[probabilities].to_numpy()).max() < 1e-5


def test_int8_run_reports_its_guard_and_cache_keys_follow_what_changed(workdir):
    texts = review_texts(40, start=300)
    model, other_model = tiny_classifier(workdir), tiny_classifier(workdir, seed=1)

    def run(*args):
        return run_pipeline(workdir, *args)

    fp32 = run("fp32", model, texts)
    int8 = run("int8", model, texts, "--precision", "int8")
    assert int8["engine"]["precision"] == "int8" and int8["int8"]["held_back_rows"] == 40
    assert 0 <= int8["int8"]["agreement"] <= 1 and "guard_s" in int8["int8"]
    # An input this small is held back whole: every row has its fp32 output from the guard.
    assert int8["batches"] == 0 and int8.get("rerun", {}).get("rows", 0) == 0
    assert pd.read_csv(int8["output"]).equals(pd.read_csv(fp32["output"]))
    # The Paddle export and its ONNX conversion are shared by both precisions.
    assert int8["export_key"] == fp32["export_key"] and int8["onnx"]["key"] == fp32["onnx"]["key"]
    assert int8["onnx"]["cached"] is True
    again = run("int8_again", model, texts, "--precision", "int8")
    assert again["int8"]["cached"] is True and again["int8"]["key"] == int8["int8"]["key"]
    other_rows = run("other_rows", model, review_texts(40, start=400), "--precision", "int8")
    assert other_rows["export_key"] != fp32["export_key"]  # other kept ids
    assert other_rows["int8"]["key"] != int8["int8"]["key"]
    other_weights = run("other_weights", other_model, texts)
    assert other_weights["export_key"] != fp32["export_key"]
    assert other_weights["onnx"]["key"] != fp32["onnx"]["key"]
