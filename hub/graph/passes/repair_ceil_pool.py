"""Repair PyTorch's export of a pool that covers the whole map with ceil_mode.

`nn.AvgPool2d(kernel, ceil_mode=True)` with a kernel at least the size of its input (model
libraries pool a 3x3 map with kernel=hidden_dim=640, as a global pool) exports as
AveragePool(kernel 640, ceil_mode=1). PyTorch divides each window by the cells it covers inside
the input, so the result is the map's mean; onnxruntime divides by the whole kernel (640² here,
every output 45,511x too small) and onnx2tf pads the map to the kernel (hundreds of MB of arena).
When the kernel covers the whole unpadded map and the output is one cell, the source meant
GlobalAveragePool: that is what this pass writes, and the fidelity check against the source
confirms it.
"""
from __future__ import annotations

import onnx

from hub.graph.edit import attr, static_shape


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    repaired = 0
    for node in model.graph.node:
        if node.op_type == "AveragePool" and _covers_the_map(model, node):
            node.op_type = "GlobalAveragePool"
            del node.attribute[:]
            repaired += 1
    detail = (f"repaired {repaired} ceil-mode AveragePool whose kernel covers the whole map (PyTorch's export; "
              "onnxruntime and onnx2tf divide by the whole kernel) into GlobalAveragePool") if repaired else ""
    return model, repaired, detail


def _covers_the_map(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape = static_shape(model, node.input[0])
    kernel = attr(node, "kernel_shape")
    if not attr(node, "ceil_mode", 0) or shape is None or kernel is None or len(shape) != len(kernel) + 2:
        return False
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", "VALID"):
        return False
    if any(attr(node, "pads", [0] * 2 * len(kernel))):
        return False
    out = static_shape(model, node.output[0])
    return all(k >= d for k, d in zip(kernel, shape[2:])) and (out is None or all(d == 1 for d in out[2:]))
