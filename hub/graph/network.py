"""An ONNX graph as a networkx DiGraph: nodes are ONNX nodes, edges carry tensors.

Every edge (producer -> consumer) has the tensor's name, shape, dtype and
whether it is constant (an initializer, a Constant node, or computed only
from constants). Graph inputs and outputs appear as nodes "input:<name>" and
"output:<name>" so every tensor has an edge. `tensors` on the graph holds the
same facts per tensor name, plus the values of small constants (which decide
how onnx2tf converts some ops: a Pow exponent, Clip bounds, Resize scales).

`hub check` needs only `tensor_table` and `ordered_nodes` for a model that runs:
importing networkx costs more CPU than analysing a ResNet-50 (its backend
entry-point scan), so it is imported only when a DiGraph is asked for: when
nodes are blocked, `host_split` asks whether they can be cut off the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

if TYPE_CHECKING:
    import networkx as nx

SMALL_CONST = 64  # constants up to this many elements keep their value


@dataclass
class TensorMeta:
    name: str
    shape: tuple[int | str | None, ...] | None  # None: rank unknown; str/None entries: symbolic/unknown dim
    dtype: str  # numpy dtype name ("float32", "int64", ...) or "unknown"
    const: bool = False
    value: np.ndarray | None = None  # only for small constants
    model_input: bool = False  # a graph input: int8 quantization takes its range from the data alone

    @property
    def static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # undefined/string/complex types
        return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "unknown"


def _meta_from_value_info(vi: onnx.ValueInfoProto) -> TensorMeta:
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorMeta(vi.name, shape, _dtype_name(tt.elem_type))


def _meta_from_initializer(init: onnx.TensorProto) -> TensorMeta:
    size = int(np.prod(init.dims)) if init.dims else 1
    value = numpy_helper.to_array(init) if size <= SMALL_CONST else None
    return TensorMeta(init.name, tuple(int(d) for d in init.dims), _dtype_name(init.data_type), True, value)


def module_path_from_name(node_name: str) -> str:
    """The PyTorch module an exported node came from, read off its scope name ("" when it has none):
    `/layer1/layer1.0/conv1/Conv` (each scope the full dotted path) and `/layer2/shortcut/shortcut.0/Conv`
    (a child repeating its parent's name) -> `layer1.0.conv1`, `layer2.shortcut.0`."""
    parts: list[str] = []
    for scope in node_name.strip("/").split("/")[:-1] if node_name.startswith("/") else []:
        if parts and scope.startswith(".".join(parts) + "."):
            parts = scope.split(".")
        elif parts and scope.startswith(parts[-1] + "."):  # attribute names hold no dots
            parts.append(scope[len(parts[-1]) + 1:])
        else:
            parts.append(scope)
    return ".".join(parts)


def node_id(node: onnx.NodeProto, index: int) -> str:
    """A unique name per node: its own name, or op_type and position when unnamed or repeated."""
    return node.name or f"{node.op_type}_{index}"


def tensor_table(model: onnx.ModelProto) -> dict[str, TensorMeta]:
    """Shape, dtype and constness of every tensor in the main graph."""
    graph = model.graph
    tensors: dict[str, TensorMeta] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tensors[vi.name] = _meta_from_value_info(vi)
    for vi in graph.input:
        tensors[vi.name].model_input = True
    for init in graph.initializer:
        tensors[init.name] = _meta_from_initializer(init)
    for node in graph.node:  # topological order in a valid ONNX graph
        if node.op_type == "Constant":
            _constant_node(node, tensors)
            continue
        if node.input and all(not name or tensors.get(name, TensorMeta(name, None, "unknown")).const
                              for name in node.input):
            for out in node.output:
                meta = tensors.setdefault(out, TensorMeta(out, None, "unknown"))
                meta.const = True
    return tensors


def _constant_node(node: onnx.NodeProto, tensors: dict[str, TensorMeta]) -> None:
    attr = node.attribute[0] if node.attribute else None
    value = None
    if attr is not None and attr.name == "value":
        value = numpy_helper.to_array(attr.t)
    elif attr is not None and attr.name in ("value_float", "value_int"):
        value = np.array(onnx.helper.get_attribute_value(attr))
    elif attr is not None and attr.name in ("value_floats", "value_ints"):
        value = np.array(onnx.helper.get_attribute_value(attr))
    meta = tensors.get(node.output[0]) or TensorMeta(node.output[0], None, "unknown")
    if value is not None:
        meta.shape, meta.dtype = tuple(value.shape), value.dtype.name
        meta.value = value if value.size <= SMALL_CONST else None
    meta.const = True
    tensors[node.output[0]] = meta


def ordered_nodes(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto]]:
    """(unique id, node) in the file's topological order: the ids build_graph gives its nodes."""
    seen: set[str] = set()
    out = []
    for i, node in enumerate(model.graph.node):
        nid = node_id(node, i)
        if nid in seen:
            nid = f"{nid}_{i}"
        seen.add(nid)
        out.append((nid, node))
    return out


