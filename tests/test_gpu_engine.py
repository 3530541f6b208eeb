"""The GPU path's CPU-testable parts: which GPUs a run sees and which worker
gets which, the one-line errors when no GPU or no CUDA provider is there,
a batch split when it does not fit, and the fp16 conversion's graph."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import pipeline
from predictor.classify.classifier import ClassifyRunner
from predictor.engines import gpus
from predictor.engines.onnx_runtime import GpuPlacement, is_out_of_memory, load_session
from predictor.engines.options import EngineOptions, EngineOutOfMemory, EngineUnavailable
from predictor.machines.local import plan_engine_options
from tests.tiny_checkpoints import review_texts, tiny_classifier, tiny_generator, write_reviews_csv


@pytest.mark.parametrize("visible, listed, expected", [
    (None, 2, [0, 1]),
    ("1", 2, [0]),          # CUDA numbers the visible GPU 0
    ("0,1,2,3", 2, [0, 1]),  # names GPUs the driver does not have
    ("", 2, []),
    ("-1", 4, []),
    (None, 0, []),
])
def test_visible_gpus_follow_the_driver_and_cuda_visible_devices(monkeypatch, visible, listed, expected):
    monkeypatch.setattr(gpus, "driver_gpu_count", lambda: listed)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus.visible_gpu_ids() == expected


def test_each_gpu_gets_one_onnx_runtime_worker_with_its_own_device_and_memory_limit():
    base = EngineOptions(engine="onnxruntime", device="gpu", precision="fp16", gpu_memory_limit_mb=512)
    plan = plan_engine_options(base, workers=3, gpu_ids=[0, 1])
    assert [GpuPlacement.of(o) for o in plan] == [GpuPlacement(0, 512), GpuPlacement(1, 512)]
    cuda, cpu = GpuPlacement(1, 512).providers()
    assert cuda[0] == "CUDAExecutionProvider" and cuda[1]["device_id"] == 1
    assert cuda[1]["gpu_mem_limit"] == 512 * 1024 * 1024 and cpu == "CPUExecutionProvider"
    assert "gpu_mem_limit" not in GpuPlacement(0).providers()[0][1]
    assert GpuPlacement.of(EngineOptions(engine="onnxruntime")) is None


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Built before any test captures stderr: PaddleNLP's logger keeps the
    stream it first writes to."""
    folder = str(tmp_path_factory.mktemp("gpu_models"))
    return {"classifier": tiny_classifier(folder), "generator": tiny_generator(folder)}


def run(workdir, model_dir, *options) -> tuple[int, str]:
    input_path = write_reviews_csv(os.path.join(workdir, "gpu_in.csv"), review_texts(8))
    output = os.path.join(workdir, "gpu_out.csv")
    status = pipeline.main([input_path, model_dir, output, "--quiet", "--cache-dir", os.path.join(workdir, "cache"),
                            *options])
    assert not os.path.exists(output)
    return status, output


def test_no_visible_gpu_is_one_line_and_no_output(tmp_path, models, monkeypatch, capsys):
    monkeypatch.setattr(gpus, "driver_gpu_count", lambda: 0)
    status, _ = run(str(tmp_path), models["classifier"], "--device", "gpu")
    err = capsys.readouterr().err
    assert status == 2 and "no GPU is visible" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_cuda_provider_is_one_line_naming_what_to_install(tmp_path, models, monkeypatch, capsys):
    import onnxruntime

    monkeypatch.setattr(gpus, "driver_gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    status, _ = run(str(tmp_path), models["classifier"], "--device", "gpu")
    err = capsys.readouterr().err
    assert status == 2 and "no CUDA provider" in err and "onnxruntime-gpu[cuda,cudnn]" in err
    assert "Traceback" not in err


def test_a_cuda_provider_that_does_not_load_is_refused_not_run_on_the_cpu(tmp_path, monkeypatch):
    """ONNX Runtime drops a provider whose libraries fail to load and runs on
    the CPU: the session is refused instead."""
    import onnxruntime

    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])

    class CpuOnly:
        def __init__(self, model, options, providers):
            assert providers[0][0] == "CUDAExecutionProvider"

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", CpuOnly)
    with pytest.raises(EngineUnavailable, match="could not load its libraries"):
        load_session(model.SerializeToString(), 1, gpu=GpuPlacement(0))


