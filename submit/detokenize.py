"""Generated ids -> submission text.

WordPiece continuations ("##xx") join the previous piece; Chinese characters
join without spaces; a space separates two Latin/digit words, as in the
source text. Special tokens ([UNK], [PAD], ...) are left out.
"""
from __future__ import annotations

import re

import numpy as np

_WORD_CHARACTER = re.compile(r"[0-9A-Za-z]")


def text_pieces(tokens: list[str], special_tokens: frozenset[str]) -> list[str]:
    """What each token adds to the text ("" for a special token), so that
    "".join(pieces) is the text and a character position maps to a token."""
    pieces: list[str] = []
    started, tail = False, ""  # has any word been written; the last character written
    for token in tokens:
        if token in special_tokens:
            piece = ""
        elif token.startswith("##") and started:
            piece = token[2:]
            tail = piece[-1:] or tail
        else:
            space = started and _WORD_CHARACTER.match(tail) and _WORD_CHARACTER.match(token[:1])
            piece = " " + token if space else token
            started, tail = True, token[-1:]
        pieces.append(piece)
    return pieces


def ids_to_text(ids: np.ndarray, id_to_token: list[str], special_tokens: frozenset[str]) -> str:
    return "".join(text_pieces([id_to_token[i] for i in ids.tolist()], special_tokens))


SPECIAL_TOKENS = frozenset(("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"))


def vocab_tokens(vocab_path: str) -> list[str]:
    """The checkpoint's vocab.txt as a list: id (full vocabulary) -> token."""
    from preprocess.wordpiece import read_vocab

    token_to_id = read_vocab(vocab_path)
    id_to_token = [""] * (max(token_to_id.values()) + 1)
    for token, index in token_to_id.items():
        id_to_token[index] = token
    return id_to_token


def detokenizer(vocab_path: str):
    """ids (full vocabulary) -> text, for the checkpoint's vocab.txt."""
    id_to_token = vocab_tokens(vocab_path)
    return lambda ids: ids_to_text(np.asarray(ids), id_to_token, SPECIAL_TOKENS)
