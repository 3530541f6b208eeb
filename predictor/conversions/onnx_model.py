"""Export step: the cached Paddle program -> ONNX -> ONNX Runtime's transformer fusions, checked.

paddle2onnx (Paddle's own converter) turns the exported PIR program into an
ONNX graph; ONNX Runtime's transformer optimizer then fuses it for the CPU
(Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu). A
fusion rewrites arithmetic, so the fused graph is run on a probe of the
run's own batches next to the Paddle program before it is kept: beyond fp32
noise (FP32_TOLERANCE) the unfused graph is kept instead, and the report
(written beside the model and printed in the timing report) says so.

paddle2onnx's default post-pass (Polygraphy constant folding) pip-installs
onnx_graphsurgeon at run time; it is off here (`optimize_tool="None"`):
ONNX Runtime folds constants itself when it loads the model.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from predictor.checkpoint import CheckpointError
from predictor.engines.options import EngineOptions
from predictor.engines.onnx_runtime import ONNX_FILE, load_session
from predictor.engines.paddle_inference import PARAMS_FILE, PROGRAM_FILE, PaddleEngine

CONVERSION_REPORT = "conversion.json"
OPSET = 14
# Largest output difference from the Paddle program accepted as fp32 rounding
# (probabilities; measured ~1e-6 for fused ERNIE graphs).
FP32_TOLERANCE = 1e-4


class ConversionError(CheckpointError):
    """This checkpoint's program does not convert faithfully: the run stops
    with this message (exit 2) and --engine paddle is the way on."""


@dataclass(frozen=True)
class TransformerShape:
    """What ONNX Runtime's fusions need to know of the encoder."""
    num_heads: int
    hidden_size: int


def paddle_to_onnx(paddle_dir: str, onnx_path: str | None = None) -> bytes | None:
    """The program under paddle_dir as ONNX, written to onnx_path, or
    returned serialised when no path is given."""
    import paddle2onnx

    model = paddle2onnx.export(os.path.join(paddle_dir, PROGRAM_FILE), os.path.join(paddle_dir, PARAMS_FILE),
                               onnx_path, opset_version=OPSET, optimize_tool="None", verbose=False)
    converted = os.path.exists(onnx_path) if onnx_path else model is not None
    if not converted:  # paddle2onnx logs a failure instead of raising it
        raise ConversionError(f"paddle2onnx could not convert {paddle_dir} (see its log above)")
    return None if onnx_path else model


def fold_constants(onnx_path: str, folded_path: str) -> None:
    """ONNX Runtime's basic (hardware-independent) graph rewrites, saved: weights
    become initializers and constant subgraphs fold, which the fusions need.
    (optimize_model(opt_level=1) would do this, but imports torch in 1.23.)"""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded_path
    options.log_severity_level = 3
    onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def fuse_transformer(onnx_path: str, fused_path: str, shape: TransformerShape,
                     attention: bool = True) -> dict[str, int]:
    """ONNX Runtime's BERT fusions; returns how many of each fused op it made.
    The mask stays a full 0/1 mask (not a per-row length), so a [PAD] id inside
    a text is masked exactly as PaddleNLP masks it. `attention=False` leaves
    attention and the embeddings as they are and fuses the layer norms and
    GELUs only (a decoder's attention over an outside cache is no Attention
    op, and its embeddings take explicit positions)."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    folded = fused_path + ".folded.onnx"
    fold_constants(onnx_path, folded)
    fusion = FusionOptions("bert")
    fusion.attention_mask_format = AttentionMaskFormat.AttentionMask
    if not attention:
        fusion.enable_attention = fusion.enable_embed_layer_norm = False
    # Symbolic shape inference only lets the fusions refuse adds that
    # broadcast; an ERNIE's residual adds never do, and the fused graph is
    # checked against the Paddle program anyway. Without it the optimizer
    # takes a second less on ERNIE 3.0 medium and writes the same graph.
    fusion.enable_shape_inference = False
    # Its per-fusion lines (and the warning that shape inference is off) would
    # bury the run's report; the fused-op counts are kept in the report.
    logging.disable(logging.WARNING)
    try:
        model = optimize_model(folded, model_type="bert", num_heads=shape.num_heads, hidden_size=shape.hidden_size,
                               optimization_options=fusion, opt_level=0)
        model.save_model_to_file(fused_path)
        fused = model.get_fused_operator_statistics()  # which logs them too
    finally:
        logging.disable(logging.NOTSET)
    os.remove(folded)
    return {op: count for op, count in fused.items() if count}


def max_difference(outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]]) -> float:
    return max(float(np.abs(a - b).max()) for got, want in zip(outputs, reference) for a, b in zip(got, want))


def run_session(path: str, probe: list[dict], threads: int) -> list[list[np.ndarray]]:
    session = load_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, {n: feeds[n] for n in names}) for feeds in probe]


def convert(paddle_dir: str, folder: str, shape: TransformerShape, probe: list[dict], threads: int) -> dict:
    """Write folder/model.onnx (fused if the fusions keep the outputs) and
    folder/conversion.json; `probe` is a few batches of the run's input."""
    started = time.perf_counter()
    plain, fused = os.path.join(folder, "unfused.onnx"), os.path.join(folder, "fused.onnx")
    try:
        paddle_to_onnx(paddle_dir, plain)
    except Exception as err:  # paddle2onnx raises bare Exceptions for unsupported ops
        raise ConversionError(f"paddle2onnx could not convert {paddle_dir}: {err}") from err
    paddle_engine = PaddleEngine(paddle_dir, EngineOptions(cpu_threads=threads))
    reference = [paddle_engine.run(feeds) for feeds in probe]
    del paddle_engine
    report = {"opset": OPSET, "probe_batches": len(probe), "probe_rows": sum(len(f["input_ids"]) for f in probe)}
    report["fused_ops"] = fuse_transformer(plain, fused, shape)
    report["fused_max_abs_diff"] = max_difference(run_session(fused, probe, threads), reference)
    if report["fused_max_abs_diff"] <= FP32_TOLERANCE:
        kept = fused
    else:
        report["unfused_max_abs_diff"] = max_difference(run_session(plain, probe, threads), reference)
        if report["unfused_max_abs_diff"] > FP32_TOLERANCE:
            raise ConversionError(
                f"the ONNX graph of {paddle_dir} differs from the Paddle program by "
                f"{report['unfused_max_abs_diff']:.2e} (> {FP32_TOLERANCE}) even unfused; run with --engine paddle")
        kept = plain
    report["fusions_kept"] = kept == fused
    os.replace(kept, os.path.join(folder, ONNX_FILE))
    for leftover in (plain, fused):
        if os.path.exists(leftover):
            os.remove(leftover)
    report["seconds"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(folder, CONVERSION_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def read_report(folder: str, name: str = CONVERSION_REPORT) -> dict:
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def cached_onnx_model(cache_dir: str, paddle_key: str, key_parts: dict,
                      convert_into: Callable[[str], dict]) -> tuple[str, dict]:
    """(folder of the converted model, conversion report), converted by
    `convert_into(folder)` once per Paddle export and converter versions."""
    from predictor.conversions.export_cache import cached_export, export_key, package_version

    key = export_key({"from": paddle_key, "step": "onnx", "opset": OPSET, **key_parts,
                      "onnxruntime": package_version("onnxruntime"), "paddle2onnx": package_version("paddle2onnx")})
    folder, cached = cached_export(cache_dir, key, convert_into)
    return folder, {**read_report(folder), "cached": cached, "key": key}
