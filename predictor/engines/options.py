"""The engine seam's options: plain data that tests inspect and the timing
report prints. predictor/engines/choice.py turns them into an engine.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

ENGINES = ("paddle", "onnxruntime")
DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "paddle"
    device: str = "cpu"
    precision: str = "fp32"
    cpu_threads: int = 1           # math-library threads per worker process
    onednn: bool = True
    onednn_cache_capacity: int = 10
    gpu_id: int = 0                # filled in per worker process
    gpu_memory_pool_mb: int = 512  # Paddle Inference's initial pool
    gpu_memory_limit_mb: int = 0   # ONNX Runtime's CUDA arena at most (0: no limit)
    tensorrt: bool = False         # the program was converted by predictor/conversions/tensorrt.py at export

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
        if self.precision == "int8" and (self.engine != "onnxruntime" or self.device != "cpu"):
            # oneDNN INT8 needs legacy-IR passes that PIR programs (Paddle 3.x)
            # cannot use; on the GPU, fp16 is the low precision.
            raise ValueError("precision int8 runs on the ONNX Runtime engine on CPU; Paddle Inference has no "
                             "INT8 for PIR programs, and the GPU runs fp16")
        if self.engine == "onnxruntime" and self.tensorrt:
            raise ValueError("--tensorrt converts the Paddle program for Paddle Inference: add --engine paddle")
        if self.device == "cpu" and self.tensorrt:
            raise ValueError("TensorRT needs --device gpu")
        if self.cpu_threads < 1:
            raise ValueError(f"threads per worker must be >= 1, got {self.cpu_threads}")

    @property
    def unpadded_batches(self) -> bool:
        """Batches of one length each: ONNX Runtime's CUDA attention kernels
        fuse only without a mask (measured on an H200: +25%, docs/benchmarks.md)."""
        return self.engine == "onnxruntime" and self.device == "gpu"

    def for_gpu(self, gpu_id: int) -> "EngineOptions":
        return replace(self, gpu_id=gpu_id)

    def describe(self) -> dict:
        return asdict(self)


class EngineUnavailable(Exception):
    """The engine asked for cannot run here (no GPU, a provider that does not
    load): said in one line, with what to install or change."""


class EngineOutOfMemory(Exception):
    """A batch did not fit in the device's memory; a smaller one may."""


def in_halves_when_out_of_memory(run, batch, rows, halves, merged):
    """run(batch); a batch that does not fit in the device's memory is run
    as its two halves, each the same way, and `merged(first, second)`. For
    runners whose rows are independent, so the outputs are the same. A
    single row that does not fit is the error."""
    try:
        return run(batch)
    except EngineOutOfMemory:
        if rows(batch) == 1:
            raise
        first, second = (in_halves_when_out_of_memory(run, part, rows, halves, merged) for part in halves(batch))
        return merged(first, second)
