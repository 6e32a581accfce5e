"""Write activations in the forms TFLite fuses into the op before them.

TFLite's CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, ... carry a fused
activation (RELU, RELU6, RELU_N1_TO_1): a separate activation op costs an op, a
tensor and an arena buffer. The converter fuses Relu and Relu6-shaped clips that
directly follow the layer; exporters spell them in other ways:
- Clip(min=0, max=none or +inf) and Max(x, 0) -> Relu;
- Min(Relu(x), 6) and Max(Min(x, 6), 0) -> Clip(x, 0, 6);
- Relu(Relu(x)) or Relu(Clip(x, 0, hi)) -> the inner one alone.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.graph.edit import add_initializer, bypass_node, constant, producer, sole_consumer


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    changed = 0
    for node in list(model.graph.node):
        if node not in model.graph.node:
            continue
        changed += _relu_form(model, node) or _relu6_form(model, node) or _redundant_relu(model, node)
    return model, changed, f"rewrote {changed} activations into fusable form" if changed else ""


def _scalar(model: onnx.ModelProto, name: str) -> float | None:
    value = constant(model, name) if name else None
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _clip_bounds(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float | None, float | None]:
    lo = _scalar(model, node.input[1]) if len(node.input) > 1 and node.input[1] else -np.inf
    hi = _scalar(model, node.input[2]) if len(node.input) > 2 and node.input[2] else np.inf
    return lo, hi


def _other_operand(node: onnx.NodeProto, model: onnx.ModelProto) -> tuple[str, float] | None:
    """(tensor, constant) for a binary Max/Min of a tensor and a scalar constant."""
    if len(node.input) != 2:
        return None
    for i in (0, 1):
        value = _scalar(model, node.input[1 - i])
        if value is not None and constant(model, node.input[i]) is None:
            return node.input[i], value
    return None


def _replace(node: onnx.NodeProto, new: onnx.NodeProto, model: onnx.ModelProto) -> None:
    index = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    model.graph.node.insert(index, new)


def _relu_form(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    if node.op_type == "Clip":
        lo, hi = _clip_bounds(model, node)
        if lo != 0.0 or hi != np.inf:
            return 0
        source = node.input[0]
    elif node.op_type == "Max" and (pair := _other_operand(node, model)) and pair[1] == 0.0:
        source = pair[0]
    else:
        return 0
    _replace(node, helper.make_node("Relu", [source], [node.output[0]], name=node.name), model)
    return 1


def _relu6_form(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """Outer Min(., 6) over Relu/Max(., 0), or outer Max(., 0) over Min(., 6)."""
    if node.op_type not in ("Min", "Max") or not (pair := _other_operand(node, model)):
        return 0
    inner = producer(model, pair[0])
    if inner is None or sole_consumer(model, pair[0]) is not node:
        return 0
    if node.op_type == "Min" and pair[1] == 6.0:
        if inner.op_type == "Relu":
            source = inner.input[0]
        elif inner.op_type == "Max" and (ip := _other_operand(inner, model)) and ip[1] == 0.0:
            source = ip[0]
        else:
            return 0
    elif node.op_type == "Max" and pair[1] == 0.0 and inner.op_type == "Min" \
            and (ip := _other_operand(inner, model)) and ip[1] == 6.0:
        source = ip[0]
    else:
        return 0
    lo = add_initializer(model, np.array(0.0, np.float32), f"{node.name or node.output[0]}_min")
    hi = add_initializer(model, np.array(6.0, np.float32), f"{node.name or node.output[0]}_max")
    model.graph.node.remove(inner)
    _replace(node, helper.make_node("Clip", [source, lo, hi], [node.output[0]], name=node.name), model)
    return 1


def _redundant_relu(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    if node.op_type != "Relu":
        return 0
    inner = producer(model, node.input[0])
    if inner is None or sole_consumer(model, node.input[0]) is not node:
        return 0
    lo = _clip_bounds(model, inner)[0] if inner.op_type == "Clip" else None
    if inner.op_type == "Relu" or (lo is not None and lo >= 0):
        return int(bypass_node(model, node))
    return 0

