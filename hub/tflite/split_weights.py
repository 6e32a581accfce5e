"""Weight splitting: an int16x8 convolution whose int8 weights lose too much computed as two int8-weight convolutions
whose outputs are added, W = W_hi + W_lo, each part quantized per channel with its own scale.

int16 activations cannot recover what the int8 weights lose, and TFLM's int16 CONV_2D / DEPTHWISE_CONV_2D take
int8 filters only (hub.knowledge.int16_kernels.SPLITTABLE). A deep plain CNN with no residual path amplifies that
rounding downstream (MobileNetV1-0.25 of tests/hub_models.py: its weights alone fake-quantized per channel give
cosine 0.90 against float; bench/filter_split.py). W_hi is the filter the converter wrote; W_lo = W - W_hi
is the rounding it left, at most half of W_hi's step, quantized per channel with a scale of its own (about 254x
finer): the pair carries about 15 bits of each weight, on kernels TFLM has. The price is one more convolution, its
int8 filter, and two more int16 maps alive around the ADD.

    x -> CONV(W, act) -> y     becomes     x -> CONV(W_hi) -> y_hi --\
                                           x -> CONV(W_lo) -> y_lo ---> ADD(act) -> y

W itself comes from the same graph's float32 flatbuffer (hub.convert.converter's float32 twin: the same Keras graph,
BatchNorm folded the same way), matched by the convolution's output tensor name. y_hi keeps y's scale: the fused
activation moves to the ADD, and a pre-activation value beyond y's range is clipped where the activation would
have clipped it (RELU, RELU6) or where y was. y_lo is scaled from a bound, not calibrated: |y_lo| <= sum|W_lo| x
max|x|, which costs some of int16's bits on a correction that needs few.
"""
from __future__ import annotations

import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge.int16_kernels import SPLITTABLE
from hub.tflite import offline_plan
from hub.tflite.edit import builtin, new_buffer, opcode_index, unpack
from hub.tflite.model import OP_NAMES

LO_SUFFIX, HI_SUFFIX = b"/split_lo", b"/split_hi"
# Fused activations that y_hi may be clipped before: they clip at least where y's own range does (a TANH would
# bend values beyond it, so a convolution fused with one is not split)
CLIP_SAFE = frozenset({schema.ActivationFunctionType.NONE, schema.ActivationFunctionType.RELU,
                       schema.ActivationFunctionType.RELU6, schema.ActivationFunctionType.RELU_N1_TO_1})
_INT16_MAX = 32767


def candidates(int16_bytes: bytes, float32_bytes: bytes) -> list[int]:
    """The int16x8 model's convolutions that can be split, in network order: int16 activations, an int8 filter,
    and a float32 filter of the same shape in `float32_bytes` writing a tensor of the same name."""
    model, floats = unpack(int16_bytes), _float_filters(unpack(float32_bytes))
    sg = model.subgraphs[0]
    found = []
    for i, op in enumerate(sg.operators):
        if _name(model, op) not in SPLITTABLE:
            continue
        x, w, out = sg.tensors[int(op.inputs[0])], sg.tensors[int(op.inputs[1])], sg.tensors[int(op.outputs[0])]
        weights = floats.get((_name(model, op), out.name))
        if x.type == out.type == schema.TensorType.INT16 and w.type == schema.TensorType.INT8 \
                and op.builtinOptions.fusedActivationFunction in CLIP_SAFE \
                and weights is not None and tuple(weights.shape) == tuple(w.shape):
            found.append(i)
    return found


def split(int16_bytes: bytes, float32_bytes: bytes, ops: list[int]) -> bytes:
    """The int16x8 model with each convolution of `ops` (indices from `candidates`) split in two and summed."""
    model, floats = unpack(int16_bytes), _float_filters(unpack(float32_bytes))
    sg = model.subgraphs[0]
    chosen, operators = set(ops), []
    for i, op in enumerate(sg.operators):
        if i in chosen:
            operators += _split_one(model, op, floats[(_name(model, op), sg.tensors[int(op.outputs[0])].name)])
        else:
            operators.append(op)
    sg.operators = operators
    return offline_plan.pack(model, 2 * len(int16_bytes))