def test_generation_on_a_gpu_without_a_cuda_provider_is_one_line(tmp_path, models, monkeypatch, capsys):
    import onnxruntime

    monkeypatch.setattr(gpus, "driver_gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    status, _ = run(str(tmp_path), models["generator"], "--device", "gpu", "--max-new-tokens", "2")
    err = capsys.readouterr().err
    assert status == 2 and "no CUDA provider" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("message", [
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
    "Name:'MatMul_0' Status Message: Failed to allocate memory for requested buffer of size 805306368",
    "CUDA failure 2: out of memory ; GPU=0",
])
def test_cuda_allocation_failures_are_recognised(message):
    assert is_out_of_memory(RuntimeError(message))
    assert not is_out_of_memory(RuntimeError("Invalid input name: input_ids"))


class SmallMemoryEngine:
    """Runs batches of up to `fits` rows; larger ones fail as out of memory."""

    def __init__(self, fits: int):
        self.fits, self.batches = fits, []

    def run(self, feeds):
        rows = len(feeds["input_ids"])
        if rows > self.fits:
            raise EngineOutOfMemory(f"{rows} rows do not fit")
        self.batches.append(rows)
        return [np.stack([feeds["input_ids"].sum(1), feeds["token_type_ids"].sum(1)], axis=1).astype(np.float32)]


def test_a_batch_that_does_not_fit_is_run_in_halves_with_the_same_output():
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(0, 100, size=(11, 7)), "token_type_ids": rng.integers(0, 2, size=(11, 7))}

    def runner(fits: int) -> ClassifyRunner:
        made = ClassifyRunner.__new__(ClassifyRunner)
        made.engine, made.unmasked, made.fp32 = SmallMemoryEngine(fits), None, None
        return made

    whole, split = runner(fits=64), runner(fits=3)
    expected, got = whole.run(batch), split.run(batch)
    assert np.array_equal(got.probabilities, expected.probabilities) and expected.splits == 0
    assert sum(split.engine.batches) == 11 and max(split.engine.batches) <= 3 and got.splits > 0
    with pytest.raises(EngineOutOfMemory):
        runner(fits=0).run(batch)


class FixedEngine:
    """Returns the given probabilities for the rows it is fed (ids are row numbers)."""

    def __init__(self, probabilities: np.ndarray):
        self.probabilities, self.fed = probabilities, []

    def run(self, feeds):
        rows = feeds["input_ids"][:, 0]
        self.fed.append(rows.tolist())
        return [self.probabilities[rows]]


def test_unpadded_batches_take_the_unmasked_graph_and_batches_flagged_fp32_the_fp32_model():
    fp16 = np.array([[0.9, 0.1], [0.52, 0.48], [0.3, 0.7], [0.49, 0.51]], dtype=np.float32)
    fp32 = np.array([[0.91, 0.09], [0.45, 0.55], [0.31, 0.69], [0.47, 0.53]], dtype=np.float32)
    runner = ClassifyRunner.__new__(ClassifyRunner)
    runner.engine, runner.unmasked, runner.fp32 = FixedEngine(fp16), FixedEngine(fp16), FixedEngine(fp32)
    ids = np.repeat(np.arange(4)[:, None], 5, axis=1)
    batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "unpadded": True}
    got = runner.run(batch)  # the fp16 answer as it came: rows near a tie are the pipeline's business
    assert runner.unmasked.fed == [[0, 1, 2, 3]] and runner.engine.fed == [] and runner.fp32.fed == []
    assert np.array_equal(got.probabilities, fp16)
    runner.run({**batch, "unpadded": False})  # a [PAD] inside: the masked graph
    assert runner.engine.fed == [[0, 1, 2, 3]]
    rerun = runner.run({**batch, "input_ids": ids[[1, 3]], "token_type_ids": ids[[1, 3]] * 0, "fp32": True})
    assert runner.fp32.fed == [[1, 3]] and np.array_equal(rerun.probabilities, fp32[[1, 3]])
    runner.fp32 = None  # an fp32 model's own predictor runs such batches itself
    runner.run({**batch, "unpadded": False, "fp32": True})
    assert runner.engine.fed == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_exact_length_batches_hold_one_length_each_within_the_budget():
    from predictor.batching import exact_length_batches

    lengths = np.array([5, 3, 5, 3, 3, 9, 5])
    batches = exact_length_batches(lengths, token_budget=10)
    assert [(b.width, b.rows.tolist()) for b in batches] == [(9, [5]), (5, [0, 2]), (5, [6]), (3, [1, 3, 4])]
    assert sorted(r for b in batches for r in b.rows.tolist()) == list(range(7))
    assert [b.rows.tolist() for b in exact_length_batches(lengths, 10, rows=np.array([1, 2, 4]))] == [[2], [1, 4]]


