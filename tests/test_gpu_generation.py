"""Generation on ONNX Runtime's device memory, run here with the CPU provider:
the key/value cache held as OrtValues (DeviceArrays, IO binding) gives the
same ids as the numpy path, greedy (its tokens chosen on the device) and
beam; the fp16 decoding programs keep their masks and logits fp32 and hold
their caches in fp16; --device gpu generation plans one ONNX Runtime
process per GPU."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime
import pytest

from predictor.engines.onnx_runtime import DeviceArrays, GpuPlacement, NumpyArrays, OnnxRuntimeEngine
from predictor.engines.options import EngineOptions
from predictor.generate.cached_decoder import CachedDecoder, left_padded
from predictor.generate.decoding import (DecodeSettings, RunnerUpLog, SpecialIds, _adjust, chooses_on_engine, decode,
                                        logit_overrides)
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
            precision: str = "fp32", gpu: bool = False) -> CachedDecoder:
    options = (EngineOptions(engine="onnxruntime", device="gpu", precision=precision) if gpu else
               EngineOptions(engine="onnxruntime", precision="fp32", cpu_threads=1))
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


# On a machine with ONNX Runtime's CUDA provider the same checks run on GPU 0 too.
CUDA = pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
                          reason="ONNX Runtime's CUDA provider is not installed here")


@pytest.fixture
def crossings(monkeypatch) -> dict:
    """How often a device decoder brought logits back (to_numpy) or only
    greedy's ids (greedy_ids)."""
    calls = {"to_numpy": 0, "greedy_ids": 0}
    to_numpy, greedy_ids = DeviceArrays.to_numpy, DeviceArrays.greedy_ids

    def counted_to_numpy(x):
        calls["to_numpy"] += 1
        return to_numpy(x)

    def counted_greedy_ids(self, *args):
        calls["greedy_ids"] += 1
        return greedy_ids(self, *args)

    monkeypatch.setattr(DeviceArrays, "to_numpy", staticmethod(counted_to_numpy))
    monkeypatch.setattr(DeviceArrays, "greedy_ids", counted_greedy_ids)
    return calls


@pytest.mark.parametrize("settings", [
    DecodeSettings(max_new_tokens=12),  # rows end at different steps, one at once
    DecodeSettings(max_new_tokens=12, min_new_tokens=3),  # eos forbidden for 3 steps, then chosen
])
@pytest.mark.parametrize("prompt_token_budget", [1024, 30])  # the prompt's ids chosen per chunk, then reordered
def test_greedy_tokens_chosen_on_the_device_are_the_host_path_s(programs, crossings, settings, prompt_token_budget):
    expected = decode(decoder(programs["onnx"], False), job(), 9, settings, programs["special"])
    lengths = [len(ids) for ids in expected]
    assert min(lengths) >= settings.min_new_tokens and min(lengths) < max(lengths) == settings.max_new_tokens
    if settings.min_new_tokens:  # the forcing decides something: unforced, some row ends sooner
        unforced = decode(decoder(programs["onnx"], False), job(), 9, DecodeSettings(max_new_tokens=12),
                          programs["special"])
        assert min(len(ids) for ids in unforced) < settings.min_new_tokens
    on_device = decoder(programs["onnx"], True, prompt_token_budget, settings.max_new_tokens)
    assert chooses_on_engine(on_device, settings, None)
    got = decode(on_device, job(), 9, settings, programs["special"])
    assert [ids.tolist() for ids in got] == [ids.tolist() for ids in expected]
    # Only ids came back: the prompt pass's (one call per chunk) and every step's.
    assert crossings["to_numpy"] == 0 and crossings["greedy_ids"] >= on_device.steps + 1


