"""Have ARG_MAX/ARG_MIN write int32, the only index type TFLM's kernel writes, instead of int64.

ONNX fixes ArgMax's indices to int64 and onnx2tf keeps that type (tf.math.argmax(output_type=
int64)); TFLM's arg_min_max.cc then fails at invoke ("Only int32_t are supported currently, got
INT64"). Indices below 2^31 are the same numbers in int32, so the op's output_type option and
its output tensor's type are patched to INT32, along with the tensors of any RESHAPE, SQUEEZE or
EXPAND_DIMS that carry the indices on (they copy bytes, whatever the type). An op whose indices
reach anything else (arithmetic, GATHER, CAST) is left as it is. Each field is one byte,
patched in place: nothing else in the flatbuffer moves. The model's index output is then int32.
"""
from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from hub.tflite.model import ARG_MAX_OUTPUT_TYPE_SLOT, TENSOR_TYPE_SLOT, read_tflite

ARG_OPS = {"ARG_MAX", "ARG_MIN"}
CARRIERS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}  # ops that pass the indices through unchanged


def run(tflite_bytes: bytes) -> tuple[bytes, int, str]:
    model = read_tflite(tflite_bytes)
    readers: dict[int, list] = {}
    for op in model.ops:
        for i in op.inputs:
            readers.setdefault(i, []).append(op)
    root = schema.Model.GetRootAs(tflite_bytes, 0).Subgraphs(0)
    data = bytearray(tflite_bytes)
    changed = []
    for op in model.ops:
        if op.name not in ARG_OPS or model.tensors[op.outputs[0]].dtype != "int64":
            continue
        carried = _carried(op.outputs[0], readers)
        if carried is None:
            continue
        data[_options_field(root.Operators(op.index))] = schema.TensorType.INT32
        for tensor in carried:
            data[_tensor_field(root.Tensors(tensor))] = schema.TensorType.INT32
        changed.append(f"{op.name} #{op.index}")
    return bytes(data), len(changed), f"{', '.join(changed)} write int32 indices" if changed else ""


def _carried(tensor: int, readers: dict[int, list]) -> list[int] | None:
    """`tensor` and every tensor the carriers copy it into, or None when anything else reads one of them."""
    found, todo = [], [tensor]
    while todo:
        t = todo.pop()
        found.append(t)
        for op in readers.get(t, []):
            if op.name not in CARRIERS or op.inputs[0] != t:
                return None
            todo.append(op.outputs[0])
    return found


def _tensor_field(tensor) -> int:
    return tensor._tab.Pos + tensor._tab.Offset(TENSOR_TYPE_SLOT)


def _options_field(operator) -> int:
    table = operator.BuiltinOptions()
    options = schema.ArgMaxOptions()
    options.Init(table.Bytes, table.Pos)
    return options._tab.Pos + options._tab.Offset(ARG_MAX_OUTPUT_TYPE_SLOT)
