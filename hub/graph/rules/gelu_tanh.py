"""Rewrite exact GELU into its tanh approximation, built from MUL, ADD and TANH.

TFLM has no GELU kernel, and none for Erf. onnx2tf lowers the ONNX Gelu op (opset 20) to
TFLite GELU and the Erf in torch's exact GELU to tf.math.erf (a Flex op), so neither runs.
Rewritten, from x to the pattern's output:

    y = x * (0.5 + 0.5 * tanh(x * (C1 + C2 * x^2))),   C1 = sqrt(2/pi), C2 = 0.044715 * sqrt(2/pi)

the tanh approximation torch computes for GELU(approximate="tanh"), factored so that the widest
intermediate is x^2 (not x^3) and the tanh's output is mapped to [0, 1] before the last MUL,
both kind to int8 scales. Max abs error against exact GELU: 4.73e-4 (at x = -2.70; measured on
a grid of 2e5 points over [-10, 10], in float64 and float32 alike); for Gelu(approximate="tanh")
it is the op's own definition. Measured with onnx2tf 1.29.24: the TFLite converter does not fuse
this form (nor torch's own tanh-form export, with x^3 as Mul or Pow) back into GELU; they
become MUL, ADD and TANH in float32, int8 and int16x8, so a tanh form in the graph is left as
it is.

Matched: Gelu (approximate "none" or "tanh"), and Erf(x / sqrt(2)) (or Erf(x * 1/sqrt(2)))
-> Add 1 -> multiplied by x and 0.5 in the orders the torch exporters write:
    (x * (1 + erf)) * 0.5     torch.onnx.export, TorchScript (dynamo=False)
    x * (0.5 * (1 + erf))     torch.onnx.export(dynamo=True) below opset 20
    (x * 0.5) * (1 + erf)     x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) written by hand
(either operand order of each Add and Mul). Other Erf nodes are left to erf_approx.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, fresh_name, producer, replace_nodes, sole_consumer
from hub.graph.rules.erf_approx import node, tanh_of_odd_cubic

UNBLOCKS = ("Gelu", "Erf")  # the ops hub check names this rule for
DOES = "replaces a GELU (its Erf included) by its tanh form, MUL/ADD/TANH"  # hub check says "the <rule> rule <DOES>"
C1 = math.sqrt(2.0 / math.pi)
C2 = 0.044715 * C1
INTO = "tanh form"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for candidate in list(model.graph.node):
        if candidate.domain not in ("", "ai.onnx"):
            continue
        if candidate.op_type == "Gelu" and attr(candidate, "approximate", b"none") in (b"none", b"tanh"):
            found = [candidate], candidate.input[0], candidate.output[0]
        elif candidate.op_type == "Erf":
            found = _erf_form(model, candidate)
        else:
            continue
        if found is None:
            continue
        old, x, y = found
        _emit(model, old, x, y, candidate.name or y)
        rewrites.append(Rewrite(node=candidate.name, op="Gelu", into=INTO))
    return model, rewrites


def _erf_form(model: onnx.ModelProto, erf: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str, str] | None:
    """(nodes of the pattern, x, output) when `erf` is the Erf of an exact GELU, else None."""
    scale = producer(model, erf.input[0])
    x = _scaled_input(model, scale)
    if x is None or sole_consumer(model, scale.output[0]) != erf:
        return None
    plus_one = _binary_with(model, erf.output[0], "Add", 1.0)
    if plus_one is None:
        return None
    product = sole_consumer(model, plus_one.output[0])
    if product is None or product.op_type != "Mul":
        return None
    other = _other(product, plus_one.output[0])
    nodes = [scale, erf, plus_one, product]
    if other == x:  # (x * (1 + erf)) * 0.5
        last = _binary_with(model, product.output[0], "Mul", 0.5)
    elif _is_scalar(model, other, 0.5):  # x * (0.5 * (1 + erf))
        last = sole_consumer(model, product.output[0])
        last = last if last is not None and last.op_type == "Mul" and _other(last, product.output[0]) == x else None
    else:  # (x * 0.5) * (1 + erf): x * 0.5 stays when something else reads it too
        half = producer(model, other)
        if half is None or half.op_type != "Mul" or x not in half.input or not _is_scalar(model, _other(half, x), 0.5):
            return None
        return nodes + [half] * (sole_consumer(model, other) == product), x, product.output[0]
    return None if last is None else (nodes + [last], x, last.output[0])


def _scaled_input(model: onnx.ModelProto, scale: onnx.NodeProto | None) -> str | None:
    """x, when `scale` computes x / sqrt(2) as Div(x, sqrt 2) or Mul by 1/sqrt(2)."""
    if scale is None or len(scale.input) != 2:
        return None
    if scale.op_type == "Div" and _is_scalar(model, scale.input[1], math.sqrt(2.0)):
        return scale.input[0]
    if scale.op_type == "Mul":
        for i in (0, 1):
            if _is_scalar(model, scale.input[1 - i], math.sqrt(0.5)):
                return scale.input[i]
    return None


def _binary_with(model: onnx.ModelProto, name: str, op: str, value: float) -> onnx.NodeProto | None:
    """The sole consumer of `name` when it is `op` with the scalar constant `value` as its other input."""
    user = sole_consumer(model, name)
    if user is None or user.op_type != op or len(user.input) != 2 or not _is_scalar(model, _other(user, name), value):
        return None
    return user


def _other(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _is_scalar(model: onnx.ModelProto, name: str, value: float) -> bool:
    """`name` is a constant holding one number close to `value` (exporters round sqrt 2 differently)."""
    array = constant(model, name)
    return array is not None and array.size == 1 and np.issubdtype(array.dtype, np.floating) \
        and math.isclose(float(array.reshape(())), value, rel_tol=1e-4)


def _emit(model: onnx.ModelProto, old: list[onnx.NodeProto], x: str, y: str, base: str) -> None:
    tanh = fresh_name(model, f"{base}_tanh")
    half = add_initializer(model, np.array(0.5, np.float32), f"{base}_half")
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("half_tanh", "gate")}
    replace_nodes(model, old, [
        *tanh_of_odd_cubic(model, x, tanh, C1, C2, base),
        node("Mul", [tanh, half], t["half_tanh"]),
        node("Add", [t["half_tanh"], half], t["gate"]),  # 0.5 * (1 + tanh), in [0, 1]
        node("Mul", [x, t["gate"]], y),
    ])
