"""Rewrite local response normalisation (ONNX LRN) into builtins TFLM runs.

onnx2tf lowers LRN to LOCAL_RESPONSE_NORMALIZATION, which TFLM has no kernel for (AlexNet,
ZFNet, GoogLeNet use it). ONNX defines

    y = x / (bias + alpha / size * sum_{i in window(c)} x_i^2) ^ beta,
    window(c) = [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)] clipped to the channels.

The windowed sum over channels is a 1x1 convolution with a banded C x C weight, so

    s = Conv1x1(x * x, W, b)     W[o, i] = alpha / size inside o's window, 0 elsewhere; b = bias
    y = x * s ^ -beta

exactly (up to float rounding). s ^ -beta is built from reciprocal square roots when beta is a
multiple of 1/8 below 2.5 (every LRN in the zoo has beta = 0.75):

    g1 = 1 / Sqrt(s) = s^-1/2,   g(k+1) = gk * (1 / Sqrt(gk)) = s^-2^-(k+1)
    s ^ -beta = g1^floor(2 beta) * product of the gk (k >= 2) for the binary digits of beta

and x is multiplied by one factor after the other, e.g. beta = 0.75: y = (x * g1) * g2 with
g2 = g1 * Rsqrt(g1). The converter fuses each Div(1, Sqrt) into RSQRT, and CONV_2D, MUL and
RSQRT have int8 TFLM kernels, so the rewritten layer runs in float32 and int8 (and int16x8:
measured). Any other beta becomes Exp(-beta * Log(s)): exact, but EXP and
LOG are float32-only in TFLM, so that form runs on float32 models only. Cost: the convolution
does C * C multiplications per pixel where the original did size * C.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, elem_type, fresh_name, static_shape

UNBLOCKS = ("LRN",)  # the ops hub check names this rule for
DOES = "rewrites a 3-D or 4-D LRN into builtins, in int8 when beta is a multiple of 1/8 below 2.5"

MAX_DEPTH = 3  # beta a multiple of 2^-3: at most three nested reciprocal square roots
MAX_G1_POWER = 4  # beta < 2.5: at most four factors of s^-1/2

Nodes = list[onnx.NodeProto]


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in list(model.graph.node):
        if node.op_type == "LRN":
            into = _rewrite(model, node)
            if into:
                rewrites.append(Rewrite(node=node.name, op="LRN", into=into))
    return model, rewrites


def window_weight(channels: int, size: int, alpha: float) -> np.ndarray:
    """W[o, i] = alpha / size when channel i is in output channel o's ONNX LRN window, else 0."""
    o, i = np.arange(channels)[:, None], np.arange(channels)[None, :]
    inside = (i >= o - (size - 1) // 2) & (i <= o + math.ceil((size - 1) / 2))
    return inside.astype(np.float32) * np.float32(alpha / size)


def rsqrt_plan(beta: float) -> tuple[int, list[int]] | None:
    """(power of g1, the k >= 2 whose gk multiply in) with s^-beta = g1^power * prod gk, or None."""
    scaled = beta * 2 ** MAX_DEPTH
    if beta <= 0 or scaled != round(scaled) or math.floor(2 * beta) > MAX_G1_POWER:
        return None
    bits = int(round(scaled)) % 2 ** (MAX_DEPTH - 1)  # the digits of beta below 1/2
    return math.floor(2 * beta), [k for k in range(2, MAX_DEPTH + 1) if bits >> (MAX_DEPTH - k) & 1]


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """Replace `node` in place; returns what it became, or "" when it stays."""
    shape, size = static_shape(model, node.input[0]), int(attr(node, "size", 0))
    if shape is None or len(shape) not in (3, 4):  # a 1x1 Conv on 5-D would be CONV_3D, which TFLM lacks
        return ""
    if size < 1 or elem_type(model, node.input[0]) != onnx.TensorProto.FLOAT:  # the weights written are float32
        return ""
    alpha = float(attr(node, "alpha", 1e-4))
    beta, bias = float(attr(node, "beta", 0.75)), float(attr(node, "bias", 1.0))
    base, channels = node.name or node.output[0], shape[1]
    weight = window_weight(channels, size, alpha).reshape((channels, channels) + (1,) * (len(shape) - 2))
    w = add_initializer(model, weight, f"{base}_window")
    b = add_initializer(model, np.full(channels, bias, np.float32), f"{base}_bias")
    x, y = node.input[0], node.output[0]
    square, s = fresh_name(model, f"{base}_square"), fresh_name(model, f"{base}_s")
    nodes = [_node("Mul", [x, x], square), _node("Conv", [square, w, b], s)]
    plan = rsqrt_plan(beta)
    if plan is None:
        factors, into = [_exp_log(model, nodes, s, beta, base)], "1x1 conv + exp/log (float32 only)"
    else:
        factors, into = _rsqrt_chain(model, nodes, s, *plan, base), "1x1 conv + rsqrt"
    # x times each factor in turn, so every product has x's magnitude. Multiplied together first, the
    # factors (in (0, 1]) got the output's int8 scale from the converter: 3 of 256 levels (AlexNet)
    scaled = x
    for i, factor in enumerate(factors):
        out = y if i == len(factors) - 1 else fresh_name(model, f"{base}_x{i}")
        nodes.append(_node("Mul", [scaled, factor], out))
        scaled = out
    graph = model.graph
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(at + offset, new)
    return into


def _rsqrt_chain(model: onnx.ModelProto, nodes: Nodes, s: str, g1_power: int, ks: list[int], base: str) -> list[str]:
    """Append the nodes computing the gk of the module docstring; returns the factors of s^-beta."""
    one = add_initializer(model, np.ones((), np.float32), f"{base}_one")

    def rsqrt(t: str) -> str:
        root, inverse = fresh_name(model, f"{t}_sqrt"), fresh_name(model, f"{t}_rsqrt")
        nodes.extend([_node("Sqrt", [t], root), _node("Div", [one, root], inverse)])  # fused into RSQRT
        return inverse

    g = [rsqrt(s)]
    while len(g) < max(ks, default=1):
        g.append(fresh_name(model, f"{base}_g{len(g) + 1}"))
        nodes.append(_node("Mul", [g[-2], rsqrt(g[-2])], g[-1]))
    return [g[0]] * g1_power + [g[k - 1] for k in ks]


def _exp_log(model: onnx.ModelProto, nodes: Nodes, s: str, beta: float, base: str) -> str:
    minus_beta = add_initializer(model, np.array(-beta, np.float32), f"{base}_minus_beta")
    log, scaled, power = (fresh_name(model, f"{base}_{k}") for k in ("log", "scaled_log", "pow"))
    nodes.extend([_node("Log", [s], log), _node("Mul", [log, minus_beta], scaled), _node("Exp", [scaled], power)])
    return power


def _node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}/{op}")
