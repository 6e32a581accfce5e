"""Fold an inference BatchNormalization into the Conv / Gemm / MatMul before it.

y = (x - mean) / sqrt(var + eps) * gamma + beta is a per-channel scale and shift,
which the layer's weights and bias absorb exactly. Left alone, onnx2tf emits it
as MUL and ADD ops (or keeps them float), each with its own arena buffer.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.graph.edit import absorb, as_linear, attr, constant, producer, scale_weight, sole_consumer


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    folded = 0
    for bn in list(model.graph.node):
        if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1:
            continue  # training-mode BN (running mean/var outputs) is not a constant transform
        params = [constant(model, n) for n in bn.input[1:5]]
        layer = producer(model, bn.input[0])
        if any(p is None for p in params) or layer is None or sole_consumer(model, bn.input[0]) is not bn:
            continue
        linear = as_linear(model, layer)
        # BN normalises axis 1: for Gemm and 2-D MatMul that is the output features.
        if linear is None or linear.channel_axis != 1 or layer.output[0] != bn.input[0]:
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        shift = beta - mean * scale
        linear.write(model, scale_weight(linear.weight.astype(np.float64), scale),
                     linear.bias * scale + shift)
        absorb(model, layer, bn)
        folded += 1
    return model, folded, f"folded {folded} BatchNormalization into the layer before" if folded else ""
