"""Paddle Inference behind the engine seam: one predictor over an exported program.

`paddle_config` is the single place where its CPU and GPU set-ups differ.

Paddle 3.3.1 facts this relies on (checked on the CPU build here):
- programs saved by paddle.jit.save are PIR `.json` files; the predictor
  detects PIR from the suffix, and `switch_ir_optim` has no effect on them;
- `enable_memory_optim()` makes create_predictor fail on PIR programs unless
  the new executor is on, which then switches it off anyway: never call it;
- oneDNN's primitive cache is keyed by input shape; capacity 10 keeps memory
  bounded with length-sorted batches of many different widths.
"""
from __future__ import annotations

import os

import numpy as np

from predictor.engines.options import EngineOptions

PROGRAM_FILE = "inference.json"
PARAMS_FILE = "inference.pdiparams"


def paddle_config(model_dir: str, options: EngineOptions):
    from paddle import inference

    config = inference.Config(os.path.join(model_dir, PROGRAM_FILE), os.path.join(model_dir, PARAMS_FILE))
    config.disable_glog_info()
    if options.device == "cpu":
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(options.cpu_threads)
        if options.onednn:
            config.enable_onednn()
            config.set_onednn_cache_capacity(options.onednn_cache_capacity)
        else:
            config.disable_onednn()
    else:
        # Half turns on PIR's auto_mixed_precision_pass; inputs and outputs stay
        # int64/fp32 so the pipeline code is the same for both precisions. A
        # TensorRT-converted program already carries its engines' precision
        # (predictor/conversions/tensorrt.py), so it loads as a plain fp32 program.
        half = options.precision == "fp16" and not options.tensorrt
        precision = inference.PrecisionType.Half if half else inference.PrecisionType.Float32
        config.enable_use_gpu(options.gpu_memory_pool_mb, options.gpu_id, precision)
        # Level 3 runs the whole PIR GPU pass list: embedding_eltwise_layernorm,
        # multihead_matmul / fused_flash_attn, fc + fc_elementwise_layernorm and
        # add_norm fusions (the FasterTransformer-derived kernels).
        config.set_optimization_level(3)
    return config


class PaddleArrays:
    """The few array operations a decoder needs on run_resident's Tensors, one
    value per cache layer (as predictor/engines/onnx_runtime.py's NumpyArrays)."""

    @staticmethod
    def take_rows(values: list, index: np.ndarray) -> list:
        import paddle

        index = paddle.to_tensor(index)
        return [paddle.index_select(x, index, axis=0) for x in values]

    @staticmethod
    def put_position(buffers: list, position: int, values: list) -> list:
        for buffer, value in zip(buffers, values):
            buffer[:, :, position:position + 1, :] = value
        return buffers

    @staticmethod
    def widened(values: list, width: int) -> list:
        import paddle

        wider = []
        for buffer in values:
            shape = list(buffer.shape)
            wider.append(paddle.concat([buffer, paddle.zeros(shape[:2] + [width - shape[2]] + shape[3:], buffer.dtype)],
                                       axis=2))
        return wider

    @staticmethod
    def stack_rows(chunks: list[list], width: int) -> list:
        """Per layer, the chunks' [rows_i, H, width_i, D] blocks -> one
        [sum rows_i, H, width, D], each right-aligned (zeros on the left)."""
        import paddle

        return [paddle.concat([paddle.nn.functional.pad(part, [0, 0, 0, 0, width - part.shape[2], 0, 0, 0])
                               for part in parts], axis=0) for parts in zip(*chunks)]

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return x.numpy()


class PaddleEngine:
    """A loaded predictor; `run` maps named numpy inputs to numpy outputs."""

    def __init__(self, model_dir: str, options: EngineOptions):
        from paddle import inference

        self.options = options
        self._predictor = inference.create_predictor(paddle_config(model_dir, options))
        self.input_names = list(self._predictor.get_input_names())
        self._outputs = [self._predictor.get_output_handle(n) for n in self._predictor.get_output_names()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name in self.input_names:
            self._predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name]))
        self._predictor.run()
        return [handle.copy_to_cpu() for handle in self._outputs]

    def run_resident(self, inputs: list) -> list:
        """Inputs in input order, numpy arrays or paddle Tensors; outputs stay
        Tensors in the predictor's memory (a decoder's key/value cache goes
        straight back in without a host copy)."""
        import paddle

        return self._predictor.run([paddle.to_tensor(x) if isinstance(x, np.ndarray) else x for x in inputs])

    arrays = PaddleArrays
