"""CPU engines and the INT8 re-run rule, measured on one input (not a test).

    .venv/bin/python -m scripts.cpu_engines INPUT MODEL_DIR [--runs 2] [--draws 200]

1. Runs the harness on INPUT in fp32 and with `--precision int8` (into a
   temporary export cache), so its own models exist: the fused fp32 ONNX
   model and the guarded INT8 one.
2. Rebuilds that run's batches (the same tokenisation, pruning and token
   budget) and times whole passes over them in this one process, the sides
   taking turns: ONNX Runtime on the fp32 and on the INT8 model and, when
   the `openvino` package is importable (it is not in requirements.txt:
   `.venv/bin/pip install --no-deps openvino==2026.4.1
   openvino-telemetry==2025.2.0`), OpenVINO on the unfused ONNX graph in f32
   and at its CPU default precision (bf16 where the CPU has it). Prints each
   side's seconds and its label agreement and largest probability
   difference with ONNX Runtime fp32.
3. With every row's fp32 and plain INT8 outputs, draws held-back samples the
   size the guard uses and applies the low-margin rule fitted on each:
   the share of rows re-run and the label agreement over all rows, as
   min / mean / max over the draws.
4. With --fp32-groups: one kind of weighted op in every layer (attention,
   its output projection, either feed-forward matrix multiply), or the
   first or last layer, back in fp32 and the rest INT8 (the first token's
   rows fp32 as the guard keeps them, and once INT8 too): each mix's pass
   time, INT8's noise in the margin, the mean share of rows the rule
   re-runs and the cost of both in fp32 passes (what the guard weighs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from scripts.repo_caches import keep_caches_in_repo


def harness_models(input_path: str, model_dir: str, cache_dir: str, max_seq_len: int) -> dict:
    """Folders of the harness's Paddle export, fp32 ONNX and INT8 models."""
    import pipeline

    folders = {}
    for precision in ("fp32", "int8"):
        output = os.path.join(cache_dir, f"out_{precision}.csv")
        options = ["--precision", "int8"] if precision == "int8" else []
        status = pipeline.main([input_path, model_dir, output, "--quiet", "--cache-dir", cache_dir,
                                "--max-seq-len", str(max_seq_len), *options])
        if status != 0:
            raise SystemExit(f"the harness run ({precision}) exited {status}")
        with open(output + ".timing.json", encoding="utf-8") as f:
            report = json.load(f)
        folders["paddle"] = os.path.join(cache_dir, report["export_key"])
        folders["fp32" if precision == "fp32" else "int8"] = os.path.join(
            cache_dir, report["onnx" if precision == "fp32" else "int8"]["key"])
    return folders


def run_batches(input_path: str, model_dir: str, max_seq_len: int) -> tuple[int, list]:
    """(rows, [(input rows, feeds)]) batched as the harness batches them."""
    from pipeline import DEFAULT_TOKEN_BUDGET, special_token_ids
    from predictor.batching import length_sorted_batches
    from predictor.checkpoint import read_checkpoint
    from predictor.pruning import prune_vocab
    from preprocess.input_table import read_input_table
    from preprocess.tokenize_shards import Framing, encode_rows

    checkpoint = read_checkpoint(model_dir)
    table = read_input_table(input_path)
    rows = encode_rows(checkpoint.vocab_path, Framing("classify", max_seq_len), table.texts, table.pairs)
    vocab = prune_vocab(int(checkpoint.config["vocab_size"]), np.unique(rows.token_ids),
                        special_token_ids(checkpoint.vocab_path))
    rows = rows.with_token_ids(vocab.to_pruned(rows.token_ids))
    pad_id = int(vocab.old_to_new[int(checkpoint.config.get("pad_token_id") or 0)])
    batches = []
    for batch in length_sorted_batches(rows.lengths, DEFAULT_TOKEN_BUDGET["onnxruntime"]):
        ids, types = rows.padded(batch.rows, pad_id)
        batches.append((batch.rows, {"input_ids": ids, "token_type_ids": types}))
    return len(rows.lengths), batches


