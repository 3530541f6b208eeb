"""WordPiece ids equal to paddlenlp's ErnieTokenizer, from a compiled engine.

Two engines run the same rules: fast_tokenizer (PaddlePaddle's C++ library;
wheels for Python 3.10 and older only) and Hugging Face tokenizers (Rust;
wheels for every CPython). `FastWordPiece(backend=...)` or the environment
variable WORDPIECE_BACKEND picks one; by default fast_tokenizer where it is
installed, tokenizers elsewhere.

ErnieTokenizer (paddlenlp 2.8.1) lower-cases each character, then its
BasicTokenizer deletes control characters, spaces out CJK, splits on
whitespace, lower-cases, strips accents (NFD, then drops non-spacing marks)
and splits off every punctuation AND symbol character; greedy WordPiece
follows. Every one of those decisions rests on Unicode tables, and paddlenlp
reads Python's `unicodedata` (Unicode 13 on Python 3.10, 14 on 3.11, 15 on
3.12), while each engine's own normaliser and pre-tokeniser bring tables of
their own. So this module takes every Unicode decision in Python, with
`unicodedata`, and hands an engine only two character classes to split at and
a vocab for greedy WordPiece. Where an engine's built-in Bert normaliser and
pre-tokeniser differ from ErnieTokenizer (measured on every code point, in
three contexts, and on the 16.7k demo reviews):

1. Symbols. BasicTokenizer splits off each Unicode symbol (category S*, e.g.
   '～' '￥' '＄' '∶' '×') and eight listed code points ('²' 'º' 'µ' 'ŋ' '〇' ...);
   both engines' Bert pre-tokenisers split only punctuation, so '没有～～'
   became '～' '##～' and '￥6999' became '￥' '##6' '##9' ... (64 of 16.7k
   demo reviews). The isolated class holds punctuation, symbols and CJK, as
   BasicTokenizer judges them, on the rewritten (lower-cased) text, as
   BasicTokenizer's test does: 'Ŋ' (lower-cases to the listed 'ŋ') is split
   and 'Ø' (lower-cases to the unlisted 'ø') is not.
2. Unicode versions. fast_tokenizer's ICU and tokenizers' Rust tables are
   newer or older than Python's: letters added in Unicode 14 are unassigned
   (deleted) to paddlenlp on Python 3.10, planes 15-16 are private use, which
   fast_tokenizer even folds onto ASCII (U+100021 came out as '!'); U+1734 is
   a non-spacing mark (dropped) in Unicode 13 and a spacing one in 14. So
   deletion, lower-casing and accent stripping happen in Python, and the
   engines get neither a normaliser nor their own whitespace or punctuation
   rules. (ErnieTokenizer's whitespace is what `str.split()` splits at, which
   includes U+2028 and U+2029; its CJK ranges are not tokenizers' own.)
3. A crash. fast_tokenizer lower-cases in place without fixing its offset
   table, so a letter whose lower case has another UTF-8 length ('Ⱦ' -> 'ⱦ',
   'K' (Kelvin) -> 'k', 25 such code points) corrupted memory; batches
   holding 'Ⱦ' aborted the process ('basic_string::substr') in about half the
   runs. Lower-casing per character in Python, as ErnieTokenizer does, leaves
   no engine anything to lower-case.
4. Special-token strings in the text ('[UNK]', '[CLS]', ...) are plain text to
   `ErnieTokenizer(vocab_file=...)` but kept whole by
   `ErnieTokenizer.from_pretrained(dir)`; `keep_special_tokens_whole` picks
   one. ErnieFastTokenizer always keeps them whole, so it is not used.
5. fast_tokenizer's own vocab.txt reader skips blank lines and trims spaces,
   shifting ids, and a bare fast_tokenizer.Tokenizer pads and truncates (512)
   by default; the vocab is read here as paddlenlp reads it, and both are off.
"""
from __future__ import annotations

import functools
import io
import operator
import os
import re
import unicodedata
from typing import Callable, Sequence

import numpy as np

# paddlenlp.transformers.tokenizer_utils._is_symbol: besides category S*, these
# code points count as symbols (soft hyphen, '²', 'º', '〇', 'µ', 'Ø', 'ŋ', 'Ʊ').
_EXTRA_SYMBOLS = [0x00AD, 0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1]
# _is_punctuation: all non-alphanumeric ASCII counts, besides category P*.
_ASCII_PUNCTUATION = [(33, 47), (58, 64), (91, 96), (123, 126)]
# BasicTokenizer._is_chinese_char (tokenizers' BertNormalizer starts its sixth range at 0x2B920).
_CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
_MAX_INPUT_CHARS_PER_WORD = 100  # WordpieceTokenizer's default: longer words become [UNK]
_SPECIAL_TOKENS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
_N_CODE_POINTS = 0x110000
_FIRST_ASTRAL = 0x10000

