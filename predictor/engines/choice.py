"""The engine seam: which engine runs, and `open_engine`.

EngineOptions is plain data (what tests inspect and the timing report
prints). Every engine behind the seam maps named numpy inputs to numpy
outputs with `run(feeds)`, and for a decoder's cache also runs inputs in
order to outputs that stay in the engine's memory (`run_resident`), with
the few array operations the decoder needs on them (`arrays`:
predictor/engines/onnx_runtime.py's NumpyArrays on the CPU and DeviceArrays
on the GPU, or paddle_inference.py's PaddleArrays); one file each:

- predictor/engines/paddle_inference.py: Paddle Inference over the exported program
  (GPU: FP16, fused passes, optional TensorRT; CPU: oneDNN);
- predictor/engines/onnx_runtime.py: ONNX Runtime over the program converted
  by predictor/conversions/onnx_model.py (CPU: fp32, or INT8 through
  predictor/classify/int8_guard.py).

`auto` takes ONNX Runtime on CPU (measured faster on this project's machine
for both tasks: Paddle Inference 3.3.1's PIR CPU passes fuse matmul +
activation only, ONNX Runtime fuses attention, layer norms, GELU and
Gemm + bias; the forced-length generation demo's predict stage took 34 s on
it and 63 s on Paddle Inference, same programs, same texts) and Paddle
Inference on GPU. Only this file and the two engine files
know which engine runs.
"""
from __future__ import annotations

from predictor.engines.options import EngineOptions


def choose_engine(requested: str, device: str) -> str:
    """`--engine auto|paddle|onnxruntime` -> the engine that runs."""
    if requested != "auto":
        return requested
    return "onnxruntime"


def open_engine(model_dir: str, options: EngineOptions):
    """The loaded engine for a model folder prepared for `options`."""
    if options.engine == "onnxruntime":
        from predictor.engines.onnx_runtime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model_dir, options)
    from predictor.engines.paddle_inference import PaddleEngine

    return PaddleEngine(model_dir, options)
