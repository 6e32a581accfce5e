"""Rewrite a standalone Erf (one that is not part of a GELU) into builtins TFLM runs.

onnx2tf lowers Erf to tf.math.erf, which has no TFLite builtin (a Flex op: TFLM has none).
Rewritten as

    erf(x) ~ tanh(x * (A + B * x^2)),    A = 1.1296758, B = 0.0997927

(MUL, MUL, ADD, MUL, TANH). A and B are the minimax fit of this form to erf (the GELU tanh
approximation's constants, 2/sqrt(pi) and 0.044715 * 4/sqrt(pi), give 3.6e-4); measured
max abs error 2.81e-4 over all real x (a grid of 2e5 points on [-10, 10]; outside it both
sides are +-1). With A, B > 0 the argument is monotonic, so the result saturates to +-1 like
erf. Only TANH, MUL and ADD appear: each has int8 and int16 kernels in TFLM (EXP and LOG,
which the Abramowitz-Stegun forms need, are float32 only), and x^2, not x^3, is the widest
intermediate, which keeps its int8 scale fine. GELU's Erf is rewritten whole by gelu_tanh,
which runs first.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, fresh_name, replace_node

UNBLOCKS = ("Erf",)  # the ops hub check names this rule for
DOES = "replaces any other Erf by MUL/ADD/TANH"  # hub check says "the <rule> rule <DOES>"
A, B = 1.1296758, 0.0997927


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Erf" and n.domain in ("", "ai.onnx")]:
        base = node.name or node.output[0]
        replace_node(model, node, tanh_of_odd_cubic(model, node.input[0], node.output[0], A, B, base))
        rewrites.append(Rewrite(node=node.name, op="Erf", into="tanh(x*(a+b*x^2))"))
    return model, rewrites


def tanh_of_odd_cubic(model: onnx.ModelProto, x: str, y: str, a: float, b: float, base: str) -> list[onnx.NodeProto]:
    """Nodes computing y = tanh(x * (a + b * x^2)), factored so no x^3 tensor exists."""
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("x2", "bx2", "poly", "arg")}
    c = {key: add_initializer(model, np.array(value, np.float32), f"{base}_{key}") for key, value in
         (("a", a), ("b", b))}
    return [
        node("Mul", [x, x], t["x2"]),
        node("Mul", [t["x2"], c["b"]], t["bx2"]),
        node("Add", [t["bx2"], c["a"]], t["poly"]),
        node("Mul", [x, t["poly"]], t["arg"]),
        node("Tanh", [t["arg"]], y),
    ]


def node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}/{op}")
