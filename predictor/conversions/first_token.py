"""Export step for INT8 classification: the first token's own row apart.

A classifier reads one token: the pooler takes the first ([CLS]) token of
the last layer. INT8 noise that lands in that token's row of a matrix
multiply reaches the pooler straight through the residual stream, while
noise in every other token's row reaches it only through attention, which
averages it over the sequence. So the first token's share of the noise is
by far the largest, and its rows are the cheapest to spare: one token in
tens. Measured on the demo classifier (2000 rows, every encoder matrix
multiply INT8): the first token's rows in fp32 cut INT8's noise in the
top-two margin from 0.51 to 0.10 and the rows the low-margin rule re-runs
from 25% to 3%, for 8-20% more INT8 pass time (single passes, side by
side). That is the fp32 rows themselves, which read every fp32 weight once
per batch: the slices and concatenations cost nothing measurable (the split
graph all in fp32 ran as fast as the unsplit one).

The rewrite here splits every per-token stretch of the encoder (between
one attention and the next) in two: the first token ([batch, 1, hidden])
and the rest ([batch, seq - 1, hidden]), each running the same ops on the
same weights. A tensor is split where an op that mixes tokens (Attention)
hands it to per-token ops, and joined again (one concatenation) where such
an op needs every token, so each layer adds two slices and one
concatenation of hidden-wide tensors. The rest-branch ops keep the
original node names, so a quantiser that names nodes quantises the rest;
the first token's copies take new names and stay fp32.
"""
from __future__ import annotations

import numpy as np

# Ops that compute each token's output from that token's input alone, given
# weights. (Add/Mul/Sub/Div only with a weight of rank 1 or less: a wider
# constant could vary along the sequence.)
PER_TOKEN_OPS = {"MatMul", "BiasGelu", "Gelu", "FastGelu", "SkipLayerNormalization", "LayerNormalization",
                 "Add", "Mul", "Sub", "Div"}
ELEMENTWISE_OPS = {"Add", "Mul", "Sub", "Div"}
# Ops whose first output is a [batch, seq, hidden] token stream: where splitting starts.
TOKEN_STREAM_SOURCES = {"EmbedLayerNormalization", "Attention"}
SEQUENCE_AXIS = 1
FIRST_TOKEN, REST = "_first_token", "_rest"  # suffixes of the two branches' tensors


def split_first_token(model):
    """(a copy of `model` with its per-token ops split into a first-token
    branch and a rest branch, names of the MatMul nodes now running on the
    rest only: each keeps its name there, its first-token copy is named
    name + "_first_token"). A model without a token stream comes back as it
    was, with no names."""
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    bounds = {"first_token_start": 0, "first_token_end": 1, "rest_end": np.iinfo(np.int64).max,
              "token_axis": SEQUENCE_AXIS}
    # Whole token streams that can be sliced: what attention reads and writes
    # is [batch, seq, hidden] by the op's contract, whatever made it (a fused
    # EmbedLayerNormalization, or a plain LayerNormalization after separate
    # embedding lookups).
    streams = {node.output[0] for node in model.graph.node if node.op_type in TOKEN_STREAM_SOURCES} | \
        {node.input[0] for node in model.graph.node if node.op_type == "Attention"}
    split: dict[str, tuple[str, str]] = {}  # tensor -> (its first-token part, its rest)
    whole: set[str] = set()                  # tensors that exist whole under their own name
    nodes, rest_matmuls = [], set()

    def parts(tensor: str) -> tuple[str, str]:
        if tensor not in split:  # a stream's first split: slice it
            split[tensor] = (tensor + FIRST_TOKEN, tensor + REST)
            nodes.append(helper.make_node("Slice", [tensor, "first_token_start", "first_token_end", "token_axis"],
                                          [split[tensor][0]], tensor + "_slice" + FIRST_TOKEN))
            nodes.append(helper.make_node("Slice", [tensor, "first_token_end", "rest_end", "token_axis"],
                                          [split[tensor][1]], tensor + "_slice" + REST))
        return split[tensor]

    def joined(tensor: str) -> str:
        if tensor in split and tensor not in whole:
            nodes.append(helper.make_node("Concat", list(split[tensor]), [tensor], tensor + "_join",
                                          axis=SEQUENCE_AXIS))
            whole.add(tensor)
        return tensor

    def splittable(node) -> bool:
        if node.op_type not in PER_TOKEN_OPS or not any(i in split or i in streams for i in node.input):
            return False
        others = [i for i in node.input if i and i not in split and i not in streams]
        if any(i not in weights for i in others):
            return False  # another activation, laid out who knows how
        if node.op_type in ELEMENTWISE_OPS:
            return all(len(weights[i].dims) <= 1 for i in others)
        return node.op_type != "MatMul" or node.input[1] in weights

    for node in model.graph.node:
        if not splittable(node):
            copy = helper.make_node(node.op_type, [joined(i) for i in node.input], list(node.output), node.name,
                                    domain=node.domain)
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
            if node.output and node.output[0] in streams:
                whole.add(node.output[0])
            continue
        inputs = [parts(i) if i in split or i in streams else (i, i) for i in node.input]
        for branch, (suffix, name) in enumerate(((FIRST_TOKEN, node.name + FIRST_TOKEN), (REST, node.name))):
            copy = helper.make_node(node.op_type, [pair[branch] for pair in inputs],
                                    [o + suffix if o else "" for o in node.output], name, domain=node.domain)
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
        split.update({o: (o + FIRST_TOKEN, o + REST) for o in node.output if o})
        if node.op_type == "MatMul":
            rest_matmuls.add(node.name)
    if not rest_matmuls:
        return model, set()
    for output in model.graph.output:
        joined(output.name)
    return with_nodes(model, nodes, list(model.graph.initializer) +
                      [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in bounds.items()]), rest_matmuls


def with_nodes(model, nodes: list, initializers: list):
    """`model` with these nodes and initializers (its inputs, outputs,
    opsets and IR version kept)."""
    from onnx import helper

    graph = helper.make_graph(nodes, model.graph.name, model.graph.input, model.graph.output, initializers)
    result = helper.make_model(graph, opset_imports=model.opset_import)
    result.ir_version = model.ir_version
    return result
