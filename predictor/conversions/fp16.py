"""Export step: the fused fp32 ONNX model -> fp16 for ONNX Runtime's CUDA
provider, checked on the GPU against the fp32 model, with the rule for rows
to re-run in fp32.

ONNX Runtime's own float16 conversion (onnxruntime.transformers) turns
weights and activations to fp16 and keeps the graph's inputs and outputs as
they were (int64 ids, fp32 probabilities), so batches and outputs look the
same to the rest of the harness. Two graphs are written: model.onnx (the
fused Attention ops with their mask, for batches that hold a [PAD] id) and
unmasked/model.onnx (the same without the mask input), for batches of one
length with no [PAD] inside, which are all of them in practice: without a
mask ONNX Runtime's CUDA attention runs fused kernels (measured on an H200,
ERNIE 3.0 medium: 4.9M tokens/s against 3.9M with the mask).

The check: the fp32 model (TF32 off) and the unmasked fp16 one run on the GPU
over sample rows of this input. fp16 moves some labels of an
input-sensitive classifier (0.4-0.5% on the demo's), always rows whose
classes are close, so the same low-margin rule as INT8's
(predictor/classify/low_margin.py) is fitted on the sample; once every row
is predicted, its threshold, set on the run's own margins so that the labels
expected to move stay within half of FP16_MIN_AGREEMENT, says which rows to
run again in fp32. The report gives the plain label agreement, the largest
probability difference, and the threshold and agreement the rule expects on
the sample.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np

from predictor.engines.onnx_runtime import ONNX_FILE, GpuPlacement, load_session

FP16_REPORT = "fp16.json"
UNMASKED = "unmasked"  # sub-folder of the graph without attention masks
# Rows of the run's input both models are compared on.
SAMPLE_ROWS = 2048
# Least label agreement with fp32 the re-run aims for.
FP16_MIN_AGREEMENT = 0.999


def as_fp16(model, keep_io_types: bool | list[str] = True, fp32_nodes: list[str] | None = None):
    """A copy of an fp32 ModelProto in fp16, its inputs and outputs kept (ids
    in, fp32 probabilities out), or only those named in `keep_io_types`; the
    nodes named in `fp32_nodes` stay fp32. Symbolic shape inference is
    skipped: it refuses some fused graphs and gives the same conversion on
    these."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    copy = type(model)()
    copy.CopyFrom(model)
    converted = OnnxModel(copy)
    converted.convert_float_to_float16(use_symbolic_shape_infer=False, keep_io_types=keep_io_types,
                                       node_block_list=fp32_nodes or [])
    return converted.model


def unmasked(model):
    """A copy with every fused Attention's mask input removed: right only for
    batches with no padding. (The classifier's last, unfused, [CLS]-only
    layer keeps its own mask, all ones on such batches.)"""
    copy = type(model)()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.op_type == "Attention" and len(node.input) > 3:
            node.input[3] = ""
            while node.input and node.input[-1] == "":
                node.input.pop()
    return copy


def to_fp16(fp32_path: str, fp16_path: str) -> None:
    import onnx

    onnx.save(as_fp16(onnx.load(fp32_path)), fp16_path)


def without_attention_masks(path: str, unmasked_path: str) -> None:
    import onnx

    onnx.save(unmasked(onnx.load(path)), unmasked_path)


def outputs_on(path: str, feeds: list[dict], gpu: GpuPlacement) -> np.ndarray:
    session = load_session(path, 1, gpu=gpu)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {n: f[n] for n in names})[0] for f in feeds])


def convert_fp16(fp32_dir: str, folder: str, sample: list[dict], gpu: GpuPlacement) -> dict:
    """Write folder/model.onnx and folder/unmasked/model.onnx (fp16) and
    folder/fp16.json (the check and the re-run rule). `sample`: batches of
    one length each, no [PAD] inside."""
    from predictor.classify.low_margin import corrected, fit_margin_rule, margins, rerun_threshold

    started = time.perf_counter()
    fp32_path, fp16_path = os.path.join(fp32_dir, ONNX_FILE), os.path.join(folder, ONNX_FILE)
    to_fp16(fp32_path, fp16_path)
    os.makedirs(os.path.join(folder, UNMASKED))
    without_attention_masks(fp16_path, os.path.join(folder, UNMASKED, ONNX_FILE))
    reference = outputs_on(fp32_path, sample, gpu)
    got = outputs_on(os.path.join(folder, UNMASKED, ONNX_FILE), sample, gpu)
    # fp16's error grows with the margin (a confident row's log-probabilities
    # move most, its label never): the noise is measured on the half of the
    # rows nearest a tie, where labels can move.
    near = margins(reference) <= np.median(margins(reference))
    rule = fit_margin_rule(reference[near], got[near], (1 - FP16_MIN_AGREEMENT) / 2)
    fixed = corrected(got, rule.offset)
    threshold, expected = rerun_threshold(margins(fixed), rule)
    report = {"sample_rows": int(len(reference)),
              "max_prob_diff": float(np.abs(reference - got).max()),
              "label_agreement": float(np.mean(reference.argmax(-1) == got.argmax(-1))),
              "margin_rule": rule.as_dict(), "rerun_threshold": round(threshold, 6),
              "sample_rerun_share": round(float(np.mean(margins(fixed) <= threshold)), 5),
              "expected_agreement": round(expected, 5),
              "seconds": round(time.perf_counter() - started, 2)}
    with open(os.path.join(folder, FP16_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def cached_fp16_model(cache_dir: str, onnx_key: str, onnx_dir: str, sample: Callable[[], list[dict]],
                      gpu: GpuPlacement) -> tuple[str, dict]:
    """(folder of the fp16 model.onnx, its check), once per fp32 model."""
    return cached_fp16(cache_dir, onnx_key, lambda target: convert_fp16(onnx_dir, target, sample(), gpu), check=2)


def cached_fp16(cache_dir: str, onnx_key: str, convert_into: Callable[[str], dict], check: int) -> tuple[str, dict]:
    """(folder, the report convert_into wrote as FP16_REPORT): an fp16
    conversion of the ONNX model under `onnx_key`, cached under its own key
    (`check` is bumped when what the conversion writes changes)."""
    from predictor.conversions.export_cache import cached_export, export_key, package_version
    from predictor.conversions.onnx_model import read_report

    key = export_key({"from": onnx_key, "step": "fp16", "check": check,
                      "onnxruntime": package_version("onnxruntime-gpu", "onnxruntime")})
    folder, cached = cached_export(cache_dir, key, convert_into)
    return folder, {**read_report(folder, FP16_REPORT), "cached": cached, "key": key}
