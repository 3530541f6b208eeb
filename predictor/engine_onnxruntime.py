"""ONNX Runtime behind the engine seam: one CPU session over model.onnx.

The model folder is what predictor/onnx_conversion.py (fp32, transformer
fusions checked against the Paddle program) or predictor/quantize.py (INT8
under the accuracy guard) wrote; this file only loads and runs it.
"""
from __future__ import annotations

import os

import numpy as np

from predictor.engine import EngineOptions

ONNX_FILE = "model.onnx"


def session_options(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph, one stream of batches: parallelism is inside each op.
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def load_session(model: str | bytes, threads: int):
    """A CPU session over a model file's path or a serialised model."""
    import onnxruntime

    return onnxruntime.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])


class OnnxRuntimeEngine:
    def __init__(self, model_dir: str, options: EngineOptions):
        self.options = options
        self._session = load_session(os.path.join(model_dir, ONNX_FILE), options.cpu_threads)
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, {name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
