"""Generated ids -> submission text, as PaddleNLP 2.8.1 decodes them.

The text is the checkpoint tokenizer's `decode(ids, skip_special_tokens=True)`
(PretrainedTokenizer._decode in paddlenlp/transformers/tokenizer_utils.py, with
UNIMOTokenizer's and ErnieTokenizer's convert_tokens_to_string): special tokens
are dropped, the rest is cut into runs at every added token (added_tokens.json:
tokens vocab.txt lacks; each stands alone), and a run is
`" ".join(run).replace(" ##", "")`. So a "##" piece joins whatever vocab.txt
token comes before it in its run ([unusedN] included: `[unused7]l`) and keeps
its "##" only at a run's start: the text's first token, or the token right
after an added token (`[new]##l`). PaddleNLP puts a space between every two
tokens; the submission keeps one only between two Latin letters/digits, as in
the source text, so Chinese characters join (clean_up_tokenization only ever
removes spaces). Tokens that are empty or hold whitespace are not modelled.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np

_WORD_CHARACTER = re.compile(r"[0-9A-Za-z]")
_SPACE_NOT_BETWEEN_WORDS = re.compile(r"(?<![0-9A-Za-z]) | (?![0-9A-Za-z])")

SPECIAL_TOKENS = frozenset(("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"))


def text_pieces(tokens: list[str], special_tokens: frozenset[str],
                added_tokens: frozenset[str] = frozenset()) -> list[str]:
    """What each token adds to the text ("" for a special token), so that
    "".join(pieces) is the text and a character position maps to a token."""
    pieces: list[str] = []
    joins, tail = False, ""  # does a "##" piece join the token before it; the last character written
    for token in tokens:
        if token in special_tokens:
            piece = ""
        elif token.startswith("##") and joins:
            piece = token[2:]
            tail = piece[-1:] or tail
        else:
            space = _WORD_CHARACTER.match(tail) and _WORD_CHARACTER.match(token[:1])
            piece = " " + token if space else token
            joins, tail = token not in added_tokens, token[-1:]
        pieces.append(piece)
    return pieces


def submission_spacing(decoded: str) -> str:
    """PaddleNLP's decoded text (clean_up_tokenization_spaces=False) with the
    submission's spaces: only those between two Latin letters/digits."""
    return _SPACE_NOT_BETWEEN_WORDS.sub("", decoded)


@dataclass(frozen=True)
class CheckpointTokens:
    """What decoding needs from a checkpoint's tokenizer files."""
    id_to_token: list[str]      # vocab.txt, then added_tokens.json
    special: frozenset[str]     # the tokenizer's all_special_tokens: left out of the text
    added: frozenset[str]       # added tokens that are not special: each ends a "##" run

    def text(self, ids: np.ndarray) -> str:
        return "".join(text_pieces([self.id_to_token[i] for i in np.asarray(ids).tolist()], self.special,
                                   self.added))


def _json_or_empty(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            found = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); PaddleNLP's from_pretrained could not read it "
                             f"either") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(found).__name__}")
    return found


def checkpoint_tokens(vocab_path: str) -> CheckpointTokens:
    """vocab.txt and, beside it, what from_pretrained adds: special tokens from
    tokenizer_config.json and special_tokens_map.json (which wins), tokens
    of added_tokens.json (a token vocab.txt holds is never added)."""
    from preprocess.wordpiece import read_vocab

    folder = os.path.dirname(vocab_path)
    token_to_id = read_vocab(vocab_path)
    config = _json_or_empty(os.path.join(folder, "tokenizer_config.json"))
    named = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]", "bos_token": None, "eos_token": None, "additional_special_tokens": []}
    for source in (config, _json_or_empty(os.path.join(folder, "special_tokens_map.json"))):
        named.update((key, value) for key, value in source.items() if key in named and value is not None)
    special = set()
    for value in named.values():
        for token in value if isinstance(value, list) else [value]:
            if token is not None:
                special.add(token["content"] if isinstance(token, dict) else str(token))
    # add_tokens lower-cases when the tokenizer has a true do_lower_case
    # attribute: ErnieTokenizer keeps one, UNIMOTokenizer does not.
    lower_case = config.get("do_lower_case", True) and config.get("tokenizer_class") != "UNIMOTokenizer"
    added = {}
    for token, index in sorted(_json_or_empty(os.path.join(folder, "added_tokens.json")).items(),
                               key=lambda item: item[1]):
        if token not in special and lower_case:
            token = token.lower()
        if token not in token_to_id:
            added[token] = int(index)
    id_to_token = [""] * (max([*token_to_id.values(), *added.values()]) + 1)
    for token, index in {**token_to_id, **added}.items():
        id_to_token[index] = token
    return CheckpointTokens(id_to_token, frozenset(special), frozenset(added) - special)
