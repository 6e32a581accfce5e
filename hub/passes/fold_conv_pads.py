"""A strided Conv whose explicit padding equals TensorFlow's SAME padding says so (auto_pad SAME_UPPER).

PyTorch pads symmetrically (padding=1 on both sides); onnx2tf takes padding="SAME" only when the
output keeps the input's size, so every strided padded Conv becomes TFLite PAD + a VALID CONV_2D
(hub.knowledge.onnx2tf_ops.conv_writes_pad): one more op, and the padded copy of the input lives in
the arena beside the input.

Per spatial axis, the windows of a Conv read the padded input from index 0 to
(out - 1) * stride + dilation * (kernel - 1): end padding beyond that is never read, so trimming it
changes nothing. When the trimmed padding equals SAME's for that input size, kernel, stride and
dilation (same output size, same start padding), the Conv is exactly a SAME Conv: auto_pad
SAME_UPPER, no PAD. That holds on odd input sizes (33 -> 17, kernel 3, stride 2, padding 1), not on
even ones: there PyTorch's read padding is (1, 0) and SAME's (0, 1), so the windows sit one pixel
apart and no exact fold exists; such a Conv only loses its unread end padding (a smaller PAD output).
Dilated Convs keep their PAD too: onnxruntime, which checks every conversion, has no dilated SAME_UPPER.
"""
from __future__ import annotations

import onnx

from hub.knowledge.onnx2tf_ops import conv_writes_pad
from hub.passes.rewrite import attr, set_attr, static_shape

NAME = "fold_conv_pads"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    folded, trimmed, kept = 0, 0, 0
    for node in model.graph.node:
        plan = _plan(model, node)
        if plan is None:
            continue
        read, same = plan
        if read == same and not _dilated(node):
            node.attribute.remove(next(a for a in node.attribute if a.name == "pads"))
            set_attr(node, "auto_pad", "SAME_UPPER")
            folded += 1
            continue
        kept += 1
        if read != list(attr(node, "pads")):
            set_attr(node, "pads", read)
            trimmed += 1
    parts = [f"{folded} Conv padding folded into SAME"] if folded else []
    if kept:
        parts.append(f"{kept} kept as PAD (padding not SAME's for that size: PyTorch pads the start where SAME "
                     f"pads the end)" + (f", {trimmed} without their unread end padding" if trimmed else ""))
    return model, folded + trimmed, "; ".join(parts)


def _dilated(node: onnx.NodeProto) -> bool:
    """onnxruntime (the reference) refuses a dilated Conv with auto_pad SAME_UPPER."""
    return any(d != 1 for d in attr(node, "dilations", []))


def _plan(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[list[int], list[int]] | None:
    """(padding the windows read, SAME's padding) for a Conv onnx2tf would precede with a PAD."""
    if node.op_type != "Conv":
        return None
    shape, out = static_shape(model, node.input[0]), static_shape(model, node.output[0])
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attr(node, "pads", []))
    if shape is None or out is None or len(shape) < 3 or not conv_writes_pad(shape[2:], out[2:], pads, auto_pad):
        return None
    weight = static_shape(model, node.input[1])
    if weight is None:
        return None
    rank = len(shape) - 2
    kernel = list(attr(node, "kernel_shape", weight[2:]))
    strides, dilations = list(attr(node, "strides", [1] * rank)), list(attr(node, "dilations", [1] * rank))
    read_end, same = [], [[], []]
    for size, k, s, d, begin, end, o in zip(shape[2:], kernel, strides, dilations, pads[:rank], pads[rank:], out[2:]):
        last_read = (o - 1) * s + d * (k - 1)  # in padded coordinates
        read_end.append(max(0, min(end, last_read - (begin + size - 1))))
        total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
        same[0].append(total // 2 if -(-size // s) == o else -1)  # -1: SAME gives another output size
        same[1].append(total - total // 2)
    return pads[:rank] + read_end, same[0] + same[1]
