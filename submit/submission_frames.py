"""The submission's columns, in one place for the harness and the baselines.

Classification: id, label, then prob_<label> for every class in the model's
label order. Generation: id, text; a reference (the standard method's) adds
generated_ids, the ids behind the text ("12 7 845", the eos left out), so
that a divergence report can tell decoding from detokenisation.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def classification_frame(ids: list[str], probabilities: np.ndarray, labels: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids, "label": [labels[i] for i in probabilities.argmax(axis=1)]})
    for k, label in enumerate(labels):
        frame[f"prob_{label}"] = probabilities[:, k]
    return frame


GENERATED_IDS = "generated_ids"


def generation_frame(ids: list[str], texts: list[str], generated_ids: list[np.ndarray] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids, "text": texts})
    if generated_ids is not None:
        frame[GENERATED_IDS] = [" ".join(str(i) for i in np.asarray(row).tolist()) for row in generated_ids]
    return frame
