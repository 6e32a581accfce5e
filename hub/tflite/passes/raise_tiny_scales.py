"""Raise int8 SOFTMAX/LOG_SOFTMAX/LOGISTIC input scales that would make TFLM abort to the smallest it takes, and
output scales too small for an op's fused activation.

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

The same holds for an op's output whose scale is too small for its fused RELU6 / RELU_N1_TO_1 bound
(tflm_kernels.min_output_scale: a tensor that barely varies, in int16 most often): its scale is raised to twice
that, a range still far beyond the values it holds, when the op and every reader compute from the tensors' scales
(tflm_kernels.REQUANTIZING; a pool or a reshape would keep the integers and so change their meaning).
"""
from __future__ import annotations

import struct

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge import tflm_kernels
from hub.tflite.model import QUANTIZATION_SCALE_SLOT, TFLiteModel, read_tflite


def run(tflite_bytes: bytes) -> tuple[bytes, int, str]:
    model = read_tflite(tflite_bytes)
    read_by: dict[int, list[int]] = {}
    for op in model.ops:
        for i in op.inputs:
            read_by.setdefault(i, []).append(op.index)
    raised: dict[int, tuple[float, str]] = {}  # tensor -> (new scale, why): the larger when both hazards hit it
    for op, tensor, limit in scale_hazards(model):
        if len(read_by.get(tensor.index, ())) != 1 or tensor.index in model.outputs or len(tensor.scales) != 1:
            continue
        raised[tensor.index] = (_just_above(limit), f"{op.name} #{op.index} input scale")
    for op, tensor in activation_hazards(model):
        readers = [model.ops[r].name for r in read_by.get(tensor.index, ())]
        if tensor.index in model.outputs or not all(name in tflm_kernels.REQUANTIZING for name in [op.name, *readers]):
            continue
        # twice the least: the kernel rounds bound / scale in float32, which must stay below int32's limit
        scale = 2 * tflm_kernels.min_output_scale(op.fused_activation)
        if scale > raised.get(tensor.index, (0.0, ""))[0]:
            raised[tensor.index] = (scale, f"{op.name} #{op.index} output scale")
    data = bytearray(tflite_bytes)
    changed = []
    for index, (scale, what) in raised.items():
        struct.pack_into("<f", data, _scale_offset(tflite_bytes, index), scale)
        changed.append(f"{what} {model.tensors[index].scales[0]:.3g} -> {scale:.3g}")
    return bytes(data), len(changed), "; ".join(changed)


def activation_hazards(model: TFLiteModel) -> list[tuple]:
    """(op, output tensor) for each int8/int16 op whose fused activation bound overflows int32 at its output's
    scale (tflm_kernels.min_output_scale): TFLM's Prepare fails. What this pass raises when it may, and what hub
    check reports on any .tflite."""
    hazards = []
    for op in model.ops:
        least = tflm_kernels.min_output_scale(op.fused_activation)
        if least == 0.0 or len(op.outputs) != 1:
            continue
        t = model.tensors[op.outputs[0]]
        if t.dtype in ("int8", "int16") and len(t.scales) == 1 and t.scales[0] < least:
            hazards.append((op, t))
    return hazards


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
