"""Per-layer figures of a model: op, output shape, parameters, MACs, activation bytes.

MACs follow the MLPerf Tiny convention: one multiply-accumulate per use of a
weight (a 3x3 conv from 16 to 32 channels on a 32x32 output is
32*32*32*16*9); pooling, activations and additions cost none. A
BatchNormalization that directly follows a Conv/Gemm is counted as folded into
it (the TFLite converter folds it), so its parameters become that layer's bias.

Also computes the activation buffers' lifetimes in execution order and places
them with a greedy planner shaped like TFLM's (see `plan_arena`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any

import numpy as np
import onnx
from onnx import helper

from hub.graph.shapes import with_shapes
from hub.knowledge.arena import (ALIGN, PLAN_TEMP_PER_BUFFER, PLAN_TEMP_PER_TENSOR, TAIL_FIXED, TAIL_PER_CHANNEL,
                                 TAIL_PER_OP, TAIL_PER_TENSOR)
from hub.knowledge.compression import DECODE_CODE
from hub.knowledge.tflm_kernels import BIAS, KERNELS, WEIGHTS, role

ACTIVATION_BYTES = {"int8": 1, "int16x8": 2, "float32": 4}  # per element, by quantize mode
BIAS_BYTES = {"int8": 4, "int16x8": 8}  # int32 biases for int8 activations, int64 for int16

WEIGHTED_ONNX = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LSTM", "GRU", "RNN", "PRelu",
                 "InstanceNormalization", "LayerNormalization", "Mul", "Add", "Sub", "Div"}
BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}  # stored as int32 in int8 TFLite
FOLDS_BN = {"Conv", "ConvTranspose", "Gemm"}


@dataclass
class Layer:
    index: int
    name: str
    op: str
    output_shape: list[int] | None
    params: int
    macs: int
    activation_bytes: int  # bytes of this layer's outputs in the model's own dtype
    output_elements: int
    bias_params: int = 0  # of `params`, those stored as int32 biases in an int8 model
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Buffer:
    """One activation tensor alive from step `first` to step `last` (inclusive)."""

    name: str
    elements: int
    itemsize: int
    first: int
    last: int
    order: int = 0  # TFLM adds buffers in tensor-index order; its stable sort keeps that order on ties


@dataclass
class LayerTable:
    layers: list[Layer]
    buffers: list[Buffer] = field(default_factory=list)
    n_tensors: int = 0  # activations + weight tensors, as the TFLite graph will hold them
    per_channel: int = 0  # output channels of convolutions (int8: per-channel quantized)

    def arena(self, quantize: str | None) -> tuple[int, list[dict[str, Any]]]:
        """(estimated smallest TFLM arena, activation plan); quantize None keeps each tensor's dtype."""
        itemsize = ACTIVATION_BYTES.get(quantize or "", None)
        head, plan = plan_arena(self.buffers, itemsize)
        channels = self.per_channel if quantize in ("int8", "int16x8", None) else 0
        return arena_estimate(head, self.n_tensors, len(self.layers), len(self.buffers), channels), plan

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def param_bytes(self, quantize: str) -> int:
        """Weight bytes as the target stores them: int8 weights + int32 biases (int64 with int16
        activations), or float32."""
        if quantize in BIAS_BYTES:
            bias = sum(layer.bias_params for layer in self.layers)
            return (self.params - bias) + BIAS_BYTES[quantize] * bias
        return 4 * self.params

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.op] = counts.get(layer.op, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------- ONNX


def onnx_layers(model: onnx.ModelProto) -> LayerTable:
    """The layer table of a (normalised, static-shape) ONNX model, in graph order."""
    graph = model.graph
    shapes, dtypes = _value_shapes(model)
    inits = {t.name: t for t in graph.initializer}
    consts = set(inits) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    folded = _folded_batchnorms(nodes, consts)
    seen: set[str] = set()
    layers = []
    for i, node in enumerate(nodes):
        layers.append(_onnx_layer(i, node, shapes, dtypes, inits, consts, seen, folded))
    buffers = _onnx_buffers(graph, nodes, consts, shapes, dtypes)
    channels = sum(_output_channels(n, shapes) for n in nodes if n.op_type in ("Conv", "ConvTranspose"))
    return LayerTable(layers, buffers, len(buffers) + len(seen), channels)


def _value_shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    model = with_shapes(model)
    shapes: dict[str, list[int] | None] = {}
    dtypes: dict[str, int] = {}
    g = model.graph
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        dtypes[v.name] = t.elem_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim] if t.HasField("shape") else None
        shapes[v.name] = None if dims is None or any(d <= 0 for d in dims) and dims != [] else dims
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def _itemsize(elem_type: int | None) -> int:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except Exception:
        return 4


