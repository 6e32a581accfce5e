"""Rewrite Gather with one constant index into Slice (+ Squeeze): TFLM's GATHER has no int16 kernel.

A ViT/DeiT classifier picks its class token with `hidden[:, 0]`, which both torch exporters write as
Gather(hidden, 0, axis=1). onnx2tf lowers it to GATHER, which TFLM runs on float32 and int8 only
(kernels/gather.cc; hub.knowledge.tflm_kernels), so `--quantize int16x8` converted and then failed on TFLM
("Type 'INT16' is not supported by gather"). With one constant index i the same values are

    Slice(x, starts=[i], ends=[i + 1], axes=[axis])      (a scalar index: then Squeeze(axes=[axis]))

which TFLM runs as STRIDED_SLICE (+ RESHAPE) in every type. Exact: it copies the same elements.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, emit, fresh_name, opset, replace_node, static_shape
from hub.knowledge.tflm_kernels import KERNELS

SLICE_MAX_RANK = KERNELS["STRIDED_SLICE"].max_rank  # a larger Gather stays GATHER (5-D q/k/v: split_qkv_heads)
UNBLOCKS = ()  # GATHER itself runs on TFLM: this rule only keeps int16x8 models runnable
DOES = "turns a one-index Gather into Slice, which TFLM runs in int16 too"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    if opset(model) < 13:  # Squeeze's axes became an input in opset 13; older graphs keep their Gather
        return model, rewrites
    for node in [n for n in model.graph.node if n.op_type == "Gather"]:
        index, shape = constant(model, node.input[1]), static_shape(model, node.input[0])
        if index is None or index.size != 1 or shape is None or len(shape) > SLICE_MAX_RANK:
            continue
        axis = int(attr(node, "axis", 0)) % len(shape)
        start = int(index.reshape(-1)[0]) % shape[axis]
        replace_node(model, node, _slice(model, node, axis, start, squeeze=index.ndim == 0))
        rewrites.append(Rewrite(node=node.name, op="Gather", into="Slice" + (" + Squeeze" if index.ndim == 0 else "")))
    return model, rewrites


def _slice(model: onnx.ModelProto, node: onnx.NodeProto, axis: int, start: int, squeeze: bool) -> list[onnx.NodeProto]:
    base = node.name or node.output[0]
    bounds = [add_initializer(model, np.array([v], np.int64), f"{base}_{k}")
              for k, v in (("start", start), ("end", start + 1), ("axis", axis))]
    sliced = fresh_name(model, f"{base}_slice") if squeeze else node.output[0]
    nodes = [emit("Slice", [node.input[0], *bounds], sliced)]
    if squeeze:
        nodes.append(emit("Squeeze", [sliced, bounds[2]], node.output[0]))
    return nodes