def test_beam_search_and_runner_ups_take_the_logits_to_the_host(programs, crossings):
    beam = DecodeSettings(strategy="beam", num_beams=3, max_new_tokens=8, min_new_tokens=2)
    expected = decode(decoder(programs["onnx"], False), job(), 9, beam, programs["special"])
    got = decode(decoder(programs["onnx"], True), job(), 9, beam, programs["special"])
    assert [ids.tolist() for ids in got] == [ids.tolist() for ids in expected]
    greedy = DecodeSettings(max_new_tokens=8, min_new_tokens=2)
    on_host, on_device = RunnerUpLog(9), RunnerUpLog(9)
    expected = decode(decoder(programs["onnx"], False), job(), 9, greedy, programs["special"], on_host)
    got = decode(decoder(programs["onnx"], True), job(), 9, greedy, programs["special"], on_device)
    assert [ids.tolist() for ids in got] == [ids.tolist() for ids in expected]
    assert [(r.ids.tolist(), r.gaps.tolist()) for r in on_device.per_row()] == \
        [(r.ids.tolist(), r.gaps.tolist()) for r in on_host.per_row()]
    assert crossings["greedy_ids"] == 0 and crossings["to_numpy"] > 0
    assert not chooses_on_engine(decoder(programs["onnx"], True), beam, None)


@pytest.mark.parametrize("gpu", [None, pytest.param(GpuPlacement(0), marks=CUDA)], ids=["cpu", "cuda"])
@pytest.mark.parametrize("forbid_eos", [False, True])
def test_device_greedy_ids_are_numpy_s_argmax_of_the_adjusted_logits(gpu, forbid_eos):
    special = SpecialIds(unk=5, pad=0, bos=2, eos=3)  # not in id order; eos set after the bans
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 3, size=(6, 9)).astype(np.float32)  # many exact ties: the lowest id wins
    logits[0, [0, 2, 5]] = 50.0   # banned ids are set, not lowered: the rest wins
    logits[1, 3] = 50.0           # eos, when it may be chosen
    logits[2] = np.finfo(np.float32).min  # all at float32 min: a banned id (-1e9) wins, the lowest
    logits[3] = -2e9              # below the ban: set (-1e9), where adding -1e9 would give -3e9
    logits[4] = 1.0               # one tie over all ids
    arrays = DeviceArrays(gpu)
    on_device = onnxruntime.OrtValue.ortvalue_from_numpy(logits, *arrays.device)
    got = arrays.greedy_ids(on_device, *logit_overrides(special, forbid_eos))
    expected = _adjust(logits.copy(), special, forbid_eos).argmax(axis=-1)
    assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    assert (got[1] == 3) != forbid_eos and got[0] not in (0, 2, 5) and got[2] == got[3] == 0 and got[4] == 1


@pytest.mark.parametrize("gpu", [None, pytest.param(GpuPlacement(0), marks=CUDA)], ids=["cpu", "cuda"])
def test_device_arrays_write_a_position_in_place_and_pad_with_zeros(gpu):
    arrays = DeviceArrays(gpu)
    blocks = [np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4) for _ in range(2)]
    values = [onnxruntime.OrtValue.ortvalue_from_numpy(b, *arrays.device) for b in blocks]
    wide = arrays.widened(values, 5)
    assert wide[0].shape() == [2, 3, 5, 4] and not wide[1].numpy()[:, :, 2:].any()
    before = [w.data_ptr() for w in wide]
    new = [onnxruntime.OrtValue.ortvalue_from_numpy(np.full((2, 3, 1, 4), 7, np.float32), *arrays.device)
           for _ in range(2)]
    written = arrays.put_position(wide, 3, new)
    assert [w.data_ptr() for w in written] == before  # the same memory, written where it lies
    expected = np.zeros((2, 3, 5, 4), np.float32)
    expected[:, :, :2], expected[:, :, 3] = blocks[0], 7
    assert (written[0].numpy() == expected).all()
    stacked = arrays.stack_rows([values, arrays.take_rows(values, np.array([1]))], 3)
    assert stacked[1].shape() == [3, 3, 3, 4]
    assert (stacked[1].numpy()[2, :, 1:] == blocks[1][1]).all() and not stacked[1].numpy()[:, :, 0].any()
    assert (NumpyArrays.stack_rows([blocks, [blocks[0][1:], blocks[1][1:]]], 3)[1] == stacked[1].numpy()).all()


