"""Export step: int8 weights written into an ONNX graph, and a census of
what a graph runs in int8.

`quantised` rewrites named MatMul and Attention nodes into ONNX Runtime's
dynamic-INT8 kernels (DynamicQuantizeMatMul, QAttention) in memory, so a
guard can try many mixes in seconds; `multiplies_by_layer` reads back from
any graph which multiplies run in int8, so reports say what ran, not what
was planned. Used by classification's INT8 guard
(predictor/classify/int8_guard.py) and by the generation decoder's
conversion (predictor/generate/onnx_decoder.py).
"""
from __future__ import annotations

import numpy as np

from predictor.conversions.first_token import FIRST_TOKEN, split_first_token, with_nodes

QUANTISED_OPS = ("MatMul", "Attention")
# A post-LayerNorm encoder layer ends in two (Skip)LayerNormalization ops, so
# counting them places each weighted op in its layer.
LAYER_NORMS = ("EmbedLayerNormalization", "SkipLayerNormalization", "LayerNormalization")


def cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def weighted_nodes_placed(model, op_types) -> tuple[list[tuple[int, object]], int]:
    """([(layer, node)] for each node of `op_types` with a weight (its second
    input an initializer), the number of encoder layers). The embeddings end
    in one norm and each layer in two, so a weighted op after n norms belongs
    to layer (n - 1) // 2; past the last layer (or -1) is the head. The
    first-token copies of a split graph (predictor/conversions/first_token.py) are not
    counted as norms of their own."""
    initializers = {t.name for t in model.graph.initializer}
    placed: list[tuple[int, object]] = []
    norms_seen = 0
    for node in model.graph.node:
        if node.op_type in LAYER_NORMS and not node.name.endswith(FIRST_TOKEN):
            norms_seen += 1
        elif node.op_type in op_types and len(node.input) > 1 and node.input[1] in initializers:
            placed.append(((norms_seen - 1) // 2, node))
    return placed, max(0, (norms_seen - 1) // 2)


def weighted_nodes_by_layer(model) -> tuple[list[list[str]], list[str]]:
    """(names of each encoder layer's quantisable ops, those of the head
    (pooler, classifier))."""
    placed, layer_count = weighted_nodes_placed(model, QUANTISED_OPS)
    layers = [[node.name for layer, node in placed if layer == i] for i in range(layer_count)]
    head = [node.name for layer, node in placed if not 0 <= layer < layer_count]
    return layers, head


def multiplies_by_layer(model) -> list[dict]:
    """What a graph really runs, read from its nodes: per encoder layer, how
    many weighted matrix multiplies (attention counted as one) run in int8,
    in fp32 over the first token only (the split's copies), and in fp32
    otherwise."""
    int8_ops, fp32_ops = ("DynamicQuantizeMatMul", "QAttention"), ("MatMul", "Attention")
    placed, layer_count = weighted_nodes_placed(model, int8_ops + fp32_ops)
    counts = [{"layer": i, "int8": 0, "fp32_first_token": 0, "fp32": 0} for i in range(layer_count)]
    for layer, node in placed:
        if 0 <= layer < layer_count:
            kind = ("int8" if node.op_type in int8_ops else
                    "fp32_first_token" if node.name.endswith(FIRST_TOKEN) else "fp32")
            counts[layer][kind] += 1
    return counts


def layers_not_int8(census: list[dict], int8_layers: list[int]) -> list[int]:
    """Of the layers meant to run INT8, those whose graph (its
    multiplies_by_layer census) runs none in int8, or, but for the last
    layer, any multiply in fp32 beyond the first token's copies: what a
    missing fusion that the rewrite relies on would leave. The classifier's
    last layer computes its queries, attention output and feed-forward for
    the first token alone, and those stay fp32 by design."""
    last = len(census) - 1
    return [i for i in int8_layers if census[i]["int8"] == 0 or (census[i]["fp32"] and i != last)]


def per_column_int8(weight: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 (zero point 0): (quantised weight, scale per column)."""
    scale = np.abs(weight).max(axis=0) / levels
    scale[scale == 0] = 1.0
    return np.clip(np.rint(weight / scale), -levels, levels).astype(np.int8), scale.astype(np.float32)


def quantised(model, int8_nodes: set[str], reduce_range: bool, first_token_fp32: bool = False):
    """A copy of `model` whose named MatMul and Attention nodes take per-column
    int8 weights and quantise their input on the fly (ONNX Runtime's
    DynamicQuantizeMatMul and QAttention, the kernels its own dynamic
    quantiser ends up running), built in memory in milliseconds, so the guard
    can try many mixes of fp32 and int8 layers.

    With `first_token_fp32` (a classifier, which reads the first token only:
    predictor/conversions/first_token.py) the named MatMuls run INT8 on every token but
    the first, and those that never see the other tokens stay fp32."""
    from onnx import helper, numpy_helper

    if first_token_fp32:
        model, rest_matmuls = split_first_token(model)
        attention = {node.name for node in model.graph.node if node.op_type == "Attention"}
        int8_nodes = {name for name in int8_nodes if name in rest_matmuls or name in attention}
    weights = {t.name: t for t in model.graph.initializer}
    levels = 63 if reduce_range else 127
    nodes, new_weights = [], []
    for node in model.graph.node:
        if node.name not in int8_nodes:
            nodes.append(node)
            continue
        w_name = node.input[1]
        # ONNX Runtime's dynamic quantiser also always gives Attention 7-bit weights.
        w_q, w_scale = per_column_int8(numpy_helper.to_array(weights[w_name]),
                                       63 if node.op_type == "Attention" else levels)
        new_weights += [numpy_helper.from_array(w_q, w_name + "_int8"),
                        numpy_helper.from_array(w_scale, w_name + "_scale"),
                        numpy_helper.from_array(np.zeros_like(w_scale, dtype=np.int8), w_name + "_zero")]
        if node.op_type == "MatMul":
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [node.input[0], w_name + "_int8", w_name + "_scale",
                                                                    w_name + "_zero"],
                                          list(node.output), node.name + "_int8", domain="com.microsoft"))
        else:  # Attention: input, weight, bias, mask[, ...] -> QAttention
            x = node.input[0]
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [x + "_u8", x + "_scale", x + "_zero"],
                                          node.name + "_input_u8"))
            mask = node.input[3] if len(node.input) > 3 else ""
            attention = helper.make_node("QAttention", [x + "_u8", w_name + "_int8", node.input[2], x + "_scale",
                                                        w_name + "_scale", mask, x + "_zero", w_name + "_zero"],
                                         list(node.output), node.name + "_int8", domain="com.microsoft")
            attention.attribute.extend(node.attribute)
            nodes.append(attention)
    used = {name for node in nodes for name in node.input}
    return with_nodes(model, nodes, [t for t in model.graph.initializer if t.name in used] + new_weights)
