"""Strided padded Convs that need no PAD op: SAME padding where it is exactly equal.

PyTorch pads symmetrically (padding=1 on both sides); onnx2tf takes padding="SAME" only when the
output keeps the input's size, so every strided padded Conv becomes TFLite PAD + a VALID conv
(hub.knowledge.onnx2tf_ops.conv_writes_pad): one more op, and a padded copy of the input that
lives in the arena beside the input (in a MobileNetV2, the 6x-expanded tensor: the arena's peak).

Per spatial axis the windows read the padded input from index 0 to (out - 1) * stride +
(kernel - 1): end padding beyond that is never read. With b the start padding:
- SAME padding for that size, kernel and stride starts with b too (odd sizes: 33 -> 17, kernel 3,
  stride 2, padding 1): the Conv is exactly that SAME Conv: auto_pad SAME_UPPER, no PAD. (TensorFlow's
  converter fuses such a PAD into the conv by itself; stated here, the ONNX graph says it too.)
- On even sizes SAME starts one pixel later (0 where PyTorch pads 1). SAME with a kernel one
  larger, whose extra last row/column of weights is zero, starts at b again and reads the same
  pixels with the same weights (the zero taps add exact zeros, in float and in int8 alike, and
  leave the per-channel weight scales unchanged). Done for depthwise Convs, where the larger
  kernel costs little (16/9 of a cheap layer's MACs) and the PAD's copy was the expensive part.
- Otherwise (a full Conv on an even size: 16/9 of its MACs would cost more than the PAD saves;
  dilation: onnxruntime, which checks every conversion, has no dilated SAME_UPPER) the PAD stays,
  without the end padding no window reads, and the pass says so.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from hub.graph.edit import add_initializer, attr, constant, set_attr, static_shape
from hub.knowledge.onnx2tf_ops import conv_writes_pad


@dataclass(frozen=True)
class Axis:
    size: int
    kernel: int
    stride: int
    dilation: int
    begin: int
    end: int
    out: int

    @property
    def read_end(self) -> int:
        """The end padding some window reads."""
        last_read = (self.out - 1) * self.stride + self.dilation * (self.kernel - 1)
        return max(0, min(self.end, last_read - (self.begin + self.size - 1)))

    def same_begin(self, kernel: int) -> int | None:
        """SAME's start padding for `kernel` (dilation 1), None when SAME gives another output size."""
        out = -(-self.size // self.stride)
        return max((out - 1) * self.stride + kernel - self.size, 0) // 2 if out == self.out else None


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    folded, extended, kept, trimmed = 0, 0, 0, 0
    for node in model.graph.node:
        axes = _axes(model, node)
        if axes is None:
            continue
        grow = _growth(axes) if not any(a.dilation != 1 for a in axes) else None
        if grow is not None and not any(grow):
            _to_same(node)
            folded += 1
        elif grow is not None and _depthwise(model, node):
            _extend_kernel(model, node, grow)
            _to_same(node)
            extended += 1
        else:
            kept += 1
            read = [a.begin for a in axes] + [a.read_end for a in axes]
            if read != list(attr(node, "pads")):
                set_attr(node, "pads", read)
                trimmed += 1
    parts = [f"{folded} Conv padding folded into SAME"] if folded else []
    if extended:
        parts.append(f"{extended} depthwise Conv as SAME with a zero-extended kernel")
    if kept:
        parts.append(f"{kept} kept as PAD (no exact SAME form: PyTorch pads the start where SAME pads the end)"
                     + (f", {trimmed} without their unread end padding" if trimmed else ""))
    return model, folded + extended + trimmed, "; ".join(parts)


def _axes(model: onnx.ModelProto, node: onnx.NodeProto) -> list[Axis] | None:
    """The spatial axes of a Conv onnx2tf would precede with a PAD."""
    if node.op_type != "Conv":
        return None
    shape, out, weight = (static_shape(model, name) for name in (node.input[0], node.output[0], node.input[1]))
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attr(node, "pads", []))
    if None in (shape, out, weight) or len(shape) < 3 or not conv_writes_pad(shape[2:], out[2:], pads, auto_pad):
        return None
    rank = len(shape) - 2
    kernel = list(attr(node, "kernel_shape", weight[2:]))
    strides, dilations = list(attr(node, "strides", [1] * rank)), list(attr(node, "dilations", [1] * rank))
    return [Axis(*values) for values in zip(shape[2:], kernel, strides, dilations, pads[:rank], pads[rank:], out[2:])]


def _growth(axes: list[Axis]) -> list[int] | None:
    """Per axis, 0 if SAME already starts where the Conv's padding does, 1 if SAME with one more (zero) tap
    does; None if neither."""
    grow = []
    for a in axes:
        if a.same_begin(a.kernel) == a.begin:
            grow.append(0)
        elif a.same_begin(a.kernel + 1) == a.begin:
            grow.append(1)
        else:
            return None
    return grow


def _depthwise(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape = static_shape(model, node.input[0])
    group = attr(node, "group", 1)
    return group > 1 and group == shape[1] and constant(model, node.input[1]) is not None


def _extend_kernel(model: onnx.ModelProto, node: onnx.NodeProto, grow: list[int]) -> None:
    """Append a zero row/column to the weights on the axes in `grow` (a fresh initializer: others may share it)."""
    weight = constant(model, node.input[1])
    widened = np.pad(weight, [(0, 0), (0, 0)] + [(0, g) for g in grow])
    node.input[1] = add_initializer(model, widened.astype(weight.dtype), f"{node.input[1]}_same")
    if attr(node, "kernel_shape") is not None:
        set_attr(node, "kernel_shape", list(widened.shape[2:]))


def _to_same(node: onnx.NodeProto) -> None:
    node.attribute.remove(next(a for a in node.attribute if a.name == "pads"))
    set_attr(node, "auto_pad", "SAME_UPPER")
