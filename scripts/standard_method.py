"""The standard method the harness is measured against, and checked against.

What a competitor writes first with PaddleNLP: load the checkpoint with
from_pretrained, tokenise with the model's own (Python) tokenizer, run the
dygraph model in fixed batches of 32 in input order, in one process.
Classification pads every row to max_seq_len; generation pads each batch on
the left as PaddleNLP's taskflows do and calls `model.generate()` (in
paddlenlp 2.8.1 `use_fast=True` is silently ignored and FastGeneration cannot
be built offline, so this is the plain cached dygraph loop) and writes each
row's text with the model's tokenizer (`decode`, in the submission's
spacing) beside the generated ids. These are the fp32 references for
accuracy checks and the baselines of the benchmarks.

Alone, read to written file (`--device gpu` for dygraph fp32 on a GPU; it
stops at once if Paddle has no CUDA or sees no GPU):

    python -m scripts.standard_method INPUT MODEL_DIR OUTPUT [--device gpu] [--min-new-tokens 32]

It writes the harness's submission format and prints one line: rows/s, and
the seconds of read, load, tokenise+predict (batches of --batch-size) and write.
"""
from __future__ import annotations

import os

import numpy as np

BATCH_SIZE = 32  # rows a batch, in input order: what a first PaddleNLP script uses


def load_classifier(model_dir: str):
    """PaddleNLP's tokenizer and dygraph classifier, on Paddle's current device."""
    from paddlenlp.transformers import ErnieForSequenceClassification, ErnieTokenizer

    tokenizer = ErnieTokenizer.from_pretrained(model_dir)
    model = ErnieForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    return tokenizer, model


def classify_loaded(tokenizer, model, texts: list[str], pairs: list[str] | None = None,
                    max_seq_len: int = 128, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Class probabilities [rows, classes] in input order."""
    import paddle

    probabilities = []
    with paddle.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size],
                                text_pair=pairs[start:start + batch_size] if pairs else None,
                                max_length=max_seq_len, padding="max_length", truncation=True)
            logits = model(paddle.to_tensor(encoded["input_ids"]), paddle.to_tensor(encoded["token_type_ids"]))
            probabilities.append(paddle.nn.functional.softmax(logits, axis=-1).numpy())
    return np.concatenate(probabilities)


def classify_standard(model_dir: str, texts: list[str], pairs: list[str] | None = None,
                      max_seq_len: int = 128, batch_size: int = BATCH_SIZE) -> np.ndarray:
    return classify_loaded(*load_classifier(model_dir), texts, pairs, max_seq_len, batch_size)


def load_generator(model_dir: str):
    """PaddleNLP's tokenizer and dygraph UNIMO-text model, on Paddle's current device."""
    from paddlenlp.transformers import UNIMOLMHeadModel, UNIMOTokenizer

    tokenizer = UNIMOTokenizer.from_pretrained(model_dir)
    model = UNIMOLMHeadModel.from_pretrained(model_dir)
    model.eval()  # generate() does not switch dropout off by itself
    return tokenizer, model


def generate_loaded(tokenizer, model, sources: list[str], titles: list[str] | None, decode_settings,
                    max_seq_len: int = 128, max_title_len: int = 32, batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """Generated ids per source (full vocabulary, eos and padding removed)."""
    import paddle

    eos = model.config.eos_token_id
    strategy = {"greedy": {"decode_strategy": "greedy_search"},
                "beam": {"decode_strategy": "beam_search", "num_beams": decode_settings.num_beams,
                         "length_penalty": decode_settings.length_penalty,
                         "early_stopping": decode_settings.early_stopping}}[decode_settings.strategy]
    outputs = []
    with paddle.no_grad():
        for start in range(0, len(sources), batch_size):
            encoded = [tokenizer.gen_encode(source, title=titles[start + i] if titles else None,
                                            max_seq_len=max_seq_len, max_title_len=max_title_len if titles else 0,
                                            max_target_len=0, add_start_token_for_decoding=True)
                       for i, source in enumerate(sources[start:start + batch_size])]
            batch = {k: paddle.to_tensor(v) for k, v in _left_padded_batch(encoded).items()}
            ids, _ = model.generate(**batch, max_length=decode_settings.max_new_tokens,
                                    min_length=decode_settings.min_new_tokens, use_cache=True,
                                    bos_token_id=tokenizer.cls_token_id, eos_token_id=eos, **strategy)
            for row in ids.numpy():
                row = row.tolist()
                outputs.append(np.asarray(row[:row.index(eos)] if eos in row else row, dtype=np.int64))
    return outputs


def generate_standard(model_dir: str, sources: list[str], titles: list[str] | None, decode_settings,
                      max_seq_len: int = 128, max_title_len: int = 32,
                      batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    return generate_loaded(*load_generator(model_dir), sources, titles, decode_settings, max_seq_len,
                           max_title_len, batch_size)


def decoded_text(tokenizer, ids: list[int]) -> str:
    """A row's text as PaddleNLP writes it: the tokenizer's
    decode(skip_special_tokens=True), with the submission's spaces."""
    from submit.detokenize import submission_spacing

    return submission_spacing(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))


def standard_texts(model_dir: str, generated: list[np.ndarray]) -> list[str]:
    from paddlenlp.transformers import UNIMOTokenizer

    return decoded_texts(UNIMOTokenizer.from_pretrained(model_dir), generated)