@pytest.fixture(scope="module")
def gpu_programs(programs, tmp_path_factory) -> dict:
    """The same programs converted for the GPU (layer norms fused, saved
    unoptimised), then in fp16; both conversions run here on the CPU provider."""
    from predictor.conversions.onnx_model import TransformerShape
    from predictor.generate.onnx_decoder import convert_fp16_decoder, convert_generator

    folder = tmp_path_factory.mktemp("gpu_programs")
    fp32_dir, fp16_dir = str(folder / "fp32"), str(folder / "fp16")
    os.makedirs(fp32_dir)
    os.makedirs(fp16_dir)
    shape = TransformerShape(TINY_UNIMO["num_attention_heads"], TINY_UNIMO["hidden_size"])
    report = convert_generator(programs["paddle"], fp32_dir, None, TINY_UNIMO["vocab_size"], 1, "fp32", shape)
    fp16_report = convert_fp16_decoder(fp32_dir, fp16_dir, gpu=None)
    return {"fp32": fp32_dir, "fp16": fp16_dir, "report": report, "fp16_report": fp16_report}


def test_the_gpu_conversion_fuses_layer_norms_and_keeps_fp32_logits(gpu_programs):
    import onnx

    report = gpu_programs["report"]
    assert report["device"] == "gpu" and report["max_logit_diff"] <= 1e-3 and "step_profile" not in report
    step = onnx.load(os.path.join(gpu_programs["fp32"], STEP_PROGRAM, "model.onnx"))
    ops = {node.op_type for node in step.graph.node}
    assert ops & {"LayerNormalization", "SkipLayerNormalization"} and "Attention" not in ops
    assert not os.path.exists(os.path.join(gpu_programs["fp32"], STEP_PROGRAM, "model.weights"))  # not CPU-optimised


def test_the_fp16_programs_hold_fp16_caches_and_report_their_agreement(programs, gpu_programs):
    import onnx

    from predictor.generate.onnx_decoder import FP32_INPUTS

    for program in (PROMPT_PROGRAM, STEP_PROGRAM):
        model = onnx.load(os.path.join(gpu_programs["fp16"], program, "model.onnx"))
        floats = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]
                  if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
        logits = model.graph.output[0].name
        masks = {PROMPT_PROGRAM: {"attn_mask"}, STEP_PROGRAM: {"prompt_bias", "generated_bias"}}[program]
        assert masks <= set(floats)  # found by name, so kept fp32 below
        assert all(floats[name] == onnx.TensorProto.FLOAT for name in floats if name in FP32_INPUTS or name == logits)
        caches = [name for name in floats if name not in FP32_INPUTS and name != logits]
        assert caches and all(floats[name] == onnx.TensorProto.FLOAT16 for name in caches)
        # The LM head's product stays fp32: its weights, and its input cast to fp32.
        weights = {t.name: t for t in model.graph.initializer}
        head = next(n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and
                    any(TINY_UNIMO["vocab_size"] in weights[i].dims for i in n.input if i in weights))
        assert {weights[i].data_type for i in head.input if i in weights} == {onnx.TensorProto.FLOAT}
        cast = next(n for n in model.graph.node if head.input[0] in n.output)
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
    fp16 = gpu_programs["fp16_report"]
    assert 0 < fp16["max_logit_diff"] < 1.0 and fp16["probe_top1_agreement"] >= 0.9 and fp16["on"] == "cpu"
    # Decoded end to end with the device path: ids close to fp32's.
    settings = DecodeSettings(max_new_tokens=8)
    expected = decode(decoder(programs["onnx"], False), job(), 9, settings, programs["special"])
    got = decode(decoder(gpu_programs["fp16"], True, precision="fp16"), job(), 9, settings, programs["special"])
    assert np.mean([a.tolist() == b.tolist() for a, b in zip(got, expected)]) >= 0.75


