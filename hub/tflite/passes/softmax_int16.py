"""Take each int8 SOFTMAX over 512+ classes off the check TFLM aborts on: SOFTMAX writes int16, a QUANTIZE
brings that back to the original int8 output.

TFLM's int8-in, int8-out SOFTMAX aborts the process at invoke once the exponentials of a row sum to 512
(tflm_kernels.SOFTMAX_INT8_ABORT_CLASSES): 512 or more classes level with the top one, as the 1,000 logits of
a model with placeholder weights are. The same kernel writing int16 (scale 1/65536, zero point -32768,
tflm_kernels.SOFTMAX_INT16_OUTPUT) checks against 2^16 instead, and takes rows up to 4,095 level classes
(tflm_kernels.SOFTMAX_INT8_MAX_CLASSES). QUANTIZE int16 -> int8 (kernels/quantize_common.cc: Requantize) then
writes the original output tensor, scale 1/256, zero point -128: measured bit-identical to the int8 SOFTMAX
wherever that one runs (measured on 15 rows x 1,000 classes, input scales 0.02 to 5.5e7), for ~150-200 B of
flatbuffer and a ~4 KB arena tail (the int16 row). Past 4,095 classes, or when the int8 input scale is one
SOFTMAX's Prepare refuses (raise_tiny_scales, which runs first, raised it unless another op reads it), the
softmax runs in float32 between a DEQUANTIZE and a QUANTIZE instead: no class or scale limit.

The new tensors and the QUANTIZE (and DEQUANTIZE) are appended and inserted right after the SOFTMAX, so
existing tensor indices, graph outputs and signatures stay; the model is repacked with the schema object API
(hub.tflite.offline_plan.pack), and an offline memory plan, if any, plans the new tensors at run time.
"""
from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge import tflm_kernels
from hub.tflite import offline_plan
from hub.tflite.edit import new_buffer, opcode_index, unpack

OP = schema.BuiltinOperator
WHY = f"TFLM's int8 SOFTMAX aborts once a row's exponentials sum to {tflm_kernels.SOFTMAX_INT8_ABORT_CLASSES}"


def run(tflite_bytes: bytes) -> tuple[bytes, int, str]:
    model = unpack(tflite_bytes)
    sg = model.subgraphs[0]
    done = []
    for op in [op for op in sg.operators if _aborts(model, sg, op)]:
        classes = int(sg.tensors[op.inputs[0]].shape[-1])
        if _int16_fits(sg.tensors[op.inputs[0]], classes):
            _int16_output(model, sg, op)
            done.append(f"SOFTMAX over {classes} classes: int16 output + QUANTIZE ({WHY})")
        else:
            _float_softmax(model, sg, op)
            done.append(f"SOFTMAX over {classes} classes: float32 between DEQUANTIZE and QUANTIZE ({WHY}; "
                        f"its int16 output takes at most {tflm_kernels.SOFTMAX_INT8_MAX_CLASSES} classes and an "
                        "input scale its Prepare accepts)")
    if not done:
        return tflite_bytes, 0, ""
    offline_plan.extend(model, len(sg.tensors))
    return offline_plan.pack(model, len(tflite_bytes)), len(done), "; ".join(done)


def _aborts(model: schema.ModelT, sg: schema.SubGraphT, op: schema.OperatorT) -> bool:
    """An int8-to-int8 SOFTMAX over rows long enough to reach TFLM's abort."""
    code = model.operatorCodes[op.opcodeIndex]
    if max(code.builtinCode, code.deprecatedBuiltinCode) != OP.SOFTMAX or len(op.inputs) < 1 or op.inputs[0] < 0:
        return False
    x, y = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
    int8 = x.type == y.type == schema.TensorType.INT8
    return int8 and x.shape is not None and len(x.shape) > 0 and x.shape[-1] >= tflm_kernels.SOFTMAX_INT8_ABORT_CLASSES


def _int16_fits(x: schema.TensorT, classes: int) -> bool:
    scale = float(x.quantization.scale[0]) if x.quantization is not None and x.quantization.scale is not None else 0
    return classes <= tflm_kernels.SOFTMAX_INT8_MAX_CLASSES and scale > tflm_kernels.MIN_INT8_INPUT_SCALE["SOFTMAX"]


def _int16_output(model: schema.ModelT, sg: schema.SubGraphT, op: schema.OperatorT) -> None:
    """SOFTMAX x -> y16 (int16), QUANTIZE y16 -> y (the original int8 output)."""
    y = int(op.outputs[0])
    y16 = _tensor(model, sg, y, b"/int16", schema.TensorType.INT16, *tflm_kernels.SOFTMAX_INT16_OUTPUT)
    op.outputs = np.array([y16], dtype=np.int32)
    _insert_after(sg, op, _operator(model, OP.QUANTIZE, y16, y))


def _float_softmax(model: schema.ModelT, sg: schema.SubGraphT, op: schema.OperatorT) -> None:
    """DEQUANTIZE x -> xf, SOFTMAX xf -> yf (float32), QUANTIZE yf -> y."""
    x, y = int(op.inputs[0]), int(op.outputs[0])
    xf = _tensor(model, sg, x, b"/float", schema.TensorType.FLOAT32)
    yf = _tensor(model, sg, y, b"/float", schema.TensorType.FLOAT32)
    op.inputs, op.outputs = np.array([xf], dtype=np.int32), np.array([yf], dtype=np.int32)
    at = sg.operators.index(op)
    sg.operators.insert(at, _operator(model, OP.DEQUANTIZE, x, xf))
    _insert_after(sg, op, _operator(model, OP.QUANTIZE, yf, y))


def _tensor(model: schema.ModelT, sg: schema.SubGraphT, like: int, suffix: bytes, dtype: int,
            scale: float | None = None, zero_point: int = 0) -> int:
    """A computed tensor shaped like tensor `like`, appended (its own empty buffer); its index."""
    source = sg.tensors[like]
    t = schema.TensorT()
    t.shape, t.shapeSignature = source.shape, source.shapeSignature
    t.type, t.name = dtype, (source.name or b"softmax") + suffix
    t.buffer = new_buffer(model)
    if scale is not None:
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [float(scale)], [int(zero_point)]
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _operator(model: schema.ModelT, builtin: int, source: int, target: int) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin)
    op.inputs, op.outputs = np.array([source], dtype=np.int32), np.array([target], dtype=np.int32)
    return op


def _insert_after(sg: schema.SubGraphT, op: schema.OperatorT, new: schema.OperatorT) -> None:
    sg.operators.insert(sg.operators.index(op) + 1, new)
