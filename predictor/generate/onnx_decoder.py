"""Export step: generation's prompt and step programs -> ONNX, checked, with a step profile;
for the GPU, fp32 programs fused for it and an fp16 step of their own.

paddle2onnx converts both cached-decoding programs (predictor/generate/unimo_programs.py);
ONNX Runtime's own graph optimisations at load time (Gemm + bias +
activation, LayerNormalization) are all the fusion they need: the
transformer optimizer's Attention fusion does not apply to attention over an
outside cache. For the CPU they are saved already optimised for it; for the
GPU their layer norms and GELUs are fused (so fp16 keeps fp32 sums there)
and the CUDA provider optimises the rest at load.

fp16 (GPU; convert_fp16_decoder, cached under its own key by
predictor/conversions/fp16.py's cached_fp16): the fp32 GPU programs with
weights, activations and key/value caches in fp16, masks, the LM head's
product and logits fp32, its probe logits against the eager fp32 layer's
reported, not held to a tolerance.

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

from predictor.engines.onnx_runtime import ONNX_FILE, GpuPlacement
from predictor.engines.options import EngineOptions
from predictor.conversions.onnx_model import ConversionError, TransformerShape, fuse_transformer, paddle_to_onnx
from predictor.generate.probe import (PROBE_FILE, PROBE_LENGTHS, PROBE_STEPS, probe_logits, probe_job,
                                      read_probe_reference)
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


def convert_program(paddle_dir: str, folder: str, program: str, precision: str, threads: int,
                    gpu_shape: TransformerShape | None = None) -> dict[str, int]:
    """One program -> ONNX (-> INT8 weights) -> optimised for this CPU, saved;
    or, with `gpu_shape`, its layer norms and GELUs fused (ONNX Runtime's
    transformer fusions, which its CUDA kernels run with fp32 sums even in
    fp16) and saved unoptimised: what ONNX Runtime's ALL level writes for a
    CPU holds CPU-only kernels, so a GPU session optimises at load. Returns
    the fused ops made."""
    from predictor.engines.onnx_runtime import save_optimised

    target = os.path.join(folder, program)
    os.makedirs(target)
    if gpu_shape is not None:
        plain = os.path.join(target, "unfused.onnx")
        paddle_to_onnx(os.path.join(paddle_dir, program), plain)
        fused = fuse_transformer(plain, os.path.join(target, ONNX_FILE), gpu_shape, attention=False)
        os.remove(plain)
        return fused
    model = paddle_to_onnx(os.path.join(paddle_dir, program))
    if precision == "int8":
        model = int8_weights(model)
    save_optimised(model, target, threads)
    return {}


def probe_agreement(probe: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """The largest logit difference and the top-1 agreement of decoded probe
    logits with the eager layer's."""
    return {"max_logit_diff": max(float(np.abs(a - b).max()) for a, b in zip(probe, reference)),
            "probe_top1_agreement": float(np.mean(np.concatenate(
                [a.argmax(-1) == b.argmax(-1) for a, b in zip(probe, reference)])))}


