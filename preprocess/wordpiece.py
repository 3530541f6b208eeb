"""WordPiece ids from the C++ fast_tokenizer, identical to paddlenlp's ErnieTokenizer.

ErnieTokenizer (paddlenlp 2.8.1) lower-cases each character, then its
BasicTokenizer drops control characters, spaces out CJK, splits on
whitespace, strips accents and splits off every punctuation AND symbol
character; greedy WordPiece follows. fast_tokenizer's BertNormalizer +
BertPreTokenizer + WordPiece do the same except where we measured otherwise
(every code point, in three contexts, and the 16.7k demo reviews):

1. Symbols. BasicTokenizer splits off each Unicode symbol (category S*, e.g.
   '～' '￥' '＄' '∶' '×') and eight listed code points ('²' 'º' 'µ' 'ŋ' '〇' ...);
   BertPreTokenizer splits only punctuation, so '没有～～' became '～' '##～'
   and '￥6999' became '￥' '##6' '##9' ... (64 of 16.7k demo reviews). Fixed
   by a Split pre-tokenizer isolating exactly those characters. It runs on the
   normalised text, as BasicTokenizer's test does, so 'Ŋ' (lower-cases to the
   listed 'ŋ') is split and 'Ø' (lower-cases to the unlisted 'ø') is not.
2. Characters Python's Unicode 13 tables call control, unassigned or private
   use (BasicTokenizer deletes them) but fast_tokenizer's newer ICU does not:
   letters added in Unicode 14, and planes 15-16, which fast_tokenizer even
   folds onto ASCII (U+100021 came out as '!'). Fixed by deleting in Python
   what BasicTokenizer deletes, judged by the same `unicodedata` paddlenlp
   uses; when lower-casing that includes non-spacing marks (U+1734 is Mn in
   Unicode 13, Mc to ICU).
3. A crash. fast_tokenizer lower-cases in place without fixing its offset
   table, so a letter whose lower case has another UTF-8 length ('Ⱦ' -> 'ⱦ',
   'K' (Kelvin) -> 'k', 25 such code points) corrupts memory; batches holding
   'Ⱦ' aborted the process ('basic_string::substr') in about half the runs.
   Fixed by lower-casing every cased character in Python first, per
   character as ErnieTokenizer does, which leaves fast_tokenizer nothing to
   lower-case.
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
import re
import unicodedata
from typing import Callable, Sequence

import numpy as np
from fast_tokenizer import C, Tokenizer, get_thread_num, set_thread_num
from fast_tokenizer.models import WordPiece
from fast_tokenizer.normalizers import BertNormalizer
from fast_tokenizer.pretokenizers import BertPreTokenizer, SequencePreTokenizer, SplitPreTokenizer

# paddlenlp.transformers.tokenizer_utils._is_symbol: besides category S*, these
# code points count as symbols (soft hyphen, '²', 'º', '〇', 'µ', 'Ø', 'ŋ', 'Ʊ').
_EXTRA_SYMBOLS = [0x00AD, 0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1]
_MAX_INPUT_CHARS_PER_WORD = 100  # WordpieceTokenizer's default: longer words become [UNK]
_SPECIAL_TOKENS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
_N_CODE_POINTS = 0x110000
_FIRST_ASTRAL = 0x10000


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
    and picklable: a worker process rebuilds it from the constructor arguments.
    `num_threads` sets fast_tokenizer's batch thread count, which is global to
    the process; None leaves it as it is (1 unless someone changed it).
    """

    def __init__(
        self,
        vocab_path: str,
        do_lower_case: bool = True,
        keep_special_tokens_whole: bool = False,
        num_threads: int | None = None,
    ):
        self._init_args = (vocab_path, do_lower_case, keep_special_tokens_whole, num_threads)
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
        # handle_chinese_chars=True means "always prefix continuation pieces with
        # ##"; False would prefix only ASCII-alphanumeric pieces.
        tokenizer = Tokenizer(WordPiece(vocab, _SPECIAL_TOKENS["unk"], _MAX_INPUT_CHARS_PER_WORD, "##", True))
        # ErnieTokenizer strips accents only when it lower-cases (strip_accents=None).
        tokenizer.normalizer = BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case, lowercase=do_lower_case
        )
        isolate_symbols = SplitPreTokenizer(_symbol_class_re2(), int(C.SplitMode.ISOLATED), False)
        # Symbols first: one RE2 pass over the whole text. After BertPreTokenizer
        # it would run once per word (every CJK char is one) and cost +35%.
        tokenizer.pretokenizer = SequencePreTokenizer([isolate_symbols, BertPreTokenizer()])
        tokenizer.disable_padding()
        tokenizer.disable_truncation()
        self._tokenizer = tokenizer

        self._special_token_split: re.Pattern | None = None
        self._special_token_ids: dict[str, int] = {}
        if keep_special_tokens_whole:
            self._special_token_ids = {tok: vocab[tok] for tok in _SPECIAL_TOKENS.values()}
            alternatives = sorted(self._special_token_ids, key=len, reverse=True)
            self._special_token_split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        if num_threads is not None and num_threads != get_thread_num():
            set_thread_num(num_threads)

    def __reduce__(self):
        # The C++ tokenizer does not pickle; rebuilding it is cheap.
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
        encodings = self._tokenizer.encode_batch(rewritten, add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int64) for e in encodings]

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


