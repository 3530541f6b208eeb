"""Generated ids -> submission text.

WordPiece continuations ("##xx") join the previous piece; Chinese characters
join without spaces; a space separates two Latin/digit words, as in the
source text. Special tokens ([UNK], [PAD], ...) are left out.
"""
from __future__ import annotations

import re

import numpy as np

_WORD_CHARACTER = re.compile(r"[0-9A-Za-z]")


def ids_to_text(ids: np.ndarray, id_to_token: list[str], special_tokens: frozenset[str]) -> str:
    pieces: list[str] = []
    for token in (id_to_token[i] for i in ids.tolist()):
        if token in special_tokens:
            continue
        if token.startswith("##") and pieces:
            pieces[-1] += token[2:]
        elif pieces and _WORD_CHARACTER.match(pieces[-1][-1:]) and _WORD_CHARACTER.match(token[:1]):
            pieces.append(" " + token)
        else:
            pieces.append(token)
    return "".join(pieces)


SPECIAL_TOKENS = frozenset(("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"))


def detokenizer(vocab_path: str):
    """ids (full vocabulary) -> text, for the checkpoint's vocab.txt."""
    from preprocess.wordpiece import read_vocab

    token_to_id = read_vocab(vocab_path)
    id_to_token = [""] * (max(token_to_id.values()) + 1)
    for token, index in token_to_id.items():
        id_to_token[index] = token
    return lambda ids: ids_to_text(np.asarray(ids), id_to_token, SPECIAL_TOKENS)
