"""Rewrite L2 normalisation (torch's F.normalize) into integer ops TFLM runs: MUL, SUM, MAXIMUM, RSQRT, MUL.

F.normalize(x, dim, eps) = x / max(||x||_dim, eps). Both torch exporters write it as ReduceL2 -> Clip(min=eps)
-> Expand -> Div (TorchScript at opset 17 and dynamo at 18 alike); a hand-written norm is Sqrt(ReduceSum(Pow(x, 2)
or x * x)). onnx2tf lowers ReduceL2 to SQUARE, SUM, SQRT and the Div to DIV: SQUARE and SQRT have only float TFLM
kernels (hub/knowledge/tflm_kernels.py) and the TFLite quantizer has no int8 DIV, so an int8 model keeps each
normalisation as float islands between DEQUANTIZE and QUANTIZE (SwiftFormer: 8 each of SQUARE, SQRT, MAXIMUM, DIV
between 24 QUANTIZE/DEQUANTIZE). Rewritten, over the same axes:

    y = x * Pow(max(ReduceSum(x * x), eps^2), -0.5)          MUL, SUM, MAXIMUM, RSQRT, MUL

the same function (sqrt is monotonic, so max(sqrt(s), eps) = sqrt(max(s, eps^2))); the Pow the converter makes an
RSQRT (as in decompose_layernorm), which TFLM runs in int8 and int16. Without a Clip/Max there is no MAXIMUM.
TFLM's own L2_NORMALIZATION kernel is no target for this rule: it normalises only the last axis, with a fixed
epsilon (hub/knowledge/tflm_kernels.py); and measured with onnx2tf 1.29.24, the TFLite converter does not fuse this
form into it, even when the normalised axis ends up last (F.normalize(dim=1) of NCHW, NHWC in TFLite).
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, emit, fresh_name, opset, producer, replace_nodes,
                            sole_consumer, static_shape)
from hub.graph.rules.decompose_layernorm import minus_half

UNBLOCKS = ("ReduceL2",)  # the ops hub check names this rule for (their float-only lowering)
DOES = "replaces an L2 normalisation x / max(||x||, eps) by MUL, SUM, MAXIMUM, RSQRT, MUL"
INTO = "x * rsqrt(max(sum(x*x), eps^2))"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for div in list(model.graph.node):
        if div.op_type != "Div" or div.domain not in ("", "ai.onnx"):
            continue
        found = _match(model, div)
        if found is None:
            continue
        old, x, axes, eps = found
        _emit(model, old, x, div.output[0], axes, eps, div.name or div.output[0])
        rewrites.append(Rewrite(node=div.name, op="L2 normalisation", into=INTO))
    return model, rewrites


Match = tuple[list[onnx.NodeProto], str, list[int], "float | None"]  # nodes, x, reduced axes, eps (None: no floor)


def _match(model: onnx.ModelProto, div: onnx.NodeProto) -> Match | None:
    """(nodes of the pattern, x, reduced axes, eps or None) when `div` computes x / max(||x||, eps), else None."""
    x, name = div.input[0], div.input[1]
    nodes = [div]
    step = _private_producer(model, name, div)
    if step is not None and step.op_type == "Expand":  # expand_as(x): Div broadcasts anyway
        if not _expands_within(model, step, x):
            return None
        nodes.append(step)
        step = _private_producer(model, step.input[0], step)
    eps = None
    if step is not None and step.op_type in ("Clip", "Max"):
        eps = _lower_bound(model, step)
        if eps is None:
            return None
        nodes.append(step)
        step = _private_producer(model, _other_input(model, step), step)
    if step is None:
        return None
    norm = _norm_of(model, step, x)
    if norm is None:
        return None
    norm_nodes, axes = norm
    return nodes + norm_nodes, x, axes, eps


def _norm_of(model: onnx.ModelProto, node: onnx.NodeProto, x: str) -> tuple[list[onnx.NodeProto], list[int]] | None:
    """(nodes, axes) when `node` computes ||x||_2 over `axes` with keepdims: ReduceL2, or Sqrt(ReduceSum(x^2))."""
    if node.op_type == "ReduceL2":
        axes = _axes(model, node, x)
        return None if node.input[0] != x or axes is None else ([node], axes)
    if node.op_type != "Sqrt":
        return None
    total = _private_producer(model, node.input[0], node)
    if total is None or total.op_type != "ReduceSum":
        return None
    square = _private_producer(model, total.input[0], total)
    axes = _axes(model, total, x)
    if square is None or axes is None or not _is_square_of(model, square, x):
        return None
    return [node, total, square], axes


def _is_square_of(model: onnx.ModelProto, node: onnx.NodeProto, x: str) -> bool:
    if node.op_type == "Mul":
        return list(node.input) == [x, x]
    exponent = constant(model, node.input[1]) if node.op_type == "Pow" else None
    return node.input[0] == x and exponent is not None and exponent.size == 1 and float(exponent.reshape(())) == 2.0


def _axes(model: onnx.ModelProto, reduce: onnx.NodeProto, x: str) -> list[int] | None:
    """The non-negative axes a keepdims reduction of `x` reduces over; None when not static or not keepdims."""
    shape = static_shape(model, x)
    if shape is None or int(attr(reduce, "keepdims", 1)) != 1:
        return None
    if len(reduce.input) > 1 and reduce.input[1]:
        axes = constant(model, reduce.input[1])
        axes = None if axes is None else [int(a) for a in axes.reshape(-1)]
    else:
        axes = attr(reduce, "axes", None)
    if not axes:  # absent or empty: every axis (or none, with noop_with_empty_axes): not a normalisation
        return None
    return sorted({int(a) % len(shape) for a in axes})


def _expands_within(model: onnx.ModelProto, expand: onnx.NodeProto, x: str) -> bool:
    """The Expand's target shape broadcasts to x's own shape (so dropping it changes no output shape)."""
    shape, target = static_shape(model, x), constant(model, expand.input[1])
    if shape is None or target is None:
        return False
    try:
        return np.broadcast_shapes(tuple(int(d) for d in target.reshape(-1)), shape) == tuple(shape)
    except ValueError:
        return False


def _lower_bound(model: onnx.ModelProto, node: onnx.NodeProto) -> float | None:
    """eps when `node` is Clip(v, min=eps) with no max, or Max(v, eps) with a positive scalar constant eps."""
    if node.op_type == "Clip":
        if len(node.input) < 2 or not node.input[1] or (len(node.input) > 2 and node.input[2]):
            return None
        bound = constant(model, node.input[1])
    else:
        if len(node.input) != 2:
            return None
        bound = constant(model, _other_input(model, node, constant_side=True))
    if bound is None or bound.size != 1 or not np.issubdtype(bound.dtype, np.floating):
        return None
    eps = float(bound.reshape(()))
    return eps if eps > 0 and math.isfinite(eps) else None


def _other_input(model: onnx.ModelProto, node: onnx.NodeProto, constant_side: bool = False) -> str:
    """Clip's data input; of a Max, the input that is (constant_side) or is not a constant."""
    if node.op_type == "Clip":
        return node.input[0]
    first_constant = constant(model, node.input[0]) is not None
    return node.input[0] if first_constant == constant_side else node.input[1]


