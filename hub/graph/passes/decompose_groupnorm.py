"""Rewrite group normalisation into per-channel ops that onnx2tf lays out correctly.

onnx2tf 1.29 converts the form torch.onnx.export (TorchScript exporter) writes for
nn.GroupNorm, Reshape(N, G, -1) -> InstanceNormalization -> Reshape(x's shape), into a
TFLite model that computes something else (measured: cosine 0.26 against onnxruntime in
float32): the reshaped 3-D tensor loses track of the channels-last layout, and an NCHW
tensor reaches the next convolution as if it were NHWC. Rewritten without any reshape:

    mean_c = ReduceMean(x, spatial)              one mean per channel
    mean_g = Conv1x1(mean_c, A)                  A averages the channels of each group
    d      = x - mean_g
    var_g  = Conv1x1(ReduceMean(d * d, spatial), A)
    y      = d * ((1 / Sqrt(var_g + eps)) * gamma) + beta

Every tensor keeps the input's layout, so onnx2tf's channels-last handling applies
as for any convolution, and the TFLite ops (MEAN, CONV_2D, SUB, MUL, ADD, RSQRT) are
TFLM builtins in float32 and int8. (Equal group sizes make the mean of channel means
the group mean.) Rewritten: ONNX GroupNormalization (opset 18: scale per group; 21:
per channel) and the exporter's Reshape/InstanceNormalization/Reshape pattern, with
the per-channel constant Mul and Add that follow it absorbed.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.graph.edit import add_initializer, attr, constant, fresh_name, opset, per_channel, sole_consumer, static_shape


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    rewritten = 0
    for node in list(model.graph.node):
        if node not in model.graph.node:
            continue
        if node.op_type == "GroupNormalization":
            rewritten += _from_groupnorm(model, node)
        elif node.op_type == "Reshape":
            rewritten += _from_instancenorm(model, node)
    return model, rewritten, f"decomposed {rewritten} group normalisations" if rewritten else ""



def _from_groupnorm(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape = static_shape(model, node.input[0])
    scale, bias = constant(model, node.input[1]), constant(model, node.input[2])
    groups = int(attr(node, "num_groups", 0))
    if shape is None or len(shape) < 3 or scale is None or bias is None or groups <= 0 or shape[1] % groups:
        return False
    channels = shape[1]
    if opset(model) < 21 and scale.size == groups:  # opset 18: one scale and bias per group
        scale, bias = np.repeat(scale, channels // groups), np.repeat(bias, channels // groups)
    if scale.size != channels or bias.size != channels:
        return False
    _emit(model, [node], node.input[0], node.output[0], shape, groups, float(attr(node, "epsilon", 1e-5)),
          scale.reshape(-1), bias.reshape(-1))
    return True


def _from_instancenorm(model: onnx.ModelProto, first: onnx.NodeProto) -> bool:
    """Reshape(x -> N,G,k) -> InstanceNormalization -> Reshape(-> x's shape) [-> Mul gamma] [-> Add beta]."""
    shape = static_shape(model, first.input[0])
    norm = sole_consumer(model, first.output[0])
    grouped = static_shape(model, first.output[0])
    if shape is None or len(shape) < 3 or norm is None or norm.op_type != "InstanceNormalization" or grouped is None:
        return False
    groups, channels = grouped[1], shape[1]
    if len(grouped) != 3 or grouped[0] != shape[0] or groups <= 0 or channels % groups:
        return False
    back = sole_consumer(model, norm.output[0])
    scale, bias = constant(model, norm.input[1]), constant(model, norm.input[2])
    if back is None or back.op_type != "Reshape" or static_shape(model, back.output[0]) != shape \
            or scale is None or bias is None or scale.size != groups or bias.size != groups:
        return False
    gamma = np.repeat(scale.astype(np.float64), channels // groups)
    beta = np.repeat(bias.astype(np.float64), channels // groups)
    nodes, out = [first, norm, back], back.output[0]
    for op in ("Mul", "Add"):  # the affine part torch writes after the pattern
        value = _per_channel_operand(model, out, op, shape)
        if value is None:
            continue
        nodes.append(sole_consumer(model, out))
        gamma, beta = (gamma * value, beta * value) if op == "Mul" else (gamma, beta + value)
        out = nodes[-1].output[0]
    _emit(model, nodes, first.input[0], out, shape, groups, float(attr(norm, "epsilon", 1e-5)), gamma, beta)
    return True


def _per_channel_operand(model: onnx.ModelProto, name: str, op: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The constant of a `name * c` or `name + c` that varies only along channels, else None."""
    node = sole_consumer(model, name)
    if node is None or node.op_type != op or len(node.input) != 2:
        return None
    value = constant(model, node.input[1] if node.input[0] == name else node.input[0])
    if value is None or not np.issubdtype(value.dtype, np.floating) or static_shape(model, node.output[0]) != shape:
        return None
    vector = per_channel(value, shape, 1)
    return None if vector is None else vector.astype(np.float64)


def _emit(model: onnx.ModelProto, old: list[onnx.NodeProto], x: str, y: str, shape: tuple[int, ...], groups: int,
          eps: float, gamma: np.ndarray, beta: np.ndarray) -> None:
    """Replace `old` (x -> ... -> y) by the reshape-free form in the module docstring."""
    channels, size = shape[1], shape[1] // groups
    group_of = np.arange(channels) // size
    average = (group_of[:, None] == group_of[None, :]).astype(np.float32) / size
    kernel = (1,) * (len(shape) - 2)
    column = (1, channels) + kernel
    base = old[0].name or y
    c = {key: add_initializer(model, value, f"{base}_{key}") for key, value in {
        "A": average.reshape((channels, channels) + kernel),
        "eps": np.float32(eps).reshape((1,) * len(shape)),
        "one": np.ones((1,) * len(shape), np.float32),
        "gamma": gamma.astype(np.float32).reshape(column),
        "beta": beta.astype(np.float32).reshape(column)}.items()}
    t = {key: fresh_name(model, f"{base}_{key}") for key in ("mean_c", "mean", "d", "d2", "var_c", "var", "var_eps", "std", "inv",
                                          "factor", "scaled")}
    axes = list(range(2, len(shape)))
    if opset(model) >= 18:  # ReduceMean's axes became an input
        axes_input, reduce = [add_initializer(model, np.array(axes, np.int64), f"{base}_axes")], {"keepdims": 1}
    else:
        axes_input, reduce = [], {"axes": axes, "keepdims": 1}
    nodes = [
        _node("ReduceMean", [x, *axes_input], t["mean_c"], **reduce),
        _node("Conv", [t["mean_c"], c["A"]], t["mean"]),
        _node("Sub", [x, t["mean"]], t["d"]),
        _node("Mul", [t["d"], t["d"]], t["d2"]),
        _node("ReduceMean", [t["d2"], *axes_input], t["var_c"], **reduce),
        _node("Conv", [t["var_c"], c["A"]], t["var"]),
        _node("Add", [t["var"], c["eps"]], t["var_eps"]),
        _node("Sqrt", [t["var_eps"]], t["std"]),
        _node("Div", [c["one"], t["std"]], t["inv"]),  # 1 / Sqrt: the converter fuses it into RSQRT
        _node("Mul", [t["inv"], c["gamma"]], t["factor"]),
        _node("Mul", [t["d"], t["factor"]], t["scaled"]),
        _node("Add", [t["scaled"], c["beta"]], y),
    ]
    graph = model.graph
    at = list(graph.node).index(old[0])
    for node in old:
        graph.node.remove(node)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)


def _node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs)
