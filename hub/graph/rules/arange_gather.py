"""Rewrite a Gather that takes every element in order (indices 0..n-1, any shape) into the Reshape it is.

torch's dynamo exporter writes `as_strided` as Gather(flat, arange(n).reshape(shape), axis 0): Swin's pooler
(AdaptiveAvgPool1d over its tokens) becomes Reshape(-1) -> Gather(indices (1, C, 1, 1) = 0..C-1) -> Squeeze.
onnx2tf keeps the int64 indices and TFLM refuses them ("Positions of type 'INT64' are not supported by gather",
kernels/gather.cc), so the model failed on TFLM. Gathering 0..n-1 along an axis of length n reads every element
once, in order: the output is the input reshaped to shape[:axis] + indices.shape + shape[axis+1:]. Exact.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, emit, replace_node, static_shape

UNBLOCKS = ("Gather",)  # the ops hub check names this rule for
DOES = "turns a Gather of every index in order into a Reshape"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Gather"]:
        index, shape = constant(model, node.input[1]), static_shape(model, node.input[0])
        if index is None or shape is None or not shape:
            continue
        axis = int(attr(node, "axis", 0)) % len(shape)
        if index.size != shape[axis] or not np.array_equal(index.reshape(-1) % shape[axis], np.arange(shape[axis])):
            continue
        target = [*shape[:axis], *index.shape, *shape[axis + 1:]]
        new_shape = add_initializer(model, np.array(target, np.int64), f"{node.name or node.output[0]}_shape")
        replace_node(model, node, [emit("Reshape", [node.input[0], new_shape], node.output[0])])
        rewrites.append(Rewrite(node=node.name, op="Gather", into="Reshape"))
    return model, rewrites
