"""FastWordPiece + frame_single_or_pair must give exactly paddlenlp ErnieTokenizer's ids,
on each WordPiece engine installed (the `wordpiece_backend` fixture).

The reference is `ErnieTokenizer(vocab_file=...)`, paddlenlp 2.8.1, and, for
keep_special_tokens_whole=True, `ErnieTokenizer.from_pretrained(dir)`. Edge
cases run against two vocabs: the demo one, and one that also holds every edge
character (so a difference cannot hide behind [UNK]). The sweep over every
code point (about 10 minutes) is too slow for this suite and was run by hand.
"""
from __future__ import annotations

import pickle
import unicodedata
import warnings

import numpy as np
import pytest
from paddlenlp.transformers import ErnieTokenizer

from preprocess.framing import frame_single_or_pair
from preprocess.wordpiece import BACKEND_VARIABLE, FastWordPiece, _text_rewriter, choose_backend
from scripts.demo_vocab import build_vocab, write_vocab

EDGE_CASES = [
    # Unicode symbols (category S*), which ErnieTokenizer splits off and
    # stock fast tokenizers glue to the neighbouring word.
    "比分０∶２", "～～～", "没有～～早上", "4～5分", "￥6999元", "价格200＄，", "远了｀｀", "a×b÷c±d",
    "1°C", "©®™", "¥100 £5 €3", "a^b`c|d~e", "≠≤≥∞", "♥♡★☆", "→←↑↓",
    # Characters ErnieTokenizer treats as symbols although they are letters/digits,
    # and letters that only lower-case into (or out of) that list.
    "x²+y²", "1º", "µm", "ŋŊ", "〇一二", "ØÆ", "Ʊʊ", "soft\u00adhyphen",
    # Musical symbols: NFD gives a symbol followed by a combining stem (Mc).
    "\U0001d15f\U0001d160x", "a\U0001d15eb",
    # Full-width letters, digits and punctuation.
    "ＡＢＣ１２３", "ｉＰｈｏｎｅ１２！", "（全角）【括号】", "１２：３０",
    # Emoji, flags, skin tones, ZWJ sequences, astral CJK.
    "好评👍👍", "😂😂😂哈哈", "🇨🇳", "👍🏽", "👨\u200d👩\u200d👧", "𠀀𠮷野家", "❤️",
    # Accented and other non-ASCII Latin, lower-casing of non-ASCII.
    "café naïve résumé", "ÀÉÎÕÜ", "İstanbul", "ΟΔΟΣ ΣΑ", "ǅungla", "Straße ẞ", "ﬁx ﬀ", "Ⅻ ① ⑴",
    "e\u0301 a\u0300\u0301 o\u0308", "\u1734x", "Ωmega Kelvin K Å",
    # Letters whose lower case has another UTF-8 length (fast_tokenizer's crash).
    "ȺȾ ⱥⱦ", "\u212a\u2126\u212b", "\ua78d\ua7aa\ua7b0 ⱢⱤⱭ",
    # Whitespace variants, control and zero-width characters.
    "a\u3000b", "a\u00a0b", "a\u2028b\u2029c", "a\tb\nc\rd", "x\u200by\u200cz\u200dw\ufeffv",
    "a\x00b\x01c\x7fd", "a\x85b", "a\x1cb\x1fc", "a\ufffdb", "\u202ertl\u202c",
    # Private use (BMP and planes 15-16) and characters unassigned in Python's Unicode 13.
    "a\ue000b", "x\U00100021y", "x\U000f0041y", "x\u0870y", "x\u061dy",
    # Other scripts.
    "こんにちは カタカナ", "한국어 텍스트", "Привет мир", "مرحبا بالعالم", "ภาษาไทย", "नमस्ते",
    # Special-token strings are plain text to ErnieTokenizer(vocab_file=...).
    "[UNK]", "a[CLS]b", "[cls]", "[MASK][PAD]", "[UN\x00K]", "[[SEP]]",
    # WordPiece: 100 characters is one word, 101 is [UNK] (counted in characters).
    "a" * 100, "a" * 101, "ж" * 100, "ж" * 101, "ａ" * 100, "ａ" * 101, "x" + "ｚ" * 99,
    "supercalifragilisticexpialidocious", "qqqqzzzz", "abc123def456",
    # Empty or empty after cleaning.
    "", " ", "\u3000\u00a0\t\n", "\x00\x01", "\u200b", "\u0301",
    # Mixed, as in reviews.
    "Win7系统，4G内存～性价比高！！！", "快递３天到...还行吧～", "ＯＫ啦^_^", "(*^__^*) 嘻嘻……",
]


