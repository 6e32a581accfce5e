"""Rewrite TopK with k = 1, which onnx2tf lowers to TOPK_V2 (not in TFLM), into a reduction and an arg-reduction.

A classifier that ends in torch.topk(scores, 1) (best score and class) is TopK(x, k=1):

    values  = ReduceMax(x, axis, keepdims=1)       (ReduceMin when largest = 0)   REDUCE_MAX / REDUCE_MIN
    indices = ArgMax(x, axis, keepdims=1)          (ArgMin when largest = 0)      ARG_MAX / ARG_MIN

Exact, ties included: TopK and ArgMax both give the lowest index among equal values. The
indices stay int64 in the graph; hub.tflite.passes.argmax_int32 then has ARG_MAX write the int32
that TFLM's kernel writes. Only a constant k of 1 is rewritten (other k: top-k on the host).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, opset, replace_node

UNBLOCKS = ("TopK",)  # the ops hub check names this rule for
DOES = "rewrites k=1 as ArgMax"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "TopK"]:
        if _k(model, node) == 1:
            _rewrite(model, node)
            rewrites.append(Rewrite(node=node.name, op="TopK", into="ArgMax" if attr(node, "largest", 1) else "ArgMin"))
    return model, rewrites



def _k(model: onnx.ModelProto, node: onnx.NodeProto) -> int | None:
    if len(node.input) < 2:  # opset 1-9: k is an attribute
        return attr(node, "k")
    k = constant(model, node.input[1])
    return int(k.reshape(-1)[0]) if k is not None and k.size == 1 else None


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    axis, largest = int(attr(node, "axis", -1)), bool(attr(node, "largest", 1))
    reduce_op, arg_op = ("ReduceMax", "ArgMax") if largest else ("ReduceMin", "ArgMin")
    if opset(model) >= 18:  # ReduceMax/ReduceMin's axes became an input
        axes_input, axes_attr = [add_initializer(model, np.array([axis], np.int64), f"{node.name}_axes")], {}
    else:
        axes_input, axes_attr = [], {"axes": [axis]}
    new = []
    values, indices = (list(node.output) + ["", ""])[:2]
    if values:
        new.append(helper.make_node(reduce_op, [node.input[0], *axes_input], [values], name=f"{node.name}/{reduce_op}",
                                    keepdims=1, **axes_attr))
    if indices:
        new.append(helper.make_node(arg_op, [node.input[0]], [indices], name=f"{node.name}/{arg_op}", axis=axis, keepdims=1))
    replace_node(model, node, new)