def _folded_batchnorms(nodes: list[onnx.NodeProto], consts: set[str]) -> dict[str, str]:
    """{BatchNormalization node name: producer name} for BNs the converter folds into a Conv/Gemm."""
    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for n in nodes:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    folded = {}
    for n in nodes:
        if n.op_type != "BatchNormalization" or not n.input:
            continue
        prev = producer.get(n.input[0])
        if prev is not None and prev.op_type in FOLDS_BN and uses.get(n.input[0]) == 1 \
                and all(x in consts for x in n.input[1:]):
            folded[n.name or n.output[0]] = prev.name or prev.output[0]
    return folded


def _onnx_layer(i: int, node: onnx.NodeProto, shapes, dtypes, inits, consts, seen: set[str],
                folded: dict[str, str]) -> Layer:
    name = node.name or node.output[0]
    out = node.output[0] if node.output else ""
    out_shape = shapes.get(out)
    elements = sum(prod(shapes[o]) for o in node.output if shapes.get(o) is not None)
    act_bytes = sum(prod(shapes[o]) * _itemsize(dtypes.get(o)) for o in node.output if shapes.get(o) is not None)
    layer = Layer(i, name, node.op_type, out_shape, 0, 0, act_bytes, elements)
    if name in folded:
        layer.note = f"folded into {folded[name]}"
        return layer
    for pos, inp in enumerate(node.input):
        if inp not in consts or inp in seen or not _is_parameter(node, pos, inp, inits):
            continue
        seen.add(inp)
        count = prod(shapes.get(inp) or [0]) if inp in inits else 0
        layer.params += count
        if BIAS_INPUT.get(node.op_type) == pos:
            layer.bias_params += count
    if node.op_type in FOLDS_BN and len(node.input) <= BIAS_INPUT[node.op_type] and _feeds_folded_bn(node, folded):
        extra = _output_channels(node, shapes)  # the folded BN becomes a bias this layer lacked
        layer.params += extra
        layer.bias_params += extra
    layer.macs = _onnx_macs(node, shapes, consts)
    return layer


def _feeds_folded_bn(node: onnx.NodeProto, folded: dict[str, str]) -> bool:
    return (node.name or node.output[0]) in folded.values()


def _output_channels(node: onnx.NodeProto, shapes) -> int:
    shape = shapes.get(node.output[0])
    return shape[1] if shape and len(shape) > 1 and node.op_type != "Gemm" else (shape[-1] if shape else 0)


def _is_parameter(node: onnx.NodeProto, pos: int, name: str, inits) -> bool:
    """Trained weights, not shape/axes constants or scalar hyper-parameters."""
    if node.op_type not in WEIGHTED_ONNX:
        return False
    init = inits.get(name)
    if init is None or init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL):
        return False
    if node.op_type in ("Mul", "Add", "Sub", "Div") and prod(init.dims) <= 1:
        return False  # a scalar constant, e.g. x * 0.5
    return not (node.op_type == "BatchNormalization" and pos == 0)


