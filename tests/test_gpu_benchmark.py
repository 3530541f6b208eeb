"""The GPU benchmark's CPU-testable parts: its batchings, and the graph
variants it measures (made from a tiny classifier converted as the harness
converts it)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from predictor.checkpoint import read_checkpoint
from predictor.conversions.fp16 import as_fp16, unmasked
from predictor.classify.classifier import export_classifier
from predictor.conversions.onnx_model import TransformerShape, convert
from predictor.pruning import full_vocab
from scripts import gpu_graphs
from predictor.batching import exact_length_batches
from scripts.gpu_benchmark import fixed_shape_batches, useful_flops
from tests.tiny_checkpoints import TINY_ERNIE, tiny_classifier

SHAPE = TransformerShape(num_heads=TINY_ERNIE["num_attention_heads"], hidden_size=TINY_ERNIE["hidden_size"])


def test_exact_length_batches_hold_one_length_each_within_the_budget():
    lengths = np.random.default_rng(0).integers(3, 129, size=5000)
    batches = exact_length_batches(lengths, 2048)
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert set(lengths[b.rows].tolist()) == {b.width}
        assert len(b.rows) * b.width <= 2048
    assert [b.width for b in batches] == sorted((b.width for b in batches), reverse=True)


def test_fixed_shape_batches_have_one_shape_per_width_and_fill_only_the_last():
    lengths = np.random.default_rng(1).integers(3, 129, size=3000)
    batches = fixed_shape_batches(lengths, 4096, step=16)
    assert {b.width for b in batches} <= set(range(16, 129, 16))
    for width in {b.width for b in batches}:
        group = [b for b in batches if b.width == width]
        assert {len(b.rows) for b in group} == {4096 // width}
        assert all((b.rows >= 0).all() for b in group[:-1])
    real = np.concatenate([b.rows[b.rows >= 0] for b in batches])
    assert sorted(real.tolist()) == list(range(len(lengths)))
    assert all((lengths[b.rows[b.rows >= 0]] <= b.width).all() for b in batches)


def test_useful_flops_count_every_token_once():
    one = useful_flops(np.array([64]))
    assert useful_flops(np.array([64, 64])) == pytest.approx(2 * one)
    assert 70e6 < one / 64 < 80e6  # ERNIE 3.0 medium, [CLS]-only last layer: ~75 MFLOP a token


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gpu_graphs"))
    paddle_dir, onnx_dir = os.path.join(workdir, "paddle"), os.path.join(workdir, "onnx")
    export_classifier(read_checkpoint(tiny_classifier(workdir)), full_vocab(TINY_ERNIE["vocab_size"]), paddle_dir)
    os.makedirs(onnx_dir)
    ids = np.random.default_rng(0).integers(5, TINY_ERNIE["vocab_size"], size=(4, 12))
    ids[:, 0], ids[1, 7:] = 1, 0
    report = convert(paddle_dir, onnx_dir, SHAPE, [{"input_ids": ids, "token_type_ids": np.zeros_like(ids)}], 1)
    assert report["fusions_kept"]
    return onnx.load(os.path.join(onnx_dir, "model.onnx"))


def probabilities(model, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})[0]


def unpadded_ids(rows: int, width: int, seed: int = 1) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(5, TINY_ERNIE["vocab_size"], size=(rows, width))
    ids[:, 0] = 1
    return ids


def test_a_skeleton_drops_the_large_weights_and_is_filled_again(fused, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_graphs, "SKELETON_MIN_ELEMENTS", 256)
    path = str(tmp_path / "model.onnx")
    onnx.save(fused, path)
    emptied = gpu_graphs.write_skeleton(path, str(tmp_path / "skeleton.onnx"))
    assert emptied and os.path.getsize(tmp_path / "skeleton.onnx") < os.path.getsize(path) / 2
    model = gpu_graphs.filled(str(tmp_path / "skeleton.onnx"), seed=3)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    assert all(shapes[name] == dims for name, dims in emptied.items())
    out = probabilities(model, unpadded_ids(3, 10))
    assert np.allclose(out.sum(-1), 1, atol=1e-5) and np.isfinite(out).all()


def test_the_head_is_found_read_and_replaced(fused):
    nodes = gpu_graphs.head_nodes(fused)
    ids = unpadded_ids(5, 9)
    session = ort.InferenceSession(gpu_graphs.with_pooled_output(fused).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    pooled = session.run([nodes.pooled], {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})[0]
    model = onnx.ModelProto()
    model.CopyFrom(fused)
    weight = np.random.default_rng(2).normal(size=(pooled.shape[1], 2)).astype(np.float32)
    bias = np.array([0.3, -0.3], np.float32)
    gpu_graphs.with_head(model, weight, bias)
    logits = pooled @ weight + bias
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.allclose(probabilities(model, ids), expected, atol=1e-5)


def test_the_unmasked_graph_equals_the_harness_graph_on_rows_of_one_length(fused):
    without_masks = unmasked(fused)
    assert all(len(n.input) == 3 for n in gpu_graphs.attention_nodes(without_masks))
    ids = unpadded_ids(6, 11)
    assert np.allclose(probabilities(without_masks, ids), probabilities(fused, ids), atol=1e-6)


def test_fp16_keeps_io_types_and_packing_restores_padding_before_the_last_layer(fused):
    half = as_fp16(fused)
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [onnx.TensorProto.INT64] * 2
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    packed = gpu_graphs.packed(half)
    ops = [n.op_type for n in packed.graph.node]
    assert ops.count("PackedAttention") == len(gpu_graphs.attention_nodes(fused)) and "Attention" not in ops
    remove = next(n for n in packed.graph.node if n.op_type == "RemovePadding")
    restore = next(n for n in packed.graph.node if n.op_type == "RestorePadding")
    embed = next(n for n in packed.graph.node if n.op_type == "EmbedLayerNormalization")
    assert remove.input[0] == embed.output[0]
    # Nothing but RemovePadding reads the padded embeddings; the last (unfused) layer reads the restored ones.
    readers = [n for n in packed.graph.node if embed.output[0] in n.input]
    assert readers == [remove]
    assert any(n.op_type == "MatMul" and restore.output[0] in n.input for n in packed.graph.node)
    made_at = {out: i for i, n in enumerate(packed.graph.node) for out in n.output if out}
    for i, n in enumerate(packed.graph.node):  # still topologically sorted
        assert all(made_at.get(name, -1) < i for name in n.input if name)
