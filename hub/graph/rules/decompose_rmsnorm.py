"""Rewrite ONNX RMSNormalization (opset 23) into builtins TFLM runs.

onnx2tf 1.29 lowers the op with SQUARE, which has no int8 or int16 TFLite kernel (the int8
model keeps it in float32 between DEQUANTIZE and QUANTIZE; int16x8 does not convert), and
stops when the scale has a lower rank than the input. Over the normalised axes (`axis` to the
last), the form the exporters' own decompositions of RMSNorm take, which converts and runs:

    ms = ReduceMean(x * x)                   MUL, MEAN
    y  = x * Pow(ms + eps, -0.5) * scale     ADD, RSQRT, MUL, MUL

with the scale reshaped to the input's full rank (and left out when all ones), and the Pow
the converter turns into RSQRT, as in decompose_layernorm. The same maths as the op in
float32: the error is float rounding.
(torch's hand-written RMSNorm forms, x * rsqrt(mean(x^2) + eps) with Pow(2), Sqrt and a Div
or Pow(-0.5), already convert to MUL/MEAN/ADD/RSQRT and need no rule.)
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, emit, fresh_name, reduce_mean, replace_node, rewrite_each,
                            static_shape)
from hub.graph.rules.decompose_layernorm import affine, minus_half

UNBLOCKS = ("RMSNormalization",)  # the ops hub check names this rule for
DOES = "replaces it by builtins"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    return model, rewrite_each(model, "RMSNormalization", "builtins", _decompose)


def _decompose(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    x, y = node.input[0], node.output[0]
    shape = static_shape(model, x)
    scale = constant(model, node.input[1])
    if shape is None or scale is None or int(attr(node, "stash_type", 1)) != 1:
        return False
    rank = len(shape)
    axis = int(attr(node, "axis", -1)) % rank
    try:
        scale = np.broadcast_to(scale, (1,) * axis + tuple(shape[axis:]))
    except ValueError:
        return False
    base = node.name or y
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("x2", "ms", "ms_eps", "inv", "normed")}
    eps = add_initializer(model, np.full((1,) * rank, attr(node, "epsilon", 1e-5), np.float32), f"{base}_eps")
    nodes = [
        emit("Mul", [x, x], t["x2"]),
        reduce_mean(model, t["x2"], t["ms"], list(range(axis, rank)), base),
        emit("Add", [t["ms"], eps], t["ms_eps"]),
        emit("Pow", [t["ms_eps"], minus_half(model, base)], t["inv"]),
        emit("Mul", [x, t["inv"]], t["normed"]),
        *affine(model, t["normed"], scale, None, base),
    ]
    nodes[-1].output[0] = y
    replace_node(model, node, nodes)
    return True