def convert_generator(paddle_dir: str, folder: str, profile_job: dict, vocab_size: int, threads: int,
                      precision: str = "fp32", gpu_shape: TransformerShape | None = None) -> dict:
    """Write folder/{prompt,step}/model.onnx (+ model.weights, optimised for
    this CPU; or fused for the GPU with `gpu_shape`), the probe's reference
    logits and folder/conversion.json. The check runs on the CPU either way:
    the graph is the same arithmetic on any provider. The step profile is the
    CPU's, so a GPU conversion has none."""
    import shutil
    import tempfile

    from predictor.engines.choice import open_engine
    from predictor.engines.onnx_runtime import OnnxRuntimeEngine
    from predictor.generate.cached_decoder import CachedDecoder
    from predictor.conversions.onnx_model import CONVERSION_REPORT, OPSET

    started = time.perf_counter()
    fused = {program: convert_program(paddle_dir, folder, program, precision, threads, gpu_shape)
             for program in (PROMPT_PROGRAM, STEP_PROGRAM)}
    shutil.copy(os.path.join(paddle_dir, PROBE_FILE), os.path.join(folder, PROBE_FILE))
    report = {"opset": OPSET, "precision": precision, "convert_s": round(time.perf_counter() - started, 2),
              "probe_rows": len(PROBE_LENGTHS), "probe_steps": PROBE_STEPS}
    if gpu_shape is not None:
        report.update(device="gpu", fused_ops=fused)
    options = EngineOptions(engine="onnxruntime", precision=precision, cpu_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        prompt_engine = open_engine(os.path.join(folder, PROMPT_PROGRAM), options)
        step_engine = OnnxRuntimeEngine(os.path.join(folder, STEP_PROGRAM), options,
                                        None if gpu_shape else os.path.join(tmp, "step"))

        def decoder() -> CachedDecoder:
            return CachedDecoder(prompt_engine, step_engine, PROBE_STEPS + 1)

        probe = probe_logits(decoder(), probe_job(vocab_size), PROBE_STEPS)
        report.update(probe_agreement(probe, read_probe_reference(paddle_dir)))
        if precision == "fp32" and report["max_logit_diff"] > LOGIT_TOLERANCE:
            raise ConversionError(f"the ONNX decoding programs of {paddle_dir} differ from the Paddle model by "
                                  f"{report['max_logit_diff']:.2e} in the logits (> {LOGIT_TOLERANCE}); "
                                  "run with --engine paddle")
        if gpu_shape is None:
            # The first profiled step of the run's batch warms its shapes up; the rest are measured.
            probe_logits(decoder(), profile_job, PROBE_STEPS)
            report["step_profile"] = {"rows": len(profile_job["lengths"]),
                                      "prompt_width": profile_job["input_ids"].shape[1],
                                      **step_split(step_engine.end_profiling(), PROBE_STEPS - 1, vocab_size)}
    report["seconds"] = round(time.perf_counter() - started, 2)
    with open(os.path.join(folder, CONVERSION_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


# Float inputs of the decoding programs that stay fp32 in fp16, with the
# logits (the first output of both, and the LM head's product that makes
# them): masks and logits are small, and the loop's argmax and beam scores
# stay fp32. Every key/value cache input and
# output is fp16: the cache is what a step reads most, and a cache kept
# fp32 would be cast to fp16 again by every step.
FP32_INPUTS = ("attn_mask", "prompt_bias", "generated_bias")


def lm_head_in_fp32(model) -> list[str]:
    """Names of the nodes from the LM head's multiply to the logits (the
    first output), for an fp16 conversion to keep fp32, with a Cast to fp32
    put before the multiply (the converter casts only inputs whose type
    ONNX's shape inference knows, and it does not know a fused layer norm's).
    So logits are not rounded to fp16's steps (0.008 at 10), which would tie
    a close runner-up with the token chosen; the fp32 product is one
    [rows, hidden] x [hidden, vocab] a step. No such multiply found: []."""
    from onnx import TensorProto, helper

    nodes = list(model.graph.node)
    producers = {out: node for node in nodes for out in node.output}
    names, name = [], model.graph.output[0].name
    while name in producers and len(names) < 4:
        node = producers[name]
        node.name = node.name or f"lm_head_{len(names)}"
        names.append(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            cast = helper.make_node("Cast", [node.input[0]], [node.input[0] + "_fp32"], to=TensorProto.FLOAT,
                                    name="lm_head_input_fp32")
            node.input[0] = cast.output[0]
            model.graph.node.insert(nodes.index(node), cast)
            return names + [cast.name]
        name = next((i for i in node.input if i in producers), "")  # the activation, not the bias
    return []


def convert_fp16_decoder(fp32_dir: str, folder: str, gpu: GpuPlacement | None, threads: int = 1) -> dict:
    """Write folder/{prompt,step}/model.onnx in fp16 (caches fp16; masks, the
    LM head's product and logits fp32) and the fp16 report: the probe decoded by them, on the
    device they will run on (`gpu`; None: the CPU provider), against the
    eager fp32 layer's logits. fp16 moves logits by more than fp32 noise, so
    the difference is measured and reported, not held to a tolerance; only
    logits that are not finite stop the run."""
    import shutil

    import onnx

    from predictor.conversions.fp16 import FP16_REPORT, as_fp16
    from predictor.engines.onnx_runtime import OnnxRuntimeEngine
    from predictor.generate.cached_decoder import CachedDecoder

    started = time.perf_counter()
    for program in (PROMPT_PROGRAM, STEP_PROGRAM):
        model = onnx.load(os.path.join(fp32_dir, program, ONNX_FILE))
        kept = [i.name for i in model.graph.input if i.name in FP32_INPUTS] + [model.graph.output[0].name]
        os.makedirs(os.path.join(folder, program))
        onnx.save(as_fp16(model, kept, lm_head_in_fp32(model)), os.path.join(folder, program, ONNX_FILE))
    shutil.copy(os.path.join(fp32_dir, PROBE_FILE), os.path.join(folder, PROBE_FILE))
    reference = read_probe_reference(fp32_dir)
    options = (EngineOptions(engine="onnxruntime", device="gpu", precision="fp16", gpu_id=gpu.gpu_id,
                             gpu_memory_limit_mb=gpu.memory_limit_mb) if gpu else
               EngineOptions(engine="onnxruntime", cpu_threads=threads))
    engines = [OnnxRuntimeEngine(os.path.join(folder, program), options, resident_on_device=True)
               for program in (PROMPT_PROGRAM, STEP_PROGRAM)]
    probe = probe_logits(CachedDecoder(*engines, PROBE_STEPS + 1, precision="fp16"),
                         probe_job(reference[0].shape[-1]), PROBE_STEPS)
    if not all(np.isfinite(logits).all() for logits in probe):
        raise ConversionError(f"the fp16 decoding programs converted from {fp32_dir} give logits that are not "
                              "finite on the probe; run with --precision fp32")
    report = {"probe_rows": len(PROBE_LENGTHS), "probe_steps": PROBE_STEPS, "against": "the eager fp32 layer",
              "on": f"GPU {gpu.gpu_id}" if gpu else "cpu", **probe_agreement(probe, reference),
              "seconds": round(time.perf_counter() - started, 2)}
    with open(os.path.join(folder, FP16_REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report
