"""Mixed int8 / int16x8 flatbuffers: the int16x8 ops of chosen layers spliced into the int8 model.

The TFLite converter quantizes a whole model in one mode (int8, or int16 activations with int8 weights); it has
no per-op int16 (tensorflow/lite/python/lite.py: `_is_int16x8_target_required` reads the one supported_ops set
for the whole model; the debugger's `denylisted_ops` only leaves ops in float). hub converts the same float
Keras graph twice, with the same calibration samples, and both models name each activation tensor after the
same TF op, so an op of the int8 model and its int16x8 twin are found by builtin and output names.

`splice` takes the int8 model and, for each promoted op, puts in its int16x8 twin with the twin's own tensors
(int16 activations and their scales, int8 weights, int64/int32 biases). Where an int8 tensor meets a promoted op
a QUANTIZE int8 -> int16 is inserted, where a promoted op's output meets an int8 op (or is a model output) a
QUANTIZE int16 -> int8 writes the original int8 tensor (TFLM's QUANTIZE requantizes between int8 and int16 both
ways: hub.knowledge.int16_kernels.REQUANTIZE). Inside a promoted region every tensor keeps the int16x8 model's
scales, so ops that need equal input and output scales (RESHAPE, CONCATENATION, ...) stay consistent.

An op TFLM has no int16 kernel for (HARD_SWISH, ...) the int16x8 conversion leaves in float32 between DEQUANTIZE and
QUANTIZE (hub.convert.converter's float_fallback): its twin is that float32 op, spliced in with a DEQUANTIZE before
and a QUANTIZE after it, the only place auto uses float (`Twin.float32`, named in the report). `widen` gives the
int16 twins headroom: their ranges wider than the calibration samples set.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge.int16_kernels import DATA_MOVEMENT, runs_int16
from hub.tflite import offline_plan  # pack: the schema object API's writer
from hub.tflite.edit import builtin, drop_unused, new_buffer, opcode_index, unpack
from hub.tflite.model import OP_NAMES

QUANTIZE = schema.BuiltinOperator.QUANTIZE
DEQUANTIZE = schema.BuiltinOperator.DEQUANTIZE
TWIN_SUFFIX = b"/twin"  # the spliced-in copies of the int16x8 model's tensors


@dataclass(frozen=True)
class Twin:
    """An op of the int8 model and its twin in the int16x8 model."""

    op: int  # index in the int8 model's operators
    twin: int  # index in the int16x8 model's operators
    name: str  # builtin name
    float32: bool = False  # the twin runs in float32: TFLM has no int16 kernel for it (HARD_SWISH, ...)


def twins(int8_bytes: bytes, int16_bytes: bytes) -> list[Twin]:
    """The int8 model's ops that can be promoted: a twin of the same builtin, writing the same tensors from the
    same activations, that TFLM runs with int16 activations (hub.knowledge.int16_kernels); or, for an op TFLM has
    no int16 kernel for, the float32 op the converter left between DEQUANTIZE and QUANTIZE (float_fallback)."""
    m8, m16 = unpack(int8_bytes), unpack(int16_bytes)
    alias = _island_aliases(m16)
    by_outputs = {(builtin(m16, op), _names(m16, op.outputs)): j for j, op in enumerate(m16.subgraphs[0].operators)}
    found = []
    for i, op in enumerate(m8.subgraphs[0].operators):
        code = builtin(m8, op)
        j = by_outputs.get((code, _names(m8, op.outputs)))
        if j is None or op.intermediates is not None and len(op.intermediates):
            continue
        twin, name = m16.subgraphs[0].operators[j], OP_NAMES.get(code, str(code))
        types = {m16.subgraphs[0].tensors[int(k)].type for k in twin.outputs}
        if _activations(m8, op) != _activations(m16, twin, alias):
            continue
        if types == {schema.TensorType.INT16} and runs_int16(name):
            found.append(Twin(i, j, name))
        elif types == {schema.TensorType.FLOAT32} and not runs_int16(name):
            found.append(Twin(i, j, name, float32=True))
    return found


def _island_aliases(model: schema.ModelT) -> dict[bytes, bytes]:
    """Around a float32 op the converter left in an int16x8 model, DEQUANTIZE writes `X_float` from int16 `X` and
    QUANTIZE writes int16 `Y_int16` from its float `Y`: each of those names -> the name the int8 model has."""
    sg = model.subgraphs[0]
    alias = {}
    for op in sg.operators:
        if builtin(model, op) in (QUANTIZE, DEQUANTIZE) and len(op.inputs) == 1 and len(op.outputs) == 1:
            source, made = sg.tensors[int(op.inputs[0])], sg.tensors[int(op.outputs[0])]
            if schema.TensorType.FLOAT32 in (source.type, made.type):
                alias[made.name] = source.name
    return alias


def splice(int8_bytes: bytes, int16_bytes: bytes, promote: list[Twin]) -> bytes:
    """The int8 model with the `promote` ops replaced by their int16x8 twins, QUANTIZE ops at the boundaries."""
    if not promote:
        return int8_bytes
    job = _Splice(unpack(int8_bytes), unpack(int16_bytes), {t.op: t.twin for t in promote})
    sg8 = job.m8.subgraphs[0]
    operators = []
    for i, op in enumerate(sg8.operators):
        operators += job.promoted(op, job.chosen[i]) if i in job.chosen else [op]
    sg8.operators = operators
    drop_unused(job.m8)  # the converter's output: no offline memory plan names tensor indices yet
    return offline_plan.pack(job.m8, len(int8_bytes) + len(int16_bytes))


class _Splice:
    """One splice: the int8 model being rewritten, the int16x8 model its twins come from, and the tensors made."""

    def __init__(self, m8: schema.ModelT, m16: schema.ModelT, chosen: dict[int, int]):
        self.m8, self.m16, self.chosen = m8, m16, chosen
        sg8, sg16 = m8.subgraphs[0], m16.subgraphs[0]
        self.int8_readers = {int(t) for i, op in enumerate(sg8.operators) if i not in chosen for t in op.inputs
                             if t >= 0} | {int(t) for t in sg8.outputs}  # tensors an int8 op or the caller reads
        self.by_name16 = {t.name: k for k, t in enumerate(sg16.tensors)}
        self.by_name8 = {t.name: k for k, t in enumerate(sg8.tensors) if not _is_constant(m8, k)}
        self.alias = _island_aliases(m16)
        self.made: dict[int, int] = {}  # int8 tensor -> the tensor its promoted writer writes instead (int16/float)
        self.converted: dict[tuple[int, int], int] = {}  # (int8 tensor, type) -> its copy a boundary op writes
        self.constants: dict[int, int] = {}  # int16x8 model's constant -> its copy (shared ones copied once)

    def promoted(self, op: schema.OperatorT, twin: int) -> list[schema.OperatorT]:
        """The twin of `op`, after the QUANTIZE (or DEQUANTIZE, for a float32 twin) its inputs need and before the
        QUANTIZE to int8 its outputs need."""
        before: list[schema.OperatorT] = []
        new = copy.deepcopy(self.m16.subgraphs[0].operators[twin])
        version = self.m16.operatorCodes[new.opcodeIndex].version  # the int16 kernel's
        new.opcodeIndex = opcode_index(self.m8, builtin(self.m16, new), version)
        new.inputs = np.array([self._input(int(k), before) for k in new.inputs], dtype=np.int32)
        outputs = [int(t) for t in op.outputs]
        for t8 in outputs:
            self.made[t8] = self._twin_copy(t8)
        new.outputs = np.array([self.made[t8] for t8 in outputs], dtype=np.int32)
        after = [_boundary(self.m8, self.made[t8], t8) for t8 in outputs if t8 in self.int8_readers]
        return [*before, new, *after]

    def _input(self, k16: int, before: list[schema.OperatorT]) -> int:
        if k16 < 0:
            return -1
        if _is_constant(self.m16, k16):  # weights, bias, shapes of the int16x8 twin
            if k16 not in self.constants:
                self.constants[k16] = _copy_tensor(self.m16, self.m8, k16, b"")
            return self.constants[k16]
        wanted = self.m16.subgraphs[0].tensors[k16]
        t8 = self.by_name8[self.alias.get(wanted.name, wanted.name)]
        source = self.made.get(t8, t8)  # an int8 op's (or the model input's) tensor, else the promoted writer's
        if self.m8.subgraphs[0].tensors[source].type == wanted.type:
            return source
        if (t8, wanted.type) not in self.converted:  # requantized (or dequantized) once for every reader
            self.converted[t8, wanted.type] = _copy_tensor(self.m16, self.m8, k16, TWIN_SUFFIX)
            before.append(_boundary(self.m8, source, self.converted[t8, wanted.type]))
        return self.converted[t8, wanted.type]

    def _twin_copy(self, t8: int) -> int:
        """The int16x8 model's tensor of the same name as int8 tensor `t8`, appended."""
        name = self.m8.subgraphs[0].tensors[t8].name
        return _copy_tensor(self.m16, self.m8, self.by_name16[name], TWIN_SUFFIX)


