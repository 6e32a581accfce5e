"""Make a Transpose above 5-D that has unit axes (a batch of 1) a Transpose of at most 5-D.

TFLM's TRANSPOSE takes at most 5-D (kernels/transpose.cc: "Transpose op only supports 1D-5D input
arrays"; hub.knowledge.tflm_kernels TRANSPOSE max_rank). Swin's window partition and reverse are
Reshape -> Transpose((1,6,6,4,4,32), perm (0,1,3,2,4,5)) -> Reshape, and MobileViT-v2's unfold from
the dynamo exporter is of the same kind: 6-D only for the leading batch axis of 1.

An axis of size 1 does not change the order of the elements, wherever the permutation moves it; so
the Transpose drops its unit axes (their perm entries removed, the others renumbered) and reads the
tensor as it is without them. The Reshape feeding it, when it feeds only this node, writes that shape
directly; otherwise a Reshape is added. The output keeps the same elements in the same order, so a
Reshape reading it needs no change (one whose shape copies a dimension, a 0, gets the original
shape back first); any other reader gets a Reshape back to the original output shape. Exact.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, consumers, emit, fresh_name, graph_output_names, set_attr,
                            sole_consumer, static_shape)
from hub.knowledge.tflm_kernels import KERNELS

UNBLOCKS = ("Transpose",)  # the ops hub check names this rule for
DOES = "drops its unit (batch) axes to make it 5-D at most"  # hub check says "the <rule> rule <DOES>"
MAX_RANK = KERNELS["TRANSPOSE"].max_rank


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Transpose"]:
        shape = static_shape(model, node.input[0])
        if shape is None or len(shape) <= MAX_RANK:
            continue
        keep = [i for i, d in enumerate(shape) if d != 1]
        if len(keep) > MAX_RANK:
            continue  # too many real axes: no rank-preserving way out here
        perm = attr(node, "perm") or list(range(len(shape)))[::-1]
        _rewrite(model, node, shape, keep, perm)
        rewrites.append(Rewrite(node=node.name, op="Transpose",
                                into=f"{len(keep)}-D Transpose"))
    return model, rewrites


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, shape: tuple[int, ...], keep: list[int],
             perm: list[int]) -> None:
    squeezed = [shape[i] for i in keep]
    out_shape = [shape[p] for p in perm]
    _squeeze_input(model, node, squeezed)
    set_attr(node, "perm", [keep.index(p) for p in perm if p in keep])
    _restore_output(model, node, out_shape)


def _squeeze_input(model: onnx.ModelProto, node: onnx.NodeProto, squeezed: list[int]) -> None:
    """Have `node` read its input without the unit axes: its own Reshape writes that shape, or a new one does."""
    source = node.input[0]
    base = node.name or node.output[0]
    target = add_initializer(model, np.array(squeezed, np.int64), f"{base}_squeezed_shape")
    feeder = next((n for n in model.graph.node if source in n.output), None)
    if feeder is not None and feeder.op_type == "Reshape" and sole_consumer(model, source) is node:
        feeder.input[1] = target
        return
    out = fresh_name(model, f"{base}_squeezed")
    model.graph.node.insert(list(model.graph.node).index(node), emit("Reshape", [source, target], out))
    node.input[0] = out


def _restore_output(model: onnx.ModelProto, node: onnx.NodeProto, out_shape: list[int]) -> None:
    """Readers that are Reshapes to a shape of their own read the squeezed output as it is; others
    (and Reshapes that copy a dimension with 0) read it reshaped back to `out_shape`."""
    name = node.output[0]
    readers = consumers(model, name)
    if name not in graph_output_names(model) and all(_reshapes_alone(model, r, name) for r in readers):
        return
    base = node.name or name
    squeezed = fresh_name(model, f"{base}_out")
    node.output[0] = squeezed
    target = add_initializer(model, np.array(out_shape, np.int64), f"{base}_out_shape")
    at = list(model.graph.node).index(node)
    model.graph.node.insert(at + 1, emit("Reshape", [squeezed, target], name))


def _reshapes_alone(model: onnx.ModelProto, reader: onnx.NodeProto, name: str) -> bool:
    """A Reshape of `name` to a constant shape that copies no input dimension (no 0 with allowzero=0)."""
    if reader.op_type != "Reshape" or list(reader.input).index(name) != 0 or name in reader.input[1:]:
        return False
    target = constant(model, reader.input[1])
    return target is not None and (attr(reader, "allowzero", 0) or not np.any(target == 0))