# --- Unicode tables, from the running Python's `unicodedata` (Unicode 13 on
# Python 3.10), which is what paddlenlp consults; fast_tokenizer uses ICU's.


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
        # first gives the same text: both act per character, no Mn lower-cases
        # or decomposes to a non-Mn, and canonical reordering keeps the
        # relative order of what remains.
        deleted |= (first == ord("M")) & (second == ord("n"))
    return deleted


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
    """text -> text with ErnieTokenizer's deletions (and per-char lower-casing) applied."""
    deleted = _deleted_mask(do_lower_case)
    rewritten = deleted | _cased_mask() if do_lower_case else deleted

    def rewrite_run(match: re.Match) -> str:
        # Per character, like ErnieTokenizer's first lower-casing pass; lower()
        # of the whole run would turn a final 'Σ' into 'ς' where it gives 'σ'.
        return "".join("" if deleted[ord(ch)] else ch.lower() for ch in match.group())

    # Python's re looks a character class up in a bitmap only when the whole
    # class lies in the BMP; astral ranges are tried one by one (60x slower on
    # the demo reviews), so they run only on texts that have an astral char.
    in_bmp = re.compile(_python_char_class(_code_point_ranges(rewritten, 0, _FIRST_ASTRAL)) + "+")
    astral = re.compile(_python_char_class(_code_point_ranges(rewritten, _FIRST_ASTRAL)) + "+")
    any_astral = re.compile(_python_char_class([(_FIRST_ASTRAL, _N_CODE_POINTS - 1)]))

    def rewrite(text: str) -> str:
        text = in_bmp.sub(rewrite_run, text)
        return astral.sub(rewrite_run, text) if any_astral.search(text) else text

    return rewrite


@functools.lru_cache(maxsize=None)
def _symbol_class_re2() -> str:
    """RE2 character class of the characters BasicTokenizer isolates as symbols."""
    first, _ = _unicode_categories()
    symbol = first == ord("S")
    symbol[_EXTRA_SYMBOLS] = True
    ranges = _code_point_ranges(symbol)
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"


def _code_point_ranges(mask: np.ndarray, lo: int = 0, hi: int = _N_CODE_POINTS) -> list[tuple[int, int]]:
    """Inclusive (first, last) runs of True in mask[lo:hi], as code points."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[lo:hi].astype(np.int8), [0]])))
    return [(lo + int(a), lo + int(b) - 1) for a, b in zip(edges[0::2], edges[1::2])]


def _python_char_class(ranges: list[tuple[int, int]]) -> str:
    return "[" + "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"
