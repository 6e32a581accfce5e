"""Float islands: connected regions of float32 compute inside an otherwise int8/int16 .tflite.

Nodes are the ops computing in float (neither QUANTIZE nor DEQUANTIZE, with a float activation input or a
float output); float activation tensors join the ops that produce or read them, so two float ops reading one
DEQUANTIZE output are one island. Each costs arena (4 B per element instead of 1 or 2), flash for its float
constants, and float kernels: slow on an MCU without an FPU. A float model has none; nor does a float
interface (QUANTIZE at the input, DEQUANTIZE at the output, no float compute between).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from hub.knowledge.tflm_kernels import TFLITE_TYPES
from hub.tflite.model import OpInfo, TFLiteModel, TensorInfo

FLOAT_TYPES = frozenset({"float32", "float16", "float64"})
QUANTIZED_TYPES = frozenset({"int8", "int16", "uint8"})
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class OpRef:
    index: int  # position in the subgraph's operator list (execution order)
    name: str  # builtin name


@dataclass(frozen=True)
class FloatTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int


@dataclass(frozen=True)
class FloatIsland:
    ops: tuple[OpRef, ...]  # the float compute, in execution order
    entry_dequantize: tuple[int, ...]  # DEQUANTIZE ops feeding it (op indices)
    exit_quantize: tuple[int, ...]  # QUANTIZE ops draining it
    activations: tuple[FloatTensor, ...]  # in the arena
    constants: tuple[FloatTensor, ...]  # in flash
    peak_live_bytes: int  # most of its float activation bytes live at once (producer to last reader)

    @property
    def activation_bytes(self) -> int:
        return sum(t.bytes for t in self.activations)

    @property
    def constant_bytes(self) -> int:
        return sum(t.bytes for t in self.constants)

    def to_dict(self) -> dict[str, Any]:
        def tensor(t: FloatTensor) -> dict[str, Any]:
            return {"index": t.index, "name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.bytes}

        return {"ops": [{"index": o.index, "op": o.name} for o in self.ops],
                "entry_dequantize": list(self.entry_dequantize), "exit_quantize": list(self.exit_quantize),
                "activation_bytes": self.activation_bytes, "peak_live_bytes": self.peak_live_bytes,
                "constant_bytes": self.constant_bytes,
                "activations": [tensor(t) for t in self.activations],
                "constants": [tensor(t) for t in self.constants]}


def float_islands(model: TFLiteModel) -> list[FloatIsland]:
    """The model's float islands, in execution order ([] for a float or a fully integer model)."""
    compute = [op for op in model.ops if _computes_in_float(model, op)]
    if not compute or not _has_quantized_activations(model):
        return []
    import networkx as nx  # why here: 0.11 s of start-up, paid only by models that have float compute

    graph = nx.Graph()
    for op in compute:
        graph.add_node(("op", op.index))
        for t in op.inputs + op.outputs:
            if _float_activation(model, t):
                graph.add_edge(("op", op.index), ("tensor", t))
    islands = [_island(model, sorted(i for kind, i in part if kind == "op"),
                       sorted(i for kind, i in part if kind == "tensor"))
               for part in nx.connected_components(graph)]
    return sorted(islands, key=lambda island: island.ops[0].index)


def _island(model: TFLiteModel, op_ids: list[int], acts: list[int]) -> FloatIsland:
    ops = [model.ops[i] for i in op_ids]
    consts = sorted({t for op in ops for t in op.inputs
                     if t >= 0 and model.tensors[t].dtype in FLOAT_TYPES and model.tensors[t].is_constant})
    producer = {t: op for op in model.ops for t in op.outputs}
    entry = sorted({producer[t].index for t in acts if t in producer and producer[t].name == "DEQUANTIZE"})
    exit_ = sorted(op.index for op in model.ops if op.name == "QUANTIZE" and set(op.inputs) & set(acts))
    return FloatIsland(tuple(OpRef(op.index, op.name) for op in ops), tuple(entry), tuple(exit_),
                       tuple(_float_tensor(model.tensors[t], _activation_bytes(model.tensors[t])) for t in acts),
                       tuple(_float_tensor(model.tensors[t], model.tensors[t].data_bytes) for t in consts),
                       _peak_live(model, acts))


def _float_tensor(t: TensorInfo, nbytes: int) -> FloatTensor:
    return FloatTensor(t.index, t.name, tuple(t.shape), t.dtype, nbytes)


def _activation_bytes(t: TensorInfo) -> int:
    return prod(t.shape) * TFLITE_TYPES[t.dtype][2]


def _float_activation(model: TFLiteModel, index: int) -> bool:
    return index >= 0 and not model.tensors[index].is_constant and model.tensors[index].dtype in FLOAT_TYPES


def _computes_in_float(model: TFLiteModel, op: OpInfo) -> bool:
    if op.name in BOUNDARY_OPS:
        return False
    return (any(t >= 0 and model.tensors[t].dtype in FLOAT_TYPES for t in op.outputs)
            or any(_float_activation(model, t) for t in op.inputs))


def _has_quantized_activations(model: TFLiteModel) -> bool:
    return any(t >= 0 and not model.tensors[t].is_constant and model.tensors[t].dtype in QUANTIZED_TYPES
               for op in model.ops for t in op.inputs + op.outputs)


def _peak_live(model: TFLiteModel, acts: list[int]) -> int:
    """Most float bytes live at one op: a tensor lives from its first to its last use in execution order
    (TFLM's planner keeps it that long; model inputs and outputs live throughout, counted from their use)."""
    span: dict[int, tuple[int, int]] = {}
    wanted = set(acts)
    for op in model.ops:
        for t in op.inputs + op.outputs:
            if t in wanted:
                lo, hi = span.get(t, (op.index, op.index))
                span[t] = (min(lo, op.index), max(hi, op.index))
    return max((sum(_activation_bytes(model.tensors[t]) for t, (lo, hi) in span.items() if lo <= i <= hi)
                for i in range(len(model.ops))), default=0)
