"""Rewrite 1 / sqrt(v) into Pow(v, -0.5), which the TFLite converter makes one RSQRT.

tf2onnx writes TensorFlow's Rsqrt (Keras LayerNormalization's, 23 in Keras ConvNeXtTiny; tf.nn.moments-based
normalisations) as Sqrt -> Reciprocal. onnx2tf 1.29 lowers that to SQRT, which TFLM runs only in float32 (an int8
model keeps it as a float island between DEQUANTIZE and QUANTIZE), and mislays Reciprocal on per-row tensors
(decompose_layernorm's docstring). Pow(v, -0.5) is the form hub's own normalisation rules write: RSQRT, with int8
and int16 TFLM kernels (hub/knowledge/tflm_kernels.py). Matched: Reciprocal(Sqrt(v)) and Div(1, Sqrt(v)), the Sqrt
read by nothing else. The same function: the error is float rounding.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import constant, emit, producer, replace_nodes, sole_consumer
from hub.graph.rules.decompose_layernorm import minus_half

UNBLOCKS = ("Sqrt",)  # the ops hub check names this rule for (SQRT has float kernels only)
DOES = "replaces 1 / Sqrt(v) (Reciprocal or Div) by Pow(v, -0.5): one RSQRT, int8 in TFLM"
INTO = "Pow(v, -0.5)"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in list(model.graph.node):
        root = _sqrt_root(model, node)
        if root is None:
            continue
        sqrt, v = root
        base = node.name or node.output[0]
        replace_nodes(model, [sqrt, node], [emit("Pow", [v, minus_half(model, base)], node.output[0])])
        rewrites.append(Rewrite(node=node.name, op=f"{node.op_type}(Sqrt)", into=INTO))
    return model, rewrites


def _sqrt_root(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[onnx.NodeProto, str] | None:
    """(the Sqrt, v) when `node` computes 1 / Sqrt(v) and is the Sqrt's only reader, else None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Reciprocal":
        denominator = node.input[0]
    elif node.op_type == "Div" and _is_one(model, node.input[0]):
        denominator = node.input[1]
    else:
        return None
    sqrt = producer(model, denominator)
    if sqrt is None or sqrt.op_type != "Sqrt" or sole_consumer(model, denominator) != node:
        return None
    return sqrt, sqrt.input[0]


def _is_one(model: onnx.ModelProto, name: str) -> bool:
    value = constant(model, name)
    return value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating) and float(
        value.reshape(())) == 1.0