@CUDA
@pytest.mark.parametrize("precision, least_equal", [("fp32", 9), ("fp16", 7)])
def test_on_a_gpu_the_decoder_gives_the_cpu_s_ids(programs, gpu_programs, precision, least_equal):
    """GPU 0, the cache in its memory: fp32 (TF32 off) the CPU's ids, fp16
    nearly all of them (the tiny model's ties are rare)."""
    on_gpu = decoder(gpu_programs[precision], None, precision=precision, gpu=True)
    assert isinstance(on_gpu.arrays, DeviceArrays) and on_gpu.arrays.device == ("cuda", 0)
    for settings in (DecodeSettings(max_new_tokens=20), DecodeSettings(strategy="beam", num_beams=3, max_new_tokens=8)):
        expected = decode(decoder(programs["onnx"], False), job(), 9, settings, programs["special"])
        got = decode(on_gpu, job(), 9, settings, programs["special"])
        assert sum(a.tolist() == b.tolist() for a, b in zip(got, expected)) >= least_equal


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """--device gpu with ONNX Runtime's CUDA provider stood in by the CPU one:
    one GPU listed, sessions opened for it run on the CPU, values it would
    hold on the device held on the host. Everything else is the GPU path."""
    from predictor.engines import gpus

    monkeypatch.setattr(gpus, "driver_gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(GpuPlacement, "providers", lambda self: ["CPUExecutionProvider"])
    monkeypatch.setattr(GpuPlacement, "ortvalue_device", lambda self: ("cpu", 0))
    cpu_session = onnxruntime.InferenceSession

    class StandIn(cpu_session):
        def get_providers(self):
            return ["CUDAExecutionProvider", *super().get_providers()]

    monkeypatch.setattr(onnxruntime, "InferenceSession", StandIn)


def test_generation_on_the_gpu_path_gives_the_cpu_run_s_texts(cuda_on_cpu, tmp_path):
    """The whole --device gpu generation path (fused fp32 programs for the GPU,
    the fp16 step, one predictor per GPU, the cache as device values, length-
    sorted jobs): fp32 writes the CPU run's texts, fp16 reports its probe
    agreement and writes texts close to them."""
    import json

    import pandas as pd

    import pipeline
    from tests.tiny_checkpoints import review_texts, write_reviews_csv

    model_dir = tiny_generator(str(tmp_path))
    input_path = write_reviews_csv(str(tmp_path / "in.csv"), review_texts(30, start=500))

    def run(name: str, *options) -> tuple[list[str], dict]:
        output = str(tmp_path / f"{name}.csv")
        assert pipeline.main([input_path, model_dir, output, "--quiet", "--max-new-tokens", "10", "--max-seq-len", "48",
                              "--cache-dir", str(tmp_path / "cache"), *options]) == 0
        with open(output + ".timing.json", encoding="utf-8") as f:
            return pd.read_csv(output, keep_default_na=False)["text"].tolist(), json.load(f)

    cpu_texts, cpu = run("cpu")
    fp32_texts, fp32 = run("gpu_fp32", "--device", "gpu", "--precision", "fp32")
    fp16_texts, fp16 = run("gpu_fp16", "--device", "gpu", "--precision", "fp16")
    assert fp32_texts == cpu_texts
    assert fp32["engine"]["device"] == "gpu" and fp32["workers"] == 1 and fp32["onnx"]["device"] == "gpu"
    assert fp32["decoding"]["tokens_chosen_on_device"] and not cpu["decoding"]["tokens_chosen_on_device"]
    assert fp16["engine"]["precision"] == "fp16" and fp16["fp16"]["probe_top1_agreement"] >= 0.9
    assert fp16["batches"] == 1  # 30 rows in one length-sorted job (up to 512 on the GPU)
    assert np.mean([a == b for a, b in zip(fp16_texts, cpu_texts)]) >= 0.75
    beam = ["--decode", "beam", "--num-beams", "3"]
    beam_texts, gpu_beam = run("gpu_beam", "--device", "gpu", "--precision", "fp32", *beam)
    assert beam_texts == run("cpu_beam", *beam)[0] and not gpu_beam["decoding"]["tokens_chosen_on_device"]


def test_gpu_generation_plans_one_onnx_runtime_process_per_gpu_in_fp32_unless_fp16_is_asked_for():
    import pipeline
    from predictor.generate.task import GenerateTask
    from predictor.machines.local import plan_engine_options

    for extra, precision in (([], "fp32"), (["--precision", "fp16"], "fp16")):
        args = pipeline.parse_args(["in.csv", "model", "out.csv", "--device", "gpu", "--workers", "3", *extra])
        plan = plan_engine_options(pipeline.engine_options(args, GenerateTask), args.workers, gpu_ids=[0, 1])
        assert [(o.engine, o.device, o.precision, o.gpu_id) for o in plan] == \
            [("onnxruntime", "gpu", precision, 0), ("onnxruntime", "gpu", precision, 1)]


class SmallMemoryDecoder:
    """A step engine whose next token hangs on the row's own source and last
    token only, and that runs out of memory on jobs of more than `fits` rows."""
    vocab = 50

    def __init__(self, fits: int):
        self.fits, self.jobs = fits, []
        self.engine_s = self.prompt_s = 0.0
        self.steps = 0

    def _logits(self, seeds: np.ndarray) -> np.ndarray:
        return np.eye(self.vocab, dtype=np.float32)[(seeds * 7 + 3) % (self.vocab - 10) + 10]

    def start(self, job):
        from predictor.engines.options import EngineOutOfMemory

        if len(job["lengths"]) > self.fits:
            raise EngineOutOfMemory("Failed to allocate memory")
        self.jobs.append(len(job["lengths"]))
        sources = [row[-length:] for row, length in zip(job["input_ids"], job["lengths"])]
        return self._logits(np.array([int(s.sum()) + len(s) for s in sources]))

    def advance(self, tokens, parent):
        self.steps += 1
        return self._logits(tokens)


def test_a_generation_job_that_does_not_fit_is_decoded_in_halves_with_the_same_ids():
    from predictor.engines.options import EngineOutOfMemory
    from predictor.generate.runner import GenerateRunner, GenerationSettings, decoding_report

    rng = np.random.default_rng(0)
    lengths = np.array([9, 8, 8, 6, 5, 5, 3, 2, 2, 1, 1])
    ids, types = left_padded([(rng.integers(10, 50, n), np.zeros(n, np.int64)) for n in lengths], lengths, 0)
    job = {"input_ids": ids, "token_type_ids": types, "lengths": lengths}
    settings = GenerationSettings(DecodeSettings(max_new_tokens=5), SpecialIds(unk=1, pad=0, bos=2, eos=3))

    def runner(fits: int) -> GenerateRunner:
        made = GenerateRunner.__new__(GenerateRunner)
        made.decoder, made.settings = SmallMemoryDecoder(fits), settings
        return made

    whole, split = runner(fits=64), runner(fits=3)
    expected, got = whole.run(job), split.run(job)
    assert [r.tolist() for r in got.rows] == [r.tolist() for r in expected.rows] and expected.splits == 0
    assert sum(split.decoder.jobs) == 11 and max(split.decoder.jobs) <= 3
    assert decoding_report([got])["jobs_split_for_memory"] == got.splits > 0
    with pytest.raises(EngineOutOfMemory):
        runner(fits=0).run(job)


def test_device_arrays_name_a_gpu_out_of_memory_as_such():
    from predictor.engines.options import EngineOutOfMemory

    class Full:
        def io_binding(self):
            return _NoBinding()

        get_inputs = get_outputs = staticmethod(lambda: [])

        def run_with_iobinding(self, binding):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer")

    with pytest.raises(EngineOutOfMemory, match="Failed to allocate memory"):
        DeviceArrays(GpuPlacement(0)).run(Full(), [])
    with pytest.raises(RuntimeError):  # on the CPU it is not the GPU's memory
        DeviceArrays(None).run(Full(), [])


class _NoBinding:
    def get_outputs(self):
        return []
