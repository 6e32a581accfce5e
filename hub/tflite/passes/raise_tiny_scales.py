"""Raise int8 SOFTMAX/LOG_SOFTMAX/LOGISTIC input scales that would make TFLM abort to the smallest it takes.

A calibration over logits that barely vary (constant weights, an untrained head, the
light model-zoo files) gives the logits tensor a scale below what TFLM's Prepare accepts
(tflm_kernels.MIN_INT8_INPUT_SCALE): the int8 SOFTMAX then aborts the whole program.

Raising that scale to the limit s' is harmless: the op then sees logits spanning at most
255 * s' (3.8e-6 for SOFTMAX), whose softmax is uniform within a relative 3.8e-6, as
the true one is (its logits span even less). The producer either requantizes to the new
scale (FULLY_CONNECTED, CONV_2D, MEAN: same values, coarser steps) or passes the int8
values through (RESHAPE), which the bound covers too. Only a tensor the op alone reads
is changed. The four bytes of the scale are patched in place: nothing else in the
flatbuffer moves.
"""
from __future__ import annotations

import struct

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge import tflm_kernels
from hub.tflite.model import QUANTIZATION_SCALE_SLOT, TFLiteModel, read_tflite


def run(tflite_bytes: bytes) -> tuple[bytes, int, str]:
    model = read_tflite(tflite_bytes)
    readers: dict[int, int] = {}
    for op in model.ops:
        for i in op.inputs:
            readers[i] = readers.get(i, 0) + 1
    data = bytearray(tflite_bytes)
    changed = []
    for op, tensor, limit in scale_hazards(model):
        if readers.get(tensor.index) != 1 or tensor.index in model.outputs or len(tensor.scales) != 1:
            continue
        struct.pack_into("<f", data, _scale_offset(tflite_bytes, tensor.index), _just_above(limit))
        changed.append(f"{op.name} #{op.index} input scale {tensor.scales[0]:.3g} -> {_just_above(limit):.3g}")
    return bytes(data), len(changed), "; ".join(changed)


def _just_above(limit: float) -> float:
    """The smallest float32 above `limit`: the kernels need the scale strictly greater."""
    import numpy as np

    return float(np.nextafter(np.float32(limit), np.float32(1.0)))


def _scale_offset(data: bytes, tensor_index: int) -> int:
    """Byte offset of scale[0] of tensor `tensor_index` in subgraph 0."""
    tensor = schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(tensor_index)
    q = tensor.Quantization()
    o = flatbuffers.number_types.UOffsetTFlags.py_type(q._tab.Offset(QUANTIZATION_SCALE_SLOT))
    return q._tab.Vector(o)


def scale_hazards(model: TFLiteModel) -> list[tuple]:
    """(op, input tensor, limit) for each int8 op whose input scale TFLM's Prepare cannot take
    (tflm_kernels.MIN_INT8_INPUT_SCALE): what this pass raises, and what hub check reports on any .tflite."""
    hazards = []
    for op in model.ops:
        limit = tflm_kernels.MIN_INT8_INPUT_SCALE.get(op.name)
        if limit is None or not op.inputs or op.inputs[0] < 0:
            continue
        t = model.tensors[op.inputs[0]]
        if t.dtype == "int8" and t.scales and t.scales[0] <= limit:
            hazards.append((op, t, limit))
    return hazards
