"""Engine option choices, CPU and GPU. The GPU path cannot run on this CPU
build of Paddle, so its decisions are checked on a recording stand-in for
paddle.inference.Config; the CPU path is checked on the real Config."""
from __future__ import annotations

import os
import pytest

from predictor.engines.options import EngineOptions, EngineUnavailable
from predictor.engines.paddle_inference import paddle_config
from predictor.machines.local import plan_engine_options


class RecordingConfig:
    """Records the Config calls paddle_config makes."""

    def __init__(self, *paths):
        self.paths = paths
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_gpu_plan_is_one_fp16_worker_per_visible_gpu():
    base = EngineOptions(device="gpu", precision="fp16")
    plan = plan_engine_options(base, workers=5, gpu_ids=[0, 1, 3])
    assert [o.gpu_id for o in plan] == [0, 1, 3]
    assert {o.precision for o in plan} == {"fp16"}
    with pytest.raises(EngineUnavailable, match="no GPU is visible"):
        plan_engine_options(base, workers=1, gpu_ids=[])


def test_cpu_plan_is_n_identical_workers():
    plan = plan_engine_options(EngineOptions(cpu_threads=1), workers=2)
    assert plan == [EngineOptions(cpu_threads=1)] * 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="cpu", precision="fp16"), "fp16 needs --device gpu"),
    (dict(device="cpu", tensorrt=True), "TensorRT needs --device gpu"),
    (dict(device="tpu"), "device must be one of"),
    (dict(cpu_threads=0), "threads per worker must be >= 1"),
])
def test_impossible_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineOptions(**kwargs)


def test_gpu_config_asks_for_half_precision_and_the_fused_passes(monkeypatch):
    from paddle import inference

    monkeypatch.setattr(inference, "Config", RecordingConfig)
    config = paddle_config("/models/x", EngineOptions(device="gpu", precision="fp16", gpu_id=3))
    assert config.paths == ("/models/x/inference.json", "/models/x/inference.pdiparams")
    assert ("enable_use_gpu", 512, 3, inference.PrecisionType.Half) in config.calls
    assert ("set_optimization_level", 3) in config.calls
    assert not any(call[0].startswith(("enable_onednn", "set_cpu_math")) for call in config.calls)
    fp32 = paddle_config("/models/x", EngineOptions(device="gpu", precision="fp32"))
    assert ("enable_use_gpu", 512, 0, inference.PrecisionType.Float32) in fp32.calls


def test_cpu_config_on_the_real_paddle_config(monkeypatch, tmp_path):
    from paddle import inference

    for name in ("inference.json", "inference.pdiparams"):
        (tmp_path / name).write_bytes(b"")
    config = paddle_config(str(tmp_path), EngineOptions(cpu_threads=3))
    assert config.onednn_enabled() and not config.use_gpu()
    assert config.cpu_math_library_num_threads() == 3
    plain = paddle_config(str(tmp_path), EngineOptions(onednn=False))
    assert not plain.onednn_enabled()
    assert isinstance(config, inference.Config)


def test_tensorrt_program_loads_as_fp32_since_its_engines_carry_the_precision(monkeypatch):
    from paddle import inference

    monkeypatch.setattr(inference, "Config", RecordingConfig)
    config = paddle_config("/models/x", EngineOptions(device="gpu", precision="fp16", tensorrt=True))
    assert ("enable_use_gpu", 512, 0, inference.PrecisionType.Float32) in config.calls


def test_tensorrt_shape_range_covers_every_batch_the_batcher_may_send():
    from predictor.conversions.tensorrt import DEFAULT_MAX_ROWS, shapes_for

    assert shapes_for(None, 128).ranges() == {"min": (1, 1), "opt": (32, 128), "max": (DEFAULT_MAX_ROWS, 128)}
    assert shapes_for(8, 64).ranges() == {"min": (1, 1), "opt": (8, 64), "max": (8, 64)}


def test_tensorrt_caps_classification_batches_and_changes_the_export_key():
    from pipeline import engine_options, parse_args
    from predictor.classify.task import ClassifyTask

    def task(*argv: str) -> ClassifyTask:
        args = parse_args(["in.csv", "model", "out.csv", "--device", "gpu", *argv])
        return ClassifyTask(args, checkpoint=None, options=engine_options(args, ClassifyTask))

    plain, trt = task(), task("--tensorrt")
    assert plain.max_batch_rows is None and plain.export_key_parts() == {}
    assert trt.max_batch_rows == 256
    assert trt.export_key_parts() == {"tensorrt": {"max_rows": 256, "max_seq_len": 128, "opt_rows": 32}}


@pytest.mark.parametrize("argv, message", [
    (["--tensorrt"], "TensorRT needs --device gpu"),
    (["--tensorrt", "--device", "gpu", "--task", "generate"], "--tensorrt is for classification"),
])
def test_tensorrt_refuses_what_it_cannot_do(argv, message, capsys):
    from pipeline import parse_args

    with pytest.raises(SystemExit):
        parse_args(["in.csv", "model", "out.csv", *argv])
    assert message in capsys.readouterr().err


def test_tensorrt_conversion_says_what_it_needs_on_a_build_without_it(tmp_path):
    from predictor.conversions.tensorrt import export_converted, shapes_for

    written = []
    with pytest.raises(RuntimeError, match="paddlepaddle-gpu build with TensorRT"):
        export_converted(written.append, str(tmp_path), ("input_ids",), shapes_for(None, 128), "fp16")
    assert written == [str(tmp_path / "paddle")]


def test_weights_digest_is_remembered_while_the_file_is_unchanged(tmp_path):
    from predictor.checkpoint import WEIGHTS_DIGESTS, Checkpoint

    weights = tmp_path / "model_state.pdparams"
    weights.write_bytes(b"first weights")
    checkpoint = Checkpoint(str(tmp_path), {}, str(weights), str(tmp_path / "vocab.txt"))
    first = checkpoint.weights_digest(remembered_in=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache" / WEIGHTS_DIGESTS).iterdir())) == 1
    assert checkpoint.weights_digest(remembered_in=str(tmp_path / "cache")) == first == checkpoint.weights_digest()
    weights.write_bytes(b"other weights")  # same size, re-trained
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = checkpoint.weights_digest(remembered_in=str(tmp_path / "cache"))
    assert second != first and second == checkpoint.weights_digest()
