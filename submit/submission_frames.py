"""The submission's columns, in one place for the harness and the baselines.

Classification: id, label, then prob_<label> for every class in the model's
label order. Generation: id, text.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def classification_frame(ids: list[str], probabilities: np.ndarray, labels: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids, "label": [labels[i] for i in probabilities.argmax(axis=1)]})
    for k, label in enumerate(labels):
        frame[f"prob_{label}"] = probabilities[:, k]
    return frame


def generation_frame(ids: list[str], texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "text": texts})
