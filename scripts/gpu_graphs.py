"""The ONNX graphs the GPU benchmark runs: the harness's own fused ERNIE 3.0
medium classifier and the variants measured against it.

- `harness_classifier` builds the demo classifier (seeded weights, PaddleNLP's
  ernie-3.0-medium-zh configuration) and converts it exactly as a harness run
  does (predictor.classify.export_classifier, then predictor.onnx_conversion
  .convert: paddle2onnx and ONNX Runtime's BERT fusions, checked against the
  Paddle program), with the review corpus tokenised and pruned as a run does.
- A skeleton is that graph with its large weight tensors emptied (a few MB
  instead of 170): the GPU machine has no Paddle, and the weights would not
  fit its 64 MiB transfer. `filled` draws them again, normal(0, 0.02) as
  PaddleNLP initialises them; speed does not depend on the values, and the
  head is refitted on the GPU (`with_head`) so labels depend on the input.
- Variants, all of the same weights: fp16 (onnxruntime.transformers' float16
  conversion, inputs and outputs kept), packed (RemovePadding ->
  PackedAttention -> RestorePadding: layers run on the real tokens only) and
  unmasked (Attention without its mask: right only for batches whose rows
  all have one length, and then ONNX Runtime may take its fused
  flash / memory-efficient kernels, which a 2-D mask rules out).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Initializers at least this large (elements) are emptied in a skeleton and
# drawn again on the GPU machine; LayerNorm, biases, the token-type table and
# the head stay as exported.
SKELETON_MIN_ELEMENTS = 65536
REGENERATE = "gpu_benchmark:regenerate"
INIT_STD = 0.02  # PaddleNLP's initializer_range for ERNIE 3.0
REVIEWS_FILE = "reviews.npz"
SKELETON_FILE = "skeleton.onnx"


@dataclass(frozen=True)
class Reviews:
    """The review corpus as the harness tokenises it (pruned ids)."""
    token_ids: np.ndarray  # int32 [total tokens]
    offsets: np.ndarray    # int64 [rows + 1]
    labels: np.ndarray     # int8 [rows]: 1 positive, 0 negative
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, path: str) -> None:
        np.savez_compressed(path, token_ids=self.token_ids, offsets=self.offsets, labels=self.labels,
                            pad_id=np.array(self.pad_id))

    @classmethod
    def load(cls, path: str) -> "Reviews":
        with np.load(path) as f:
            return cls(f["token_ids"], f["offsets"], f["labels"], int(f["pad_id"]))


def harness_classifier(work_dir: str, max_seq_len: int = 128, seed: int = 0, threads: int | None = None) -> str:
    """Writes work_dir/model.onnx (the fused fp32 graph a harness run makes)
    and work_dir/reviews.npz; returns the model's path. Needs the CPU stack
    (paddlepaddle, paddlenlp, paddle2onnx)."""
    from pipeline import special_token_ids
    from predictor.checkpoint import read_checkpoint
    from predictor.classify.classifier import export_classifier
    from predictor.conversions.onnx_model import TransformerShape, convert
    from predictor.pruning import prune_vocab
    from preprocess.tokenize_shards import Framing, encode_rows
    from scripts.demo_corpus import load_reviews
    from scripts.demo_models import ERNIE_MEDIUM, save_classifier
    from scripts.demo_setup import demo_vocab_path

    os.makedirs(work_dir, exist_ok=True)
    reviews = load_reviews()
    vocab_path = demo_vocab_path(work_dir, ERNIE_MEDIUM["vocab_size"], unimo_format=False)
    model_dir = os.path.join(work_dir, "checkpoint")
    save_classifier(model_dir, vocab_path, seed=seed)
    checkpoint = read_checkpoint(model_dir)
    rows = encode_rows(checkpoint.vocab_path, Framing("classify", max_seq_len), [r.text for r in reviews], None,
                       workers=os.cpu_count() or 1)
    vocab = prune_vocab(int(checkpoint.config["vocab_size"]), np.unique(rows.token_ids),
                        special_token_ids(checkpoint.vocab_path))
    rows = rows.with_token_ids(vocab.to_pruned(rows.token_ids))
    pad_id = int(vocab.old_to_new[int(checkpoint.config.get("pad_token_id") or 0)])
    Reviews(rows.token_ids.astype(np.int32), rows.offsets, np.array([r.label for r in reviews], np.int8),
            pad_id).save(os.path.join(work_dir, REVIEWS_FILE))

    paddle_dir, onnx_dir = os.path.join(work_dir, "paddle"), os.path.join(work_dir, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)
    export_classifier(checkpoint, vocab, paddle_dir)
    # The probe a harness run checks the conversion on: rows of two widths, with padding.
    order = np.argsort(-rows.lengths, kind="stable")
    probe = []
    for picks in (order[:6], order[len(order) // 2:len(order) // 2 + 40:7]):
        ids, types = rows.padded(picks, pad_id)
        probe.append({"input_ids": ids, "token_type_ids": types})
    config = checkpoint.config
    report = convert(paddle_dir, onnx_dir, TransformerShape(int(config["num_attention_heads"]),
                                                            int(config["hidden_size"])),
                     probe, threads or os.cpu_count() or 1)
    if not report["fusions_kept"]:
        raise SystemExit(f"the harness kept the unfused graph ({report}); the benchmark needs the fused one")
    os.replace(os.path.join(onnx_dir, "model.onnx"), os.path.join(work_dir, "model.onnx"))
    return os.path.join(work_dir, "model.onnx")


def write_skeleton(model_path: str, skeleton_path: str) -> dict:
    """The graph with its large float initializers emptied; returns what was emptied."""
    import onnx

    model = onnx.load(model_path)
    emptied = {}
    for tensor in model.graph.initializer:
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        if tensor.data_type == onnx.TensorProto.FLOAT and count >= SKELETON_MIN_ELEMENTS:
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            tensor.doc_string = REGENERATE
            emptied[tensor.name] = list(tensor.dims)
    onnx.save(model, skeleton_path)
    return emptied


def filled(skeleton_path: str, seed: int = 0):
    """The skeleton's emptied tensors drawn again (normal(0, INIT_STD), seeded
    in graph order), as an onnx.ModelProto."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(skeleton_path)
    rng = np.random.default_rng(seed)
    for tensor in model.graph.initializer:
        if tensor.doc_string == REGENERATE:
            values = rng.standard_normal(tuple(tensor.dims), dtype=np.float32) * np.float32(INIT_STD)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return model


