"""ONNX Runtime behind the engine seam: one session over model.onnx, on the
CPU or on the CUDA provider (GpuPlacement); a decoder's cache in host numpy
arrays (NumpyArrays) or, on the GPU, in device memory (DeviceArrays).

The model folder is what predictor/conversions/onnx_model.py (fp32, transformer
fusions checked against the Paddle program), predictor/classify/int8_guard.py (INT8
under the accuracy guard) or predictor/generate/onnx_decoder.py (generation)
wrote; this file only loads and runs it.

A model saved already optimised (`save_optimised`: ONNX Runtime's own
rewrites applied once, the weights in model.weights beside the graph) loads
without optimising again: 0.4 s instead of 2.3 s for a 12-layer model's
program, paid by every worker of every run.
"""
from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from predictor.engines.options import EngineOptions, EngineOutOfMemory, EngineUnavailable

ONNX_FILE = "model.onnx"
OPTIMISED_WEIGHTS = "model.weights"


def session_options(threads: int, profile_prefix: str | None = None):
    """`profile_prefix` turns on ONNX Runtime's per-kernel profiler."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph, one stream of batches: parallelism is inside each op.
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


# Sessions this process opened over model files, by the file's identity
# (device, inode, size, modification time: a folder renamed into the export
# cache keeps its files'). One cold INT8 run opens the fp32 model for the
# conversion's check, the guard and the re-run, and the INT8 model for the
# guard and the predict pass: on ERNIE 3.0 medium each opening costs 0.2-0.5 s.
_OPEN_SESSIONS: OrderedDict = OrderedDict()
KEPT_SESSIONS = 2


def _file_key(path: str, threads: int, optimised: bool, gpu: "GpuPlacement | None" = None) -> tuple:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, threads, optimised, gpu


def _opened(key: tuple | None):
    """The session this process already opened under `key`, or None."""
    if key in _OPEN_SESSIONS:
        _OPEN_SESSIONS.move_to_end(key)
        return _OPEN_SESSIONS[key]
    return None


def _keep(key: tuple, session) -> None:
    _OPEN_SESSIONS[key] = session
    _OPEN_SESSIONS.move_to_end(key)
    while len(_OPEN_SESSIONS) > KEPT_SESSIONS:
        _OPEN_SESSIONS.popitem(last=False)


@dataclass(frozen=True)
class GpuPlacement:
    """Which GPU a session runs on, and how much of its memory ONNX Runtime's
    CUDA arena may take (0: as much as it needs)."""
    gpu_id: int = 0
    memory_limit_mb: int = 0

    @classmethod
    def of(cls, options: EngineOptions) -> "GpuPlacement | None":
        return cls(options.gpu_id, options.gpu_memory_limit_mb) if options.device == "gpu" else None

    def providers(self) -> list:
        cuda = {"device_id": self.gpu_id,
                # Batches of many widths: grow the arena by what is asked, not
                # by powers of two, so it holds what the largest batch needs.
                "arena_extend_strategy": "kSameAsRequested",
                # Flash attention for unmasked attention: cuDNN's (the default)
                # plans every new batch shape, 11 s over a first pass of
                # 200,000 rows against 2.5 s, for 3% more speed once planned.
                "sdpa_kernel": "1",
                # fp32 is fp32: TF32 matrix multiplies moved 0.19% of the demo
                # classifier's labels; an fp32 model on the GPU checks and re-runs.
                "use_tf32": "0"}
        if self.memory_limit_mb:
            cuda["gpu_mem_limit"] = self.memory_limit_mb * 1024 * 1024
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]

    def ortvalue_device(self) -> tuple[str, int]:
        """Where values on this GPU live, as IO binding names the device."""
        return "cuda", self.gpu_id


CUDA_INSTALL_HINT = ("install ONNX Runtime's GPU build with its CUDA libraries (GPU=1 bash scripts/setup.sh, "
                     "which installs onnxruntime-gpu[cuda,cudnn])")


def load_session(model: str | bytes, threads: int, profile_prefix: str | None = None, optimised: bool = False,
                 gpu: GpuPlacement | None = None):
    """A session over a model file's path or a serialised model (one
    save_optimised wrote, if `optimised`), on the CPU or, with `gpu`, on
    ONNX Runtime's CUDA provider; a file's session is opened once per process
    (profiled ones always afresh). A model file saved unoptimised is, on the
    GPU, optimised for the CUDA provider at its first load and that graph
    kept beside it (gpu_optimised_path), which later loads read as is."""
    if gpu is not None and isinstance(model, str) and not optimised and not profile_prefix:
        kept = gpu_optimised_path(model)
        if os.path.isfile(kept):
            try:
                return _load(kept, threads, None, True, gpu)
            except EngineUnavailable:
                raise
            except Exception:  # a damaged copy: the model as written still loads
                pass
        else:
            session = _load_keeping_optimised(model, kept, threads, gpu)
            if session is not None:
                return session
    return _load(model, threads, profile_prefix, optimised, gpu)


def _load(model: str | bytes, threads: int, profile_prefix: str | None, optimised: bool,
          gpu: GpuPlacement | None):
    import onnxruntime

    key = _file_key(model, threads, optimised, gpu) if isinstance(model, str) and not profile_prefix else None
    if (session := _opened(key)) is not None:
        return session
    options = session_options(threads, profile_prefix)
    if optimised:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = open_session(model, options, gpu)
    if key:
        _keep(key, session)
    return session


def _load_keeping_optimised(path: str, kept: str, threads: int, gpu: GpuPlacement):
    """A session over `path` optimised for the CUDA provider, that graph
    saved as `kept`; None where it cannot be saved (the folder cannot be
    written, or writing failed: the caller then optimises at load)."""
    import onnxruntime

    key = _file_key(path, threads, False, gpu)
    if (session := _opened(key)) is not None:
        return session
    staging = _staging_beside(kept)
    if staging is None:
        return None
    options = session_options(threads)
    # EXTENDED: the fusions the CUDA provider runs; ALL adds only CPU layouts.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    _save_optimised_into(options, staging)
    try:
        session = open_session(path, options, gpu)
    except EngineUnavailable:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception:  # e.g. the disk full while saving
        shutil.rmtree(staging, ignore_errors=True)
        return None
    if _publish(staging, os.path.dirname(kept)):
        _keep(_file_key(kept, threads, True, gpu), session)
    _keep(key, session)
    return session


def open_session(model: str | bytes, options, gpu: GpuPlacement | None):
    """An ONNX Runtime session on the CPU, or on the CUDA provider (refused,
    with what to install, where that provider is missing or cannot start)."""
    import onnxruntime

    if gpu is None:
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise EngineUnavailable(f"this ONNX Runtime ({onnxruntime.__version__}) has no CUDA provider: "
                                f"{CUDA_INSTALL_HINT}")
    try:
        session = onnxruntime.InferenceSession(model, options, providers=gpu.providers())
    except Exception as err:  # ONNX Runtime raises its own exception types from C++
        raise EngineUnavailable(f"ONNX Runtime's CUDA provider did not start on GPU {gpu.gpu_id}: "
                                f"{first_line(err)}; {CUDA_INSTALL_HINT}") from None
    # A provider whose libraries (CUDA, cuDNN) fail to load is dropped
    # with a warning, and the session quietly runs on the CPU.
    if "CUDAExecutionProvider" not in session.get_providers():
        raise EngineUnavailable(f"ONNX Runtime's CUDA provider could not load its libraries (CUDA 12/13 "
                                f"runtime, cuBLAS, cuDNN 9): {CUDA_INSTALL_HINT}")
    return session


def gpu_optimised_path(model_path: str) -> str:
    """Where the CUDA provider's optimised graph of a model file is kept: a
    folder beside it, named for the ONNX Runtime version that optimised it
    (its fused ops are that version's). Loading it skips the optimisation:
    0.3 s instead of 0.8 s for a 12-layer decoding program on an H200."""
    import onnxruntime

    folder = os.path.join(os.path.dirname(model_path), f"cuda-optimised-ort{onnxruntime.__version__}")
    return os.path.join(folder, os.path.basename(model_path))


def _staging_beside(path: str) -> str | None:
    """A fresh folder next to where `path`'s folder goes, or None where the
    model's folder cannot be written (then the graph is optimised at every load)."""
    import tempfile

    try:
        return tempfile.mkdtemp(prefix=".optimising.", dir=os.path.dirname(os.path.dirname(path)))
    except OSError:
        return None


def _save_optimised_into(options, folder: str) -> None:
    options.optimized_model_filepath = os.path.join(folder, ONNX_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", OPTIMISED_WEIGHTS)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")


def _publish(staging: str, folder: str) -> bool:
    """Rename the staged graph into place; a concurrent process that got there
    first keeps its own (the same graph). Whether `folder` is now ours."""
    try:
        os.replace(staging, folder)
        return True
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def is_out_of_memory(err: Exception) -> bool:
    """ONNX Runtime's CUDA allocation failures, from the arena or from CUDA."""
    text = str(err)
    return any(sign in text for sign in ("Failed to allocate memory", "out of memory", "cudaErrorMemoryAllocation",
                                         "CUDA_ERROR_OUT_OF_MEMORY", "is smaller than requested bytes"))


def adopt_session(path: str, session, threads: int) -> None:
    """Let later load_session(path) calls use `session`, opened over the
    serialised model just written to `path`."""
    _keep(_file_key(path, threads, False), session)


def save_optimised(model: str | bytes, folder: str, threads: int) -> None:
    """Optimise `model` for this CPU and save it as folder/model.onnx with its
    weights in folder/model.weights. (Rewrites at the ALL level may be
    specific to the machine: the export cache's key names the CPU.)"""
    import onnxruntime

    options = session_options(threads)
    _save_optimised_into(options, folder)
    onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def cpu_identity() -> str:
    """The CPU's model name and feature flags: part of the cache key of a
    model optimised for it."""
    import hashlib

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
    except OSError:
        import platform

        lines = [platform.processor()]
    return hashlib.blake2b("".join(lines).encode(), digest_size=8).hexdigest()


class NumpyArrays:
    """The few array operations a decoder needs on an engine's resident values,
    for engines whose memory is the host's (the ONNX Runtime CPU engine);
    each takes and gives one value per cache layer. DeviceArrays below does
    the same on ONNX Runtime's own device memory, and
    predictor/engines/paddle_inference.py has it for Paddle Tensors."""

    @staticmethod
    def take_rows(values: list[np.ndarray], index: np.ndarray) -> list[np.ndarray]:
        return [np.ascontiguousarray(x[index]) for x in values]

    @staticmethod
    def put_position(buffers: list[np.ndarray], position: int, values: list[np.ndarray]) -> list[np.ndarray]:
        for buffer, value in zip(buffers, values):
            buffer[:, :, position:position + 1, :] = value
        return buffers

    @staticmethod
    def widened(values: list[np.ndarray], width: int) -> list[np.ndarray]:
        """Each [R, H, W, D] value as [R, H, width, D], zeros on the right."""
        wider = []
        for buffer in values:
            wide = np.zeros(buffer.shape[:2] + (width,) + buffer.shape[3:], dtype=buffer.dtype)
            wide[:, :, :buffer.shape[2]] = buffer
            wider.append(wide)
        return wider

    @staticmethod
    def stack_rows(chunks: list[list[np.ndarray]], width: int) -> list[np.ndarray]:
        """Per layer, the chunks' [rows_i, H, width_i, D] blocks -> one
        [sum rows_i, H, width, D], each right-aligned (zeros on the left)."""
        stacked = []
        for parts in zip(*chunks):
            rows = sum(len(part) for part in parts)
            # Only the padding is zeroed: a job's prompt cache is hundreds of MB.
            out = np.empty((rows, parts[0].shape[1], width) + parts[0].shape[3:], dtype=parts[0].dtype)
            first = 0
            for part in parts:
                pad = width - part.shape[2]
                out[first:first + len(part), :, :pad] = 0.0
                out[first:first + len(part), :, pad:] = part
                first += len(part)
            stacked.append(out)
        return stacked

    @staticmethod
    def to_numpy(x: np.ndarray) -> np.ndarray:
        return x


# Small graphs DeviceArrays runs, by (operation, values per call, element
# type, placement): built once per process.
_ARRAY_OPS: dict = {}
# OrtValue.data_type() -> onnx.TensorProto's element type number.
ELEMENT_TYPES = {"tensor(float)": 1, "tensor(float16)": 10}


def array_op_graph(op: str, count: int, element_type: int, chunks: int = 1) -> bytes:
    """One of DeviceArrays' operations over `count` values (cache layers;
    greedy_ids: one, the logits) as an ONNX graph; `chunks` blocks per layer
    for stack_rows."""
    from onnx import TensorProto, helper

    def value(name: str, elem: int = element_type):
        return helper.make_tensor_value_info(name, elem, None)

    nodes, inputs, outputs, constants = [], [], [], []
    if op == "take_rows":
        inputs = [value("index", TensorProto.INT64)]
        for i in range(count):
            inputs.append(value(f"x{i}"))
            nodes.append(helper.make_node("Gather", [f"x{i}", "index"], [f"y{i}"], axis=0))
    elif op == "put_position":
        # ScatterElements along the position axis, its indices all `position`;
        # bound to its own input as output it writes in place (ONNX Runtime's
        # CPU and CUDA kernels copy the input only when the two differ). Every
        # layer's new keys/values have one shape, so one index serves them all.
        inputs = [value("position", TensorProto.INT64)]
        constants = [helper.make_tensor("rank4", TensorProto.INT64, [4], [1, 1, 1, 1])]
        nodes += [helper.make_node("Reshape", ["position", "rank4"], ["position4"]),
                  helper.make_node("Shape", ["v0"], ["shape"]),
                  helper.make_node("Expand", ["position4", "shape"], ["index"])]
        for i in range(count):
            inputs += [value(f"x{i}"), value(f"v{i}")]
            nodes.append(helper.make_node("ScatterElements", [f"x{i}", "index", f"v{i}"], [f"y{i}"], axis=2))
    elif op == "pad":  # widened and stack_rows: zeros around each block, blocks of a layer concatenated
        inputs = [value(f"pads{c}", TensorProto.INT64) for c in range(chunks)]
        for i in range(count):
            for c in range(chunks):
                inputs.append(value(f"x{c}_{i}"))
                nodes.append(helper.make_node("Pad", [f"x{c}_{i}", f"pads{c}"], [f"p{c}_{i}"]))
            nodes.append(helper.make_node("Concat", [f"p{c}_{i}" for c in range(chunks)], [f"y{i}"], axis=0))
    elif op == "greedy_ids":  # logits [R, V] with logits[:, ids] = values -> argmax ids [R]
        inputs = [value("logits"), value("ids", TensorProto.INT64), value("values")]
        constants = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
                     helper.make_tensor("one", TensorProto.INT64, [1], [1])]
        nodes = [helper.make_node("Shape", ["logits"], ["shape"]),
                 helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
                 helper.make_node("Shape", ["ids"], ["count"]),
                 helper.make_node("Concat", ["rows", "count"], ["rows_by_count"], axis=0),
                 helper.make_node("Unsqueeze", ["ids", "zero"], ["ids_row"]),
                 helper.make_node("Unsqueeze", ["values", "zero"], ["values_row"]),
                 helper.make_node("Expand", ["ids_row", "rows_by_count"], ["index"]),
                 helper.make_node("Expand", ["values_row", "rows_by_count"], ["updates"]),
                 # Set, not added: the adjusted logits equal the host's exactly.
                 helper.make_node("ScatterElements", ["logits", "index", "updates"], ["adjusted"], axis=1),
                 # select_last_index=0: the lowest id on ties, as numpy's argmax.
                 helper.make_node("ArgMax", ["adjusted"], ["y0"], axis=1, keepdims=0, select_last_index=0)]
        outputs = [value("y0", TensorProto.INT64)]
    outputs = outputs or [value(f"y{i}") for i in range(count)]
    graph = helper.make_graph(nodes, op, inputs, outputs, constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString()


class DeviceArrays:
    """NumpyArrays' operations on OrtValues that stay in the memory of the
    device the decoding sessions run on. Each is a small ONNX graph run by
    the same provider, one call for every cache layer at once, so no cache
    crosses the bus: per step only the fed ids and masks go to the device
    and the logits come back, or for greedy only the ids chosen on the
    device (greedy_ids). With the CPU provider (OrtValues on 'cpu') it
    is the same code, which is how the tests run it."""

    def __init__(self, gpu: "GpuPlacement | None", threads: int = 1):
        self.gpu, self.threads = gpu, threads
        self.device = gpu.ortvalue_device() if gpu else ("cpu", 0)

    def run(self, session, inputs: list, outputs: list | None = None) -> list:
        """`session` over `inputs` (numpy arrays or OrtValues, in input order)
        by IO binding; outputs left on the device, or written into the
        OrtValues given."""
        binding = session.io_binding()
        host = []  # numpy inputs, alive until the run has copied them
        for entry, x in zip(session.get_inputs(), inputs):
            if isinstance(x, np.ndarray):
                host.append(np.ascontiguousarray(x))
                binding.bind_cpu_input(entry.name, host[-1])
            else:
                binding.bind_ortvalue_input(entry.name, x)
        for i, entry in enumerate(session.get_outputs()):
            if outputs is None:
                binding.bind_output(entry.name, *self.device)
            else:
                binding.bind_ortvalue_output(entry.name, outputs[i])
        try:
            session.run_with_iobinding(binding)
        except Exception as err:  # ONNX Runtime raises its own exception types from C++
            if self.gpu is not None and is_out_of_memory(err):
                raise EngineOutOfMemory(first_line(err)) from None
            raise
        return binding.get_outputs()

    def _op(self, op: str, values: list, chunks: int = 1):
        key = (op, len(values), values[0].data_type(), chunks, self.gpu)
        if key not in _ARRAY_OPS:
            graph = array_op_graph(op, len(values), ELEMENT_TYPES[values[0].data_type()], chunks)
            _ARRAY_OPS[key] = load_session(graph, self.threads, gpu=self.gpu)
        return _ARRAY_OPS[key]

    def take_rows(self, values: list, index: np.ndarray) -> list:
        return self.run(self._op("take_rows", values), [np.asarray(index, np.int64), *values])

    def put_position(self, buffers: list, position: int, values: list) -> list:
        inputs = [np.asarray([position], np.int64)] + [x for pair in zip(buffers, values) for x in pair]
        self.run(self._op("put_position", buffers), inputs, outputs=buffers)
        return buffers

    def widened(self, values: list, width: int) -> list:
        pads = np.asarray([0, 0, 0, 0, 0, 0, width - values[0].shape()[2], 0], np.int64)
        return self.run(self._op("pad", values), [pads, *values])

    def stack_rows(self, chunks: list[list], width: int) -> list:
        """Per layer, the chunks' [rows_i, H, width_i, D] blocks -> one
        [sum rows_i, H, width, D], each right-aligned (zeros on the left)."""
        pads = [np.asarray([0, 0, width - chunk[0].shape()[2], 0, 0, 0, 0, 0], np.int64) for chunk in chunks]
        blocks = [chunk[i] for i in range(len(chunks[0])) for chunk in chunks]
        return self.run(self._op("pad", chunks[0], len(chunks)), [*pads, *blocks])

    def greedy_ids(self, logits, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Each row's argmax (lowest id on ties) of `logits` [rows, V] with
        logits[:, ids] = values, taken where the logits lie: [rows] int64
        comes back instead of the logits (74 MB a step at 1,024 rows of an
        18,000-id vocabulary)."""
        session = self._op("greedy_ids", [logits])
        return self.run(session, [logits, np.asarray(ids, np.int64), np.asarray(values, np.float32)])[0].numpy()

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return x.numpy()


class OnnxRuntimeEngine:
    def __init__(self, model_dir: str, options: EngineOptions, profile_prefix: str | None = None,
                 resident_on_device: bool | None = None):
        """`resident_on_device`: run_resident's outputs stay OrtValues in the
        session's memory (DeviceArrays); by default on the GPU only, since on
        the CPU numpy arrays are that memory already."""
        self.options = options
        gpu = GpuPlacement.of(options)
        self._session = load_session(os.path.join(model_dir, ONNX_FILE), options.cpu_threads, profile_prefix,
                                     optimised=os.path.exists(os.path.join(model_dir, OPTIMISED_WEIGHTS)), gpu=gpu)
        self.input_names = [i.name for i in self._session.get_inputs()]
        on_device = gpu is not None if resident_on_device is None else resident_on_device
        self.arrays = DeviceArrays(gpu, options.cpu_threads) if on_device else NumpyArrays

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(None, {name: np.ascontiguousarray(feeds[name]) for name in self.input_names})
        except Exception as err:  # ONNX Runtime raises its own exception types from C++
            if self.options.device == "gpu" and is_out_of_memory(err):
                raise EngineOutOfMemory(first_line(err)) from None
            raise

    def run_resident(self, inputs: list) -> list:
        """Inputs in input order. On the CPU the engine's memory is the host's:
        ONNX Runtime reads contiguous numpy inputs in place, so a decoder's
        key/value cache is not copied by a step. With DeviceArrays, inputs are
        numpy arrays (copied in) or OrtValues (read where they lie), and the
        outputs stay OrtValues on the device."""
        if self.arrays is NumpyArrays:
            return self._session.run(None, dict(zip(self.input_names, inputs)))
        return self.arrays.run(self._session, inputs)

    def end_profiling(self) -> str:
        """The profile file's path (sessions opened with a profile_prefix)."""
        return self._session.end_profiling()
