"""Remove the exporter's NaN guard after a softmax: Where(IsNaN(s), c, s) with s = Softmax(...) becomes s.

torch 2.13's dynamo exporter writes `Where(IsNaN(x), 0, x)` after attention's softmax (for rows a mask
leaves empty). onnx2tf lowers IsNaN to NOT_EQUAL(x, x) and Where to SELECT_V2; TensorFlow's converter has
no 16x8 kernel for NOT_EQUAL and refuses `--quantize int16x8` on the whole model ("Quantization to 16x8-bit
not yet supported for op: 'NOT_EQUAL'"), and in int8 the guard costs two ops per attention block for
nothing: softmax over finite inputs is never NaN (its outputs are exp(x - max) / sum, in [0, 1]), so the
Where always takes `s`. Exact on finite inputs; a NaN input gives NaN where the guard gave `c`, and a model
fed NaN computes nothing meaningful either way.
"""
from __future__ import annotations

import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import bypass_node, consumers, producer

UNBLOCKS = ("IsNaN",)  # the ops hub check names this rule for
DOES = "removes it when it guards a softmax (never NaN)"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for where in [n for n in model.graph.node if n.op_type == "Where"]:
        isnan = _softmax_guard(model, where)
        if isnan is None:
            continue
        guarded = where.input[2]
        identity = helper.make_node("Identity", [guarded], list(where.output), name=where.name)
        model.graph.node.insert(list(model.graph.node).index(where), identity)
        model.graph.node.remove(where)
        bypass_node(model, identity)  # keeps the Identity only when its output is a graph output read as such
        if not consumers(model, isnan.output[0]):
            model.graph.node.remove(isnan)
        rewrites.append(Rewrite(node=where.name, op="Where", into="its softmax input (NaN guard removed)"))
    return model, rewrites


def _softmax_guard(model: onnx.ModelProto, where: onnx.NodeProto) -> onnx.NodeProto | None:
    """The IsNaN of `where` = Where(IsNaN(s), c, s) with s a Softmax's output, else None."""
    if len(where.input) != 3:
        return None
    isnan = producer(model, where.input[0])
    if isnan is None or isnan.op_type != "IsNaN" or isnan.input[0] != where.input[2]:
        return None
    source = producer(model, where.input[2])
    return isnan if source is not None and source.op_type in ("Softmax", "LogSoftmax") else None
