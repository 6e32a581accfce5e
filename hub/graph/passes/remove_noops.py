"""Drop reshapes, transposes, slices and friends that do nothing, and merge chains of them.

Exporters leave these behind (a Flatten of an already-flat tensor, a full Slice,
Transpose pairs around a layout change that cancel out). onnx2tf turns each into
an op of its own, often with NHWC<->NCHW transposes around it, so they cost time,
arena and flash on the device. Static shapes (normalise infers them) decide:
- Reshape / Flatten / Squeeze / Unsqueeze / Expand whose output shape equals its input's;
- Transpose with the identity permutation; two Transposes in a row become one (or none);
- Reshape of a Reshape reads the first one's input directly;
- Slice that keeps every element; Pad by zero everywhere; Cast to the same type;
  Concat of one input.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.graph.edit import (add_initializer, attr, bypass_node, constant, elem_type, graph_output_names, set_attr,
                            sole_consumer, static_shape)

SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"}


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    removed, merged = 0, 0
    for node in list(model.graph.node):
        if node not in model.graph.node:
            continue
        if _merge_chain(model, node):
            merged += 1
        elif _is_noop(model, node) and bypass_node(model, node):
            removed += 1
    removed += remove_dead_nodes(model)
    parts = [f"removed {removed} no-op nodes"] if removed else []
    parts += [f"merged {merged} Reshape/Transpose chains"] if merged else []
    return model, removed + merged, "; ".join(parts)


def _is_noop(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    if not node.input or not node.input[0] or len([o for o in node.output if o]) != 1:
        return False
    op, src, dst = node.op_type, node.input[0], node.output[0]
    if op in SHAPE_OPS:
        shape_in, shape_out = static_shape(model, src), static_shape(model, dst)
        return shape_in is not None and shape_in == shape_out
    if op == "Transpose":
        perm = attr(node, "perm")
        return perm is not None and list(perm) == sorted(perm)
    if op == "Slice":
        return _full_slice(model, node)
    if op == "Pad":
        pads = constant(model, node.input[1]) if len(node.input) > 1 else None
        return pads is not None and not np.any(pads)
    if op == "Cast":
        return elem_type(model, src) is not None and elem_type(model, src) == attr(node, "to")
    if op == "Concat":
        return len([i for i in node.input if i]) == 1
    return False


def _full_slice(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    shape = static_shape(model, node.input[0])
    args = [constant(model, n) if i < len(node.input) and n else None
            for i, n in enumerate(list(node.input[1:5]) + [""] * (4 - len(node.input[1:5])))]
    starts, ends, axes, steps = args
    if shape is None or starts is None or ends is None:
        return False
    if len(node.input) > 3 and node.input[3] and axes is None or len(node.input) > 4 and node.input[4] and steps is None:
        return False
    axes = axes if axes is not None else np.arange(len(starts))
    steps = steps if steps is not None else np.ones(len(starts), np.int64)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[int(axis)]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step != 1 or start > 0 or end < dim:
            return False
    return True


def _merge_chain(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Transpose->Transpose and Reshape->Reshape, where the first feeds only the second."""
    if node.op_type not in ("Transpose", "Reshape"):
        return False
    nxt = sole_consumer(model, node.output[0])
    if nxt is None or nxt.op_type != node.op_type or nxt.input[0] != node.output[0]:
        return False
    if node.op_type == "Transpose":
        first, second = attr(node, "perm"), attr(nxt, "perm")
        if first is None or second is None:
            return False
        set_attr(nxt, "perm", [int(first[p]) for p in second])
    else:
        shape = static_shape(model, nxt.output[0])
        if shape is None:
            return False
        nxt.input[1] = add_initializer(model, np.array(shape, np.int64), f"{nxt.name or nxt.output[0]}_shape")
    nxt.input[0] = node.input[0]
    model.graph.node.remove(node)
    return True


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Remove nodes none of whose outputs is read or is a graph output."""
    removed = 0
    outputs = graph_output_names(model)
    changed = True
    while changed:
        changed = False
        read = {name for n in model.graph.node for name in n.input}  # one scan, not one per output
        for node in reversed(list(model.graph.node)):
            if not any(o and (o in outputs or o in read) for o in node.output):
                model.graph.node.remove(node)
                removed += 1
                changed = True
                read = {name for n in model.graph.node for name in n.input}
    return removed