@dataclass(frozen=True)
class HeadNodes:
    pooled: str       # the pooler's tanh output: what the head reads
    weight: str       # the head's [hidden, labels] initializer
    bias: str         # the head's [labels] initializer


def head_nodes(model) -> HeadNodes:
    """The pooler's output and the classifier's parameters in a fused graph."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    tanh = [n for n in graph.node if n.op_type == "Tanh"]
    if len(tanh) != 1:
        raise ValueError(f"expected one Tanh (the pooler) in the graph, found {len(tanh)}")
    pooled = tanh[0].output[0]
    consumers = [n for n in graph.node if pooled in n.input]
    matmul = next(n for n in consumers if n.op_type in ("MatMul", "Gemm"))
    weight = next(name for name in matmul.input if name in inits)
    if matmul.op_type == "Gemm":
        bias = matmul.input[2]
    else:
        add = next(n for n in graph.node if n.op_type == "Add" and matmul.output[0] in n.input)
        bias = next(name for name in add.input if name in inits)
    shapes = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer if t.name in (weight, bias)}
    if len(shapes[weight]) != 2 or len(shapes[bias]) != 1:
        raise ValueError(f"unexpected head shapes {shapes}")
    return HeadNodes(pooled, weight, bias)


def with_pooled_output(model):
    """A copy that also outputs the pooler's tanh (float, [rows, hidden])."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = head_nodes(copy)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(nodes.pooled, onnx.TensorProto.FLOAT, None))
    return copy


