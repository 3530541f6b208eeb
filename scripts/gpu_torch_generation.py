"""Greedy generation in PyTorch with the harness's UNIMO-text checkpoint, timed
on the same rows and GPU as the harness's `--device gpu` generation, with its
exact match against the harness's submission.

    .venv/bin/python -m scripts.gpu_torch_generation prepare DIR [--input CSV --model-dir DIR]
    PYTHONPATH=. python3 -m scripts.gpu_torch_generation --prepared DIR [--device cuda] [--sides fp32,fp16,...]
    .venv/bin/python -m scripts.gpu_torch_generation compare DIR HARNESS.csv [--margins HARNESS.csv.margins.jsonl]

`prepare` (the project's CPU stack: Paddle reads the checkpoint) writes
DIR/prompts.npz (each row's framed prompt, tokenised by the harness's own
preprocess/ code: token ids, token types, offsets, row ids), DIR/weights.npz
(the checkpoint's parameters as numpy, paddle names), DIR/config.json (the
checkpoint's config plus the decoder's special ids) and DIR/tokenizer/ (the
files submit/detokenize.py reads). Defaults: data/demo/sources_2000.csv and
data/demo/unimo-text-demo, made by scripts/demo_setup.generate_demo when
missing. The demo model's weights.npz is 400 MB: on a GPU machine whose
repository venv holds Paddle's CPU build, run `prepare` there rather than
carrying them over.

`--prepared DIR` needs torch, numpy and pandas only (no Paddle: the modules
it imports do not import it). Rows are batched as the harness batches them
(predictor/batching.py: longest first, at most --max-batch-rows, 512 as the
harness on a GPU), left-padded and framed by the harness's own
cached_decoder.prompt_inputs (positions restart at 0 on the start token;
the source sees itself, the start token sees the source and itself). Each
batch: one prompt pass, then one token a step over a preallocated cache
(scripts/gpu_torch_unimo.py), every row forced to exactly --max-new-tokens
when --min-new-tokens equals it (eos banned until the minimum; unk, pad and
bos always, as UNIMO's generate(); argmax takes the lowest id on ties, as
the harness's greedy).

Sides: fp32 (TF32 off), fp16 (model.half(); the LM head's product in fp16,
its logits cast to fp32 for the overrides and the argmax), and on CUDA the
same two with the decoding step under torch.compile(mode="reduce-overhead")
(CUDA graphs; the prompt pass stays eager). fp32-generate and fp16-generate
are the standard method's stand-in where PaddleNLP's generate() cannot run:
transformers' generate() driving the same model (scripts/hf_generate_unimo.py),
--generate-batch-rows (32, as scripts/standard_method.py) rows at a time in
input order; they need transformers besides torch. Each side runs a cold pass (its
first: kernel choice, allocator growth, compilation) and --warm-passes warm
ones, torch.cuda.synchronize() around each, timed from the prompts' host
arrays to every row's ids on the host. Writes OUT/torch_generation.json
(seconds, new tokens/s and rows/s per pass, GPU, torch version; updated after
every side) and per side OUT/torch_SIDE.csv: id, text (submit/detokenize.py,
as the harness writes it), generated_ids (space-separated, eos left out):
the standard method's columns, so scripts/check_accuracy --reference reads it.

`compare` (the project venv) reports each OUT/torch_*.csv against a harness
submission of the same rows: exact match of the text, and with the harness's
margins file (`--write-margins`) the rows whose ids differ, each with the
harness's logit gap where the two part (under 1e-4: an fp32 near-tie).
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

from scripts.standard_method import BATCH_SIZE as STANDARD_BATCH_SIZE

PROMPTS_FILE = "prompts.npz"
WEIGHTS_FILE = "weights.npz"
CONFIG_FILE = "config.json"
TOKENIZER_FOLDER = "tokenizer"
REPORT_FILE = "torch_generation.json"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
# save_pretrained stores the LM head's tied weight a second time; the model reads the word embeddings.
TIED_COPY = "lm_head.decoder_weight"
DEFAULT_ROWS = 2000
GPU_MAX_BATCH_ROWS = 512  # the generate task's default on a GPU (predictor/generate/task.py)
SIDES = ("fp32", "fp16", "fp32-compile", "fp16-compile", "fp32-generate", "fp16-generate")


# ---------------------------------------------------------------- prepare (Paddle's CPU stack)

def prepare(directory: str, input_path: str | None, model_dir: str | None, max_seq_len: int,
            max_title_len: int, pair_column: str | None) -> None:
    from predictor.checkpoint import read_checkpoint
    from preprocess.input_table import ColumnNames, read_input_table
    from preprocess.tokenize_shards import Framing, encode_rows
    from scripts.repo_caches import keep_caches_in_repo

    keep_caches_in_repo()
    if input_path is None or model_dir is None:
        from scripts.demo_setup import generate_demo

        demo = generate_demo(DEFAULT_ROWS)
        input_path, model_dir = input_path or demo.input, model_dir or demo.model_dir
    os.makedirs(os.path.join(directory, TOKENIZER_FOLDER), exist_ok=True)
    checkpoint = read_checkpoint(model_dir)
    if checkpoint.task != "generate":
        raise SystemExit(f"{model_dir}: a {checkpoint.task} checkpoint; this compares generation")
    table = read_input_table(input_path, ColumnNames(pair=pair_column))
    rows = encode_rows(checkpoint.vocab_path, Framing("generate", max_seq_len, max_title_len), table.texts,
                       table.pairs)
    np.savez(os.path.join(directory, PROMPTS_FILE), row_ids=np.asarray(table.ids, dtype=str),
             token_ids=rows.token_ids, token_type_ids=rows.token_type_ids, offsets=rows.offsets)

    weights = checkpoint.load_weights()
    tied = weights.pop(TIED_COPY, None)
    if tied is not None and not np.array_equal(tied, weights["unimo.embeddings.word_embeddings.weight"]):
        raise SystemExit(f"{checkpoint.weights_path}: {TIED_COPY} differs from the word embeddings; UNIMO ties "
                         f"them and so does the harness")
    np.savez(os.path.join(directory, WEIGHTS_FILE), **{name: np.asarray(w, np.float32) for name, w in weights.items()})

    config = dict(checkpoint.config, source_input=os.path.abspath(input_path), source_model=os.path.abspath(model_dir),
                  max_seq_len=max_seq_len, max_title_len=max_title_len)
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), os.path.join(directory, TOKENIZER_FOLDER, name))
    print(f"{directory}: {PROMPTS_FILE} ({len(table.ids)} rows, {len(rows.token_ids)} tokens), {WEIGHTS_FILE} "
          f"({sum(w.size for w in weights.values()) / 1e6:.1f}M parameters), {CONFIG_FILE}, {TOKENIZER_FOLDER}/")


# ---------------------------------------------------------------- decoding (torch, no Paddle)

class Prompts:
    """The framed rows of prompts.npz, and the harness's batches of them."""

    def __init__(self, path: str):
        with np.load(path) as f:
            self.row_ids = f["row_ids"].tolist()
            self.token_ids, self.token_type_ids, self.offsets = f["token_ids"], f["token_type_ids"], f["offsets"]
        self.lengths = np.diff(self.offsets)

    def batches(self, max_batch_rows: int) -> list:
        from predictor.batching import length_sorted_batches

        # A generation job is bounded by rows only (GenerateTask.job_token_budget).
        return length_sorted_batches(self.lengths, sys.maxsize, max_batch_rows)

    def input_order_batches(self, batch_rows: int) -> list:
        """Batches as the standard method makes them: `batch_rows` rows at a time in input order."""
        from predictor.batching import Batch

        return [Batch(rows, int(self.lengths[rows].max()))
                for rows in np.array_split(np.arange(len(self.lengths)),
                                           range(batch_rows, len(self.lengths), batch_rows))]

    def framed(self, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
        """ids, types, positions [B, S] and the boolean attention mask [B, 1, S, S]
        of rows, left-padded and framed as the harness's prompt program gets them."""
        from predictor.generate.cached_decoder import left_padded, prompt_inputs

        starts = self.offsets
        pieces = [(self.token_ids[starts[i]:starts[i + 1]], self.token_type_ids[starts[i]:starts[i + 1]])
                  for i in rows.tolist()]
        ids, types = left_padded(pieces, self.lengths[rows], pad_id)
        ids, types, positions, bias = prompt_inputs({"input_ids": ids, "token_type_ids": types,
                                                     "lengths": self.lengths[rows]})
        # A padding position sees itself: with nothing to see, SDPA's softmax over
        # all -inf gives NaN, and its NaN value would reach real rows through 0 * NaN.
        mask = (bias == 0) | np.eye(ids.shape[1], dtype=bool)[None, None]
        return {"ids": ids, "types": types, "positions": positions, "mask": mask}


def load_model(prepared: str, config: dict, device: str, precision: str):
    import torch

    from scripts.gpu_torch_unimo import UnimoLM

    with np.load(os.path.join(prepared, WEIGHTS_FILE)) as f:
        model = UnimoLM.from_paddle_weights(config, {name: f[name] for name in f.files})
    return model.to(device=device, dtype=torch.float16 if precision == "fp16" else torch.float32)


def special_ids(config: dict):
    from predictor.generate.decoding import SpecialIds

    return SpecialIds(**{name: int(config[f"{name}_token_id"]) for name in ("unk", "pad", "bos", "eos")})


def one_pass(prompts: Prompts, batches: list, decode, pad_id: int, device: str,
             eos: int) -> tuple[float, list[np.ndarray]]:
    """Seconds from the host arrays to every row's ids on the host, and the
    ids per row (input order, eos and what follows it dropped). `decode`
    takes one batch framed on the device and gives its ids [B, new tokens]."""
    import torch

    outputs: list[np.ndarray | None] = [None] * len(prompts.lengths)
    sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            framed = {name: torch.from_numpy(array).to(device, non_blocking=True)
                      for name, array in prompts.framed(batch.rows, pad_id).items()}
            ids = decode(framed).cpu()
            for row, generated in zip(batch.rows.tolist(), ids.numpy()):
                ended = np.flatnonzero(generated == eos)
                outputs[row] = generated[:ended[0]] if len(ended) else generated
    sync(device)
    return time.perf_counter() - started, outputs


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def compiled_step(model, mode: str):
    """decode_one_token under torch.compile; the cache is marked static, so
    that CUDA graphs write it in place instead of copying it every step."""
    import torch

    from scripts.gpu_torch_unimo import decode_one_token

    for buffer in (model.cache_k, model.cache_v, model.key_mask):
        torch._dynamo.mark_static_address(buffer)
    return torch.compile(decode_one_token, mode=mode, fullgraph=True)


def write_side(out: str, name: str, row_ids: list[str], outputs: list[np.ndarray], tokens) -> str:
    from submit.submission_frames import generation_frame
    from submit.write_submission import write_table

    path = os.path.join(out, f"torch_{name}.csv")
    write_table(generation_frame(row_ids, [tokens.text(ids) for ids in outputs], outputs), path)
    return path


def environment(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpu_threads": torch.get_num_threads()}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), cuda_runtime=torch.version.cuda)
    return info


def run(args: argparse.Namespace) -> dict:
    import torch

    from scripts.gpu_torch_unimo import Overrides, decode_one_token, generate
    from submit.detokenize import checkpoint_tokens

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu to run on the CPU)")
    # fp32 means fp32: no TF32 in the products, as ONNX Runtime's CUDA provider runs the harness.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(os.path.join(args.prepared, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    special = special_ids(config)
    args.pad_id = int(config.get("pad_token_id") or 0)
    prompts = Prompts(os.path.join(args.prepared, PROMPTS_FILE))
    if args.rows:
        keep = np.arange(min(args.rows, len(prompts.lengths)))
        prompts.row_ids, prompts.lengths = [prompts.row_ids[i] for i in keep], prompts.lengths[keep]
    batches = prompts.batches(args.max_batch_rows)
    generate_batches = prompts.input_order_batches(args.generate_batch_rows)
    tokens = checkpoint_tokens(os.path.join(args.prepared, TOKENIZER_FOLDER, "vocab.txt"))
    os.makedirs(args.out, exist_ok=True)
    rows = len(prompts.lengths)
    report = {"prepared": os.path.abspath(args.prepared), "rows": rows, "batches": len(batches),
              "max_batch_rows": args.max_batch_rows, "generate_batch_rows": args.generate_batch_rows,
              "max_new_tokens": args.max_new_tokens,
              "min_new_tokens": args.min_new_tokens, "source_input": config.get("source_input"),
              "source_model": config.get("source_model"), "environment": environment(device), "sides": {}}
    if any(side.endswith("-generate") for side in args.sides):
        import transformers

        report["environment"]["transformers"] = transformers.__version__
    width = int(prompts.lengths.max()) + args.max_new_tokens - 1  # the last token chosen is never fed
    for side in args.sides:
        precision, loop = side.split("-", 1) if "-" in side else (side, "eager")
        compile_mode = "reduce-overhead" if loop == "compile" else None
        entry = report["sides"].setdefault(side, {"precision": precision, "compile": compile_mode,
                                                  "loop": "transformers generate()" if loop == "generate"
                                                  else "preallocated cache"})
        print(f"{side}: loading", flush=True)
        model = load_model(args.prepared, config, device, precision)
        try:
            if loop == "generate":
                from scripts.hf_generate_unimo import UnimoForGenerate, generate_batch

                side_batches = generate_batches
                decode = functools.partial(generate_batch, UnimoForGenerate.around(model, special), special=special,
                                           max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)
            else:
                side_batches = batches
                model.setup_cache(max(len(b.rows) for b in batches), width)
                decode = functools.partial(
                    generate, model, overrides=Overrides(special, int(config["vocab_size"]), torch.device(device)),
                    max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, eos=special.eos,
                    step_fn=compiled_step(model, compile_mode) if compile_mode else decode_one_token)
            entry["batches"] = len(side_batches)
            seconds, outputs = [], None
            for _ in range(1 + args.warm_passes):
                elapsed, outputs = one_pass(prompts, side_batches, decode, args.pad_id, device, special.eos)
                seconds.append(round(elapsed, 3))
                print(f"{side}: pass {len(seconds)} {elapsed:.2f} s", flush=True)
        except Exception as err:  # a compile side that fails is reported, not fatal
            if not compile_mode:
                raise
            entry["failed"] = f"{type(err).__name__}: {err}"[:2000]
            print(f"{side}: failed: {entry['failed'][:300]}", flush=True)
            save(args.out, report)
            continue
        new_tokens = int(sum(len(o) for o in outputs))
        warm = min(seconds[1:]) if len(seconds) > 1 else seconds[0]
        entry.update(cold_s=seconds[0], warm_s=warm, passes_s=seconds, generated_tokens=new_tokens,
                     tokens_per_s=round(new_tokens / warm, 1), rows_per_s=round(rows / warm, 1),
                     output=write_side(args.out, side, prompts.row_ids, outputs, tokens))
        if device == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
            torch.cuda.reset_peak_memory_stats()
        del model
        save(args.out, report)
    return report


def save(out: str, report: dict) -> None:
    with open(os.path.join(out, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- compare (the project venv)

def compare(out: str, harness: str, margins: str | None) -> dict:
    """Every torch side in OUT against the harness's submission: exact match
    (the harness's own metrics), and with its margins the rows whose ids
    differ and how close the harness's choice was where they part."""
    from scripts.check_accuracy import read_margins, read_table
    from submit.accuracy import aligned, divergence_report, generated_ids, generation_metrics

    theirs = read_table(harness)
    found = read_margins(margins) if margins else None
    results = {}
    for path in sorted(glob.glob(os.path.join(out, "torch_*.csv"))):
        ours = read_table(path)
        theirs_aligned = aligned(ours, theirs, "harness submission")
        side = generation_metrics(ours["text"].astype(str).tolist(), theirs_aligned["text"].astype(str).tolist())
        if found is not None:
            torch_ids = generated_ids(ours)
            same = [found[row_id]["generated_ids"] == ids for row_id, ids in zip(ours["id"], torch_ids)]
            side["same_ids"] = int(sum(same))
            # The harness's text explained against torch's, from the harness's margins.
            report = divergence_report(theirs_aligned["id"].tolist(), theirs_aligned["text"].astype(str).tolist(),
                                       ours["text"].astype(str).tolist(), found, torch_ids)
            side["divergence"] = {k: v for k, v in report.items() if k != "rows"}
            side["differing_rows"] = report["rows"]
        results[os.path.basename(path)] = side
        line = f"{os.path.basename(path)}: exact match {side['exact_match']:.4f} ({len(ours)} rows)"
        if found is not None:
            d = side["divergence"]
            line += (f", same ids {side['same_ids']}/{len(ours)}; of the differing rows {d['near_ties']} near-ties "
                     f"(gap < {d['near_tie_gap']}), largest gap {d['largest_gap']}, "
                     f"{d['reference_not_runner_up']} where torch took neither the harness's token nor its runner-up")
        print(line)
    if not results:
        raise SystemExit(f"{out}: no torch_*.csv (run --prepared first)")
    return results


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        parser = argparse.ArgumentParser(prog="python -m scripts.gpu_torch_generation prepare")
        parser.add_argument("directory")
        parser.add_argument("--input", default=None, help="default: data/demo/sources_2000.csv")
        parser.add_argument("--model-dir", default=None, help="default: data/demo/unimo-text-demo")
        parser.add_argument("--pair-column", default=None, help="the title column, as the harness's")
        parser.add_argument("--max-seq-len", type=int, default=128)
        parser.add_argument("--max-title-len", type=int, default=32)
        a = parser.parse_args(argv[1:])
        prepare(a.directory, a.input, a.model_dir, a.max_seq_len, a.max_title_len, a.pair_column)
        return 0
    if argv[:1] == ["compare"]:
        parser = argparse.ArgumentParser(prog="python -m scripts.gpu_torch_generation compare")
        parser.add_argument("out", help="the folder --prepared wrote torch_*.csv into")
        parser.add_argument("harness", help="the harness's submission of the same rows")
        parser.add_argument("--margins", default=None, help="the harness run's OUTPUT.margins.jsonl")
        parser.add_argument("--json", default=None, help="also write the comparison here")
        a = parser.parse_args(argv[1:])
        results = compare(a.out, a.harness, a.margins)
        if a.json:
            with open(a.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2, ensure_ascii=False)
        return 0
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_torch_generation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", required=True, help="a folder `prepare` wrote")
    parser.add_argument("--out", default=None, help="default: the prepared folder")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--sides", default=None,
                        help="comma-separated: fp32, fp16, fp32-compile, fp16-compile, fp32-generate, "
                             "fp16-generate; default the first four on cuda, fp32 on cpu")
    parser.add_argument("--rows", type=int, default=0, help="only the first N rows (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--min-new-tokens", type=int, default=32)
    parser.add_argument("--max-batch-rows", type=int, default=GPU_MAX_BATCH_ROWS)
    parser.add_argument("--generate-batch-rows", type=int, default=STANDARD_BATCH_SIZE,
                        help="the generate() sides' batches, in input order (the standard method's)")
    parser.add_argument("--warm-passes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="cpu: torch's threads (0: its default)")
    args = parser.parse_args(argv)
    if not 0 <= args.min_new_tokens <= args.max_new_tokens:
        parser.error("need 0 <= --min-new-tokens <= --max-new-tokens")
    args.out = args.out or args.prepared
    args.sides = (args.sides.split(",") if args.sides else
                  ["fp32", "fp16", "fp32-compile", "fp16-compile"] if args.device == "cuda" else ["fp32"])
    unknown = set(args.sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown sides {sorted(unknown)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run(args)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\n{report['rows']} rows x {args.max_new_tokens} new tokens, {report['environment'].get('gpu', 'cpu')}:")
    for side, entry in report["sides"].items():
        if "failed" in entry:
            print(f"  {side}: failed ({entry['failed'][:120]})")
        else:
            print(f"  {side}: cold {entry['cold_s']:.2f} s, warm {entry['warm_s']:.2f} s, "
                  f"{entry['tokens_per_s']:.0f} new tokens/s, {entry['rows_per_s']:.1f} rows/s")
    print(f"wrote {os.path.join(args.out, REPORT_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
