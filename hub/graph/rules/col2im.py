"""Rewrite Col2Im (torch's F.fold, aten::col2im) whose blocks do not overlap as Reshape -> Transpose -> Reshape.

TFLM has no kernel for it and onnx2tf 1.29 no conversion. MobileViT-v2 folds its patches back into an
image with F.fold(kernel_size=k, stride=k); the TorchScript exporter refuses aten::col2im at opset 17
(and its opset-18 symbolic fails too), and the dynamo exporter writes Col2Im. With stride == block size,
no padding and dilation 1, every output pixel is one input element: for an input (N, C*kh*kw, bh*bw)

    y[n, c, i*kh + a, j*kw + b] = x[n, c*kh*kw + a*kw + b, i*bw + j]

which is x as (N, C, kh, kw, bh, bw), transposed by (0, 1, 4, 2, 5, 3) and read as (N, C, H, W). The
Transpose is 6-D; for a batch of 1, hub.graph.rules.unit_batch_transpose (after this rule) makes it
5-D, as TFLM's TRANSPOSE needs (in two steps when block and blocks per axis are one size, k == H/k, whose
5-D shape onnx2tf misreads; a Reshape when there is one block per axis). Exact.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, attr, constant, emit, fresh_name, replace_node, rewrite_each, static_shape

UNBLOCKS = ("Col2Im",)  # the ops hub check names this rule for
DOES = "rewrites non-overlapping blocks (stride = block, no padding) as Reshape and Transpose"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    return model, rewrite_each(model, "Col2Im", "Reshape + Transpose", _rewrite)


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    layout = _layout(model, node)
    if layout is None:
        return False
    n, c, (kh, kw), (bh, bw) = layout
    base = node.name or node.output[0]
    blocks, moved = fresh_name(model, f"{base}_blocks"), fresh_name(model, f"{base}_moved")
    replace_node(model, node, [
        emit("Reshape", [node.input[0], add_initializer(model, np.array([n, c, kh, kw, bh, bw], np.int64),
                                                        f"{base}_blocks_shape")], blocks),
        emit("Transpose", [blocks], moved, perm=[0, 1, 4, 2, 5, 3]),
        emit("Reshape", [moved, add_initializer(model, np.array([n, c, bh * kh, bw * kw], np.int64),
                                                f"{base}_image_shape")], node.output[0]),
    ])
    return True


def _layout(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[int, int, tuple[int, int], tuple[int, int]] | None:
    """(N, C, block (kh, kw), blocks per axis (bh, bw)) when the blocks tile the image exactly, else None."""
    shape = static_shape(model, node.input[0])
    image, block = constant(model, node.input[1]), constant(model, node.input[2])
    if shape is None or len(shape) != 3 or image is None or block is None or image.size != 2 or block.size != 2:
        return None
    (h, w), (kh, kw) = (int(v) for v in image), (int(v) for v in block)
    if list(attr(node, "strides", [1, 1])) != [kh, kw] or any(attr(node, "pads", [0] * 4)) \
            or any(d != 1 for d in attr(node, "dilations", [1, 1])):
        return None
    if h % kh or w % kw or shape[1] % (kh * kw) or shape[2] != (h // kh) * (w // kw):
        return None
    return shape[0], shape[1] // (kh * kw), (kh, kw), (h // kh, w // kw)
