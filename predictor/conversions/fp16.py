"""Export step: the fused fp32 ONNX model -> fp16 for ONNX Runtime's CUDA
provider, checked on the GPU against the fp32 model.

ONNX Runtime's own float16 conversion (onnxruntime.transformers) turns
weights and activations to fp16 and keeps the graph's inputs and outputs as
they were (int64 ids, fp32 probabilities), so batches and outputs look the
same to the rest of the harness. Its fused transformer ops (Attention,
SkipLayerNormalization, BiasGelu) have fp16 CUDA kernels that accumulate
in fp32.

The check: both models run on the GPU over sample rows of this input; the
report gives the largest probability difference and the label agreement,
as the CPU's INT8 report does. fp16 is not guarded (the GPU's fp16 moves
probabilities by about 1e-3, far less than INT8), but it is never silent:
the figures are in every run's report, and the benchmark measures the
agreement over whole inputs.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np

from predictor.engines.onnx_runtime import ONNX_FILE, GpuPlacement, load_session

FP16_REPORT = "fp16.json"
# Rows of the run's input both models are compared on.
SAMPLE_ROWS = 2048


def to_fp16(fp32_path: str, fp16_path: str) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(fp32_path))
    # keep_io_types: ids in, fp32 probabilities out, as the fp32 model.
    model.convert_float_to_float16(use_symbolic_shape_infer=False, keep_io_types=True)
    model.save_model_to_file(fp16_path)


def outputs_on(path: str, feeds: list[dict], gpu: GpuPlacement) -> np.ndarray:
    session = load_session(path, 1, gpu=gpu)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {n: f[n] for n in names})[0] for f in feeds])


def convert_fp16(fp32_dir: str, folder: str, sample: list[dict], gpu: GpuPlacement) -> dict:
    """Write folder/model.onnx (fp16) and folder/fp16.json (the check)."""
    started = time.perf_counter()
    fp32_path, fp16_path = os.path.join(fp32_dir, ONNX_FILE), os.path.join(folder, ONNX_FILE)
    to_fp16(fp32_path, fp16_path)
    reference, got = outputs_on(fp32_path, sample, gpu), outputs_on(fp16_path, sample, gpu)
    report = {"sample_rows": int(len(reference)),
              "max_prob_diff": float(np.abs(reference - got).max()) if len(reference) else 0.0,
              "label_agreement": float(np.mean(reference.argmax(-1) == got.argmax(-1))) if len(reference) else 1.0,
              "seconds": round(time.perf_counter() - started, 2)}
    with open(os.path.join(folder, FP16_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def cached_fp16_model(cache_dir: str, onnx_key: str, onnx_dir: str, sample: Callable[[], list[dict]],
                      gpu: GpuPlacement) -> tuple[str, dict]:
    """(folder of the fp16 model.onnx, its check), once per fp32 model."""
    from predictor.conversions.export_cache import cached_export, export_key, package_version
    from predictor.conversions.onnx_model import read_report

    key = export_key({"from": onnx_key, "step": "fp16",
                      "onnxruntime": package_version("onnxruntime-gpu", "onnxruntime")})
    folder, cached = cached_export(cache_dir, key, lambda target: convert_fp16(onnx_dir, target, sample(), gpu))
    return folder, {**read_report(folder, FP16_REPORT), "cached": cached, "key": key}