def _slow_ids(tok: ErnieTokenizer, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(tok.tokenize(text))


@pytest.fixture(scope="module")
def slow_tokenizer(demo_vocab_file) -> ErnieTokenizer:
    return ErnieTokenizer(vocab_file=demo_vocab_file)


@pytest.fixture(scope="module")
def wordpiece(demo_vocab_file, wordpiece_backend) -> FastWordPiece:
    return FastWordPiece(demo_vocab_file, backend=wordpiece_backend)


@pytest.fixture(scope="module")
def edge_vocab_file(tmp_path_factory, demo_texts) -> str:
    path = tmp_path_factory.mktemp("edge_vocab") / "vocab.txt"
    write_vocab(build_vocab(demo_texts + EDGE_CASES, 40000), str(path))
    return str(path)


def test_first_2000_reviews_single_text(demo_texts, slow_tokenizer, wordpiece):
    texts = demo_texts[:2000]
    ids = wordpiece.encode(texts)
    n_truncated = 0
    for text, wordpiece_ids in zip(texts, ids):
        expected = slow_tokenizer(text, max_length=128, truncation=True)
        input_ids, token_type_ids, was_truncated = frame_single_or_pair(
            wordpiece_ids, None, 128, wordpiece.cls_id, wordpiece.sep_id
        )
        assert input_ids.tolist() == expected["input_ids"], text
        assert token_type_ids.tolist() == expected["token_type_ids"], text
        assert was_truncated == (len(wordpiece_ids) + 2 > 128)
        n_truncated += was_truncated
    assert n_truncated > 0, "no review reached 128 tokens; the truncation path went untested"


@pytest.mark.parametrize("max_seq_len", [24, 128])
def test_review_pairs(demo_texts, slow_tokenizer, wordpiece, max_seq_len):
    firsts, seconds = demo_texts[0:600:2], demo_texts[1:600:2]
    ids_a, ids_b = wordpiece.encode(firsts), wordpiece.encode(seconds)
    for a, b, wa, wb in zip(firsts, seconds, ids_a, ids_b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paddlenlp warns on every longest_first pair truncation
            expected = slow_tokenizer(a, text_pair=b, max_length=max_seq_len, truncation=True)
        input_ids, token_type_ids, _ = frame_single_or_pair(
            wa, wb, max_seq_len, wordpiece.cls_id, wordpiece.sep_id
        )
        assert input_ids.tolist() == expected["input_ids"], (a, b)
        assert token_type_ids.tolist() == expected["token_type_ids"], (a, b)


@pytest.mark.parametrize("vocab", ["demo", "edge"])
@pytest.mark.parametrize("do_lower_case", [True, False])
def test_edge_cases(demo_vocab_file, edge_vocab_file, wordpiece_backend, vocab, do_lower_case):
    vocab_file = demo_vocab_file if vocab == "demo" else edge_vocab_file
    slow = ErnieTokenizer(vocab_file=vocab_file, do_lower_case=do_lower_case)
    fast = FastWordPiece(vocab_file, do_lower_case=do_lower_case, backend=wordpiece_backend)
    got = fast.encode(EDGE_CASES)
    mismatches = [
        (text, slow.tokenize(text), slow.convert_ids_to_tokens(ids.tolist()))
        for text, ids in zip(EDGE_CASES, got)
        if ids.tolist() != _slow_ids(slow, text)
    ]
    assert not mismatches


def test_edge_vocab_knows_the_edge_characters(edge_vocab_file):
    # Guards the edge test's premise: these would all be [UNK] with the demo vocab.
    slow = ErnieTokenizer(vocab_file=edge_vocab_file)
    for text in ["～", "ŋ", "ж" * 100, "👍", "𠀀", "ａ"]:
        assert slow.unk_token not in slow.tokenize(text), text


def test_special_tokens_kept_whole_like_from_pretrained(tmp_path, edge_vocab_file, wordpiece_backend):
    ErnieTokenizer(vocab_file=edge_vocab_file).save_pretrained(str(tmp_path))
    slow = ErnieTokenizer.from_pretrained(str(tmp_path))
    fast = FastWordPiece(edge_vocab_file, keep_special_tokens_whole=True, backend=wordpiece_backend)
    texts = EDGE_CASES + ["[UNK]好评[SEP]差评[PAD]", " [CLS] x ", "[MASK]"]
    for text, ids in zip(texts, fast.encode(texts)):
        assert ids.tolist() == _slow_ids(slow, text), text


def test_special_ids_come_from_the_vocab(tmp_path, demo_texts, wordpiece_backend):
    # Special tokens away from their usual rows, a blank line and a token with
    # trailing spaces: fast_tokenizer's own vocab reader would renumber these.
    vocab = build_vocab(demo_texts[:500], 3000)
    specials = vocab[:5]
    vocab = vocab[5:]
    vocab[100:100] = specials[::-1]
    vocab[50:50] = ["", "trailing  "]
    path = tmp_path / "vocab.txt"
    write_vocab(vocab, str(path))
    slow = ErnieTokenizer(vocab_file=str(path))
    fast = FastWordPiece(str(path), backend=wordpiece_backend)
    assert (fast.cls_id, fast.sep_id, fast.pad_id, fast.unk_id, fast.mask_id) == tuple(
        slow.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"])
    )
    assert fast.cls_id != 1
    texts = demo_texts[:200] + EDGE_CASES
    for text, ids in zip(texts, fast.encode(texts)):
        assert ids.tolist() == _slow_ids(slow, text), text


def test_longest_first_truncation_grid(slow_tokenizer):
    # Every small length combination, against paddlenlp's own framing code.
    cls_id, sep_id = slow_tokenizer.cls_token_id, slow_tokenizer.sep_token_id
    for len_a in range(10):
        for len_b in [None, *range(10)]:
            a = list(range(10, 10 + len_a))
            b = None if len_b is None else list(range(100, 100 + len_b))
            for max_seq_len in range(3, 25):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = slow_tokenizer.prepare_for_model(
                        a, b, max_length=max_seq_len, truncation=True, verbose=False
                    )
                input_ids, token_type_ids, was_truncated = frame_single_or_pair(
                    np.array(a, dtype=np.int64),
                    None if b is None else np.array(b, dtype=np.int64),
                    max_seq_len,
                    cls_id,
                    sep_id,
                )
                assert input_ids.tolist() == expected["input_ids"], (len_a, len_b, max_seq_len)
                assert token_type_ids.tolist() == expected["token_type_ids"], (len_a, len_b, max_seq_len)
                assert was_truncated == (len_a + (len_b or 0) + (2 if b is None else 3) > max_seq_len)


def test_output_types_and_pickling(wordpiece, demo_texts):
    ids = wordpiece.encode(demo_texts[:50] + [""])
    assert all(x.dtype == np.int64 and x.ndim == 1 for x in ids)
    assert len(ids[-1]) == 0
    clone = pickle.loads(pickle.dumps(wordpiece))
    assert clone.backend == wordpiece.backend
    assert all(np.array_equal(x, y) for x, y in zip(ids, clone.encode(demo_texts[:50] + [""])))


def test_rejects_non_text_with_its_position(wordpiece):
    with pytest.raises(TypeError, match=r"texts\[1\] is float"):
        wordpiece.encode(["好", float("nan")])


def test_rejects_vocab_without_special_tokens(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[CLS]\n[SEP]\n[UNK]\n好\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        FastWordPiece(str(path))


def test_nothing_left_for_an_engine_to_lower_case():
    # fast_tokenizer corrupts memory when its lower-casing changes a character's
    # UTF-8 length ('Ⱦ' -> 'ⱦ'), and engines' case tables are not Python's: the
    # Python rewrite lower-cases everything.
    assigned = (chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)
    every_char = "".join(ch for ch in assigned if unicodedata.category(ch)[0] != "C")  # C* has no case
    rewritten = _text_rewriter(True)(every_char)
    assert rewritten.lower() == rewritten
    assert "Ⱦ" not in rewritten and "ⱦ" in rewritten and "i" in rewritten


def test_backend_choice(monkeypatch, demo_vocab_file):
    monkeypatch.setenv(BACKEND_VARIABLE, "tokenizers")
    assert choose_backend() == "tokenizers"
    assert choose_backend("fast_tokenizer") == "fast_tokenizer"  # the argument wins
    monkeypatch.setenv(BACKEND_VARIABLE, "sentencepiece")
    with pytest.raises(ValueError, match=r"'sentencepiece'.*expected one of \['fast_tokenizer', 'tokenizers'\]"):
        FastWordPiece(demo_vocab_file)
    monkeypatch.delenv(BACKEND_VARIABLE)
    try:
        import fast_tokenizer  # noqa: F401
        installed = "fast_tokenizer"
    except ImportError:
        installed = "tokenizers"
    assert choose_backend() == installed
