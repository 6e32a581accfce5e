"""Split a Concat of more than 10 inputs, which TFLM's CONCATENATION refuses, into a tree of Concats.

TFLM's CONCATENATION takes at most 10 inputs (kernels/concatenation.cc, kMaxInputNum); DenseNet
concatenates every earlier feature map of a block (up to 25 in densenet121). Consecutive runs of
at most 10 inputs are concatenated first, along the same axis, and their results concatenated
again until one Concat of at most 10 remains. Exact: concatenation is associative.
"""
from __future__ import annotations

import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import attr, fresh_name

UNBLOCKS = ("Concat",)  # the ops hub check names this rule for
DOES = "concatenates it in steps of at most 10 inputs"  # hub check says "the <rule> rule <DOES>"
MAX_INPUTS = 10


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Concat" and len(n.input) > MAX_INPUTS]:
        parts = _split(model, node)
        rewrites.append(Rewrite(node=node.name, op="Concat", into=f"{parts + 1} Concats of at most {MAX_INPUTS}"))
    return model, rewrites


def _split(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """Replace `node`'s inputs by partial Concats inserted before it; returns how many were added."""
    axis = attr(node, "axis")
    graph = model.graph
    added = 0
    inputs = list(node.input)
    while len(inputs) > MAX_INPUTS:
        grouped = []
        for start in range(0, len(inputs), MAX_INPUTS):
            group = inputs[start:start + MAX_INPUTS]
            if len(group) == 1:
                grouped += group
                continue
            out = fresh_name(model, f"{node.name}_part{added}")
            graph.node.insert(list(graph.node).index(node),
                              helper.make_node("Concat", group, [out], name=f"{out}/Concat", axis=axis))
            grouped.append(out)
            added += 1
        inputs = grouped
    del node.input[:]
    node.input.extend(inputs)
    return added