def onnxruntime_side(model: str | bytes, threads: int):
    from predictor.engines.onnx_runtime import load_session

    session = load_session(model, threads)
    return lambda feeds: session.run(None, feeds)[0]


def openvino_sides(unfused_path: str, threads: int) -> dict:
    try:
        import openvino
    except ImportError:
        print("openvino is not installed: OpenVINO sides skipped")
        return {}
    core = openvino.Core()
    model = core.read_model(unfused_path)
    sides = {}
    for name, extra in (("OpenVINO f32", {"INFERENCE_PRECISION_HINT": "f32"}), ("OpenVINO CPU default", {})):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     **extra})
        request = compiled.create_infer_request()
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        sides[f"{name} ({precision})"] = lambda feeds, request=request: next(iter(request.infer(feeds).values())).copy()
    return sides


def timed_passes(sides: dict, rows: int, batches: list, runs: int) -> tuple[dict, dict]:
    """(seconds of every pass per side, outputs per side in input order)."""
    seconds = {name: [] for name in sides}
    outputs = {}
    for _ in range(runs):
        for name, run in sides.items():
            result = None
            started = time.perf_counter()
            for input_rows, feeds in batches:
                probabilities = run(feeds)
                if result is None:
                    result = np.zeros((rows, probabilities.shape[-1]), np.float32)
                result[input_rows] = probabilities
            seconds[name].append(time.perf_counter() - started)
            outputs[name] = result
    return seconds, outputs


def rerun_rule_draws(fp32: np.ndarray, int8: np.ndarray, draws: int, min_agreement: float) -> dict:
    from predictor.classify.low_margin import corrected, fit_margin_rule, rows_to_rerun
    from predictor.classify.int8_guard import guard_rows

    rerun_shares, agreements = [], []
    for seed in range(draws):
        held_back, _ = guard_rows(len(fp32), seed=seed)
        rule = fit_margin_rule(fp32[held_back], int8[held_back], max(0.0, 1.0 - min_agreement) / 2)
        fixed = corrected(int8, rule.offset)
        rerun = rows_to_rerun(fixed, rule)
        same = fixed.argmax(-1) == fp32.argmax(-1)
        same[rerun] = True
        rerun_shares.append(len(rerun) / len(fp32))
        agreements.append(float(same.mean()))

    def spread(values):
        return {"min": round(min(values), 4), "mean": round(statistics.mean(values), 4), "max": round(max(values), 4)}

    return {"draws": draws, "held_back_rows": len(guard_rows(len(fp32))[0]),
            "plain_int8_agreement": round(float(np.mean(int8.argmax(-1) == fp32.argmax(-1))), 4),
            "rerun_share": spread(rerun_shares), "agreement_over_all_rows": spread(agreements)}


# (name, whether a weighted op stays fp32: f(layer, index in its layer, ops
# in its layer, layers), whether the first token's rows stay fp32 as the
# guard keeps them). A fused layer's ops are Attention, out-projection,
# feed-forward in and out; the [CLS]-only last layer has separate q, k, v
# MatMuls in Attention's place.
FP32_GROUPS = (
    ("all INT8, first token too", lambda layer, i, ops, layers: False, False),
    ("all INT8", lambda layer, i, ops, layers: False, True),
    ("attention fp32", lambda layer, i, ops, layers: i < ops - 3, True),
    ("attention output fp32", lambda layer, i, ops, layers: i == ops - 3, True),
    ("feed-forward in fp32", lambda layer, i, ops, layers: i == ops - 2, True),
    ("feed-forward out fp32", lambda layer, i, ops, layers: i == ops - 1, True),
    ("first layer fp32", lambda layer, i, ops, layers: layer == 0, True),
    ("last layer fp32", lambda layer, i, ops, layers: layer == layers - 1, True),
)


