"""Small graph-editing helpers shared by the passes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hub.artifacts import Rewrite


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def graph_output_names(model: onnx.ModelProto) -> set[str]:
    return {o.name for o in model.graph.output}


def producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


def sole_consumer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The one node reading `name`, when it is read exactly once and is not a graph output."""
    if name in graph_output_names(model):
        return None
    users = consumers(model, name)
    return users[0] if len(users) == 1 and list(users[0].input).count(name) == 1 else None


def rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    """Make every consumer of tensor `old` read `new` instead."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def bypass_node(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Remove a single-input, single-output node that passes its input through unchanged.

    When its output is a graph output and its input is a graph input (or an
    initializer), the node stays: the graph's interface names must not change.
    """
    src, dst = node.input[0], node.output[0]
    outputs = graph_output_names(model)
    if dst in outputs:
        producer_node = producer(model, src)
        if producer_node is None or src in outputs or len(consumers(model, src)) > 1:
            return False
        # Rename the producer's output to the graph output name instead.
        for i, name in enumerate(producer_node.output):
            if name == src:
                producer_node.output[i] = dst
        rename_input(model, src, dst)
    else:
        rename_input(model, dst, src)
    model.graph.node.remove(node)
    return True


def absorb(model: onnx.ModelProto, first: onnx.NodeProto, second: onnx.NodeProto) -> None:
    """`second` has been folded into `first`: `first` now produces `second`'s output."""
    first.output[0] = second.output[0]
    model.graph.node.remove(second)


# --- constants -------------------------------------------------------------

def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The value of an initializer (not shadowed by a graph input), else None."""
    if not name or any(v.name == name for v in model.graph.input):
        return None
    tensor = next((t for t in model.graph.initializer if t.name == name), None)
    return None if tensor is None else numpy_helper.to_array(tensor)


def add_initializer(model: onnx.ModelProto, array: np.ndarray, base: str) -> str:
    """Add `array` under a fresh name derived from `base`; returns the name.

    Fresh names keep initializers shared by several nodes intact.
    """
    name = fresh_name(model, base)
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    """`base`, or `base_k` for the first k that names no tensor in the graph yet."""
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    taken |= {v.name for v in model.graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, including from inside If/Loop/Scan bodies (they see outer names)."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used |= names_read(sub) | {o.name for o in sub.output}
    return used


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    used = names_read(model.graph) | graph_output_names(model)
    keep = [t for t in model.graph.initializer if t.name in used]
    removed = len(model.graph.initializer) - len(keep)
    if removed:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return removed


def static_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    """Shape of a tensor from inputs/outputs/value_info/initializers, when fully static."""
    init = next((t for t in model.graph.initializer if t.name == name), None)
    if init is not None:
        return tuple(init.dims)
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
                return tuple(d.dim_value for d in dims)
            return None
    return None


def elem_type(model: onnx.ModelProto, name: str) -> int | None:
    """The TensorProto element type of a graph input, output or value_info, else None."""
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.name == name:
            return value.type.tensor_type.elem_type
    return None


def attr(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


# --- linear layers (Conv / Gemm / MatMul with constant weights) ---------------

@dataclass
class Linear:
    """A Conv, Gemm or MatMul with constant weights, seen as y[c] = (W x)[c] + b[c].

    `weight` has the output channel on axis 0 (Gemm's B is turned to [N, K]);
    `bias` is a vector over output channels (zeros when the node has none).
    `channel_axis` is the output axis those channels run along.
    """

    node: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray
    channel_axis: int
    out_rank: int
    can_bias: bool = True  # a MatMul on more than 2-D has no bias input

    def write(self, model: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray) -> None:
        """Store new weights and bias; a 2-D MatMul becomes a Gemm so it can carry the bias."""
        node = self.node
        base = node.name or node.output[0]
        if node.op_type == "Conv":
            node.input[1] = add_initializer(model, weight.astype(np.float32), f"{base}_W")
            b = add_initializer(model, bias.astype(np.float32), f"{base}_B")
            node.input.append(b) if len(node.input) < 3 else node.input.__setitem__(2, b)
            return
        if node.op_type == "MatMul" and not self.can_bias:
            if np.any(bias):
                raise ValueError("a MatMul above 2-D cannot take a bias")
            node.input[1] = add_initializer(model, weight.T.astype(np.float32), f"{base}_W")
            return
        # Gemm (or a 2-D MatMul turned into one): Y = A B^T + C with transB=1, alpha = beta = 1.
        if node.op_type == "MatMul":
            node.op_type = "Gemm"
        node.input[1] = add_initializer(model, weight.astype(np.float32), f"{base}_W")
        c = add_initializer(model, bias.astype(np.float32), f"{base}_B")
        node.input.append(c) if len(node.input) < 3 else node.input.__setitem__(2, c)
        for name, value in (("transB", 1), ("alpha", 1.0), ("beta", 1.0)):
            set_attr(node, name, value)


def as_linear(model: onnx.ModelProto, node: onnx.NodeProto) -> Linear | None:
    """View `node` as a Linear when its weights (and bias) are constants, else None."""
    if node.op_type == "Conv":
        w = constant(model, node.input[1])
        b = constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or (len(node.input) > 2 and node.input[2] and b is None) or w.dtype != np.float32:
            return None
        bias = b.astype(np.float32) if b is not None else np.zeros(w.shape[0], np.float32)
        return Linear(node, w, bias, channel_axis=1, out_rank=w.ndim)
    if node.op_type == "Gemm":
        b = constant(model, node.input[1])
        c = constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if b is None or attr(node, "transA", 0) or (len(node.input) > 2 and node.input[2] and c is None):
            return None
        w = (b if attr(node, "transB", 0) else b.T) * np.float32(attr(node, "alpha", 1.0))
        n = w.shape[0]
        if c is None:
            bias = np.zeros(n, np.float32)
        elif c.size in (1, n) and (c.ndim < 2 or c.shape[0] == 1):
            bias = np.broadcast_to(c.reshape(-1), (n,)) * np.float32(attr(node, "beta", 1.0))
        else:
            return None  # a per-row C cannot become a vector bias
        return Linear(node, w.astype(np.float32), bias.astype(np.float32), channel_axis=1, out_rank=2)
    if node.op_type == "MatMul":
        b = constant(model, node.input[1])
        a_shape = static_shape(model, node.input[0])
        if b is None or b.ndim != 2 or a_shape is None or len(a_shape) < 2 or constant(model, node.input[0]) is not None:
            return None
        rank = len(a_shape)
        return Linear(node, b.T.astype(np.float32), np.zeros(b.shape[1], np.float32), channel_axis=rank - 1,
                      out_rank=rank, can_bias=rank == 2)
    return None


def per_channel(value: np.ndarray, out_shape: tuple[int, ...], channel_axis: int) -> np.ndarray | None:
    """`value` as one number per output channel, when broadcasting it over the output
    varies only along `channel_axis` (and does not grow the output), else None."""
    if value.ndim > len(out_shape):
        return None
    try:
        if np.broadcast_shapes(out_shape, value.shape) != tuple(out_shape):
            return None
    except ValueError:
        return None
    full = np.broadcast_to(value.reshape((1,) * (len(out_shape) - value.ndim) + value.shape), out_shape)
    ref = np.moveaxis(full, channel_axis, 0).reshape(out_shape[channel_axis], -1)
    if not np.all(ref == ref[:, :1]):
        return None
    return ref[:, 0].astype(np.float32)


def scale_weight(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Multiply each output channel (axis 0) of `weight` by `scale`."""
    return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))


