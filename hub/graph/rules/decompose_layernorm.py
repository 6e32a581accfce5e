"""Rewrite ONNX LayerNormalization (opset 17+) into builtins TFLM runs.

onnx2tf 1.29 stops on the LayerNormalization op (its converter calls a TF function on
symbolic Keras tensors), while the decomposed form older exporters write converts and runs.
Over the normalised axes (`axis` to the last):

    mean = ReduceMean(x)                     MEAN
    d    = x - mean                          SUB
    var  = ReduceMean(d * d)                 MUL, MEAN
    y    = d * Pow(var + eps, -0.5) * scale + bias    ADD, RSQRT, MUL, MUL, ADD

The TFLite converter turns Pow(v, -0.5) into RSQRT, which TFLM runs in int8 and int16 (measured:
axis -1 of a 3-D [N, T, C] tensor; axes 1, 2 and 3 of a 4-D NCHW one). Other forms convert
worse: d / Sqrt(v) is fused into MUL(d, RSQRT) only sometimes (not over the last axis of a 4-D
tensor, where SQRT stays float32 and int16x8 does not convert), and onnx2tf 1.29 mislays
Div(1, std) and Reciprocal(std) on these per-row tensors (float32 cosine 0.84 and 0.995).
Scale and bias are reshaped to the input's full rank, so onnx2tf re-lays them out with the
tensor they meet; the Mul or Add is left out when the scale is all ones or the bias absent or
zero. The same maths as the op in float32 (stash_type 1): the error is float rounding.
Skipped: a non-constant scale or bias, a shape that is not static, and nodes whose
Mean/InvStdDev outputs are read.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, emit, fresh_name, graph_output_names, reduce_mean,
                            replace_node, rewrite_each, static_shape)

UNBLOCKS = ("LayerNormalization",)  # the ops hub check names this rule for
DOES = "replaces it by builtins"  # hub check says "the <rule> rule <DOES>"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    return model, rewrite_each(model, "LayerNormalization", "builtins", _decompose)


def _extra_outputs_read(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    read = graph_output_names(model) | {name for n in model.graph.node for name in n.input}
    return any(name and name in read for name in node.output[1:])


def _decompose(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    x, y = node.input[0], node.output[0]
    shape = static_shape(model, x)
    scale = constant(model, node.input[1])
    bias = constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if shape is None or scale is None or (len(node.input) > 2 and node.input[2] and bias is None) \
            or _extra_outputs_read(model, node) or int(attr(node, "stash_type", 1)) != 1:
        return False
    rank = len(shape)
    axis = int(attr(node, "axis", -1)) % rank
    full = (1,) * axis + tuple(shape[axis:])
    try:
        scale = np.broadcast_to(scale, full)
        bias = None if bias is None else np.broadcast_to(bias, full)
    except ValueError:
        return False
    base = node.name or y
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("mean", "d", "d2", "var", "var_eps", "inv",
                                                           "normed")}
    eps = add_initializer(model, np.full((1,) * rank, attr(node, "epsilon", 1e-5), np.float32), f"{base}_eps")
    axes = list(range(axis, rank))
    nodes = [
        reduce_mean(model, x, t["mean"], axes, base),
        emit("Sub", [x, t["mean"]], t["d"]),
        emit("Mul", [t["d"], t["d"]], t["d2"]),
        reduce_mean(model, t["d2"], t["var"], axes, base),
        emit("Add", [t["var"], eps], t["var_eps"]),
        emit("Pow", [t["var_eps"], minus_half(model, base)], t["inv"]),
        emit("Mul", [t["d"], t["inv"]], t["normed"]),
    ]
    nodes += affine(model, t["normed"], scale, bias, base)
    nodes[-1].output[0] = y
    replace_node(model, node, nodes)
    return True


def minus_half(model: onnx.ModelProto, base: str) -> str:
    """The exponent of Pow(v, -0.5): the TFLite converter makes that Pow an RSQRT."""
    return add_initializer(model, np.array(-0.5, np.float32), f"{base}_minus_half")


def affine(model: onnx.ModelProto, x: str, scale: np.ndarray | None, bias: np.ndarray | None,
           base: str) -> list[onnx.NodeProto]:
    """Nodes computing x * scale + bias, without a Mul by ones or an Add of zeros (maybe none)."""
    nodes = []
    for op, key, value in (("Mul", "scale", scale), ("Add", "bias", bias)):
        if value is None or np.all(value == (1 if op == "Mul" else 0)):
            continue
        out = fresh_name(model, f"{base}_{key}d")
        nodes.append(emit(op, [x, add_initializer(model, value.astype(np.float32), f"{base}_{key}")], out))
        x = out
    return nodes