def with_head(model, weight: np.ndarray, bias: np.ndarray) -> None:
    """Sets the classifier's weight and bias in place."""
    from onnx import numpy_helper

    nodes = head_nodes(model)
    for tensor in model.graph.initializer:
        if tensor.name == nodes.weight:
            tensor.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), nodes.weight))
        elif tensor.name == nodes.bias:
            tensor.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), nodes.bias))


def attention_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]


def packed(model):
    """Padding removed after the embeddings and restored before the last
    (unfused, [CLS]-only) layer: RemovePadding -> PackedAttention (token
    offsets and cumulative sequence lengths; fp16 takes the fused memory-
    efficient kernel on sm80+) -> RestorePadding. The stock
    convert_to_packing_mode restores padding after the graph's last
    LayerNorm, which here is inside the [CLS]-only layer whose reshapes need
    [rows, width, hidden]; and it feeds RemovePadding the Attention mask as
    if it were token counts, which a 2-D 0/1 mask is not. So: counts = the
    mask summed over its row, restore after the last fused layer. The feed is
    unchanged (right-padded ids); only the embeddings and the last layer's
    keys and values still see the padding."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.transformers.onnx_model import OnnxModel

    copy = type(model)()
    copy.CopyFrom(model)
    graph = copy.graph
    nodes = list(graph.node)
    attentions = [n for n in nodes if n.op_type == "Attention" and n.domain == "com.microsoft"]
    if not attentions:
        raise ValueError("no fused Attention to pack")
    mask = attentions[0].input[3] if len(attentions[0].input) > 3 else ""
    if not mask or any(len(a.input) <= 3 or a.input[3] != mask for a in attentions):
        raise ValueError("packing needs one mask shared by every Attention")
    first_input = attentions[0].input[0]
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def next_skip_layer_norm(name: str):
        frontier, seen = [name], set()
        while frontier:
            for n in consumers.get(frontier.pop(0), []):
                if n.name in seen:
                    continue
                seen.add(n.name)
                if n.op_type == "SkipLayerNormalization":
                    return n
                frontier.extend(n.output)
        raise ValueError(f"no SkipLayerNormalization after {name}")

    # The last fused layer ends at the second SkipLayerNormalization after the last Attention.
    last_norm = next_skip_layer_norm(next_skip_layer_norm(attentions[-1].output[0]).output[0])
    restored = last_norm.output[0]
    packed_input, packed_output = first_input + "_packed", restored + "_packed"
    offsets, cumulative, longest = (first_input + suffix for suffix in ("_token_offset", "_cu_seqlens", "_max_len"))
    counts = mask + "_row_tokens"
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "packing_sum_axes"))
    attention_names = {a.name for a in attentions}
    rewritten = []
    for original in nodes:
        if original.name in attention_names:
            node = helper.make_node("PackedAttention", list(original.input[:3]) + [offsets, cumulative],
                                    list(original.output[:1]), name=original.name + "_packed",
                                    domain="com.microsoft")
            node.attribute.extend(a for a in original.attribute
                                  if a.name in ("num_heads", "qkv_hidden_sizes", "scale"))
        else:
            node = onnx.NodeProto()
            node.CopyFrom(original)
        inputs = [packed_input if name == first_input else name for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if original.name == last_norm.name:
            node.output[0] = packed_output
        rewritten.append(node)
    rewritten += [
        helper.make_node("Cast", [mask], [mask + "_float"], to=onnx.TensorProto.FLOAT, name="packing_mask_float"),
        helper.make_node("ReduceSum", [mask + "_float", "packing_sum_axes"], [counts + "_float"], keepdims=0,
                         name="packing_row_tokens"),
        helper.make_node("Cast", [counts + "_float"], [counts], to=onnx.TensorProto.INT32,
                         name="packing_row_tokens_int32"),
        helper.make_node("RemovePadding", [first_input, counts], [packed_input, offsets, cumulative, longest],
                         name="packing_remove_padding", domain="com.microsoft"),
        helper.make_node("RestorePadding", [packed_output, offsets], [restored], name="packing_restore_padding",
                         domain="com.microsoft"),
    ]
    del graph.node[:]
    graph.node.extend(rewritten)
    wrapped = OnnxModel(copy)
    wrapped.topological_sort()
    return wrapped.model
