"""The engine seam: options, the choice of engine, and `open_engine`.

EngineOptions is plain data (what tests inspect and the timing report
prints). Every engine behind the seam maps named numpy inputs to numpy
outputs with `run(feeds)`, and for a decoder's cache also runs inputs in
order to outputs that stay in the engine's memory (`run_resident`), with
the few array operations the decoder needs on them (`arrays`:
NumpyArrays below, or engine_paddle's PaddleArrays); one file each:

- predictor/engine_paddle.py: Paddle Inference over the exported program
  (GPU: FP16, fused passes, optional TensorRT; CPU: oneDNN);
- predictor/engine_onnxruntime.py: ONNX Runtime over the program converted
  by predictor/onnx_conversion.py (CPU: fp32, or INT8 through
  predictor/quantize.py).

`auto` takes ONNX Runtime on CPU (measured faster on this project's machine
for both tasks: Paddle Inference 3.3.1's PIR CPU passes fuse matmul +
activation only, ONNX Runtime fuses attention, layer norms, GELU and
Gemm + bias; the forced-length generation demo's predict stage took 34 s on
it and 63 s on Paddle Inference, same programs, same texts) and Paddle
Inference on GPU. Only this file and the two engine files
know which engine runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

ENGINES = ("paddle", "onnxruntime")
DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "fp16", "int8")
# Tasks whose exported programs convert to ONNX.
ONNX_TASKS = ("classify", "generate")


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "paddle"
    device: str = "cpu"
    precision: str = "fp32"
    cpu_threads: int = 1           # math-library threads per worker process
    onednn: bool = True
    onednn_cache_capacity: int = 10
    gpu_id: int = 0                # filled in per worker process
    gpu_memory_pool_mb: int = 512
    tensorrt: bool = False         # the program was converted by predictor/tensorrt.py at export

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device == "cpu" and self.precision == "fp16":
            # oneDNN has no fp16 path for these ops, and bf16 is simulated (about
            # 100x slower) on CPUs without avx512_bf16/AMX.
            raise ValueError("precision fp16 needs --device gpu; the CPU path runs fp32 or int8")
        if self.precision == "int8" and self.engine != "onnxruntime":
            # oneDNN INT8 needs legacy-IR passes that PIR programs (Paddle 3.x) cannot use.
            raise ValueError("precision int8 runs on the ONNX Runtime engine (CPU); Paddle Inference has no "
                             "INT8 for PIR programs")
        if self.engine == "onnxruntime" and self.device != "cpu":
            raise ValueError("the ONNX Runtime engine is the CPU path; --device gpu runs Paddle Inference")
        if self.device == "cpu" and self.tensorrt:
            raise ValueError("TensorRT needs --device gpu")
        if self.cpu_threads < 1:
            raise ValueError(f"threads per worker must be >= 1, got {self.cpu_threads}")

    def for_gpu(self, gpu_id: int) -> "EngineOptions":
        return replace(self, gpu_id=gpu_id)

    def describe(self) -> dict:
        return asdict(self)


class NumpyArrays:
    """The few array operations a decoder needs on an engine's resident values,
    for engines whose memory is the host's (the ONNX Runtime CPU engine);
    predictor/engine_paddle.py has the same for Paddle Tensors."""

    @staticmethod
    def zeros(shape: list[int]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    @staticmethod
    def take_rows(x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[index])

    @staticmethod
    def put_position(buffer: np.ndarray, position: int, values: np.ndarray) -> None:
        buffer[:, :, position:position + 1, :] = values

    @staticmethod
    def widened(buffer: np.ndarray, width: int) -> np.ndarray:
        wider = np.zeros(buffer.shape[:2] + (width,) + buffer.shape[3:], dtype=buffer.dtype)
        wider[:, :, :buffer.shape[2]] = buffer
        return wider

    @staticmethod
    def stack_rows(parts: list[np.ndarray], width: int) -> np.ndarray:
        """[rows_i, H, width_i, D] blocks -> one [sum rows_i, H, width, D], each
        right-aligned (zeros on the left)."""
        rows = sum(len(part) for part in parts)
        # Only the padding is zeroed: a job's prompt cache is hundreds of MB.
        out = np.empty((rows, parts[0].shape[1], width) + parts[0].shape[3:], dtype=parts[0].dtype)
        first = 0
        for part in parts:
            pad = width - part.shape[2]
            out[first:first + len(part), :, :pad] = 0.0
            out[first:first + len(part), :, pad:] = part
            first += len(part)
        return out

    @staticmethod
    def to_numpy(x: np.ndarray) -> np.ndarray:
        return x


def choose_engine(requested: str, device: str, task: str) -> str:
    """`--engine auto|paddle|onnxruntime` -> the engine that runs."""
    if requested != "auto":
        return requested
    return "onnxruntime" if device == "cpu" and task in ONNX_TASKS else "paddle"


def open_engine(model_dir: str, options: EngineOptions):
    """The loaded engine for a model folder prepared for `options`."""
    if options.engine == "onnxruntime":
        from predictor.engine_onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(model_dir, options)
    from predictor.engine_paddle import PaddleEngine

    return PaddleEngine(model_dir, options)