def decoded_texts(tokenizer, generated: list[np.ndarray]) -> list[str]:
    return [decoded_text(tokenizer, ids.tolist()) for ids in generated]


def _left_padded_batch(encoded: list[dict]) -> dict:
    """As paddlenlp's question-generation / summarisation taskflows batch gen_encode output."""
    rows, width = len(encoded), max(len(e["input_ids"]) for e in encoded)
    batch = {name: np.zeros((rows, width), dtype=np.int64) for name in ("input_ids", "token_type_ids", "position_ids")}
    batch["attention_mask"] = np.full((rows, 1, width, width), -1e9, dtype=np.float32)
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        for name in ("input_ids", "token_type_ids", "position_ids"):
            batch[name][i, width - n:] = e[name]
        batch["attention_mask"][i, 0, width - n:, width - n:] = e["attention_mask"]
    return batch


def use_device(device: str, tf32: bool = True) -> str:
    """Put Paddle on `device` ("cpu" or "gpu"); a GPU run on a Paddle without
    CUDA, or with no GPU visible, stops here rather than quietly running on the CPU.
    On a GPU, Paddle's fp32 matmuls use TF32 tensor cores unless told not to
    (its default, so the competitor's); `tf32=False` gives IEEE fp32, as the
    harness's --precision fp32 on the GPU."""
    import paddle

    if device == "gpu":
        if not paddle.is_compiled_with_cuda():
            raise SystemExit(f"--device gpu: Paddle {paddle.__version__} ({paddle.__file__}) is a CPU build; "
                             "put a CUDA build of Paddle first on PYTHONPATH, with its CUDA libraries on "
                             "LD_LIBRARY_PATH")
        if paddle.device.cuda.device_count() == 0:
            raise SystemExit(f"--device gpu: Paddle {paddle.__version__} is a CUDA build but sees no GPU "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    paddle.set_device(device)
    if device == "cpu":
        return "cpu"
    from paddle.base import core

    core.set_cublas_switch(tf32)
    return f"gpu:0 ({paddle.device.cuda.get_device_name(0)}, TF32 {'on' if core.get_cublas_switch() else 'off'})"


def main(argv: list[str] | None = None) -> int:
    """python -m scripts.standard_method INPUT MODEL_DIR OUTPUT [options]: the
    standard method end to end, writing a submission like the harness's, and
    printing where the wall time went."""
    import argparse

    from submit.timing_report import StageTimer

    timer = StageTimer()  # the total counts from here: imports included
    from scripts.repo_caches import keep_caches_in_repo

    keep_caches_in_repo()  # before paddlenlp is imported
    from predictor.checkpoint import read_checkpoint
    from predictor.classify.classifier import class_labels
    from predictor.generate.decoding import DecodeSettings
    from preprocess.input_table import ColumnNames, read_input_table
    from submit.submission_frames import classification_frame, generation_frame
    from submit.write_submission import write_table

    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("model_dir")
    parser.add_argument("output")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: dygraph fp32 on the first GPU; exits if this Paddle has no CUDA or sees no GPU")
    parser.add_argument("--no-tf32", action="store_true",
                        help="gpu: matmuls in IEEE fp32, not Paddle's default TF32 tensor cores")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--pair-column", default=None)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--max-title-len", type=int, default=32)
    parser.add_argument("--decode", choices=["greedy", "beam"], default="greedy")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--min-new-tokens", type=int, default=0)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    args = parser.parse_args(argv)
    with timer.stage("read"):
        checkpoint = read_checkpoint(args.model_dir)
        table = read_input_table(args.input, ColumnNames(pair=args.pair_column))
    with timer.stage("load"):
        device = use_device(args.device, tf32=not args.no_tf32)
        tokenizer, model = (load_classifier if checkpoint.task == "classify" else load_generator)(args.model_dir)
    generated_tokens = None
    with timer.stage("predict"):
        if checkpoint.task == "classify":
            probabilities = classify_loaded(tokenizer, model, table.texts, table.pairs, args.max_seq_len,
                                            args.batch_size)
            frame = classification_frame(table.ids, probabilities, class_labels(checkpoint.config))
        else:
            settings = DecodeSettings(strategy=args.decode, num_beams=args.num_beams,
                                      max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                                      length_penalty=args.length_penalty)
            generated = generate_loaded(tokenizer, model, table.texts, table.pairs, settings, args.max_seq_len,
                                        args.max_title_len, args.batch_size)
            generated_tokens = sum(len(ids) for ids in generated)
            frame = generation_frame(table.ids, decoded_texts(tokenizer, generated), generated)
    with timer.stage("write"):
        write_table(frame, args.output)
    print(timing_line(device, len(table.ids), timer.seconds, timer.total(), generated_tokens), flush=True)
    return 0


def timing_line(device: str, rows: int, seconds: dict[str, float], total: float,
                generated_tokens: int | None) -> str:
    line = (f"standard method on {device}: {rows} rows in {total:.2f} s ({rows / total:.1f} rows/s); "
            f"read {seconds['read']:.2f} s, load {seconds['load']:.2f} s, tokenise+predict "
            f"{seconds['predict']:.2f} s ({rows / seconds['predict']:.1f} rows/s), write {seconds['write']:.2f} s")
    if generated_tokens is not None:
        line += f"; {generated_tokens} tokens generated, {generated_tokens / seconds['predict']:.0f} tokens/s"
    return line


if __name__ == "__main__":
    raise SystemExit(main())