def _split_one(model: schema.ModelT, op: schema.OperatorT, weights: np.ndarray) -> list[schema.OperatorT]:
    """CONV(W_hi) and CONV(W_lo) into two new int16 maps, and the ADD that writes `op`'s output with its activation."""
    sg = model.subgraphs[0]
    x, w = sg.tensors[int(op.inputs[0])], sg.tensors[int(op.inputs[1])]
    out_index = int(op.outputs[0])
    axis = w.quantization.quantizedDimension
    hi = _per_channel(np.frombuffer(bytes(model.buffers[w.buffer].data), np.int8).reshape(w.shape).astype(np.float64),
                      np.asarray(w.quantization.scale, np.float64), axis)
    residual = weights.astype(np.float64) - hi
    lo_values, lo_scales = _quantize_per_channel(residual, axis)
    x_max = float(x.quantization.scale[0]) * (_INT16_MAX + 1)
    others = tuple(d for d in range(residual.ndim) if d != axis)
    bound = float(np.abs(residual).sum(axis=others).max()) * x_max

    activation = op.builtinOptions.fusedActivationFunction
    hi_op = op
    hi_op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
    lo_op = copy.deepcopy(hi_op)
    hi_op.outputs = np.array([_like(model, out_index, HI_SUFFIX)], np.int32)
    # a filter already on the int8 grid (quantization-aware training) leaves a residual of float noise or none: y_lo's
    # step is kept at least y's / 2^15, below which the correction means nothing (a zero bound would give no step)
    floor = float(sg.tensors[out_index].quantization.scale[0]) / 2 ** 15
    lo_out = _like(model, out_index, LO_SUFFIX, scale=max(bound / _INT16_MAX, floor))
    lo_weights = _constant(model, w, LO_SUFFIX, lo_values.astype(np.int8), lo_scales, axis)
    bias_scales = float(x.quantization.scale[0]) * lo_scales
    lo_bias = _constant(model, w, LO_SUFFIX + b"/bias", np.zeros(len(lo_scales), np.int64), bias_scales, 0,
                        schema.TensorType.INT64)
    lo_op.inputs = np.array([int(op.inputs[0]), lo_weights, lo_bias], np.int32)
    lo_op.outputs = np.array([lo_out], np.int32)
    return [hi_op, lo_op, _add(model, int(hi_op.outputs[0]), lo_out, out_index, activation)]


def _per_channel(values: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = -1
    return values * scales.reshape(shape)


def _quantize_per_channel(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along `axis` ([-127, 127], TFLite's filter scheme): (integers, scales)."""
    others = tuple(d for d in range(values.ndim) if d != axis)
    peak = np.abs(values).max(axis=others)
    scales = np.where(peak > 0, peak, 1.0) / 127.0  # a channel the converter rounded exactly: any scale, zeros
    integers = np.clip(np.round(values / _per_channel(np.ones_like(values), scales, axis)), -127, 127)
    return integers, scales


def _like(model: schema.ModelT, k: int, suffix: bytes, scale: float | None = None) -> int:
    """A new activation tensor shaped and typed as tensor `k` (its scale, or `scale`); its index."""
    sg = model.subgraphs[0]
    tensor = copy.deepcopy(sg.tensors[k])
    tensor.name += suffix
    tensor.buffer = new_buffer(model, None)
    if scale is not None:
        tensor.quantization.scale = np.array([scale], np.float32)
        tensor.quantization.zeroPoint = np.array([0], np.int64)
    sg.tensors.append(tensor)
    return len(sg.tensors) - 1


def _constant(model: schema.ModelT, like: schema.TensorT, suffix: bytes, values: np.ndarray, scales: np.ndarray,
              axis: int, dtype: int = schema.TensorType.INT8) -> int:
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape = like.name + suffix, dtype, np.array(values.shape, np.int32)
    tensor.buffer = new_buffer(model, values.tobytes())
    tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.scale = np.asarray(scales, np.float32)
    tensor.quantization.zeroPoint = np.zeros(len(scales), np.int64)
    tensor.quantization.quantizedDimension = axis
    model.subgraphs[0].tensors.append(tensor)
    return len(model.subgraphs[0].tensors) - 1


def _add(model: schema.ModelT, a: int, b: int, out: int, activation: int) -> schema.OperatorT:
    """int16 ADD with general (not power-of-two) rescaling, as the 16x8 converter writes it."""
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, schema.BuiltinOperator.ADD)
    op.inputs, op.outputs = np.array([a, b], np.int32), np.array([out], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.AddOptions
    op.builtinOptions = schema.AddOptionsT()
    op.builtinOptions.fusedActivationFunction, op.builtinOptions.potScaleInt16 = activation, False
    return op


def _float_filters(model: schema.ModelT) -> dict[tuple[str, bytes], np.ndarray]:
    """(builtin name, output tensor name) -> the float32 filter, for each convolution of a float32 model."""
    sg = model.subgraphs[0]
    found = {}
    for op in sg.operators:
        name = _name(model, op)
        if name in SPLITTABLE:
            w = sg.tensors[int(op.inputs[1])]
            data = model.buffers[w.buffer].data
            if w.type == schema.TensorType.FLOAT32 and data is not None and len(data):
                found[(name, sg.tensors[int(op.outputs[0])].name)] = np.frombuffer(bytes(data), np.float32).reshape(
                    w.shape)
    return found


def _name(model: schema.ModelT, op: schema.OperatorT) -> str:
    return OP_NAMES.get(builtin(model, op), "")
