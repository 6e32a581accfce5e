"""Edits of a TFLite model in the schema's object API (ai_edge_litert's ModelT) that every flatbuffer pass adding
ops, buffers or dropping tensors needs: hub.tflite.mixed, hub.tflite.roll, hub.tflite.split_weights,
hub.tflite.passes.softmax_int16."""
from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def unpack(tflite_bytes: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)


def builtin(model: schema.ModelT, op: schema.OperatorT) -> int:
    """The op's BuiltinOperator (schema.fbs keeps builtins past 127 in builtinCode only)."""
    return _code_builtin(model.operatorCodes[op.opcodeIndex])


def _code_builtin(code: schema.OperatorCodeT) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def new_buffer(model: schema.ModelT, data: bytes | None = None) -> int:
    """A buffer holding `data` (none: an activation's empty buffer), appended; its index."""
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def opcode_index(model: schema.ModelT, builtin: int, version: int = 1) -> int:
    """The index of `builtin`'s OperatorCode, its version raised to `version` (the kernel version an op now in the
    model needs), appended when the model has none."""
    for i, code in enumerate(model.operatorCodes):
        if _code_builtin(code) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    # deprecatedBuiltinCode is an int8 field: builtins past 127 keep 127 there (schema.fbs, PLACEHOLDER_FOR_...)
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def drop_unused(model: schema.ModelT) -> None:
    """The main subgraph's tensors no op or graph input/output uses dropped (renumbered), then every buffer no
    subgraph's tensor uses; buffer 0 stays the empty sentinel."""
    sg = model.subgraphs[0]
    used = {int(k) for op in sg.operators for k in [*op.inputs, *op.outputs] if k >= 0}
    keep = sorted(used | {int(k) for k in [*sg.inputs, *sg.outputs]})
    new_index = {old: new for new, old in enumerate(keep)}
    sg.tensors = [sg.tensors[k] for k in keep]
    for op in sg.operators:
        op.inputs = np.array([new_index.get(int(k), -1) for k in op.inputs], dtype=np.int32)
        op.outputs = np.array([new_index[int(k)] for k in op.outputs], dtype=np.int32)
    sg.inputs = np.array([new_index[int(k)] for k in sg.inputs], dtype=np.int32)
    sg.outputs = np.array([new_index[int(k)] for k in sg.outputs], dtype=np.int32)
    for signature in model.signatureDefs or []:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            entry.tensorIndex = new_index[entry.tensorIndex]
    buffers = sorted({0} | {t.buffer for s in model.subgraphs for t in s.tensors} |
                     {m.buffer for m in model.metadata or []})
    new_buffer = {old: new for new, old in enumerate(buffers)}
    model.buffers = [model.buffers[b] for b in buffers]
    for s in model.subgraphs:
        for tensor in s.tensors:
            tensor.buffer = new_buffer[tensor.buffer]
    for entry in model.metadata or []:
        entry.buffer = new_buffer[entry.buffer]