def _names(model: schema.ModelT, indices) -> tuple[bytes, ...]:
    tensors = model.subgraphs[0].tensors
    return tuple(tensors[int(k)].name for k in (indices if indices is not None else []))


def _is_constant(model: schema.ModelT, k: int) -> bool:
    buffer = model.buffers[model.subgraphs[0].tensors[k].buffer]
    return buffer.data is not None and len(buffer.data) > 0


def _activations(model: schema.ModelT, op: schema.OperatorT,
                 alias: dict[bytes, bytes] | None = None) -> tuple[bytes | None, ...]:
    """The names of the op's computed inputs (constants are named differently in each conversion)."""
    inputs = op.inputs if op.inputs is not None else []
    names = (None if int(k) < 0 or _is_constant(model, int(k)) else model.subgraphs[0].tensors[int(k)].name
             for k in inputs)
    return tuple((alias or {}).get(n, n) for n in names)


def _copy_tensor(source: schema.ModelT, target: schema.ModelT, k: int, suffix: bytes) -> int:
    """Tensor `k` of `source` appended to `target` with a copy of its data; its index there."""
    tensor = copy.deepcopy(source.subgraphs[0].tensors[k])
    buffer = copy.deepcopy(source.buffers[tensor.buffer]) if tensor.buffer else schema.BufferT()
    target.buffers.append(buffer)
    tensor.buffer = len(target.buffers) - 1
    tensor.name = (tensor.name or b"tensor") + suffix
    target.subgraphs[0].tensors.append(tensor)
    return len(target.subgraphs[0].tensors) - 1