def _onnx_macs(node: onnx.NodeProto, shapes, consts: set[str]) -> int:
    op, ins = node.op_type, node.input
    y = shapes.get(node.output[0]) if node.output else None
    w = shapes.get(ins[1]) if len(ins) > 1 else None
    if op == "Conv" and y and w:
        return prod(y) * prod(w[1:])
    if op == "ConvTranspose" and w and shapes.get(ins[0]):
        return prod(shapes[ins[0]]) * prod(w[1:])
    if op == "Gemm" and y:
        a = shapes.get(ins[0])
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        if a:
            return prod(y) * (a[0] if trans_a else a[-1])
    if op == "MatMul" and y and shapes.get(ins[0]):
        return prod(y) * shapes[ins[0]][-1]
    if op in ("LSTM", "GRU", "RNN") and w and len(ins) > 2 and shapes.get(ins[0]) and shapes.get(ins[2]):
        seq, batch = shapes[ins[0]][0], shapes[ins[0]][1]
        return seq * batch * prod(w) + seq * batch * prod(shapes[ins[2]])  # W·x and R·h per step
    if op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "PRelu") and y:
        return prod(y)  # one scale per element
    if op == "Mul" and y and any(x in consts for x in ins):
        return prod(y)
    return 0


def _onnx_buffers(graph, nodes, consts: set[str], shapes, dtypes) -> list[Buffer]:
    last_step = max(len(nodes) - 1, 0)
    first: dict[str, int] = {v.name: 0 for v in graph.input if v.name not in consts}
    last: dict[str, int] = dict(first)
    for i, node in enumerate(nodes):
        for name in node.input:
            if name in first:
                last[name] = i
        for name in node.output:
            if name:
                first[name] = last[name] = i
    for v in graph.output:
        if v.name in last:
            last[v.name] = last_step
    return [Buffer(n, prod(shapes[n]), _itemsize(dtypes.get(n)), first[n], last[n], k)
            for k, n in enumerate(first) if shapes.get(n) is not None]


# ---------------------------------------------------------------- TFLite


def tflite_layers(model) -> LayerTable:
    """The layer table of a parsed .tflite (hub.tflite.model.TFLiteModel)."""
    tensors = model.tensors
    seen: set[int] = set()
    # a compressed filter reaches its consumer through a DECODE op (hub.tflite.compress): it is still a weight
    decoded = {i for op in model.ops if op.custom_code == DECODE_CODE for i in op.outputs}
    layers = []
    for op in model.ops:
        outs = [tensors[i] for i in op.outputs if i >= 0]
        params = bias = 0
        for pos, idx in enumerate(op.inputs):
            weight = idx >= 0 and (tensors[idx].is_constant or idx in decoded)
            if not weight or idx in seen or not _tflite_weight(op.name, pos):
                continue
            seen.add(idx)
            count = prod(tensors[idx].shape) if tensors[idx].shape else 1
            params += count
            bias += count if role(op.name, pos) == BIAS else 0
        out_shape = list(outs[0].shape) if outs else None
        layers.append(Layer(op.index, outs[0].name if outs else f"op_{op.index}", op.name, out_shape, params,
                            _tflite_macs(op, tensors), sum(prod(t.shape) * _tfl_itemsize(t.dtype) for t in outs),
                            sum(prod(t.shape) for t in outs), bias))
    channels = sum(_per_channel_outputs(op, tensors) for op in model.ops)
    return LayerTable(layers, _tflite_buffers(model), len(tensors), channels)


# Constant operands of these elementwise ops are learned scales and shifts (a folded BatchNormalization)
# for the parameter count, though TFLM sees plain inputs.
TFLITE_ELEMENTWISE_PARAMS = {"ADD", "SUB", "MUL"}


def _tflite_weight(op: str, pos: int) -> bool:
    """Input `pos` of `op` holds parameters: a weight or bias by the operand-role table, or a constant
    operand of an elementwise op."""
    return role(op, pos) in (WEIGHTS, BIAS) or op in TFLITE_ELEMENTWISE_PARAMS


def _per_channel_outputs(op, tensors) -> int:
    """Output channels whose int8 multiplier and shift TFLM keeps (per-channel weights of a kernel that takes
    them), for the arena's persistent tail."""
    k = KERNELS.get(op.name)
    if k is None or not k.per_channel:
        return 0
    weights = [i for pos, i in enumerate(op.inputs) if i >= 0 and role(op.name, pos) == WEIGHTS]
    return sum(len(tensors[i].scales) for i in weights[:1] if tensors[i].per_channel)


