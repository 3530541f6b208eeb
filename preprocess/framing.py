"""[CLS] a [SEP] (b [SEP]) framing of WordPiece ids, truncated as ErnieTokenizer does.

Mirrors `ErnieTokenizer(text, text_pair=..., max_length=max_seq_len,
truncation=True)` in paddlenlp 2.8.1: truncation=True means 'longest_first'
and truncation_side is 'right', so a single text loses its last tokens, and a
pair loses one token at a time from whichever text is longer at that moment,
from the second text on ties (PretrainedTokenizerBase.truncate_sequences).
"""
from __future__ import annotations

import numpy as np


def frame_single_or_pair(
    ids_a: np.ndarray,
    ids_b: np.ndarray | None,
    max_seq_len: int,
    cls_id: int,
    sep_id: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(input_ids, token_type_ids, was_truncated), both arrays int64 and at most max_seq_len long."""
    if max_seq_len < 3:
        # paddlenlp logs an error and returns the text untruncated here; no
        # model input can be that short, so refuse instead of copying that.
        raise ValueError(f"max_seq_len must be at least 3 ([CLS] and two [SEP]), got {max_seq_len}")
    is_pair = ids_b is not None
    len_a, len_b = len(ids_a), len(ids_b) if is_pair else 0
    n_special = 3 if is_pair else 2
    excess = len_a + len_b + n_special - max_seq_len
    was_truncated = excess > 0
    if was_truncated:
        if is_pair:
            len_a, len_b = _longest_first_kept_lengths(len_a, len_b, excess)
        else:
            len_a -= excess

    input_ids = np.empty(len_a + len_b + n_special, dtype=np.int64)
    input_ids[0] = cls_id
    input_ids[1 : 1 + len_a] = ids_a[:len_a]
    input_ids[1 + len_a] = sep_id
    token_type_ids = np.zeros_like(input_ids)
    if is_pair:
        input_ids[2 + len_a : 2 + len_a + len_b] = ids_b[:len_b]
        input_ids[-1] = sep_id
        token_type_ids[2 + len_a :] = 1
    return input_ids, token_type_ids, was_truncated


def _longest_first_kept_lengths(len_a: int, len_b: int, excess: int) -> tuple[int, int]:
    """Closed form of paddlenlp's loop `for _ in range(excess): shorten the longer, b on ties`.

    The loop first shortens the longer text down to the other's length, then
    alternates starting with b; excess <= len_a + len_b because max_seq_len >= 3.
    """
    gap = min(excess, abs(len_a - len_b))
    if len_a > len_b:
        len_a -= gap
    else:
        len_b -= gap
    rest = excess - gap
    return len_a - rest // 2, len_b - (rest + 1) // 2


def frame_for_generation(
    source_ids: np.ndarray,
    title_ids: np.ndarray | None,
    max_seq_len: int,
    max_title_len: int,
    cls_id: int,
    sep_id: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """UNIMO-text's decoder input, as `UNIMOTokenizer.gen_encode(source, title,
    max_seq_len, max_title_len, add_start_token_for_decoding=True)` lays it out:

        [CLS] (title[:max_title_len-1] [SEP]) source[:room] [SEP] | [CLS]

    token types 0 for the source part and 1 for the final [CLS] (the start of
    the target). gen_encode's position ids restart at 0 on the start token and
    its mask shows the whole source to every position and hides only the start
    token from the source, so neither needs storing: both follow from the
    length (see predictor/generate/runner.py).
    """
    title_part = np.empty(0, dtype=np.int64)
    title_truncated = title_ids is not None and len(title_ids) > max_title_len - 1
    if title_ids is not None:
        title_part = np.concatenate([np.asarray(title_ids[: max_title_len - 1], dtype=np.int64), [sep_id]])
    head = 1 + len(title_part)
    room = max_seq_len - head - 1 - 1  # minus the source's [SEP] and the start token
    if room < 0:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for the source after the title")
    was_truncated = title_truncated or len(source_ids) > room
    input_ids = np.concatenate([[cls_id], title_part, np.asarray(source_ids[:room], dtype=np.int64),
                                [sep_id, cls_id]]).astype(np.int64)
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[-1] = 1
    return input_ids, token_type_ids, was_truncated
