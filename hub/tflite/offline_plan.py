"""Offline arena plan: fixed offsets for the planned tensors, as `OfflineMemoryAllocation` metadata.

TFLM's GreedyMemoryPlanner places buffers largest first, each in the first gap among the buffers
alive at the same time; on some graphs that leaves holes and the arena's head ends above the peak
of live bytes the operator order allows (fixtures/resnet_tiny.pt: 51,264 B for a peak of 49,152 B).
Packing the same lifetimes in other orders (first-fit by size x lifetime, by lifetime, by start)
often reaches the peak exactly; the offsets then go into the model as tflite-micro's
docs/memory_management.md describes: metadata "OfflineMemoryAllocation" naming a buffer of int32
[version 1, subgraphs 1, tensor count n, offset of tensor 0 .. n-1, -1 = planned at run time],
read by micro_allocation_info.cc (GetOfflinePlannedOffsets). TFLM then fits its scratch buffers
around those offsets.

Adding a buffer moves the flatbuffer's contents, so the model is rebuilt with the schema's object
API and then realigned by tflite-micro's own C++ tool (the Python flatbuffers builder ignores the
schema's 16-byte `force_align` on buffer data, which MCU kernels rely on).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.tflite.model import TFLiteModel

if TYPE_CHECKING:  # why: hub.tflite.passes imports this module (pack), and hub check must not pay networkx's import
    import networkx as nx

METADATA_NAME = "OfflineMemoryAllocation"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Buffer:
    tensor: int
    first: int  # allocation scopes as TFLM counts them: 0 = the graph inputs, op i = i + 1
    last: int
    size: int


def buffers(model: TFLiteModel, graph: nx.DiGraph) -> list[Buffer]:
    """Lifetimes of the planned tensors in the file's operator order (micro_allocation_info.cc)."""
    span: dict[int, list[int]] = {t: [0, 0] for t in model.inputs if ("t", t) in graph}
    for scope, op in enumerate(model.ops, start=1):
        for t in op.outputs:
            if ("t", t) in graph:
                span.setdefault(t, [scope, scope])
        for t in op.inputs + op.outputs:
            if t in span:
                span[t][1] = scope
    for t in model.outputs:
        if t in span:
            span[t][1] = len(model.ops)
    return [Buffer(t, first, last, graph.nodes[("t", t)]["bytes"]) for t, (first, last) in span.items()]


ORDERS = {  # first-fit placement orders tried; the lowest arena wins
    "size x lifetime": lambda b: -b.size * (b.last - b.first + 1),
    "lifetime": lambda b: (-(b.last - b.first), -b.size),
    "size": lambda b: -b.size,
    "start": lambda b: (b.first, -b.size),
}


def place(planned: list[Buffer]) -> tuple[dict[int, int], int]:
    """Offsets per tensor and the arena head they need: the best of the first-fit orders."""
    best: tuple[dict[int, int], int] = ({}, 0)
    for key in ORDERS.values():
        offsets, height = _first_fit(sorted(planned, key=key))
        if not best[0] or height < best[1]:
            best = (offsets, height)
    return best


def _first_fit(ordered: list[Buffer]) -> tuple[dict[int, int], int]:
    placed: list[tuple[Buffer, int]] = []
    for b in ordered:
        offset = 0
        for start, end in sorted((o, o + p.size) for p, o in placed if p.first <= b.last and b.first <= p.last):
            if offset + b.size <= start:
                break
            offset = max(offset, end)
        placed.append((b, offset))
    return {b.tensor: o for b, o in placed}, max((o + b.size for b, o in placed), default=0)


def attach(tflite_bytes: bytes, offsets: dict[int, int], tensor_count: int) -> bytes:
    """The model with `offsets` (tensor -> byte offset in the arena's head) as an offline plan."""
    model = schema.ModelT.InitFromPackedBuf(tflite_bytes, 0)
    values = [FORMAT_VERSION, 1, tensor_count] + [offsets.get(t, -1) for t in range(tensor_count)]
    plan = schema.BufferT()
    plan.data = np.array(values, dtype="<i4").view(np.uint8)
    model.buffers.append(plan)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return pack(model, len(tflite_bytes))


def pack(model: schema.ModelT, size_hint: int) -> bytes:
    """`model` (schema object API) as flatbuffer bytes, buffers realigned by tflite-micro's own tool."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with tempfile.TemporaryDirectory(prefix="hub-plan-") as tmp:
        unaligned, aligned = Path(tmp, "in.tflite"), Path(tmp, "out.tflite")
        unaligned.write_bytes(bytes(builder.Output()))
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(unaligned), str(aligned))
        return aligned.read_bytes()


def extend(model: schema.ModelT, tensor_count: int) -> None:
    """Tensors a pass appended are planned at run time (-1) in `model`'s offline plan, if it has one."""
    for entry in model.metadata or []:
        if entry.name != METADATA_NAME.encode():
            continue
        buffer = model.buffers[entry.buffer]
        values = np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype="<i4").tolist()
        count = values[2]
        values = values[:3 + count] + [-1] * (tensor_count - count)
        values[2] = tensor_count
        buffer.data = np.array(values, dtype="<i4").view(np.uint8)