def _private_producer(model: onnx.ModelProto, name: str, reader: onnx.NodeProto) -> onnx.NodeProto | None:
    """The node writing `name` when `reader` is its only reader (so the pattern can be replaced whole)."""
    node = producer(model, name)
    return node if node is not None and sole_consumer(model, name) == reader else None


def _emit(model: onnx.ModelProto, old: list[onnx.NodeProto], x: str, y: str, axes: list[int], eps: float | None,
          base: str) -> None:
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("x2", "sum", "floor", "inv")}
    if opset(model) >= 13:
        axes_name = add_initializer(model, np.array(axes, np.int64), f"{base}_axes")
        total = emit("ReduceSum", [t["x2"], axes_name], t["sum"], keepdims=1)
    else:
        total = emit("ReduceSum", [t["x2"]], t["sum"], axes=axes, keepdims=1)
    nodes = [emit("Mul", [x, x], t["x2"]), total]
    if eps is not None:
        floor = add_initializer(model, np.array(np.float32(eps) ** 2, np.float32), f"{base}_eps_squared")
        nodes.append(emit("Max", [t["sum"], floor], t["floor"]))
    nodes += [emit("Pow", [nodes[-1].output[0], minus_half(model, base)], t["inv"]),
              emit("Mul", [x, t["inv"]], y)]
    replace_nodes(model, old, nodes)
