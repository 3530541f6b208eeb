"""Generation on a tiny seeded UNIMO-text model: the cached static decoding
loop against PaddleNLP's generate() (greedy and beam), ids through pruning,
ordering with several workers, and bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import pipeline
from predictor.generate.decoding import DecodeSettings
from predictor.pruning import prune_vocab
from scripts.standard_method import generate_standard, standard_texts
from submit.detokenize import SPECIAL_TOKENS, text_pieces
from tests.tiny_checkpoints import review_texts, tiny_generator, write_reviews_csv

MAX_SEQ_LEN = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("generate"))


@pytest.fixture(scope="module")
def model_dir(workdir):
    return tiny_generator(workdir)


@pytest.fixture(scope="module")
def sources():
    return review_texts(36, start=500) + ["好", "这个[SEP]不错～～"]


def run_harness(workdir, model_dir, sources, name, *options):
    input_path = write_reviews_csv(os.path.join(workdir, f"{name}.csv"), sources)
    output = os.path.join(workdir, f"{name}_out.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--max-seq-len", str(MAX_SEQ_LEN),
                          "--cache-dir", os.path.join(workdir, "exports"), *options]) == 0
    return pd.read_csv(output, dtype={"id": str}, keep_default_na=False)


def reference_texts(model_dir, sources, settings):
    return standard_texts(model_dir, generate_standard(model_dir, sources, None, settings, MAX_SEQ_LEN))


@pytest.mark.parametrize("settings, options", [
    (DecodeSettings(max_new_tokens=12), ["--workers", "2", "--threads", "1", "--max-batch-rows", "5"]),
    # In 4 chunks of input rows (the tokenised input waits in a temporary folder).
    (DecodeSettings(max_new_tokens=10, min_new_tokens=4), ["--min-new-tokens", "4", "--chunk-rows", "10"]),
    # Past the cache buffer's first width (16 positions): the buffer is widened mid-generation.
    (DecodeSettings(max_new_tokens=20, min_new_tokens=18), ["--min-new-tokens", "18"]),
    (DecodeSettings(strategy="beam", num_beams=3, max_new_tokens=8, min_new_tokens=2, length_penalty=1.3),
     ["--decode", "beam", "--num-beams", "3", "--min-new-tokens", "2", "--length-penalty", "1.3"]),
    (DecodeSettings(strategy="beam", num_beams=4, max_new_tokens=8, early_stopping=True),
     ["--decode", "beam", "--early-stopping"]),
])
@pytest.mark.parametrize("engine", ["onnxruntime", "paddle"])
def test_harness_equals_generate_in_input_order(workdir, model_dir, sources, settings, options, engine):
    expected = reference_texts(model_dir, sources, settings)
    submission = run_harness(workdir, model_dir, sources, "equal", "--max-new-tokens",
                             str(settings.max_new_tokens), "--engine", engine, *options)
    assert submission["id"].tolist() == [f"t{i}" for i in range(len(sources))]
    assert submission["text"].tolist() == expected
    if settings.min_new_tokens < settings.max_new_tokens - 2:
        lengths = {len(t) for t in expected}
        assert len(lengths) > 1  # some rows end early, so finished rows really left the batch


def test_pruned_ids_map_back_to_the_full_vocabulary(workdir, model_dir, sources):
    pruned = run_harness(workdir, model_dir, sources, "pruned", "--prune", "--max-new-tokens", "6")
    with open(os.path.join(workdir, "pruned_out.csv.timing.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["vocab"]["pruned"] and report["vocab"]["kept"] < 1000
    decoding = report["decoding"]  # where decoding time went: engine vs the Python loop
    assert decoding["decode_steps"] >= 1 and decoding["engine_s"] > 0
    assert 0 <= decoding["loop_overhead_share"] < 1
    # The pruned LM head can only say kept ids, the sources' tokens; mapped
    # back to the full vocabulary they spell the sources' characters.
    generated = {ch for text in pruned["text"] for ch in text}
    assert generated and generated <= {ch for source in sources for ch in source.lower()}


def kept_ids(workdir, model_dir, sources, name, *options) -> int:
    run_harness(workdir, model_dir, sources, name, "--prune", "--max-new-tokens", "2", *options)
    with open(os.path.join(workdir, f"{name}_out.csv.timing.json"), encoding="utf-8") as f:
        return json.load(f)["vocab"]["kept"]


def test_keep_ids_from_a_corpus_and_the_top_n_widen_the_pruned_vocabulary(workdir, model_dir, sources):
    targets = os.path.join(workdir, "targets.txt")
    with open(targets, "w", encoding="utf-8") as f:
        f.write("\n".join(review_texts(40, start=2000)) + "\n")
    seen_only = kept_ids(workdir, model_dir, sources, "kept_seen")
    with_targets = kept_ids(workdir, model_dir, sources, "kept_targets", "--keep-ids-from", targets)
    with_top = kept_ids(workdir, model_dir, sources, "kept_top", "--keep-top-n", "3000")
    assert seen_only < with_targets
    assert 3000 <= with_top < 6000  # the first 3000 ids plus the sources' rarer ones


def test_write_margins_gives_every_row_its_steps_in_input_order(workdir, model_dir, sources):
    max_new_tokens = 8
    submission = run_harness(workdir, model_dir, sources, "margins", "--max-new-tokens", str(max_new_tokens),
                             "--max-batch-rows", "5", "--write-margins")
    generated = generate_standard(model_dir, sources, None, DecodeSettings(max_new_tokens=max_new_tokens), MAX_SEQ_LEN)
    assert submission["text"].tolist() == standard_texts(model_dir, generated)  # recording changes no choice
    with open(os.path.join(workdir, "margins_out.csv.margins.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    with open(os.path.join(workdir, "margins_out.csv.timing.json"), encoding="utf-8") as f:
        generated_tokens = json.load(f)["generated_tokens"]
    assert [r["id"] for r in records] == submission["id"].tolist()
    assert [r["generated_ids"] for r in records] == [ids.tolist() for ids in generated]
    ended_on_eos = 0
    for record, text in zip(records, submission["text"]):
        steps = len(record["gap"])
        assert len(record["tokens"]) == len(record["runner_up"]) == steps
        assert len(record["pieces"]) == steps and "".join(record["pieces"]) == text
        assert min(record["gap"]) >= 0 and "".join(text_pieces(record["tokens"], SPECIAL_TOKENS)) == text
        if record["tokens"][-1] == "[MASK]":  # the eos: its step is recorded, its token not generated
            ended_on_eos += 1
        else:
            assert steps == max_new_tokens
    assert 0 < ended_on_eos < len(records)
    assert sum(len(r["gap"]) for r in records) == generated_tokens + ended_on_eos


def test_write_margins_refuses_beam_search(model_dir, capsys):
    with pytest.raises(SystemExit):
        pipeline.parse_args(["in.csv", model_dir, "out.csv", "--decode", "beam", "--write-margins"])
    assert "beam search has no single runner-up" in capsys.readouterr().err


def test_prune_vocab_round_trip():
    vocab = prune_vocab(50, np.array([7, 3, 3, 40]), np.arange(5))
    assert vocab.kept_ids.tolist() == [0, 1, 2, 3, 4, 7, 40]
    new = vocab.to_pruned(np.array([40, 7, 0]))
    assert new.tolist() == [6, 5, 0] and vocab.to_full(new).tolist() == [40, 7, 0]


def test_generation_bad_input_names_the_row(workdir, model_dir):
    bad = os.path.join(workdir, "bad.jsonl")
    with open(bad, "w", encoding="utf-8") as f:
        f.write('{"id": "a", "text": "好"}\n{"id": "b", "text": ""}\n')
    output = os.path.join(workdir, "bad_out.csv")
    assert pipeline.main([bad, model_dir, output, "--quiet"]) == 2
    assert not os.path.exists(output)


def test_impossible_decoding_options_are_refused(workdir, model_dir, capsys):
    with pytest.raises(SystemExit):
        pipeline.parse_args(["in.csv", model_dir, "out.csv", "--min-new-tokens", "9", "--max-new-tokens", "4"])
    assert "min_new_tokens <= max_new_tokens" in capsys.readouterr().err


def test_prompt_chunks_under_a_small_token_budget_give_generate_s_output(workdir, model_dir, sources):
    settings = DecodeSettings(max_new_tokens=6)
    submission = run_harness(workdir, model_dir, sources, "chunks", "--max-new-tokens", "6", "--token-budget", "40")
    assert submission["text"].tolist() == reference_texts(model_dir, sources, settings)


def test_int8_generation_carries_its_agreement_with_fp32_and_runs_int8_kernels(workdir, model_dir, sources):
    import onnx

    submission = run_harness(workdir, model_dir, sources, "int8", "--precision", "int8", "--max-new-tokens", "6")
    assert submission["id"].tolist() == [f"t{i}" for i in range(len(sources))]
    with open(os.path.join(workdir, "int8_out.csv.timing.json"), encoding="utf-8") as f:
        report = json.load(f)
    conversion = report["onnx"]
    assert report["engine"]["precision"] == conversion["precision"] == "int8"
    assert 0.0 <= conversion["probe_top1_agreement"] <= 1.0 and conversion["max_logit_diff"] > 0.0
    assert {"weight_gemms", "lm_head", "attention"} <= set(conversion["step_profile"]["ms_per_step"])
    from submit.timing_report import format_table

    table = format_table(report)
    assert "top-1 agreement" in table and "one step of" in table
    step = onnx.load(os.path.join(workdir, "exports", conversion["key"], "step", "model.onnx"),
                     load_external_data=False)
    integer_ops = [n.op_type for n in step.graph.node if "Integer" in n.op_type or "Quantize" in n.op_type]
    assert integer_ops  # the saved, optimised graph still multiplies int8 weights


def test_a_conversion_that_moves_the_logits_is_refused_with_the_way_on(workdir, model_dir, sources, monkeypatch,
                                                                       capsys, tmp_path):
    from predictor.generate import onnx_decoder

    monkeypatch.setattr(onnx_decoder, "LOGIT_TOLERANCE", -1.0)  # any difference is too much
    input_path = write_reviews_csv(os.path.join(workdir, "refused.csv"), sources[:4])
    output = str(tmp_path / "refused_out.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "--engine paddle" in capsys.readouterr().err
    assert not os.path.exists(output)


def test_step_time_categories():
    from predictor.generate.onnx_decoder import step_category

    vocab = 500
    assert step_category("MatMul", [[8, 64], [64, 192]], vocab) == "weight_gemms"
    assert step_category("FusedGemm", [[8, 64], [64, 256]], vocab) == "weight_gemms"
    assert step_category("Gemm", [[8, 64], [vocab, 64]], vocab) == "lm_head"
    assert step_category("MatMul", [[8, 64], [64, vocab]], vocab) == "lm_head"
    assert step_category("FusedMatMul", [[8, 4, 1, 16], [8, 4, 30, 16]], vocab) == "attention"
    assert step_category("Softmax", [[8, 4, 1, 47]], vocab) == "attention"
    assert step_category("Concat", [[8, 4, 1, 30], [8, 4, 1, 16]], vocab) == "copies_reshapes"
    assert step_category("LayerNormalization", [[8, 64]], vocab) == "norms_elementwise"
