"""MatMul with a constant 2-D weight (and a constant Add after it) -> one Gemm.

TensorFlow's converter makes a Gemm with its bias a single FULLY_CONNECTED; a
MatMul followed by an Add can come out as FULLY_CONNECTED plus a separate ADD
(its own op, tensor and arena buffer). Only 2-D inputs: above 2-D a Gemm does not apply.
"""
from __future__ import annotations

import onnx

from hub.graph.edit import absorb, as_linear, constant, per_channel, sole_consumer, static_shape


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    converted, biased = 0, 0
    for node in list(model.graph.node):
        if node.op_type != "MatMul":
            continue
        linear = as_linear(model, node)
        if linear is None or not linear.can_bias:
            continue
        bias = linear.bias
        add = sole_consumer(model, node.output[0])
        out_shape = static_shape(model, node.output[0])
        if add is not None and add.op_type == "Add" and out_shape is not None:
            other = next(i for i in add.input if i != node.output[0])
            value = constant(model, other)
            vector = per_channel(value, out_shape, 1) if value is not None else None
            if vector is not None:
                bias = bias + vector
                absorb(model, node, add)
                biased += 1
        linear.write(model, linear.weight, bias)
        converted += 1
    detail = f"turned {converted} MatMul into Gemm ({biased} with their Add as bias)" if converted else ""
    return model, converted, detail
