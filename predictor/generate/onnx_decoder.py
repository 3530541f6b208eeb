"""Export step: generation's prompt and step programs -> ONNX, checked, with a step profile.

paddle2onnx converts both cached-decoding programs (predictor/generate/unimo_programs.py);
ONNX Runtime's own graph optimisations at load time (Gemm + bias +
activation, LayerNormalization) are all the fusion they need: the
transformer optimizer's Attention fusion does not apply to attention over an
outside cache.

The check: when the programs are exported, the eager thin layer they were
traced from decodes a small fixed probe (rows of different lengths, so
padding is exercised; the prompt pass and PROBE_STEPS steps) and its logits
are kept beside the programs. The converted graphs must reproduce them to
fp32 noise, or the conversion fails and says to run with --engine paddle.
Checking against the eager layer costs a fraction of a second, where
loading the two Paddle predictors for it would cost seconds.

The profile: the converted step program then decodes a few steps of a batch
of the run's own input under ONNX Runtime's per-kernel profiler, and one
step's time is split into the weight GEMMs, the LM head, attention over the
cache, copies/reshapes and the rest, so the timing report says where a
step's time goes.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import numpy as np

from predictor.engines.options import EngineOptions
from predictor.conversions.onnx_model import ConversionError, paddle_to_onnx
from predictor.generate.probe import PROBE_LENGTHS, PROBE_STEPS, probe_logits, probe_job, read_probe_reference
from predictor.generate.unimo_programs import PROMPT_PROGRAM, STEP_PROGRAM

# Largest logit difference from the Paddle programs accepted as fp32 rounding
# (logits, not probabilities; measured ~1e-5 on the 12-layer demo model).
LOGIT_TOLERANCE = 1e-3
GEMM_OPS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat")


def step_category(op: str, input_shapes: list[list[int]], vocab_size: int) -> str:
    """Where a step's kernel belongs: weight GEMMs, LM head, attention over the
    cache (products of 4-D activations, softmax), or the rest."""
    if op in GEMM_OPS:
        weight = input_shapes[1] if len(input_shapes) > 1 else []
        if vocab_size in weight[:1] + weight[-1:]:  # [V, hidden] or [hidden, V]
            return "lm_head"
        return "attention" if max((len(shape) for shape in input_shapes[:2]), default=0) >= 4 else "weight_gemms"
    if op == "Softmax":
        return "attention"
    if op in ("Concat", "Gather", "Slice", "Identity", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand"):
        return "copies_reshapes"
    return "norms_elementwise"


def step_split(profile_path: str, last_runs: int, vocab_size: int) -> dict:
    """Milliseconds per step by category over the profile's last `last_runs`
    step runs."""
    with open(profile_path, encoding="utf-8") as f:
        events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-last_runs:]
    since = runs[0]["ts"]
    split: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < since:
            continue
        args = event.get("args", {})
        shapes = [list(next(iter(t.values()))) for t in args.get("input_type_shape", [])]
        split[step_category(args.get("op_name", ""), shapes, vocab_size)] += event["dur"] / 1000
    step_ms = {name: round(ms / len(runs), 2) for name, ms in sorted(split.items())}
    run_ms = sum(r["dur"] for r in runs) / 1000 / len(runs)
    step_ms["engine_call_overhead"] = round(max(0.0, run_ms - sum(step_ms.values())), 2)
    return {"steps": len(runs), "ms_per_step": step_ms, "total_ms_per_step": round(run_ms, 2)}


def weights_as_initializers(model) -> None:
    """paddle2onnx writes weights as Constant nodes, and the LM head's as a
    Transpose of one; make them initializers (transposed), as ONNX Runtime's
    constant folding would, so the quantiser can find every weighted MatMul."""
    from onnx import numpy_helper

    graph = model.graph
    constants = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Transpose" and node.input[0] in constants:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            constants[node.output[0]] = np.transpose(constants[node.input[0]], perm)
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(value), name)
                             for name, value in constants.items() if name in used)


def int8_weights(model: bytes) -> bytes:
    """Every MatMul with a weight (the linear layers and the LM head) on
    per-column int8 weights, its input quantised on the fly; attention over
    the cache stays fp32. No VNNI: 7-bit weights (predictor/classify/int8_guard.py)."""
    import onnx

    from predictor.conversions.int8_weights import cpu_has_vnni, quantised

    graph = onnx.load_from_string(model)
    weights_as_initializers(graph)
    weights = {t.name for t in graph.graph.initializer}
    names = {node.name for node in graph.graph.node
             if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights}
    return quantised(graph, names, reduce_range=not cpu_has_vnni()).SerializeToString()


def convert_program(paddle_dir: str, folder: str, program: str, precision: str, threads: int) -> None:
    """One program -> ONNX (-> INT8 weights) -> optimised for this CPU, saved."""
    from predictor.engines.onnx_runtime import save_optimised

    model = paddle_to_onnx(os.path.join(paddle_dir, program))
    if precision == "int8":
        model = int8_weights(model)
    os.makedirs(os.path.join(folder, program))
    save_optimised(model, os.path.join(folder, program), threads)


def convert_generator(paddle_dir: str, folder: str, profile_job: dict, vocab_size: int, threads: int,
                      precision: str = "fp32") -> dict:
    """Write folder/{prompt,step}/model.onnx (+ model.weights), optimised for
    this CPU, and folder/conversion.json."""
    import tempfile

    from predictor.engines.choice import open_engine
    from predictor.engines.onnx_runtime import OnnxRuntimeEngine
    from predictor.generate.cached_decoder import CachedDecoder
    from predictor.conversions.onnx_model import CONVERSION_REPORT, OPSET

    started = time.perf_counter()
    for program in (PROMPT_PROGRAM, STEP_PROGRAM):
        convert_program(paddle_dir, folder, program, precision, threads)
    report = {"opset": OPSET, "precision": precision, "convert_s": round(time.perf_counter() - started, 2),
              "probe_rows": len(PROBE_LENGTHS), "probe_steps": PROBE_STEPS}
    options = EngineOptions(engine="onnxruntime", precision=precision, cpu_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_engine = open_engine(os.path.join(folder, PROMPT_PROGRAM), options)
        step_engine = OnnxRuntimeEngine(os.path.join(folder, STEP_PROGRAM), options, os.path.join(tmp, "step"))

        def decoder() -> CachedDecoder:
            return CachedDecoder(prompt_engine, step_engine, PROBE_STEPS + 1)

        probe = probe_logits(decoder(), probe_job(vocab_size), PROBE_STEPS)
        reference = read_probe_reference(paddle_dir)
        report["max_logit_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(probe, reference))
        report["probe_top1_agreement"] = float(np.mean(np.concatenate(
            [a.argmax(-1) == b.argmax(-1) for a, b in zip(probe, reference)])))
        if precision == "fp32" and report["max_logit_diff"] > LOGIT_TOLERANCE:
            raise ConversionError(f"the ONNX decoding programs of {paddle_dir} differ from the Paddle model by "
                                  f"{report['max_logit_diff']:.2e} in the logits (> {LOGIT_TOLERANCE}); "
                                  "run with --engine paddle")
        # The first profiled step of the run's batch warms its shapes up; the rest are measured.
        probe_logits(decoder(), profile_job, PROBE_STEPS)
        report["step_profile"] = {"rows": len(profile_job["lengths"]), "prompt_width": profile_job["input_ids"].shape[1],
                                  **step_split(step_engine.end_profiling(), PROBE_STEPS - 1, vocab_size)}
    report["seconds"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(folder, CONVERSION_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report
