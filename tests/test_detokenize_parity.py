"""The submission's text against PaddleNLP's own decoding, on random id
sequences over a whole small vocabulary: special tokens, [unusedN], "##"
pieces, CJK, Latin, digits and punctuation, with and without added tokens.

The reference is `tokenizer.decode(ids, skip_special_tokens=True)` of
paddlenlp 2.8.1's UNIMOTokenizer and ErnieTokenizer loaded with
from_pretrained from the checkpoint-like folder the test writes, as the
standard method writes it (only the spaces between two Latin letters/digits
kept), and with all spaces dropped.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from paddlenlp.transformers import ErnieTokenizer, UNIMOTokenizer

from scripts.demo_vocab import write_vocab
from scripts.standard_method import decoded_text as paddlenlp_text
from submit.detokenize import checkpoint_tokens, text_pieces

LATIN = list("abclvxyz") + ["ab", "iphone", "x1"]
DIGITS = list("0129") + ["12", "2023"]
PUNCTUATION = list(".,!?'#()-") + ["，", "。", "～", "n't"]
CJK = list("好吃的很不错天")
VOCAB = (["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + [f"[unused{n}]" for n in (1, 2, 3772, 6834)]
         + CJK + LATIN + DIGITS + PUNCTUATION
         + ["##" + t for t in CJK[:3] + LATIN + DIGITS[:3] + PUNCTUATION[:4]] + ["##", "###"])
# Tokens vocab.txt lacks, as tokenizer.add_tokens() saves them; ErnieTokenizer
# lower-cases the upper-case ones on loading, UNIMOTokenizer does not.
ADDED = ["[new1]", "[NEW2]", "Ok"]
ADDITIONAL_SPECIAL = ["[unused2]"]
PYTHON_TOKENIZERS = {"unimo": UNIMOTokenizer, "ernie": ErnieTokenizer}


def checkpoint_folder(folder: str, kind: str, with_added: bool) -> str:
    """A folder as save_pretrained leaves it: vocab.txt (UNIMO's or ERNIE's
    format), the tokenizer config and, with_added, added_tokens.json and an
    additional special token."""
    os.makedirs(folder)
    vocab_path = os.path.join(folder, "source_vocab.txt")
    write_vocab(VOCAB, vocab_path, unimo_format=kind == "unimo")
    PYTHON_TOKENIZERS[kind](vocab_path).save_pretrained(folder)
    os.remove(vocab_path)
    if with_added:
        with open(os.path.join(folder, "added_tokens.json"), "w", encoding="utf-8") as f:
            json.dump({token: len(VOCAB) + i for i, token in enumerate(ADDED)}, f)
        special_map = os.path.join(folder, "special_tokens_map.json")
        with open(special_map, encoding="utf-8") as f:
            named = json.load(f)
        with open(special_map, "w", encoding="utf-8") as f:
            json.dump({**named, "additional_special_tokens": ADDITIONAL_SPECIAL}, f)
    return folder


@pytest.fixture(scope="module", params=[(kind, added) for kind in PYTHON_TOKENIZERS for added in (False, True)],
                ids=lambda p: f"{p[0]}-{'added' if p[1] else 'vocab_only'}")
def tokenizers(request, tmp_path_factory):
    kind, with_added = request.param
    folder = checkpoint_folder(str(tmp_path_factory.mktemp("detokenize") / kind), kind, with_added)
    paddlenlp_tokenizer = PYTHON_TOKENIZERS[kind].from_pretrained(folder)
    assert len(paddlenlp_tokenizer) == len(VOCAB) + (len(ADDED) if with_added else 0)
    return paddlenlp_tokenizer, checkpoint_tokens(os.path.join(folder, "vocab.txt"))


def test_random_id_sequences_read_as_paddlenlp_decodes_them(tokenizers):
    paddlenlp_tokenizer, ours = tokenizers
    rng = np.random.default_rng(22)
    for _ in range(3000):
        ids = rng.integers(0, len(ours.id_to_token), size=rng.integers(0, 24)).tolist()
        text = ours.text(np.array(ids, dtype=np.int64))
        assert text == paddlenlp_text(paddlenlp_tokenizer, ids), [ours.id_to_token[i] for i in ids]
        # Spaces aside, the text is decode()'s with its default clean-up too.
        assert text.replace(" ", "") == paddlenlp_tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "")


def test_a_piece_after_an_unused_token_joins_it_and_after_an_added_token_keeps_its_hashes(tmp_path):
    folder = checkpoint_folder(str(tmp_path / "unimo"), "unimo", with_added=True)
    ours = checkpoint_tokens(os.path.join(folder, "vocab.txt"))
    paddlenlp_tokenizer = UNIMOTokenizer.from_pretrained(folder)
    tokens = ["好", "[unused3772]", "##l", "[new1]", "##l", "[unused6834]", "[SEP]", "##v", "[NEW2]", "ab", "##c",
              "[unused2]", "##x", "12"]
    ids = [ours.id_to_token.index(token) for token in tokens]
    assert paddlenlp_text(paddlenlp_tokenizer, ids) == "好[unused3772]l[new1]##l[unused6834]v[NEW2]abcx 12"
    pieces = text_pieces([ours.id_to_token[i] for i in ids], ours.special, ours.added)
    assert len(pieces) == len(ids) and "".join(pieces) == ours.text(np.array(ids))
    assert pieces[4] == "##l" and pieces[7] == "v" and pieces[6] == pieces[11] == ""