def _tflite_macs(op, tensors) -> int:
    ins = [tensors[i] if i >= 0 else None for i in op.inputs]
    out = tensors[op.outputs[0]].shape if op.outputs else ()
    w = ins[1].shape if len(ins) > 1 and ins[1] is not None else ()
    if op.name == "CONV_2D" and w:  # weights [out, kh, kw, in/groups]
        return prod(out) * prod(w[1:])
    if op.name == "DEPTHWISE_CONV_2D" and w:  # weights [1, kh, kw, out]
        return prod(out) * w[1] * w[2]
    if op.name in ("FULLY_CONNECTED", "BATCH_MATMUL") and ins[0] is not None and ins[0].shape:
        return prod(out) * ins[0].shape[-1]
    if op.name == "TRANSPOSE_CONV" and len(ins) > 2 and ins[1] is not None and ins[2] is not None:
        return prod(ins[2].shape) * prod(ins[1].shape[:3])  # weights [out, kh, kw, in]
    if op.name == "MUL" and any(t is not None and t.is_constant for t in ins):
        return prod(out)
    return 0


def _tfl_itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 4


def _tflite_buffers(model) -> list[Buffer]:
    tensors = model.tensors
    last_step = max(len(model.ops) - 1, 0)
    first = {i: 0 for i in model.inputs if not tensors[i].is_constant}
    last = dict(first)
    for step, op in enumerate(model.ops):
        for i in op.inputs:
            if i >= 0 and i not in first and not tensors[i].is_constant:
                first[i] = step  # produced by no op: a scratch buffer (Vela's), alive from its first use
            if i in first:
                last[i] = step
        for i in op.outputs:
            if i >= 0 and not tensors[i].is_constant:
                first[i] = last[i] = step
    for i in model.outputs:
        if i in last:
            last[i] = last_step
    return [Buffer(tensors[i].name, prod(tensors[i].shape), _tfl_itemsize(tensors[i].dtype), first[i], last[i], i)
            for i in sorted(first)]


# ---------------------------------------------------------------- memory


def live_bytes(buffers: list[Buffer], steps: int, itemsize: int | None = None) -> list[int]:
    """Bytes of activations alive at each execution step (`itemsize` overrides each tensor's own)."""
    live = [0] * max(steps, 1)
    for b in buffers:
        size = b.elements * (itemsize or b.itemsize)
        for s in range(b.first, b.last + 1):
            live[s] += size
    return live


def plan_arena(buffers: list[Buffer], itemsize: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Greedy placement as TFLM's GreedyMemoryPlanner does it: largest buffer first, each at the
    lowest offset that overlaps no already-placed buffer alive at the same time; sizes round up
    to 16 bytes. Returns (arena bytes, placements). Persistent per-op data is not included."""
    sized = [(_align(b.elements * (itemsize or b.itemsize)), b) for b in buffers]
    order = sorted(range(len(sized)), key=lambda k: (-sized[k][0], sized[k][1].order))
    placed: list[tuple[int, int, Buffer]] = []  # (offset, size, buffer)
    for k in order:
        size, buf = sized[k]
        offset = 0
        for o, s, other in sorted((p for p in placed if _overlaps(p[2], buf)), key=lambda p: p[0]):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, buf))
    arena = max((o + s for o, s, _ in placed), default=0)
    plan = [{"name": b.name, "first": b.first, "last": b.last, "offset": o, "bytes": s} for o, s, b in placed]
    return arena, sorted(plan, key=lambda p: (p["first"], p["offset"]))


def _overlaps(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tail_estimate(n_tensors: int, n_ops: int, per_channel: int) -> int:
    """Persistent arena bytes TFLM adds to the activation plan (hub.knowledge.arena's model)."""
    return TAIL_FIXED + TAIL_PER_TENSOR * n_tensors + TAIL_PER_OP * n_ops + TAIL_PER_CHANNEL * per_channel


def arena_estimate(head: int, n_tensors: int, n_ops: int, n_buffers: int, per_channel: int) -> int:
    """Smallest TFLM arena, estimated: planned activations + persistent tail, or the planning peak."""
    tail = tail_estimate(n_tensors, n_ops, per_channel)
    planning = tail + PLAN_TEMP_PER_TENSOR * n_tensors + PLAN_TEMP_PER_BUFFER * n_buffers
    return max(head + tail, planning)