def build_graph(model: onnx.ModelProto) -> nx.DiGraph:
    """The DiGraph described in the module docstring; `g.graph["tensors"]` maps names to TensorMeta."""
    import networkx as nx

    tensors = tensor_table(model)
    g = nx.DiGraph(tensors=tensors)
    producers: dict[str, str] = {}
    init_names = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in init_names:
            g.add_node(f"input:{vi.name}", kind="input", op="Input", onnx=None)
            producers[vi.name] = f"input:{vi.name}"
    for nid, node in ordered_nodes(model):
        g.add_node(nid, kind="node", op=node.op_type, onnx=node)
        for name in node.input:
            if name and name in producers:
                _add_edge(g, producers[name], nid, tensors.get(name), name)
        for name in node.output:
            if name:
                producers[name] = nid
    for vi in model.graph.output:
        g.add_node(f"output:{vi.name}", kind="output", op="Output", onnx=None)
        if vi.name in producers:
            _add_edge(g, producers[vi.name], f"output:{vi.name}", tensors.get(vi.name), vi.name)
    return g


def _add_edge(g: nx.DiGraph, src: str, dst: str, meta: TensorMeta | None, name: str) -> None:
    meta = meta or TensorMeta(name, None, "unknown")
    # Two tensors between the same pair of nodes keep the first; the tensor table has them all.
    if not g.has_edge(src, dst):
        g.add_edge(src, dst, tensor=name, shape=meta.shape, dtype=meta.dtype, const=meta.const)


@dataclass
class HostSplit:
    """Cut the model at `cut` tensors: TFLM runs the `device` nodes before them, the host the `host` rest."""

    cut: list[str]
    device: int
    host: list[str]  # node ids, in graph order


def host_split(model: onnx.ModelProto, blocked: set[str], max_share: float = 0.25) -> HostSplit | None:
    """When the blocked nodes and everything computed from them form a tail of the graph no larger than
    `max_share` of its nodes (post-processing such as TopK, NMS, a GELU head), the tensors that feed that
    tail: cut there and TFLM runs the rest. None when the blocked region reaches back into the model."""
    import networkx as nx

    g = build_graph(model)
    ops = [n for n, _ in op_nodes(g)]
    tail = set(blocked) | {d for b in blocked if b in g for d in nx.descendants(g, b) if g.nodes[d]["kind"] == "node"}
    if not tail or len(tail) > max_share * len(ops) or len(tail) == len(ops):
        return None
    tensors = g.graph["tensors"]
    produced_outside = {o for n in ops if n not in tail for o in g.nodes[n]["onnx"].output}
    produced_outside |= {v.name for v in model.graph.input}
    cut = sorted({name for n in tail for name in g.nodes[n]["onnx"].input
                  if name in produced_outside and not (tensors.get(name) and tensors[name].const)})
    return HostSplit(cut=cut, device=len(ops) - len(tail), host=[n for n in ops if n in tail])


def op_nodes(g: nx.DiGraph) -> list[tuple[str, dict[str, Any]]]:
    """The ONNX nodes in graph order (insertion order is the ONNX file's topological order)."""
    return [(n, d) for n, d in g.nodes(data=True) if d.get("kind") == "node"]