BACKEND_VARIABLE = "WORDPIECE_BACKEND"


def read_vocab(vocab_path: str) -> dict[str, int]:
    """token -> id exactly as paddlenlp reads vocab.txt: ERNIE's one token per
    line (line number = id), or UNIMO's `token<TAB>id` lines (UNIMOTokenizer's
    load_vocabulary), recognised by every line having that form."""
    with io.open(vocab_path, "r", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    pairs = [line.split("\t") for line in lines]
    if lines and all(len(p) == 2 and p[1].isdigit() for p in pairs):
        return {token: int(index) for token, index in pairs}
    return {line: index for index, line in enumerate(lines)}


class FastWordPiece:
    """Texts -> WordPiece ids (no [CLS]/[SEP], no truncation), equal to ErnieTokenizer's.

    Not to be confused with fast_tokenizer.models.FastWordPiece, which it does
    not use (its built-in pre-tokenisation counts word length in bytes).
    Cheap to build (a vocab read; Unicode tables, about 0.5 s, once a process)
    and picklable: a worker process rebuilds it from the constructor arguments,
    on the same backend. `backend` is "fast_tokenizer" or "tokenizers"; None
    reads WORDPIECE_BACKEND, else takes fast_tokenizer if it is installed.
    `num_threads` sets the engine's batch thread count, which is global to the
    process; None leaves it as it is (fast_tokenizer: 1 unless someone changed
    it; tokenizers: every core unless TOKENIZERS_PARALLELISM says otherwise).
    """

    def __init__(
        self,
        vocab_path: str,
        do_lower_case: bool = True,
        keep_special_tokens_whole: bool = False,
        num_threads: int | None = None,
        backend: str | None = None,
    ):
        self.backend = choose_backend(backend)
        self._init_args = (vocab_path, do_lower_case, keep_special_tokens_whole, num_threads, self.backend)
        vocab = read_vocab(vocab_path)
        missing = [tok for tok in _SPECIAL_TOKENS.values() if tok not in vocab]
        if missing:
            raise ValueError(
                f"{vocab_path}: special token(s) {missing} not found; an Ernie vocab.txt "
                f"has one token per line and must contain {list(_SPECIAL_TOKENS.values())}."
            )
        self.vocab_size = len(vocab)
        self.unk_id = vocab[_SPECIAL_TOKENS["unk"]]
        self.sep_id = vocab[_SPECIAL_TOKENS["sep"]]
        self.pad_id = vocab[_SPECIAL_TOKENS["pad"]]
        self.cls_id = vocab[_SPECIAL_TOKENS["cls"]]
        self.mask_id = vocab[_SPECIAL_TOKENS["mask"]]

        self._rewrite = _text_rewriter(do_lower_case)
        self._encode_batch = _ENGINES[self.backend](vocab, num_threads)

        self._special_token_split: re.Pattern | None = None
        self._special_token_ids: dict[str, int] = {}
        if keep_special_tokens_whole:
            self._special_token_ids = {tok: vocab[tok] for tok in _SPECIAL_TOKENS.values()}
            alternatives = sorted(self._special_token_ids, key=len, reverse=True)
            self._special_token_split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    def __reduce__(self):
        # Neither engine's tokenizer pickles; rebuilding it is cheap.
        return (type(self), self._init_args)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One int64 id array per text, in order."""
        if self._special_token_split is None:
            return self._encode_plain(texts)
        return self._encode_keeping_special_tokens(texts)

    def _encode_plain(self, texts: Sequence[str]) -> list[np.ndarray]:
        rewrite = self._rewrite
        try:
            rewritten = [rewrite(text) for text in texts]
        except TypeError:
            raise _not_a_string_error(texts) from None
        return [np.array(ids, dtype=np.int64) for ids in self._encode_batch(rewritten)]

    def _encode_keeping_special_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        # As PretrainedTokenizer.tokenize after from_pretrained: cut the raw text at
        # special-token strings and tokenise the pieces between them on their own.
        split = self._special_token_split.split
        try:
            # Every special token starts with '['; most texts have none.
            pieces_per_text = [split(text) if "[" in text else [text] for text in texts]
        except TypeError:
            raise _not_a_string_error(texts) from None
        between_ids = iter(self._encode_plain([p for pieces in pieces_per_text for p in pieces[::2]]))
        out = []
        for pieces in pieces_per_text:
            parts = [
                next(between_ids) if k % 2 == 0 else np.array([self._special_token_ids[piece]], dtype=np.int64)
                for k, piece in enumerate(pieces)
            ]
            out.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return out


def _not_a_string_error(texts: Sequence) -> TypeError:
    bad = next(i for i, text in enumerate(texts) if not isinstance(text, str))
    return TypeError(
        f"texts[{bad}] is {type(texts[bad]).__name__} ({texts[bad]!r}), expected str; "
        "fill or drop missing text before tokenising."
    )


# --- Engines: each gets the vocab and the two split classes, and returns
# texts -> id lists. Nothing else differs between them.

EncodeBatch = Callable[[list], list]


def choose_backend(requested: str | None = None) -> str:
    """The engine to use: `requested`, else $WORDPIECE_BACKEND, else
    fast_tokenizer where it is installed (Python 3.10), else tokenizers."""
    name = requested or os.environ.get(BACKEND_VARIABLE) or None
    if name is None:
        try:
            import fast_tokenizer  # noqa: F401
        except ImportError:
            return "tokenizers"
        return "fast_tokenizer"
    if name not in _ENGINES:
        raise ValueError(f"tokenizer backend {name!r} (argument or ${BACKEND_VARIABLE}): "
                         f"expected one of {sorted(_ENGINES)}")
    return name


def _fast_tokenizer_engine(vocab: dict[str, int], num_threads: int | None) -> EncodeBatch:
    from fast_tokenizer import C, Tokenizer, get_thread_num, set_thread_num
    from fast_tokenizer.models import WordPiece
    from fast_tokenizer.normalizers import SequenceNormalizer
    from fast_tokenizer.pretokenizers import SequencePreTokenizer, SplitPreTokenizer

    whitespace, isolated = _split_classes()
    # handle_chinese_chars=True means "always prefix continuation pieces with
    # ##"; False would prefix only ASCII-alphanumeric pieces.
    tokenizer = Tokenizer(WordPiece(vocab, _SPECIAL_TOKENS["unk"], _MAX_INPUT_CHARS_PER_WORD, "##", True))
    tokenizer.normalizer = SequenceNormalizer([])  # does nothing, but without one every text gives no ids
    tokenizer.pretokenizer = SequencePreTokenizer([
        SplitPreTokenizer(whitespace + "+", int(C.SplitMode.REMOVED), False),
        SplitPreTokenizer(isolated, int(C.SplitMode.ISOLATED), False),
    ])
    tokenizer.disable_padding()
    tokenizer.disable_truncation()
    if num_threads is not None and num_threads != get_thread_num():
        set_thread_num(num_threads)
    return lambda texts: [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def _tokenizers_engine(vocab: dict[str, int], num_threads: int | None) -> EncodeBatch:
    import tokenizers
    from tokenizers import models, pre_tokenizers

    whitespace, isolated = _split_classes()
    tokenizer = tokenizers.Tokenizer(models.WordPiece(
        vocab=vocab, unk_token=_SPECIAL_TOKENS["unk"], max_input_chars_per_word=_MAX_INPUT_CHARS_PER_WORD,
        continuing_subword_prefix="##"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(whitespace + "+"), behavior="removed"),
        pre_tokenizers.Split(tokenizers.Regex(isolated), behavior="isolated"),
    ])
    if num_threads is not None:
        # tokenizers reads both at run time, RAYON_NUM_THREADS only until its
        # thread pool first starts in this process.
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if num_threads > 1 else "false"
        os.environ["RAYON_NUM_THREADS"] = str(num_threads)
    # encode_batch_fast skips the character offsets, which nothing here reads:
    # 20-25% less time on the demo reviews, the same ids.
    return lambda texts: [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


_ENGINES: dict[str, Callable[[dict[str, int], int | None], EncodeBatch]] = {
    "fast_tokenizer": _fast_tokenizer_engine,
    "tokenizers": _tokenizers_engine,
}
BACKENDS = tuple(_ENGINES)


# --- Unicode tables, from the running Python's `unicodedata`, which is what
# paddlenlp consults.


@functools.lru_cache(maxsize=None)
def _unicode_categories() -> tuple[np.ndarray, np.ndarray]:
    """First and second letter of unicodedata.category for every code point."""
    joined = "".join(map(unicodedata.category, map(chr, range(_N_CODE_POINTS)))).encode("ascii")
    letters = np.frombuffer(joined, dtype=np.uint8).reshape(-1, 2)
    return letters[:, 0], letters[:, 1]


def _deleted_mask(do_lower_case: bool) -> np.ndarray:
    """Code points ErnieTokenizer deletes from a text."""
    first, second = _unicode_categories()
    # BasicTokenizer._clean_text: NUL, U+FFFD and categories C* except \t \n \r.
    deleted = first == ord("C")
    deleted[[0x09, 0x0A, 0x0D]] = False
    deleted[[0x00, 0xFFFD]] = True
    if do_lower_case:
        # ErnieTokenizer drops every Mn after lower() and NFD. Dropping raw Mn
        # first, and then what NFD splits off, gives the same text: both act
        # per character, no Mn lower-cases or decomposes to a non-Mn, and
        # canonical reordering keeps the relative order of what remains.
        deleted |= _nonspacing_mask()
    return deleted


def _nonspacing_mask() -> np.ndarray:
    first, second = _unicode_categories()
    return (first == ord("M")) & (second == ord("n"))


def _cased_mask() -> np.ndarray:
    """Code points whose Python lower() differs from themselves."""
    first, _ = _unicode_categories()
    candidates = np.flatnonzero(first != ord("C"))  # C* has no case; skips 0.8M code points
    chars = list(map(chr, candidates.tolist()))
    cased = np.zeros(_N_CODE_POINTS, dtype=bool)
    cased[candidates] = np.fromiter(map(operator.ne, chars, map(str.lower, chars)), dtype=bool, count=len(chars))
    return cased


@functools.lru_cache(maxsize=None)
def _text_rewriter(do_lower_case: bool) -> Callable[[str], str]:
    """text -> text with ErnieTokenizer's deletions applied and, with
    do_lower_case, its per-character lower-casing and accent stripping."""
    deleted = _deleted_mask(do_lower_case)

    def rewrite_run(match: re.Match) -> str:
        # Per character, like ErnieTokenizer's first lower-casing pass; lower()
        # of the whole run would turn a final 'Σ' into 'ς' where it gives 'σ'.
        return "".join("" if deleted[ord(ch)] else ch.lower() for ch in match.group())

    if not do_lower_case:
        return _substituter(deleted, "")
    rewrite = _substituter(deleted | _cased_mask(), rewrite_run)
    drop_nonspacing = _substituter(_nonspacing_mask(), "")

    def rewrite_and_strip_accents(text: str) -> str:
        # Marks come from NFD and from lower() itself ('İ' -> 'i' + U+0307).
        return drop_nonspacing(unicodedata.normalize("NFD", rewrite(text)))

    return rewrite_and_strip_accents


def _substituter(mask: np.ndarray, replacement) -> Callable[[str], str]:
    """text -> text with every run of mask's characters passed to re.sub's replacement."""
    # Python's re looks a character class up in a bitmap only when the whole
    # class lies in the BMP; astral ranges are tried one by one (60x slower on
    # the demo reviews), so they run only on texts that have an astral char.
    in_bmp = re.compile(_python_char_class(_code_point_ranges(mask, 0, _FIRST_ASTRAL)) + "+")
    astral = re.compile(_python_char_class(_code_point_ranges(mask, _FIRST_ASTRAL)) + "+")

    def substitute(text: str) -> str:
        text = in_bmp.sub(replacement, text)
        return astral.sub(replacement, text) if _ANY_ASTRAL.search(text) else text

    return substitute


@functools.lru_cache(maxsize=None)
def _split_classes() -> tuple[str, str]:
    """The engines' two character classes: where ErnieTokenizer splits a
    rewritten text and drops the separator (what `str.split()` splits at,
    which covers BasicTokenizer's whitespace and adds U+2028, U+2029), and
    the characters it puts in a piece of their own (punctuation, symbols, CJK)."""
    first, _ = _unicode_categories()
    whitespace = np.zeros(_N_CODE_POINTS, dtype=bool)
    # Every str.isspace() character is in Z* or below U+0100.
    candidates = np.flatnonzero((first == ord("Z")) | (np.arange(_N_CODE_POINTS) < 0x100))
    whitespace[candidates] = [chr(cp).isspace() for cp in candidates.tolist()]
    isolated = (first == ord("S")) | (first == ord("P"))
    isolated[_EXTRA_SYMBOLS] = True
    for lo, hi in _ASCII_PUNCTUATION + _CJK_RANGES:
        isolated[lo:hi + 1] = True
    return _engine_char_class(_code_point_ranges(whitespace)), _engine_char_class(_code_point_ranges(isolated))


def _code_point_ranges(mask: np.ndarray, lo: int = 0, hi: int = _N_CODE_POINTS) -> list[tuple[int, int]]:
    """Inclusive (first, last) runs of True in mask[lo:hi], as code points."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[lo:hi].astype(np.int8), [0]])))
    return [(lo + int(a), lo + int(b) - 1) for a, b in zip(edges[0::2], edges[1::2])]


def _engine_char_class(ranges: list[tuple[int, int]]) -> str:
    # RE2 (fast_tokenizer) and Oniguruma (tokenizers) both read \x{...} as a
    # code point, astral ones included, inside a class.
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"


def _python_char_class(ranges: list[tuple[int, int]]) -> str:
    return "[" + "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"


_ANY_ASTRAL = re.compile(_python_char_class([(_FIRST_ASTRAL, _N_CODE_POINTS - 1)]))
