"""The plain ONNX Runtime deployment of a classifier checkpoint: the peer the
harness is measured against on CPU (not used by the harness).

    .venv/bin/python -m scripts.onnx_runtime_peer INPUT MODEL_DIR OUTPUT [--int8] [--cache-dir D] [--timing T.json]

What a competent user does with PaddleNLP's own CPU deployment recipe (as in
PaddleNLP's ERNIE 3.0 deployment and FastDeploy), every step the standard
one: `from_pretrained` -> `paddle.jit.save` -> paddle2onnx -> ONNX Runtime's
transformer optimizer (BERT fusions) -> with `--int8`, ONNX Runtime's
`quantize_dynamic` (per-channel int8 weights, no accuracy check) -> the
model's own `ErnieTokenizer`, rows sorted by length into batches under a
token budget, one process, one session on all cores. It shares nothing with
the harness but the submission's columns. Without --cache-dir it converts
the checkpoint on every run, as a script without a cache does; with it, it
converts once and reuses the model file, as a deployment does (the model is
kept under a key of the checkpoint files' names, sizes and times, and
--int8).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from scripts.repo_caches import keep_caches_in_repo
from submit.submission_frames import classification_frame

READERS = {".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
           ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False),
           ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False)}


def export_onnx(model_dir: str, work_dir: str, seconds: dict) -> tuple[str, dict, dict]:
    """(fused ONNX path, model config, fused op counts)."""
    import onnxruntime
    import paddle
    import paddle2onnx
    from onnxruntime.transformers.optimizer import optimize_model
    from paddlenlp.transformers import ErnieForSequenceClassification

    started = time.perf_counter()
    model = ErnieForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    specs = [paddle.static.InputSpec([None, None], "int64", name) for name in ("input_ids", "token_type_ids")]
    prefix = os.path.join(work_dir, "inference")
    paddle.jit.save(paddle.jit.to_static(model, input_spec=specs), prefix)
    seconds["jit_save"] = time.perf_counter() - started

    started = time.perf_counter()
    plain = os.path.join(work_dir, "model.onnx")
    program = prefix + (".json" if os.path.exists(prefix + ".json") else ".pdmodel")
    # optimize_tool="None": the default post-pass pip-installs a package at run time.
    paddle2onnx.export(program, prefix + ".pdiparams", plain, opset_version=14, optimize_tool="None", verbose=False)
    seconds["paddle2onnx"] = time.perf_counter() - started

    started = time.perf_counter()
    folded = os.path.join(work_dir, "folded.onnx")
    options = onnxruntime.SessionOptions()  # basic rewrites first: optimize_model(opt_level=1) needs torch
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = folded
    onnxruntime.InferenceSession(plain, options, providers=["CPUExecutionProvider"])
    config = model.config
    optimized = optimize_model(folded, model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=0)
    fused = os.path.join(work_dir, "fused.onnx")
    optimized.save_model_to_file(fused)
    seconds["optimize"] = time.perf_counter() - started
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    return fused, config.to_dict(), counts


def quantise(fused: str, work_dir: str, seconds: dict) -> str:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    path = os.path.join(work_dir, "int8.onnx")
    # Shape inference cannot type the outputs of ORT's fused (contrib) ops;
    # the quantiser's own error message asks for this default.
    quantize_dynamic(fused, path, per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    seconds["quantize"] = time.perf_counter() - started
    return path


def converted_model(args, work_dir: str, seconds: dict) -> tuple[str, dict, dict]:
    """(ONNX model path, model config, fused op counts), converted here or,
    with --cache-dir, taken from an earlier run's conversion."""
    cached = os.path.join(args.cache_dir, conversion_key(args.model_dir, args.int8)) if args.cache_dir else None
    if cached and os.path.isfile(os.path.join(cached, "conversion.json")):
        with open(os.path.join(cached, "conversion.json"), encoding="utf-8") as f:
            meta = json.load(f)
        return os.path.join(cached, "model.onnx"), meta["config"], meta["fused_ops"]
    model_path, config, fused_ops = export_onnx(args.model_dir, work_dir, seconds)
    if args.int8:
        model_path = quantise(model_path, work_dir, seconds)
    if not cached:
        return model_path, config, fused_ops
    staging = tempfile.mkdtemp(prefix=".staging_", dir=args.cache_dir)
    shutil.copyfile(model_path, os.path.join(staging, "model.onnx"))
    with open(os.path.join(staging, "conversion.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "fused_ops": fused_ops}, f)
    os.replace(staging, cached)
    return os.path.join(cached, "model.onnx"), config, fused_ops


def conversion_key(model_dir: str, int8: bool) -> str:
    import hashlib

    files = sorted((name, os.stat(os.path.join(model_dir, name))) for name in os.listdir(model_dir))
    seen = [os.path.realpath(model_dir), int8] + [(name, st.st_size, st.st_mtime_ns) for name, st in files]
    return hashlib.blake2b(json.dumps(seen).encode(), digest_size=12).hexdigest()


def length_sorted_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    batches, current = [], []
    for row in np.argsort(lengths, kind="stable"):
        if current and (len(current) + 1) * lengths[row] > token_budget:
            batches.append(current)
            current = []
        current.append(int(row))
    return batches + ([current] if current else [])


def predict(model_path: str, model_dir: str, texts: list[str], args, pad_id: int, seconds: dict) -> np.ndarray:
    import onnxruntime
    from paddlenlp.transformers import ErnieTokenizer

    started = time.perf_counter()
    tokenizer = ErnieTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(texts, max_length=args.max_seq_len, truncation=True)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    seconds["tokenize"] = time.perf_counter() - started

    started = time.perf_counter()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    probabilities = None
    for rows in length_sorted_batches([len(i) for i in ids], args.token_budget):
        width = max(len(ids[r]) for r in rows)
        batch_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        batch_types = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            batch_ids[k, :len(ids[r])], batch_types[k, :len(types[r])] = ids[r], types[r]
        (logits,) = session.run(None, {"input_ids": batch_ids, "token_type_ids": batch_types})
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        if probabilities is None:
            probabilities = np.zeros((len(texts), logits.shape[-1]), dtype=np.float32)
        probabilities[rows] = exp / exp.sum(-1, keepdims=True)
    seconds["predict"] = time.perf_counter() - started
    return probabilities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("output")
    parser.add_argument("--int8", action="store_true", help="ONNX Runtime dynamic INT8, per-channel weights")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--token-budget", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--work-dir", default=None, help="keep the converted models here (default: a temp dir)")
    parser.add_argument("--cache-dir", default=None,
                        help="convert once and reuse: the converted model is kept here between runs")
    parser.add_argument("--timing", default=None, help="write seconds per stage here (JSON)")
    args = parser.parse_args(argv)
    keep_caches_in_repo()
    started = time.perf_counter()
    seconds: dict = {}
    table = READERS[os.path.splitext(args.input)[1]](args.input)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ort_peer_")
    os.makedirs(work_dir, exist_ok=True)
    if args.cache_dir:
        os.makedirs(args.cache_dir, exist_ok=True)
    try:
        model_path, config, fused_ops = converted_model(args, work_dir, seconds)
        probabilities = predict(model_path, args.model_dir, table[args.text_column].astype(str).tolist(), args,
                                int(config.get("pad_token_id") or 0), seconds)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    id2label = config.get("id2label") or {}
    labels = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(probabilities.shape[1])]
    frame = classification_frame(table[args.id_column].astype(str).tolist(), probabilities, labels)
    frame.to_csv(args.output, index=False)
    seconds["total"] = time.perf_counter() - started
    if args.timing:
        with open(args.timing, "w", encoding="utf-8") as f:
            json.dump({"stages_s": {k: round(v, 3) for k, v in seconds.items()}, "fused_ops": fused_ops,
                       "rows": len(table), "int8": args.int8}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
