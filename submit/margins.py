"""OUTPUT.margins.jsonl: how close greedy decoding's choices were.

One JSON object per input row, in input order:
    {"id": "r1", "tokens": ["好", "吃", "[MASK]"], "runner_up": ["不", "##的", "吃"], "gap": [0.8, 2e-05, 1.3]}
`tokens` are the vocabulary strings of the tokens chosen, the eos last when
the row ended on it; `runner_up` the second best at each of those steps;
`gap` is logit[chosen] - logit[runner_up] in the fp32 logits argmax saw
(unk, pad and bos banned; eos forbidden before --min-new-tokens). The same
strings go through the detokenizer's rules to give the submission's text.
"""
from __future__ import annotations

import numpy as np

MARGINS_SUFFIX = ".margins.jsonl"


def margins_path(output: str) -> str:
    return output + MARGINS_SUFFIX


def margin_record(row_id: str, generated: np.ndarray, runner_up: np.ndarray, gaps: np.ndarray, eos_id: int,
                  id_to_token: list[str]) -> dict:
    """generated (the eos left out, as decoding returns it) and runner_up in
    the full vocabulary; a row that ended on eos has one step more than
    generated tokens."""
    ended_on_eos = len(gaps) - len(generated)
    if ended_on_eos not in (0, 1) or len(runner_up) != len(gaps):
        raise ValueError(f"row {row_id}: {len(generated)} generated tokens but {len(gaps)} gaps "
                         f"and {len(runner_up)} runner-ups recorded")
    chosen = generated.tolist() + [eos_id] * ended_on_eos
    return {"id": row_id, "tokens": [id_to_token[i] for i in chosen],
            "runner_up": [id_to_token[i] for i in runner_up.tolist()], "gap": [float(g) for g in gaps]}
