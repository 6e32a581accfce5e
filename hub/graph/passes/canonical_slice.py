"""Slice stated on the axes it cuts, in axis order.

tf2onnx writes a Keras Cropping2D after its NCHW transpose as a Slice over all four axes in the
order [0, 2, 3, 1], three of them taking the whole dimension. onnx2tf 1.29 maps such a Slice to
the wrong NHWC axes in NASNetMobile (its reduction cells crop a padded tensor): a later Conv
then sees (1, 22, 12, 25) where it expects 44 channels, and the conversion stops with "Depth of
input (25) is not a multiple of input depth of filter (44)". Stated on the cut axes only, sorted,
the same Slice converts. Dropping an axis that keeps everything (start 0, end >= size, step 1)
and reordering (starts, ends, axes, steps) together selects exactly the same elements.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.graph.edit import add_initializer, constant, static_shape


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    changed = sum(_canonical(model, node) for node in model.graph.node if node.op_type == "Slice")
    return model, changed, f"stated {changed} Slice on the axes they cut, in order" if changed else ""


def _canonical(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape = static_shape(model, node.input[0])
    names = list(node.input[1:5]) + [""] * (5 - len(node.input))
    starts, ends = constant(model, names[0]), constant(model, names[1])
    axes = constant(model, names[2]) if names[2] else None
    steps = constant(model, names[3]) if names[3] else None
    if shape is None or starts is None or ends is None or (names[2] and axes is None) or (names[3] and steps is None):
        return False
    rank = len(shape)
    axes = np.arange(len(starts)) if axes is None else np.where(axes < 0, axes + rank, axes)
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    cut = [i for i in range(len(starts)) if not _keeps_all(starts[i], ends[i], steps[i], shape[int(axes[i])])]
    cut.sort(key=lambda i: axes[i])
    if not cut or cut == list(range(len(starts))):
        return False  # nothing cut (remove_noops drops it) or already canonical
    base = node.name or node.output[0]
    new = [add_initializer(model, np.array([arr[i] for i in cut], arr.dtype), f"{base}_{what}")
           for arr, what in ((starts, "starts"), (ends, "ends"), (axes.astype(np.int64), "axes"), (steps, "steps"))]
    del node.input[1:]
    node.input.extend(new)
    return True


def _keeps_all(start: int, end: int, step: int, dim: int) -> bool:
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    return step == 1 and start <= 0 and end >= dim
