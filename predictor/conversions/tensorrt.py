"""Optional TensorRT for the GPU classifier: convert the exported program once.

Paddle 3.x runs TensorRT on PIR programs through an offline conversion
(`paddle.tensorrt.convert`) that rewrites supported subgraphs into
`tensorrt_engine` ops and saves a new program; the predictor then loads it
like any other. The engines are built for a shape range per input, so the
batcher must never send a batch outside it: `TensorRTShapes` is that range,
and the pipeline caps rows per batch at its `max_rows`.

Not available, and why (checked against Paddle 3.3.1): the padding-free
variable-length ERNIE plugins (`enable_tensorrt_varseqlen`) exist only for
the legacy program format, and `paddle.jit.save` of ERNIE no longer produces
one; length-sorted batches under a token budget are the padding saving this
harness uses instead. The CPU wheel has no `paddle.tensorrt` module, so this
file's conversion has never run; only the shape plan is tested here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from predictor.engines.paddle_inference import PROGRAM_FILE

# Rows per batch when TensorRT is on and --max-batch-rows is not given: a
# profile's max shape sizes its activation memory, and a token budget alone
# would allow thousands of very short rows.
DEFAULT_MAX_ROWS = 256
STATIC_SUBDIR = "paddle"  # the plain export the conversion reads


@dataclass(frozen=True)
class TensorRTShapes:
    """The (rows, tokens) range every converted input accepts."""
    max_rows: int
    max_seq_len: int
    opt_rows: int = 32

    def ranges(self) -> dict[str, tuple[int, int]]:
        opt_rows = min(self.opt_rows, self.max_rows)
        return {"min": (1, 1), "opt": (opt_rows, self.max_seq_len), "max": (self.max_rows, self.max_seq_len)}


def shapes_for(max_batch_rows: int | None, max_seq_len: int) -> TensorRTShapes:
    return TensorRTShapes(max_rows=max_batch_rows or DEFAULT_MAX_ROWS, max_seq_len=max_seq_len)


def export_converted(export_into: Callable[[str], None], folder: str, input_names: tuple[str, ...],
                     shapes: TensorRTShapes, precision: str) -> None:
    """`export_into` writes the plain static program to a subfolder; the
    converted one lands in `folder` itself, where the engine looks."""
    static_dir = os.path.join(folder, STATIC_SUBDIR)
    os.makedirs(static_dir, exist_ok=True)
    export_into(static_dir)
    convert(static_dir, folder, input_names, shapes, precision)


def convert(static_dir: str, out_dir: str, input_names: tuple[str, ...], shapes: TensorRTShapes,
            precision: str) -> None:
    """Convert `static_dir`'s program into `out_dir` with TensorRT engines."""
    try:
        from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig, convert as trt_convert
    except ImportError as err:
        raise RuntimeError("--tensorrt needs a paddlepaddle-gpu build with TensorRT (paddle.tensorrt)") from err

    ranges = shapes.ranges()
    inputs = []
    for name in input_names:
        spec = Input(min_input_shape=ranges["min"], optim_input_shape=ranges["opt"],
                     max_input_shape=ranges["max"], name=name)
        spec.input_data_type = "int64"
        # Warm-up values in [0, 2): valid for token ids and token types alike
        # (the default [1, 10) overruns ERNIE's 4-row token-type table).
        spec.input_range = (0, 2)
        inputs.append(spec)
    config = TensorRTConfig(inputs=inputs)
    config.precision_mode = PrecisionMode.FP16 if precision == "fp16" else PrecisionMode.FP32
    config.save_model_dir = os.path.join(out_dir, os.path.splitext(PROGRAM_FILE)[0])
    trt_convert(os.path.join(static_dir, os.path.splitext(PROGRAM_FILE)[0]), config)
