"""A padded MaxPool over a non-negative input pads with an explicit zero Pad instead.

When a MaxPool's padding is not TensorFlow's SAME padding (torchvision's ResNet stem:
3x3, stride 2, pads 1 on an even-sized image), onnx2tf puts a tf.pad before it whose
constant is float32's lowest value, -3.4e38 (hub.knowledge.onnx2tf_ops.maxpool_explicit_pads).
That constant becomes TFLite PADV2 and, in int8, takes part in calibration: the pool's
input gets a scale of about 1.3e36, every real activation there quantizes to the zero
point, and the next int8 ADD makes TFLM abort (its output multiplier exceeds 1:
add_common.cc -> QuantizeMultiplierSmallerThanOneExp).

When the input cannot be negative (a Relu, a Clip with a minimum >= 0, or a Concat, MaxPool or zero Pad
of such tensors produces it: GoogLeNet's inception branches pool a concatenation of Relus),
padding with 0 is exact: every pooling window holds at least one real value (pads are
smaller than the kernel), and that value is >= 0. So the padding moves into a Pad node
with constant 0 (TFLite PAD, which keeps the input's quantization) and the MaxPool keeps
no padding (MAX_POOL_2D with VALID padding). ceil_mode's extra end rows and columns (torch's
GoogLeNet pools) go into the same zero Pad: ONNX starts every ceil window inside the input, so
each still holds a real value. Pools onnx2tf pads as SAME and pools over possibly negative
inputs are left as they are (hub check flags the last).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.graph.edit import add_initializer, attr, constant, fresh_name, producer, set_attr, static_shape
from hub.knowledge.onnx2tf_ops import maxpool_explicit_pads


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    changed = 0
    for node in list(model.graph.node):
        pads = _rewritable_pads(model, node)
        if pads is None:
            continue
        top, left, bottom, right = pads
        onnx_pads = add_initializer(model, np.array([0, 0, top, left, 0, 0, bottom, right], np.int64),
                                    f"{node.name or node.output[0]}_pads")
        padded = fresh_name(model, f"{node.input[0]}_padded")
        model.graph.node.insert(list(model.graph.node).index(node), helper.make_node(
            "Pad", [node.input[0], onnx_pads], [padded], mode="constant", name=f"{node.name or padded}_pad"))
        node.input[0] = padded
        set_attr(node, "pads", [0, 0, 0, 0])
        set_attr(node, "ceil_mode", 0)  # the Pad holds ceil_mode's extra end rows too
        changed += 1
    return model, changed, f"moved the padding of {changed} MaxPool on non-negative inputs into a zero Pad" \
        if changed else ""


def _rewritable_pads(model: onnx.ModelProto, node: onnx.NodeProto) -> list[int] | None:
    """The pads onnx2tf would write as a -3.4e38 tf.pad, when a zero Pad can replace them exactly."""
    if node.op_type != "MaxPool" or (len(node.output) > 1 and node.output[1]):
        return None
    shape, kernel = static_shape(model, node.input[0]), attr(node, "kernel_shape")
    if shape is None or len(shape) != 4 or any(d != 1 for d in attr(node, "dilations", [1, 1])):
        return None
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = maxpool_explicit_pads(shape[2:], list(kernel), list(attr(node, "strides", [1, 1])),
                                 list(attr(node, "pads", [0, 0, 0, 0])), bool(attr(node, "ceil_mode", 0)), auto_pad)
    if not any(pads) or auto_pad != "NOTSET" or not _non_negative(model, node.input[0]):
        return None
    return pads


def _non_negative(model: onnx.ModelProto, name: str) -> bool:
    source = producer(model, name)
    if source is None:
        return False
    if source.op_type == "Relu":
        return True
    if source.op_type == "Concat":
        return all(_non_negative(model, i) for i in source.input)
    if source.op_type == "MaxPool":
        return _non_negative(model, source.input[0])
    if source.op_type == "Pad":  # the zero Pad this pass puts before an earlier pool
        fill = constant(model, source.input[2]) if len(source.input) > 2 and source.input[2] else np.zeros(1)
        return attr(source, "mode", b"constant") in (b"constant", "constant") and fill is not None \
            and float(fill.reshape(-1)[0]) >= 0.0 and _non_negative(model, source.input[0])
    if source.op_type == "Clip" and len(source.input) > 1 and source.input[1]:
        low = constant(model, source.input[1])
        return low is not None and low.size == 1 and float(low.reshape(-1)[0]) >= 0.0
    return False
