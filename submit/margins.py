"""OUTPUT.margins.jsonl: how close greedy decoding's choices were.

One JSON object per input row, in input order:
    {"id": "r1", "tokens": ["好", "吃", "[MASK]"], "runner_up": ["不", "##的", "吃"], "gap": [0.8, 2e-05, 1.3],
     "pieces": ["好", "吃", ""], "generated_ids": [53, 271]}
`tokens` are the vocabulary strings of the tokens chosen, the eos last when
the row ended on it; `runner_up` the second best at each of those steps;
`gap` is logit[chosen] - logit[runner_up] in the fp32 logits argmax saw
(unk, pad and bos banned; eos forbidden before --min-new-tokens); `pieces`
what each chosen token added to the submission's text (the detokenizer's
rules for this checkpoint), so a character of the text maps to its step;
`generated_ids` the ids behind the text (the eos left out), to compare with
a reference's generated_ids.
"""
from __future__ import annotations

import numpy as np

from submit.detokenize import CheckpointTokens, text_pieces

MARGINS_SUFFIX = ".margins.jsonl"


def margins_path(output: str) -> str:
    return output + MARGINS_SUFFIX


def margin_record(row_id: str, generated: np.ndarray, runner_up: np.ndarray, gaps: np.ndarray, eos_id: int,
                  vocabulary: CheckpointTokens) -> dict:
    """generated (the eos left out, as decoding returns it) and runner_up in
    the full vocabulary; a row that ended on eos has one step more than
    generated tokens."""
    ended_on_eos = len(gaps) - len(generated)
    if ended_on_eos not in (0, 1) or len(runner_up) != len(gaps):
        raise ValueError(f"row {row_id}: {len(generated)} generated tokens but {len(gaps)} gaps "
                         f"and {len(runner_up)} runner-ups recorded")
    id_to_token = vocabulary.id_to_token
    chosen = [id_to_token[i] for i in generated.tolist() + [eos_id] * ended_on_eos]
    return {"id": row_id, "tokens": chosen, "runner_up": [id_to_token[i] for i in runner_up.tolist()],
            "gap": [float(g) for g in gaps], "pieces": text_pieces(chosen, vocabulary.special, vocabulary.added),
            "generated_ids": generated.tolist()}
