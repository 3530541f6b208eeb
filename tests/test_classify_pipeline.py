"""Classification end to end on a tiny seeded ERNIE: pruning exactness, the
static export, order restoration across worker processes, and run.sh."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pipeline
from predictor.checkpoint import read_checkpoint
from predictor.classify.classifier import build_classifier, probabilities_layer
from predictor.pruning import full_vocab, prune_vocab
from scripts import standard_method
from scripts.standard_method import classify_standard
from tests.tiny_checkpoints import review_texts, tiny_classifier, write_reviews_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("classify"))


@pytest.fixture(scope="module")
def model_dir(workdir):
    return tiny_classifier(workdir)


@pytest.fixture(scope="module")
def texts():
    # Real reviews, a few over max_seq_len (truncated), one with a literal [SEP].
    return review_texts(60, start=100) + ["这个[SEP]不错", "～～～０∶２好评！"]


@pytest.fixture(scope="module")
def reference(model_dir, texts):
    return classify_standard(model_dir, texts, max_seq_len=64)


def test_pruned_model_logits_equal_the_full_model(model_dir):
    import paddle

    checkpoint = read_checkpoint(model_dir)
    rng = np.random.default_rng(0)
    seen = rng.choice(np.arange(5, 6000), size=300, replace=False)
    ids = np.concatenate([[1], rng.choice(seen, size=40), [2]])[None, :]
    vocab = prune_vocab(6000, seen, np.arange(5))
    assert vocab.size == 305 and vocab.to_full(vocab.to_pruned(ids)).tolist() == ids.tolist()
    full = probabilities_layer(build_classifier(checkpoint, full_vocab(6000)))
    pruned = probabilities_layer(build_classifier(checkpoint, vocab))
    types = paddle.zeros(ids.shape, "int64")
    with paddle.no_grad():
        full_probabilities = full(paddle.to_tensor(ids), types).numpy()
        pruned_probabilities = pruned(paddle.to_tensor(vocab.to_pruned(ids)), types).numpy()
    assert np.abs(full_probabilities - pruned_probabilities).max() < 1e-6


@pytest.mark.parametrize("task_id", [None, 2])
def test_the_exported_forward_is_paddlenlp_layer_for_layer(workdir, task_id):
    """The classifier rebuilt from paddle.nn layers has PaddleNLP's parameter
    names and layer-norm epsilons, and its log-probability gaps equal
    PaddleNLP's own (with and without ERNIE 3.0's task-type embeddings, and
    with the task-type row folded into the position embeddings)."""
    import paddle
    from paddlenlp.transformers import ErnieForSequenceClassification

    from scripts.demo_models import save_classifier
    from tests.tiny_checkpoints import TINY_ERNIE, tiny_vocab

    model_dir = os.path.join(workdir, f"task_id_{task_id}")
    extra = dict(use_task_id=True, task_id=task_id) if task_id is not None else {}
    save_classifier(model_dir, tiny_vocab(workdir), seed=3, **TINY_ERNIE, **extra)
    ours = build_classifier(read_checkpoint(model_dir), full_vocab(TINY_ERNIE["vocab_size"]), fold_task_type=False)
    folded = build_classifier(read_checkpoint(model_dir), full_vocab(TINY_ERNIE["vocab_size"]))
    theirs = ErnieForSequenceClassification.from_pretrained(model_dir)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    our_layers = dict(ours.named_sublayers())
    norms = [(name, layer) for name, layer in theirs.named_sublayers() if isinstance(layer, paddle.nn.LayerNorm)]
    assert len(norms) == 1 + 2 * TINY_ERNIE["num_hidden_layers"]
    assert all(our_layers[name]._epsilon == layer._epsilon for name, layer in norms)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, TINY_ERNIE["vocab_size"], size=(3, 20))
    ids[:, 0], ids[2, 12:] = 1, 0  # [CLS] first; one row padded
    types = np.zeros_like(ids)
    with paddle.no_grad():
        probabilities = probabilities_layer(ours)(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy()
        folded_probabilities = probabilities_layer(folded)(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy()
        theirs.eval()
        logits = theirs(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy()
    gaps = np.log(probabilities[:, 1]) - np.log(probabilities[:, 0])
    assert np.abs(gaps - (logits[:, 1] - logits[:, 0])).max() < 1e-5
    # The task-type row folded into the positions' changes only fp32 rounding.
    assert "ernie.embeddings.task_type_embeddings.weight" not in folded.state_dict()
    assert np.abs(folded_probabilities - probabilities).max() < 1e-6


def test_pruning_refuses_ids_it_dropped():
    vocab = prune_vocab(100, np.array([0, 1, 2, 50]))
    with pytest.raises(ValueError, match=r"token ids \[7\] were pruned away"):
        vocab.to_pruned(np.array([1, 7, 2]))


def untruncated_longer_than(model_dir, texts, max_seq_len) -> int:
    from paddlenlp.transformers import ErnieTokenizer

    tokenizer = ErnieTokenizer.from_pretrained(model_dir)
    return sum(len(tokenizer(text)["input_ids"]) > max_seq_len for text in texts)


def run_pipeline(workdir, model_dir, texts, name, *options):
    input_path = write_reviews_csv(os.path.join(workdir, f"{name}.csv"), texts)
    output = os.path.join(workdir, f"{name}_submission.csv")
    args = [input_path, model_dir, output, "--max-seq-len", "64", "--quiet",
            "--cache-dir", os.path.join(workdir, "exports"), *options]
    assert pipeline.main(args) == 0
    with open(output + ".timing.json", encoding="utf-8") as f:
        return pd.read_csv(output, dtype={"id": str}), json.load(f)


@pytest.mark.parametrize("options", [
    ["--workers", "2", "--threads", "1", "--token-budget", "256"],   # several processes, small batches
    ["--no-prune", "--token-budget", "100000"],                       # one process, one batch, full table
    ["--engine", "paddle"],                                           # Paddle Inference instead of ONNX Runtime
    ["--chunk-rows", "9", "--workers", "2", "--threads", "1"],        # 7 chunks through a temporary folder
])
def test_harness_matches_the_standard_method_in_input_order(workdir, model_dir, texts, reference, options):
    submission, report = run_pipeline(workdir, model_dir, texts, "order", *options)
    assert submission["id"].tolist() == [f"t{i}" for i in range(len(texts))]
    probabilities = submission[["prob_negative", "prob_positive"]].to_numpy()
    assert np.abs(probabilities - reference).max() < 1e-5
    expected_labels = np.array(["negative", "positive"])[reference.argmax(axis=1)]
    assert submission["label"].tolist() == expected_labels.tolist()
    assert report["rows"] == len(texts)
    assert report["truncated_rows"] == untruncated_longer_than(model_dir, texts, 64) > 0
    assert report["engine"]["engine"] == ("paddle" if "paddle" in options else "onnxruntime")
    if "--no-prune" in options:
        assert report["vocab"]["kept"] == report["vocab"]["full"] == 6000
    elif "--workers" in options:
        assert report["workers"] == 2 and report["batches"] > 2
        assert report["vocab"]["kept"] < 1000
    assert report["input_chunks"] == (7 if "--chunk-rows" in options else 1)


def test_an_unpruned_run_predicts_while_it_tokenises_and_writes_the_same_bytes(workdir, model_dir, texts):
    _, whole = run_pipeline(workdir, model_dir, texts, "tokenised_first", "--prune", "--chunk-rows", "9")
    _, streamed = run_pipeline(workdir, model_dir, texts, "streamed", "--no-prune", "--chunk-rows", "9")
    with open(os.path.join(workdir, "tokenised_first_submission.csv"), "rb") as a, \
            open(os.path.join(workdir, "streamed_submission.csv"), "rb") as b:
        assert a.read() == b.read()
    assert "alongside_predict_s" not in whole and whole["vocab"]["pruned"]
    # 7 chunks read and tokenised in a thread while the ones before were predicted
    assert streamed["input_chunks"] == 7 and not streamed["vocab"]["pruned"]
    assert streamed["alongside_predict_s"]["tokenize"] > 0 and streamed["alongside_predict_s"]["read"] > 0
    assert streamed["rows"] == len(texts) and streamed["truncated_rows"] == whole["truncated_rows"]


def test_rows_near_a_tie_are_rerun_after_predict_by_the_same_predictors(workdir, model_dir, texts, reference,
                                                                        monkeypatch):
    """fp16's rows near a tie (a GPU's; here its fp32 stand-in with a
    made-up rule) are re-run in fp32 once every row is predicted, by the
    predictor processes that hold the fp32 model beside it."""
    from predictor.classify.low_margin import margins
    from predictor.classify.task import ClassifyTask
    from predictor.machines import local

    as_parsed = pipeline.engine_options

    def fp16_on_this_cpu(args, kind):
        options = as_parsed(args, kind)
        object.__setattr__(options, "precision", "fp16")  # the check refuses fp16 without a GPU
        return options

    ordered = np.sort(margins(reference))
    middle = np.arange(len(ordered) // 4, 3 * len(ordered) // 4)
    widest = middle[np.argmax(ordered[middle + 1] - ordered[middle])]  # fp32 rounding cannot cross it
    floor = float(ordered[widest] + ordered[widest + 1]) / 2

    def fp16_model(self, cache_dir, onnx_step, fp32_dir, sample_jobs):
        self.fp32_beside = fp32_dir
        rule = {"offset": [0.0, 0.0], "error_scale": 0.0, "floor": floor, "max_disagreement": 0.0}
        return fp32_dir, {"sample_rows": 0, "max_prob_diff": 0.0, "label_agreement": 1.0, "margin_rule": rule,
                          "cached": False}

    pools = []
    real_pool = local.ThisMachine.pool
    monkeypatch.setattr(pipeline, "engine_options", fp16_on_this_cpu)
    monkeypatch.setattr(ClassifyTask, "fp16_model", fp16_model)
    monkeypatch.setattr(local.ThisMachine, "pool", lambda machine, *a: pools.append(a) or real_pool(machine, *a))
    submission, report = run_pipeline(workdir, model_dir, texts, "near_a_tie", "--no-prune", "--workers", "2",
                                      "--threads", "1", "--token-budget", "256")
    assert np.abs(submission[["prob_negative", "prob_positive"]].to_numpy() - reference).max() < 1e-5
    assert report["rerun"]["rows"] == widest + 1 and report["rerun"]["threshold"] == round(floor, 6)
    assert len(pools) == 1 and report["workers"] == 2  # no second set of processes for the re-run
    assert report["stages_s"]["rerun"] > 0


def test_the_first_chunk_can_come_as_a_small_piece_then_the_rest(workdir, model_dir, texts, tmp_path):
    from predictor.checkpoint import read_checkpoint
    from predictor.machines.choice import choose_machines
    from preprocess.encoded_chunks import EncodedChunks
    from submit.timing_report import StageTimer

    input_path = write_reviews_csv(os.path.join(workdir, "pieces.csv"), texts[:25])
    args = pipeline.parse_args([input_path, model_dir, os.path.join(workdir, "pieces_out.csv"), "--chunk-rows", "10"])
    encoded, into = EncodedChunks(str(tmp_path), 6000), pipeline.TokenizedInput([])
    with choose_machines(None) as machines:
        pieces = [(first, len(rows)) for first, rows in pipeline.read_and_tokenize(
            args, "classify", read_checkpoint(model_dir).vocab_path, encoded, StageTimer(), machines, into,
            first_piece_rows=4)]
    assert pieces == [(0, 4), (4, 6), (10, 10), (20, 5)]  # only the first chunk is split
    assert into.ids == [f"t{i}" for i in range(25)] and len(encoded) == 25


def test_bad_row_in_a_later_chunk_of_a_streamed_run_fails_with_nothing_written(workdir, model_dir, texts, capsys):
    input_path = write_reviews_csv(os.path.join(workdir, "streamed_bad.csv"), texts[:20] + ["   "] + texts[20:30])
    output = os.path.join(workdir, "streamed_bad_out.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--no-prune", "--chunk-rows", "9",
                          "--cache-dir", os.path.join(workdir, "exports")]) == 2
    assert "row 21, field 'text': text is empty" in capsys.readouterr().err
    assert not os.path.exists(output) and not os.path.exists(output + ".timing.json")


def test_second_run_reuses_the_export(workdir, model_dir, texts):
    _, first = run_pipeline(workdir, model_dir, texts[:20], "cache_a")
    _, second = run_pipeline(workdir, model_dir, texts[:20], "cache_b")
    assert second["export_cached"] is True
    _, other_rows = run_pipeline(workdir, model_dir, texts[20:30], "cache_c")
    assert other_rows["export_cached"] is False  # another kept-id set, another program


def test_repeat_reports_min_and_median(workdir, model_dir, texts):
    _, report = run_pipeline(workdir, model_dir, texts[:8], "repeat", "--repeat", "2")
    assert report["repeat"]["repeats"] == 2 and len(report["repeat"]["totals_s"]) == 2
    assert report["repeat"]["total_s_min"] <= report["repeat"]["total_s_median"]
    assert os.path.getsize(os.path.join(workdir, "repeat_submission.csv.timing.svg")) > 0  # the picture, by default


def test_no_plot_skips_the_picture(workdir, model_dir, texts):
    run_pipeline(workdir, model_dir, texts[:4], "no_plot", "--no-plot")
    assert os.path.isfile(os.path.join(workdir, "no_plot_submission.csv.timing.json"))
    assert not os.path.exists(os.path.join(workdir, "no_plot_submission.csv.timing.svg"))


def test_write_margins_is_refused_for_a_classifier(workdir, model_dir, texts, capsys):
    input_path = write_reviews_csv(os.path.join(workdir, "margins.csv"), texts[:2])
    output = os.path.join(workdir, "margins_out.csv")
    assert pipeline.main([input_path, model_dir, output, "--quiet", "--write-margins"]) == 2
    assert "is a classifier; --write-margins is for generation" in capsys.readouterr().err
    assert not os.path.exists(output)


def test_standard_method_command_writes_classify_standards_labels(workdir, model_dir, texts, reference, capsys):
    input_path = write_reviews_csv(os.path.join(workdir, "standard.csv"), texts)
    output = os.path.join(workdir, "standard_out.csv")
    assert standard_method.main([input_path, model_dir, output, "--max-seq-len", "64"]) == 0
    written = pd.read_csv(output, dtype={"id": str})
    assert written["id"].tolist() == [f"t{i}" for i in range(len(texts))]
    assert written["label"].tolist() == np.array(["negative", "positive"])[reference.argmax(axis=1)].tolist()
    assert np.abs(written[["prob_negative", "prob_positive"]].to_numpy() - reference).max() < 1e-6
    printed = capsys.readouterr().out
    assert f"standard method on cpu: {len(texts)} rows" in printed and "tokenise+predict" in printed


def test_standard_method_on_gpu_stops_without_a_cuda_paddle(workdir, model_dir, texts):
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle is a CUDA build")
    input_path = write_reviews_csv(os.path.join(workdir, "standard_gpu.csv"), texts[:2])
    output = os.path.join(workdir, "standard_gpu_out.csv")
    with pytest.raises(SystemExit, match="--device gpu: Paddle .* is a CPU build"):
        standard_method.main([input_path, model_dir, output, "--device", "gpu"])
    assert not os.path.exists(output)


def test_run_sh_smoke_and_bad_input_exit_code(workdir, model_dir, texts):
    this_venv = dict(os.environ, VENV=sys.prefix)  # run.sh on the environment running the tests
    input_path = write_reviews_csv(os.path.join(workdir, "smoke.csv"), texts[:5])
    output = os.path.join(workdir, "smoke_out.jsonl")
    done = subprocess.run(["bash", os.path.join(REPO, "run.sh"), input_path, model_dir, output,
                           "--cache-dir", os.path.join(workdir, "exports")],
                          capture_output=True, text=True, timeout=600, env=this_venv)
    assert done.returncode == 0, done.stderr
    assert "predict" in done.stdout
    written = pd.read_json(output, lines=True, dtype={"id": str})
    assert written["id"].tolist() == [f"t{i}" for i in range(5)]

    bad = os.path.join(workdir, "bad.csv")
    with open(bad, "w", encoding="utf-8") as f:
        f.write("id,text\n1,好\n1,坏\n")
    done = subprocess.run(["bash", os.path.join(REPO, "run.sh"), bad, model_dir, output],
                          capture_output=True, text=True, timeout=600, env=this_venv)
    assert done.returncode == 2
    assert "bad.csv, row 2, field 'id': duplicate id '1'" in done.stderr
