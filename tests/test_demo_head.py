"""The demo classifier's fitted head: labels depend on the input, and the
saved checkpoint predicts exactly what the fit measured."""
from __future__ import annotations

import numpy as np

from scripts.demo_corpus import load_reviews
from scripts.demo_models import fit_head, logistic_regression, pooled_features
from tests.tiny_checkpoints import TINY_ERNIE, tiny_vocab


def test_logistic_regression_recovers_a_separating_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x @ np.array([2.0, -1.0, 0.0, 0.0, 0.5]) + 0.3 > 0).astype(float)
    w, b = logistic_regression(x, y, l2=0.1)
    assert np.mean(((x @ w + b) > 0) == (y > 0.5)) > 0.97
    assert abs(w[2]) < abs(w[1]) and abs(w[3]) < abs(w[1])


def test_fitted_head_is_input_sensitive_and_saved_as_fitted(tmp_path):
    import paddle
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer

    reviews = load_reviews()[-300:]
    paddle.seed(0)
    model = ErnieForSequenceClassification(ErnieConfig(**TINY_ERNIE, num_labels=2))
    model.eval()
    tokenizer = ErnieTokenizer(vocab_file=tiny_vocab(str(tmp_path)))
    fit = fit_head(model, tokenizer, [(r.text, r.label) for r in reviews], max_seq_len=64)
    assert fit.rows == 300 and fit.train_accuracy > 0.6  # balanced labels: chance is 0.5

    # The folded head on raw pooled features gives the labels the fit scored.
    features = pooled_features(model, tokenizer, [r.text for r in reviews], 64)
    logits = features @ model.classifier.weight.numpy() + model.classifier.bias.numpy()
    predicted = logits.argmax(1)
    assert np.mean(predicted == np.array([r.label for r in reviews])) == fit.train_accuracy
    assert 0 < predicted.mean() < 1


def test_the_demo_classifier_has_paddlenlps_ernie_3_medium_configuration():
    from paddlenlp.transformers.ernie.configuration import ERNIE_PRETRAINED_INIT_CONFIGURATION

    from scripts.demo_models import ERNIE_MEDIUM

    assert ERNIE_MEDIUM == ERNIE_PRETRAINED_INIT_CONFIGURATION["ernie-3.0-medium-zh"]
