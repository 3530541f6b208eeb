"""Generation on ONNX Runtime's device memory, run here with the CPU provider:
the key/value cache held as OrtValues (DeviceArrays, IO binding) gives the
same ids as the numpy path, greedy and beam."""
from __future__ import annotations

import os

import numpy as np
import pytest

from predictor.engines.onnx_runtime import DeviceArrays, NumpyArrays, OnnxRuntimeEngine
from predictor.engines.options import EngineOptions
from predictor.generate.cached_decoder import CachedDecoder, left_padded
from predictor.generate.decoding import DecodeSettings, decode
from predictor.generate.unimo_programs import PROMPT_PROGRAM, STEP_PROGRAM
from tests.tiny_checkpoints import TINY_UNIMO, tiny_generator


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict:
    """The tiny model's decoding programs: exported, converted for the CPU."""
    from predictor.checkpoint import read_checkpoint
    from predictor.generate.export import export_generator
    from predictor.generate.onnx_decoder import convert_generator
    from predictor.generate.probe import probe_job
    from predictor.generate.runner import special_ids
    from predictor.pruning import full_vocab

    folder = tmp_path_factory.mktemp("gpu_generation")
    checkpoint = read_checkpoint(tiny_generator(str(folder)))
    vocab = full_vocab(TINY_UNIMO["vocab_size"])
    paddle_dir, onnx_dir = str(folder / "paddle"), str(folder / "onnx")
    os.makedirs(paddle_dir)
    os.makedirs(onnx_dir)
    export_generator(checkpoint, vocab, paddle_dir)
    convert_generator(paddle_dir, onnx_dir, probe_job(vocab.size), vocab.size, threads=1)
    return {"paddle": paddle_dir, "onnx": onnx_dir, "special": special_ids(checkpoint.config, vocab)}


def job(rows: int = 9) -> dict:
    """Left-padded sources of different lengths, each ending in its start token."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 14, size=rows)
    sources = []
    for length in lengths:
        types = np.zeros(length, np.int64)
        types[-1] = 1
        sources.append((rng.integers(5, TINY_UNIMO["vocab_size"], size=length), types))
    ids, types = left_padded(sources, lengths, pad_id=0)
    return {"input_ids": ids, "token_type_ids": types, "lengths": lengths}


def decoder(model_dir: str, on_device: bool, prompt_token_budget: int = 1024, max_positions: int = 40,
            precision: str = "fp32") -> CachedDecoder:
    options = EngineOptions(engine="onnxruntime", precision="fp32", cpu_threads=1)
    engines = [OnnxRuntimeEngine(os.path.join(model_dir, program), options, resident_on_device=on_device)
               for program in (PROMPT_PROGRAM, STEP_PROGRAM)]
    return CachedDecoder(*engines, max_positions, prompt_token_budget, precision=precision)


@pytest.mark.parametrize("settings", [
    # Past the generated buffer's first width (16): widened mid-generation; rows finish and leave.
    DecodeSettings(max_new_tokens=24, min_new_tokens=18),
    DecodeSettings(max_new_tokens=12),
    # Beams reorder the generated buffers every step; finished sources leave the prompt cache.
    DecodeSettings(strategy="beam", num_beams=3, max_new_tokens=10, min_new_tokens=2, length_penalty=1.3),
])
@pytest.mark.parametrize("prompt_token_budget", [1024, 30])  # one prompt pass, or chunks stacked and reordered
def test_the_cache_on_the_device_gives_the_numpy_path_s_ids(programs, settings, prompt_token_budget):
    on_host = decoder(programs["onnx"], False, prompt_token_budget, settings.max_new_tokens)
    on_device = decoder(programs["onnx"], True, prompt_token_budget, settings.max_new_tokens)
    assert on_host.arrays is NumpyArrays and isinstance(on_device.arrays, DeviceArrays)
    expected = decode(on_host, job(), 9, settings, programs["special"])
    got = decode(on_device, job(), 9, settings, programs["special"])
    assert [ids.tolist() for ids in got] == [ids.tolist() for ids in expected]
    if settings.strategy == "greedy" and not settings.min_new_tokens:
        assert len({len(ids) for ids in expected}) > 1  # rows finished and left the batch


def test_device_arrays_write_a_position_in_place_and_pad_with_zeros():
    import onnxruntime

    arrays = DeviceArrays(None)
    blocks = [np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4) for _ in range(2)]
    values = [onnxruntime.OrtValue.ortvalue_from_numpy(b) for b in blocks]
    wide = arrays.widened(values, 5)
    assert wide[0].shape() == [2, 3, 5, 4] and not wide[1].numpy()[:, :, 2:].any()
    before = [w.data_ptr() for w in wide]
    new = [onnxruntime.OrtValue.ortvalue_from_numpy(np.full((2, 3, 1, 4), 7, np.float32)) for _ in range(2)]
    written = arrays.put_position(wide, 3, new)
    assert [w.data_ptr() for w in written] == before  # the same memory, written where it lies
    expected = np.zeros((2, 3, 5, 4), np.float32)
    expected[:, :, :2], expected[:, :, 3] = blocks[0], 7
    assert (written[0].numpy() == expected).all()
    stacked = arrays.stack_rows([values, arrays.take_rows(values, np.array([1]))], 3)
    assert stacked[1].shape() == [3, 3, 3, 4]
    assert (stacked[1].numpy()[2, :, 1:] == blocks[1][1]).all() and not stacked[1].numpy()[:, :, 0].any()
    assert (NumpyArrays.stack_rows([blocks, [blocks[0][1:], blocks[1][1:]]], 3)[1] == stacked[1].numpy()).all()

