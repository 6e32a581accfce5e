"""Fold a constant per-channel Mul/Div/Add/Sub after a Conv / Gemm / MatMul into its weights.

Exporters write BatchNorm as Mul + Add (tf2onnx does for Keras Dense + BatchNorm;
the MLPerf Tiny autoencoder has nine such pairs), and normalisation layers
leave scale/shift constants. Folded, the layer's int8 FULLY_CONNECTED or CONV_2D
does the work alone; left, onnx2tf emits each as an int8 ADD or MUL with its own
arena buffer and requantisation error. Only constants that vary along the output
channel alone (or not at all) fold, and only when the layer feeds nothing else.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.graph.edit import absorb, as_linear, constant, per_channel, scale_weight, sole_consumer, static_shape

LAYERS = {"Conv", "Gemm", "MatMul"}


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    folded = 0
    progress = True
    while progress:  # a Mul then an Add after the same layer fold one after the other
        progress = False
        for layer in list(model.graph.node):
            if layer.op_type in LAYERS and _fold_next(model, layer):
                folded += 1
                progress = True
    return model, folded, f"folded {folded} constant Mul/Add/Sub/Div into the layer before" if folded else ""


def _fold_next(model: onnx.ModelProto, layer: onnx.NodeProto) -> bool:
    op = sole_consumer(model, layer.output[0])
    out_shape = static_shape(model, layer.output[0])
    if op is None or op.op_type not in ("Mul", "Div", "Add", "Sub") or out_shape is None or len(op.input) != 2:
        return False
    linear = as_linear(model, layer)
    if linear is None:
        return False
    first = op.input[0] == layer.output[0]
    value = constant(model, op.input[1] if first else op.input[0])
    if value is None or not np.issubdtype(value.dtype, np.floating):
        return False
    vector = per_channel(value.astype(np.float64), out_shape, linear.channel_axis)
    if vector is None:
        return False
    scale, shift = _as_scale_shift(op.op_type, vector.astype(np.float64), first)
    if scale is None or (np.any(shift) and not linear.can_bias):
        return False
    linear.write(model, scale_weight(linear.weight.astype(np.float64), scale), linear.bias * scale + shift)
    absorb(model, layer, op)
    return True


def _as_scale_shift(op: str, c: np.ndarray, layer_first: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """y -> scale * y + shift for `y op c` (or `c op y` when the layer is the second operand)."""
    ones, zeros = np.ones_like(c), np.zeros_like(c)
    if op == "Mul":
        return c, zeros
    if op == "Add":
        return ones, c
    if op == "Sub":
        return (ones, -c) if layer_first else (-ones, c)
    if op == "Div" and layer_first and np.all(c != 0):
        return 1.0 / c, zeros
    return None, zeros