def fp32_group_mixes(fp32_path: str, rows: int, batches: list, reference: np.ndarray, fp32_seconds: float,
                     threads: int, draws: int, min_agreement: float) -> dict:
    import onnx

    from predictor.classify.low_margin import fit_margin_rule
    from predictor.conversions.int8_weights import cpu_has_vnni, quantised, weighted_nodes_by_layer

    model = onnx.load(fp32_path)
    layers, _ = weighted_nodes_by_layer(model)
    results = {}
    for name, stays_fp32, first_token_fp32 in FP32_GROUPS:
        int8_nodes = {node for layer, group in enumerate(layers) for i, node in enumerate(group)
                      if not stays_fp32(layer, i, len(group), len(layers))}
        run = onnxruntime_side(quantised(model, int8_nodes, not cpu_has_vnni(), first_token_fp32).SerializeToString(),
                               threads)
        seconds, outputs = timed_passes({name: run}, rows, batches, 1)
        rule = fit_margin_rule(reference, outputs[name], max(0.0, 1.0 - min_agreement) / 2)
        rerun = rerun_rule_draws(reference, outputs[name], draws, min_agreement)["rerun_share"]["mean"]
        pass_cost = seconds[name][0] / fp32_seconds
        results[name] = {"seconds": round(seconds[name][0], 2), "noise_in_margin": round(rule.error_scale, 3),
                         "rerun_share": rerun, "cost_in_fp32_passes": round(pass_cost + rerun, 3)}
        print(f"{name:24s} {seconds[name][0]:6.1f} s  noise in the margin {rule.error_scale:.3f}  re-run {rerun:.1%}"
              f"  cost {pass_cost + rerun:.3f} fp32 passes", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("--runs", type=int, default=2, help="timed passes per side")
    parser.add_argument("--draws", type=int, default=200, help="held-back samples drawn for the re-run rule")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--min-agreement", type=float, default=0.995)
    parser.add_argument("--fp32-groups", action="store_true",
                        help="also time INT8 mixes with one kind of op, or the first or last layer, in fp32")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    keep_caches_in_repo()

    from predictor.engines.onnx_runtime import ONNX_FILE
    from predictor.conversions.onnx_model import paddle_to_onnx

    with tempfile.TemporaryDirectory(prefix="cpu_engines_") as scratch:
        folders = harness_models(args.input, args.model_dir, scratch, args.max_seq_len)
        rows, batches = run_batches(args.input, args.model_dir, args.max_seq_len)
        sides = {"ONNX Runtime fp32 (fused)": onnxruntime_side(os.path.join(folders["fp32"], ONNX_FILE), args.threads),
                 "ONNX Runtime INT8 (guarded model, no re-run)":
                     onnxruntime_side(os.path.join(folders["int8"], ONNX_FILE), args.threads)}
        unfused = os.path.join(scratch, "unfused.onnx")
        paddle_to_onnx(folders["paddle"], unfused)
        sides.update(openvino_sides(unfused, args.threads))
        seconds, outputs = timed_passes(sides, rows, batches, args.runs)
        if args.fp32_groups:
            reference_name = next(iter(sides))
            fp32_groups = fp32_group_mixes(os.path.join(folders["fp32"], ONNX_FILE), rows, batches,
                                           outputs[reference_name], statistics.median(seconds[reference_name]),
                                           args.threads, args.draws, args.min_agreement)

    reference_name = next(iter(sides))
    reference = outputs[reference_name]
    results = {"rows": rows, "batches": len(batches), "threads": args.threads, "sides": {}}
    print(f"{rows} rows in {len(batches)} batches, {args.threads} threads, {args.runs} passes per side, taking turns")
    for name, passes in seconds.items():
        side = {"seconds": [round(s, 2) for s in passes], "median_s": round(statistics.median(passes), 2),
                "label_agreement": round(float(np.mean(outputs[name].argmax(-1) == reference.argmax(-1))), 4),
                "max_prob_diff": float(np.abs(outputs[name] - reference).max())}
        results["sides"][name] = side
        print(f"{name:48s} {side['median_s']:7.1f} s  {side['seconds']}  agreement with {reference_name} "
              f"{side['label_agreement']:.4f}, max prob. diff {side['max_prob_diff']:.1e}")
    int8_name = list(sides)[1]
    results["rerun_rule"] = rerun_rule_draws(reference, outputs[int8_name], args.draws, args.min_agreement)
    print("low-margin re-run rule over", json.dumps(results["rerun_rule"]))
    if args.fp32_groups:
        results["fp32_groups"] = fp32_groups
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
