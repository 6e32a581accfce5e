"""Pooling in the form that converts to one plain AVERAGE_POOL_2D.

GlobalAveragePool over a static 2-D image becomes an AveragePool with the whole image as
its kernel: onnx2tf emits MEAN for the former, and in TFLM an int8 MEAN is slower (about
11 % for a 16x16x8 input here) and keeps a larger file and arena than AVERAGE_POOL_2D,
which the MLPerf Tiny reference files use for the same layer.

AveragePool without padding is then stated as pads=0 with count_include_pad=1.

A squeeze-and-excitation squeeze (the pooled vector, a few layers on, multiplies the pool's own
input) stays GlobalAveragePool: an int8 AVERAGE_POOL_2D keeps its input's scale, far too coarse for a
mean (EfficientNetB0's first squeeze: scale 0.026 for values in [0.16, 0.22], relative error 0.042
against 0.016 for MEAN with its own scale), and the error multiplies every channel of the block.
On EfficientNetV2B0 (bench/vs_tf_converter.py) int8 cosine went 0.9523 -> 0.9559.

With no padding both count_include_pad settings average the same cells, so the
rewrite is exact. It matters to onnx2tf 1.29: for a pad-free pool whose kernel
is not square (DS-CNN's 25x5 global pool, for one), its AveragePool compares the
per-axis window counts across axes, decides a correction is needed, and emits
one STRIDED_SLICE (times 1.0) per spatial axis (`average_multiplier` in
onnx2tf/ops/AveragePool.py). With count_include_pad=1 and explicit zero pads it
takes the plain AVERAGE_POOL_2D path.
"""
from __future__ import annotations

import onnx

from hub.graph.edit import attr, consumers, set_attr, static_shape

SE_DEPTH = 8  # nodes from the squeeze to the gating Mul: Conv, SiLU (2), Conv, Sigmoid, Mul, with room for Reshapes


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    globals_ = _global_to_window(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "AveragePool" or attr(node, "ceil_mode", 0):
            continue
        auto_pad = attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        kernel = attr(node, "kernel_shape")
        pads = attr(node, "pads", [0] * 2 * len(kernel))
        if auto_pad not in ("NOTSET", "VALID") or any(pads):
            continue
        if auto_pad == "NOTSET" and attr(node, "count_include_pad", 0) == 1:
            continue
        for a in list(node.attribute):
            if a.name == "auto_pad":
                node.attribute.remove(a)
        set_attr(node, "pads", [0] * 2 * len(kernel))
        set_attr(node, "count_include_pad", 1)
        changed += 1
    parts = [f"turned {globals_} GlobalAveragePool into AveragePool"] if globals_ else []
    parts += [f"stated {changed} pad-free AveragePool as count_include_pad=1"] if changed else []
    return model, changed + globals_, "; ".join(parts)


def _global_to_window(model: onnx.ModelProto) -> int:
    count = 0
    for node in model.graph.node:
        shape = static_shape(model, node.input[0]) if node.op_type == "GlobalAveragePool" else None
        if shape is None or len(shape) != 4 or _gates_its_input(model, node):
            continue
        node.op_type = "AveragePool"
        set_attr(node, "kernel_shape", list(shape[2:]))
        count += 1
    return count


def _gates_its_input(model: onnx.ModelProto, pool: onnx.NodeProto) -> bool:
    """Squeeze-and-excitation: within SE_DEPTH nodes of the pool, a Mul reads the pool's own input."""
    frontier, seen = [pool.output[0]], set()
    for _ in range(SE_DEPTH):
        following = []
        for name in frontier:
            for user in consumers(model, name):
                if user.op_type == "Mul" and pool.input[0] in user.input:
                    return True
                fresh = [out for out in user.output if out not in seen]
                seen.update(fresh)
                following.extend(fresh)
        frontier = following
    return False
