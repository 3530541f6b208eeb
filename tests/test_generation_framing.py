"""Generation inputs equal UNIMOTokenizer.gen_encode's, from a UNIMO-format vocab."""
from __future__ import annotations

import numpy as np
import pytest

from preprocess.framing import frame_for_generation
from preprocess.wordpiece import FastWordPiece, read_vocab
from scripts.demo_vocab import build_vocab, write_vocab


@pytest.fixture(scope="module")
def unimo_vocab_file(tmp_path_factory, demo_texts):
    path = str(tmp_path_factory.mktemp("unimo_vocab") / "vocab.txt")
    write_vocab(build_vocab(demo_texts[:3000], 18000), path, unimo_format=True)
    return path


def test_unimo_vocab_format_is_read_by_id(unimo_vocab_file):
    vocab = read_vocab(unimo_vocab_file)
    assert len(vocab) == 18000 and vocab["[PAD]"] == 0 and vocab["[MASK]"] == 3


@pytest.mark.parametrize("max_seq_len, max_title_len, with_title", [(128, 0, False), (40, 0, False), (64, 16, True)])
def test_frames_equal_gen_encode(unimo_vocab_file, demo_texts, wordpiece_backend, max_seq_len, max_title_len,
                                 with_title):
    from paddlenlp.transformers import UNIMOTokenizer

    reference = UNIMOTokenizer(unimo_vocab_file)
    wordpiece = FastWordPiece(unimo_vocab_file, backend=wordpiece_backend)
    sources = demo_texts[200:400] + ["这个[SEP]不错～～", "ＯＫ！０∶２"]
    titles = demo_texts[400:600] + ["标题", "题"] if with_title else None
    source_ids = wordpiece.encode(sources)
    title_ids = wordpiece.encode(titles) if titles else [None] * len(sources)
    for i, source in enumerate(sources):
        expected = reference.gen_encode(source, title=titles[i] if titles else None, max_seq_len=max_seq_len,
                                        max_title_len=max_title_len, max_target_len=0,
                                        add_start_token_for_decoding=True)
        ids, types, was_truncated = frame_for_generation(source_ids[i], title_ids[i], max_seq_len, max_title_len,
                                                         wordpiece.cls_id, wordpiece.sep_id)
        assert ids.tolist() == expected["input_ids"]
        assert types.tolist() == expected["token_type_ids"]
        # gen_encode's positions restart at 0 on the start token; its mask shows the whole source to
        # every position and hides only the start token from the source.
        assert expected["position_ids"] == list(range(len(ids) - 1)) + [0]
        hidden = np.zeros((len(ids), len(ids)), dtype=np.float32)
        hidden[:-1, -1] = -1e4
        assert np.array_equal(expected["attention_mask"], hidden)
        untruncated = reference.gen_encode(source, title=titles[i] if titles else None, max_seq_len=100000,
                                           max_title_len=50000, max_target_len=0,
                                           add_start_token_for_decoding=True)
        assert was_truncated == (len(untruncated["input_ids"]) > len(ids))
