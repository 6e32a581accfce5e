"""Rewrite attention's 5-D q/k/v head split into 4-D ops TFLM runs.

ViTs (timm's Attention, and most hand-written ones) split one qkv projection into heads with

    qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)     # 3 x (B, H, N, D)

which torch exports as Reshape (5-D) -> Transpose -> Split(axis 0) -> Squeeze, or Gather(axis 0, i)
per part for `qkv[i]`. onnx2tf lowers the 5-D Split to STRIDED_SLICE, which TFLM refuses above 4-D
("input dim should not exceed 4"). Rewritten to split before the reshape, exactly the same values:

    q, k, v = Split(qkv, 3 equal parts, last axis)                   SPLIT
    each:     Reshape(B, N, H, D) -> Transpose(perm without the 3)   RESHAPE, TRANSPOSE (4-D)

Matched: a Reshape of a [.., .., K*H*D] tensor to [.., .., K, H, D] whose sole reader is a Transpose
that puts the K axis first, read only by one Split into K ones along axis 0 each followed by
Squeeze(axis 0), or by Gathers of constant scalar indices along axis 0.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, consumers, fresh_name, graph_output_names, replace_nodes,
                            sole_consumer, static_shape)

UNBLOCKS = ()  # a pattern (a 5-D head split TFLM's STRIDED_SLICE refuses), not an op
DOES = "splits a 5-D attention head split into 4-D slices"  # hub check says "the <rule> rule <DOES>"
PART_AXIS = 2  # the K (q/k/v) axis of the 5-D reshape


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in list(model.graph.node):
        if node.op_type == "Reshape" and _rewrite(model, node):
            rewrites.append(Rewrite(node=node.name, op="5-D q/k/v head split", into="4-D split"))
    return model, rewrites


def _rewrite(model: onnx.ModelProto, reshape: onnx.NodeProto) -> bool:
    src, heads = static_shape(model, reshape.input[0]), static_shape(model, reshape.output[0])
    if src is None or heads is None or len(src) != 3 or len(heads) != 5 or src[:2] != heads[:2] \
            or src[2] != math.prod(heads[2:]):
        return False
    transpose = sole_consumer(model, reshape.output[0])
    perm = list(attr(transpose, "perm", [])) if transpose is not None and transpose.op_type == "Transpose" else []
    if len(perm) != 5 or perm[0] != PART_AXIS:
        return False
    found = _parts(model, transpose.output[0], heads[PART_AXIS])
    if found is None:
        return False
    readers, outputs = found
    _emit(model, [reshape, transpose, *readers], reshape.input[0], outputs, heads,
          [q if q < PART_AXIS else q - 1 for q in perm[1:]])
    return True


def _parts(model: onnx.ModelProto, name: str, count: int) -> tuple[list[onnx.NodeProto], list[str]] | None:
    """(the nodes that take the parts apart, each part's tensor in order) when `name` is read only by
    Split(axis 0, ones) + Squeeze(axis 0) per output or by Gather(axis 0, scalar i) per part."""
    if name in graph_output_names(model):
        return None
    readers = consumers(model, name)
    if len(readers) == 1 and readers[0].op_type == "Split" and _splits_into_ones(model, readers[0], count):
        squeezes = [sole_consumer(model, out) for out in readers[0].output]
        if all(s is not None and s.op_type == "Squeeze" and _axes(model, s) == [0] for s in squeezes):
            return [readers[0], *squeezes], [s.output[0] for s in squeezes]
        return None
    outputs: dict[int, str] = {}
    for gather in readers:
        index = constant(model, gather.input[1]) if gather.op_type == "Gather" else None
        if index is None or index.ndim != 0 or int(attr(gather, "axis", 0)) != 0:
            return None
        outputs[int(index) % count] = gather.output[0]
    return (readers, [outputs[i] for i in range(count)]) if len(outputs) == count == len(readers) else None


def _splits_into_ones(model: onnx.ModelProto, split: onnx.NodeProto, count: int) -> bool:
    sizes = constant(model, split.input[1]) if len(split.input) > 1 and split.input[1] else attr(split, "split")
    return int(attr(split, "axis", 0)) == 0 and len(split.output) == count \
        and (sizes is None or list(np.asarray(sizes).reshape(-1)) == [1] * count)


def _axes(model: onnx.ModelProto, squeeze: onnx.NodeProto) -> list[int] | None:
    axes = constant(model, squeeze.input[1]) if len(squeeze.input) > 1 else attr(squeeze, "axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _emit(model: onnx.ModelProto, old: list[onnx.NodeProto], x: str, outputs: list[str], heads: tuple[int, ...],
          perm: list[int]) -> None:
    base = old[0].name or x
    count, width = heads[PART_AXIS], math.prod(heads[PART_AXIS + 1:])
    sizes = add_initializer(model, np.full(count, width, np.int64), f"{base}_sizes")
    shape = add_initializer(model, np.array(heads[:PART_AXIS] + heads[PART_AXIS + 1:], np.int64), f"{base}_shape")
    parts = [fresh_name(model, f"{base}_part{i}") for i in range(count)]
    nodes = [helper.make_node("Split", [x, sizes], parts, name=f"{base}/Split", axis=-1)]
    for part, out in zip(parts, outputs):
        flat = fresh_name(model, f"{part}_heads")
        nodes += [helper.make_node("Reshape", [part, shape], [flat], name=f"{flat}/Reshape"),
                  helper.make_node("Transpose", [flat], [out], name=f"{out}/Transpose", perm=perm)]
    replace_nodes(model, old, nodes)