def _boundary(model: schema.ModelT, source: int, target: int) -> schema.OperatorT:
    """QUANTIZE `source` into `target` (int8 <-> int16, float32 -> int8/int16), or DEQUANTIZE into a float32 one."""
    to_float = model.subgraphs[0].tensors[target].type == schema.TensorType.FLOAT32
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, DEQUANTIZE if to_float else QUANTIZE)
    op.inputs, op.outputs = np.array([source], dtype=np.int32), np.array([target], dtype=np.int32)
    return op


# int16 kernels that requantize their output from any input scale (their output range is free to choose), and
# the ops whose output must keep their input's scale (TFLM copies or compares raw values: reshape.cc, pooling.cc,
# concatenation.cc, pad.cc ...): a tensor written by one of these shares its input's range.
RESCALING = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL",
                       "BATCH_MATMUL", "MEAN", "SUM", "SQUARED_DIFFERENCE"})
SCALE_KEEPING = frozenset(DATA_MOVEMENT | {"AVERAGE_POOL_2D", "MAX_POOL_2D", "RELU", "RELU6"})
# what may read a widened tensor: kernels that rescale from its scale (the fixed-output ones included: their input
# scale is free), or keep it for the whole group
SCALE_READING = frozenset(RESCALING | SCALE_KEEPING | {"SOFTMAX", "LOGISTIC", "TANH"})
BIASED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


