"""A WordPiece vocab.txt of a chosen size for the demo models.

There is no model hub here, so the demo builds its own vocabulary in the
layout of the real Ernie Chinese vocabularies: special tokens first, then
single characters (Chinese is tokenised one character per token), '##'
continuations for non-Chinese characters, whole frequent Latin/digit words,
and then the rest of the CJK Unified Ideographs block and its '##' forms (the
real vocabularies carry both) as filler, so the table has the real model's size (40000 for ernie-3.0-medium-zh, 18000 for unimo-text).
"""
from __future__ import annotations

import collections
import re
import unicodedata
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]

_CJK_FIRST, _CJK_LAST = 0x4E00, 0x9FA5
# Latin letters and digits group into words; everything else is a token alone
# (mirrors how BasicTokenizer splits text before WordPiece).
_WORD = re.compile(r"[a-z0-9]+")


def _normalise(text: str) -> str:
    # ErnieTokenizer lower-cases and strips accents before WordPiece.
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def build_vocab(texts: Iterable[str], size: int) -> list[str]:
    char_counts: collections.Counter[str] = collections.Counter()
    word_counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        text = _normalise(text)
        char_counts.update(ch for ch in text if not ch.isspace())
        word_counts.update(w for w in _WORD.findall(text) if len(w) > 1)

    vocab: list[str] = list(SPECIAL_TOKENS)
    present = set(vocab)

    def add(token: str) -> None:
        if token not in present and len(vocab) < size:
            present.add(token)
            vocab.append(token)

    for ch, _ in sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        add(ch)
    for ch in sorted(c for c in char_counts if not _is_cjk(c)):
        add("##" + ch)
    for word, count in sorted(word_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= 2:
            add(word)
    for prefix in ("", "##"):
        for code in range(_CJK_FIRST, _CJK_LAST + 1):
            add(prefix + chr(code))
    if len(vocab) < size:
        raise ValueError(f"cannot fill a vocab of {size} entries; built {len(vocab)}")
    return vocab


def _is_cjk(ch: str) -> bool:
    return _CJK_FIRST <= ord(ch) <= _CJK_LAST


def write_vocab(vocab: list[str], path: str, unimo_format: bool = False) -> None:
    """ERNIE's vocab.txt has one token per line; UNIMO's has `token<TAB>id`."""
    lines = [f"{token}\t{i}" for i, token in enumerate(vocab)] if unimo_format else vocab
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
