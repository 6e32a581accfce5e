"""Rewrite HardSigmoid, which onnx2tf lowers to TFLite RELU_0_TO_1 (not in TFLM), into RELU6.

HardSigmoid(x) = clip(alpha * x + beta, 0, 1) (torch's nn.Hardsigmoid: alpha = 1/6, beta = 0.5;
the gate of MobileNetV3's squeeze-excite blocks). Two forms replace it, both exact:

    x * HardSigmoid(x), alpha = 1/6, beta = 1/2   ->  HardSwish(x)        (TFLM HARD_SWISH)
    HardSigmoid(x)                                ->  Clip(6a x + 6b, 0, 6) * 1/6
                                                      (MUL, ADD, RELU6, MUL; a Mul or Add that is
                                                      1 or 0 is left out, and when x comes from a
                                                      Conv/Gemm read by nothing else, 6a and 6b
                                                      fold into its weights)

Error: float rounding only (the factor 6 and 1/6 are not exact in float32), about 1e-7 relative.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, as_linear, attr, fresh_name, opset, producer, sole_consumer

UNBLOCKS = ("HardSigmoid",)  # the ops hub check names this rule for
DOES = "turns it into RELU6, or HardSwish"  # hub check says "the <rule> rule <DOES>"
HARDSWISH = (1 / 6, 0.5)


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "HardSigmoid"]:
        alpha, beta = float(attr(node, "alpha", 0.2)), float(attr(node, "beta", 0.5))
        if _as_hardswish(model, node, alpha, beta):
            rewrites.append(Rewrite(node=node.name, op="HardSigmoid", into="HardSwish"))
        else:
            _as_relu6(model, node, alpha, beta)
            rewrites.append(Rewrite(node=node.name, op="HardSigmoid", into="relu6 form"))
    return model, rewrites



def _as_hardswish(model: onnx.ModelProto, node: onnx.NodeProto, alpha: float, beta: float) -> bool:
    """x * HardSigmoid(x) with torch's constants -> HardSwish(x) (an ONNX op from opset 14)."""
    mul = sole_consumer(model, node.output[0])
    x = node.input[0]
    if not np.allclose((alpha, beta), HARDSWISH, rtol=1e-6) or opset(model) < 14 or mul is None \
            or mul.op_type != "Mul" or sorted(mul.input) != sorted((x, node.output[0])):
        return False
    graph = model.graph
    at = list(graph.node).index(mul)
    graph.node.remove(mul)
    graph.node.remove(node)
    graph.node.insert(at - 1, helper.make_node("HardSwish", [x], [mul.output[0]], name=node.name))
    return True


def _as_relu6(model: onnx.ModelProto, node: onnx.NodeProto, alpha: float, beta: float) -> None:
    scale, shift = 6.0 * alpha, 6.0 * beta
    x, base = node.input[0], node.name
    nodes = []
    if not _fold_into_layer(model, x, scale, shift):
        if scale != 1.0:
            nodes.append(_node("Mul", [x, add_initializer(model, np.float32(scale), f"{base}_scale")], fresh_name(model, f"{base}_scaled")))
            x = nodes[-1].output[0]
        if shift != 0.0:
            nodes.append(_node("Add", [x, add_initializer(model, np.float32(shift), f"{base}_shift")], fresh_name(model, f"{base}_shifted")))
            x = nodes[-1].output[0]
    bounds = [add_initializer(model, np.float32(v), f"{base}_{k}") for k, v in (("zero", 0.0), ("six", 6.0))]
    relu6 = fresh_name(model, f"{base}_relu6")
    nodes.append(_node("Clip", [x, *bounds], relu6))
    nodes.append(_node("Mul", [relu6, add_initializer(model, np.float32(1 / 6), f"{base}_sixth")], node.output[0]))
    graph = model.graph
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(at + offset, new)


def _fold_into_layer(model: onnx.ModelProto, x: str, scale: float, shift: float) -> bool:
    """y = scale * layer(x) + shift folded into the Conv/Gemm that makes x, when nothing else reads x."""
    layer = producer(model, x)
    linear = None if layer is None or sole_consumer(model, x) is None else as_linear(model, layer)
    if linear is None or (shift and not linear.can_bias):
        return False
    linear.write(model, linear.weight.astype(np.float64) * scale, linear.bias.astype(np.float64) * scale + shift)
    return True


def _node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}/{op}")
