"""Rewrite the Gather F.unfold becomes (non-overlapping blocks) as Reshape -> Transpose.

The dynamo exporter writes torch's F.unfold(x, kernel_size=k, stride=k) (MobileViT-v2's patches) as
one Gather per spatial axis with a constant (k, blocks) index table, idx[a, i] = i*k + a. onnx2tf
keeps its int64 indices, which TFLM's GATHER refuses ("Positions of type 'INT64' are not supported
by gather"), and turns the 6-D result into 6-D layout TRANSPOSEs, which TFLM's TRANSPOSE refuses.

When the table covers the axis exactly (size = k * blocks), Gather(x, idx, axis) is x with that axis
read as (blocks, k), the two swapped: Reshape then Transpose. Its 6-D Transposes (a batch of 1) are
made 5-D by hub.graph.rules.unit_batch_transpose, after this rule. Exact.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, emit, fresh_name, replace_node, rewrite_each, static_shape

UNBLOCKS = ("Gather",)  # the ops hub check names this rule for
DOES = "rewrites an unfold's block-index table as Reshape and Transpose"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    return model, rewrite_each(model, "Gather", "Reshape + Transpose", _rewrite)


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape, indices = static_shape(model, node.input[0]), constant(model, node.input[1])
    if shape is None or indices is None or indices.ndim != 2:
        return False
    axis = attr(node, "axis", 0) % len(shape)
    k, blocks = indices.shape
    if k * blocks != shape[axis] or not np.array_equal(indices, np.arange(blocks)[None, :] * k + np.arange(k)[:, None]):
        return False
    base = node.name or node.output[0]
    split = fresh_name(model, f"{base}_blocks")
    target = add_initializer(model, np.array([*shape[:axis], blocks, k, *shape[axis + 1:]], np.int64),
                             f"{base}_blocks_shape")
    perm = list(range(len(shape) + 1))
    perm[axis], perm[axis + 1] = axis + 1, axis
    replace_node(model, node, [emit("Reshape", [node.input[0], target], split),
                               emit("Transpose", [split], node.output[0], perm=perm)])
    return True