def test_the_fp16_model_keeps_the_fp32_inputs_and_outputs(tmp_path, models):
    """The conversion turns weights to fp16 and leaves ids in and fp32
    probabilities out (what the GPU runs is checked there)."""
    from predictor.checkpoint import read_checkpoint
    from predictor.classify.classifier import export_classifier
    from predictor.conversions.fp16 import to_fp16
    from predictor.conversions.onnx_model import TransformerShape, convert
    from predictor.pruning import full_vocab
    from tests.tiny_checkpoints import TINY_ERNIE

    paddle_dir, onnx_dir = str(tmp_path / "paddle"), str(tmp_path / "onnx")
    export_classifier(read_checkpoint(models["classifier"]), full_vocab(TINY_ERNIE["vocab_size"]),
                      paddle_dir)
    os.makedirs(onnx_dir)
    ids = np.random.default_rng(0).integers(5, TINY_ERNIE["vocab_size"], size=(3, 9))
    ids[:, 0] = 1
    convert(paddle_dir, onnx_dir, TransformerShape(TINY_ERNIE["num_attention_heads"], TINY_ERNIE["hidden_size"]),
            [{"input_ids": ids, "token_type_ids": np.zeros_like(ids)}], threads=1)
    fp16_path = str(tmp_path / "fp16.onnx")
    to_fp16(os.path.join(onnx_dir, "model.onnx"), fp16_path)
    fp32, fp16 = onnx.load(os.path.join(onnx_dir, "model.onnx")), onnx.load(fp16_path)
    assert [(i.name, i.type.tensor_type.elem_type) for i in fp16.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in fp32.graph.input]
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in fp16.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
               and np.prod(t.dims) > 1000]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert {n.op_type for n in fp16.graph.node} >= {"Attention", "SkipLayerNormalization"}
    from predictor.conversions.fp16 import without_attention_masks

    unmasked_path = str(tmp_path / "unmasked.onnx")
    without_attention_masks(fp16_path, unmasked_path)
    attention = [n for n in onnx.load(unmasked_path).graph.node if n.op_type == "Attention"]
    assert attention and all(len(n.input) == 3 for n in attention)


def test_a_gpu_session_keeps_its_optimised_graph_and_later_loads_skip_the_optimisation(tmp_path, monkeypatch):
    """The CUDA provider stood in for by the CPU one: the first load on the
    GPU saves the optimised graph beside the model, a later load (another
    process: the session cache emptied) opens that graph with optimisations
    off, and both sessions compute the same outputs."""
    import onnxruntime

    from predictor.engines import onnx_runtime

    # x @ w + b, then Gelu: ONNX Runtime's EXTENDED level fuses parts of it.
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    b = onnx.numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["xw"]), onnx.helper.make_node("Add", ["xw", "b"], ["h"]),
         onnx.helper.make_node("Relu", ["h"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["rows", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["rows", 64])], [w, b])
    folder = tmp_path / "program"
    folder.mkdir()
    path = str(folder / "model.onnx")
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)]), path)

    opened = []

    def on_the_cpu(model, options, gpu):
        opened.append((model, options.graph_optimization_level))
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnx_runtime, "open_session", on_the_cpu)
    monkeypatch.setattr(onnx_runtime, "_OPEN_SESSIONS", type(onnx_runtime._OPEN_SESSIONS)())
    x = {"x": rng.standard_normal((5, 64)).astype(np.float32)}
    first = load_session(path, 1, gpu=GpuPlacement(0))
    kept = onnx_runtime.gpu_optimised_path(path)
    assert opened == [(path, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)]
    assert os.path.isfile(kept) and os.path.dirname(os.path.dirname(kept)) == str(folder)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    assert load_session(path, 1, gpu=GpuPlacement(0)) is first  # this process reuses its session

    onnx_runtime._OPEN_SESSIONS.clear()
    later = load_session(path, 1, gpu=GpuPlacement(0))
    assert opened[-1] == (kept, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(first.run(None, x)[0], later.run(None, x)[0])
    plain = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(later.run(None, x)[0], plain.run(None, x)[0], rtol=1e-6, atol=1e-6)

    # A model folder that cannot be written: optimised at load, nothing kept.
    other = tmp_path / "read_only"
    other.mkdir()
    onnx.save(onnx.load(path), str(other / "model.onnx"))
    monkeypatch.setattr(onnx_runtime, "_staging_beside", lambda path: None)
    load_session(str(other / "model.onnx"), 1, gpu=GpuPlacement(0))
    assert opened[-1][1] == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert sorted(p.name for p in other.iterdir()) == ["model.onnx"]


def test_a_damaged_kept_graph_or_a_failed_save_falls_back_to_optimising_at_load(tmp_path, monkeypatch):
    import onnxruntime

    from predictor.engines import onnx_runtime

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    path = str(tmp_path / "model.onnx")
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)]), path)
    opened = []

    def on_the_cpu(model, options, gpu):
        opened.append(model)
        if getattr(options, "optimized_model_filepath", "") and fail_saving:
            raise RuntimeError("No space left on device")
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnx_runtime, "open_session", on_the_cpu)
    monkeypatch.setattr(onnx_runtime, "_OPEN_SESSIONS", type(onnx_runtime._OPEN_SESSIONS)())
    x = {"x": np.array([-1.0, 2.0], np.float32)}

    fail_saving = True  # the save fails: the run goes on, nothing kept, no staging folder left
    assert load_session(path, 1, gpu=GpuPlacement(0)).run(None, x)[0].tolist() == [0.0, 2.0]
    assert opened == [path, path] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]

    onnx_runtime._OPEN_SESSIONS.clear()
    kept = onnx_runtime.gpu_optimised_path(path)
    os.makedirs(os.path.dirname(kept))
    with open(kept, "wb") as f:
        f.write(b"not a model")  # a damaged copy
    fail_saving = False
    assert load_session(path, 1, gpu=GpuPlacement(0)).run(None, x)[0].tolist() == [0.0, 2.0]
    assert opened[-2:] == [kept, path]