def widen(int16_bytes: bytes, factor: float) -> bytes:
    """The int16x8 model with its activation ranges `factor` times wider: headroom for values beyond the range the
    calibration samples set (clipping), paid for in resolution int16 has to spare (65536 steps, int8 has 256).

    Only ranges an op chooses freely are widened: a group of tensors that share one scale (joined through
    SCALE_KEEPING ops) is widened when every op writing into it is RESCALING (or it is a model input); groups fed
    by fixed-scale outputs (SOFTMAX, LOGISTIC, TANH: 1/32768) keep theirs. Biases follow their input's scale
    (bias scale = input scale x weight scale), their int64 values divided by the factor."""
    model = unpack(int16_bytes)
    sg = model.subgraphs[0]
    groups = _scale_groups(model)
    free = {g: True for g in groups.values()}
    for op in sg.operators:
        name = OP_NAMES.get(builtin(model, op), "")
        for t in op.outputs:  # a fixed or unknown output scale
            if name not in RESCALING and name not in SCALE_KEEPING:
                free[groups[int(t)]] = False
        for t in (int(k) for k in op.inputs if int(k) >= 0):
            if name not in SCALE_READING:  # a kernel that may assume the scale it was converted with
                free[groups[t]] = False
            elif name in SCALE_KEEPING and _is_constant(model, t) and sg.tensors[t].type == schema.TensorType.INT16:
                free[groups[int(op.outputs[0])]] = False  # a constant in the group (a concatenated token) keeps it
    widened = {t for t, g in groups.items() if free[g] and _int16_activation(model, t)}
    for t in widened:
        q = sg.tensors[t].quantization
        q.scale = np.asarray(q.scale, dtype=np.float32) * factor
    for op in sg.operators:
        if OP_NAMES.get(builtin(model, op), "") in BIASED and int(op.inputs[0]) in widened and len(op.inputs) > 2 \
                and int(op.inputs[2]) >= 0:
            _rescale_bias(model, int(op.inputs[2]), factor)
    return offline_plan.pack(model, len(int16_bytes))


def _scale_groups(model: schema.ModelT) -> dict[int, int]:
    """tensor -> the representative of the tensors that must share its scale (union over SCALE_KEEPING ops'
    activation input 0 and outputs)."""
    sg = model.subgraphs[0]
    parent = list(range(len(sg.tensors)))

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for op in sg.operators:
        if OP_NAMES.get(builtin(model, op), "") in SCALE_KEEPING:
            inputs = [int(k) for k in op.inputs if int(k) >= 0 and not _is_constant(model, int(k))]
            for t in [*inputs, *(int(k) for k in op.outputs)]:
                parent[find(t)] = find(inputs[0]) if inputs else find(t)
    return {t: find(t) for t in range(len(sg.tensors))}


def _int16_activation(model: schema.ModelT, t: int) -> bool:
    tensor = model.subgraphs[0].tensors[t]
    return (tensor.type == schema.TensorType.INT16 and not _is_constant(model, t) and tensor.quantization is not None
            and tensor.quantization.scale is not None and len(tensor.quantization.scale) == 1)


def _rescale_bias(model: schema.ModelT, t: int, factor: float) -> None:
    """Bias `t` in units of the widened input scale: values / factor (own buffer: another op may share it)."""
    tensor = model.subgraphs[0].tensors[t]
    dtype = {schema.TensorType.INT64: np.int64, schema.TensorType.INT32: np.int32}[tensor.type]
    values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype)
    tensor.buffer = new_buffer(model, np.round(values / factor).astype(dtype).tobytes())
    tensor.quantization.scale = np.asarray(tensor.quantization.scale, dtype=np.float32) * factor