# --- emitting replacements (the rewrite rules) --------------------------------

def rewrite_each(model: onnx.ModelProto, op: str, into: str,
                 rewrite: Callable[[onnx.ModelProto, onnx.NodeProto], bool]) -> list[Rewrite]:
    """Call `rewrite(model, node)` on every `op` node; a Rewrite record for each one it replaced (returned True)."""
    return [Rewrite(node=node.name, op=op, into=into) for node in list(model.graph.node)
            if node.op_type == op and rewrite(model, node)]


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (0 when none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def reduce_mean(model: onnx.ModelProto, x: str, y: str, axes: list[int], base: str) -> onnx.NodeProto:
    """ReduceMean over `axes` with keepdims, in the model's opset form (axes an input from opset 18)."""
    if opset(model) >= 18:
        axes_name = add_initializer(model, np.array(axes, np.int64), f"{base}_axes")
        return emit("ReduceMean", [x, axes_name], y, keepdims=1)
    return emit("ReduceMean", [x], y, axes=axes, keepdims=1)


def emit(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    """A new node named after its output, so names stay unique when outputs are fresh names."""
    return helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs)


def replace_node(model: onnx.ModelProto, old: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """Put `nodes` (in order) where `old` was, keeping the graph topologically sorted."""
    graph = model.graph
    at = list(graph.node).index(old)
    graph.node.remove(old)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)


def replace_nodes(model: onnx.ModelProto, old: list[onnx.NodeProto], nodes: list[onnx.NodeProto]) -> None:
    """Put `nodes` where the earliest of `old` was and drop the others: a pattern's replacement reads
    what its first node could read, and what the pattern wrote is read only after its last node."""
    order = list(model.graph.node)
    first = min(old, key=order.index)
    for node in old:
        if node is not first:
            model.graph.node.remove(node)
    replace_node(model, first, nodes)
