"""Which model inputs move to channels-last in the .tflite, decided once from the graph.

onnx2tf by default treats every 3-D/4-D/5-D input as (N, C, ...) and moves C last. That is right for an
input a convolution reads (TFLite's CONV_2D is NHWC), wrong for anything else: a batch-first (1, 49, 10)
sequence became (1, 10, 49), so firmware filling it in time order fed the model transposed (LSTM cosine
0.947, GRU 0.862, issue 27), and a (N, T, F) filterbank unsqueezed and transposed into a patch Conv (AST)
converted wrongly (float32 cosine 0.83). So: an input moves channels-last only when its axis 1 IS the
channel axis of a spatial op (CHANNEL_OPS) it reaches through ops that keep every axis where it is
(AXIS_KEEPING); every other input keeps the source's order (onnx2tf's keep_shape_absolutely_input_names),
which converts both cases above exactly. Calibration, verification, the firmware header and the report
read the resulting InputLayout (hub.artifacts)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from hub.artifacts import InputLayout

if TYPE_CHECKING:
    import networkx as nx

# Ops whose data input's axis 1 is the channel axis and whose TFLite kernels want it last.
CHANNEL_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
               "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "LRN", "DepthToSpace", "SpaceToDepth"}
# Ops that leave every axis of their data input where it was: the channel axis passes through them.
AXIS_KEEPING = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                "Abs", "Neg", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Cast", "Identity",
                "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "BatchNormalization", "InstanceNormalization",
                "Pad", "Resize", "QuantizeLinear", "DequantizeLinear", "Dropout"}
# What a recurrent op's X axes are (ONNX LSTM/GRU/RNN `layout` attribute 0 and 1), to name a sequence's axes.
RNN_OPS = {"LSTM", "GRU", "RNN"}
RNN_AXES = {0: ("time", "batch", "features"), 1: ("batch", "time", "features")}
# source_layouts' value (hub.convert.calibration) for an input that takes samples in the source's order only.
SOURCE_ORDER_ONLY = "source order only"
# A channels-last input's axes, in the source's (N, C, ...) order, by rank.
SOURCE_AXES = {3: ("batch", "channels", "length"), 4: ("batch", "channels", "height", "width"),
               5: ("batch", "channels", "depth", "height", "width")}


def channels_last(rank: int) -> tuple[int, ...]:
    """The permutation from (N, C, d1, ..., dk) to (N, d1, ..., dk, C); identity below rank 3."""
    return (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))


def moved_channels_last(onnx_shape: tuple[int, ...] | list[int], other: tuple[int, ...] | list[int]) -> bool:
    """Is `other` the channels-last form of `onnx_shape`? (Both, when C equals the other dims.)"""
    perm = channels_last(len(onnx_shape))
    return len(other) == len(onnx_shape) >= 3 and tuple(other) == tuple(onnx_shape[p] for p in perm)


def decide_layouts(model: onnx.ModelProto, source_layouts: dict[str, str | None] | None = None) -> list[InputLayout]:
    """Every real input's layout in the .tflite (see the module docstring), in the graph's input order;
    `source_layouts` (SourceModel's) says which inputs the user's framework holds channels-last (Keras)."""
    graph = _data_flow(model)
    initializers = {t.name for t in model.graph.initializer}
    layouts = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        channel_op = _channel_consumer(model, graph, value.name) if len(shape) in SOURCE_AXES else None
        if channel_op is not None:
            perm = channels_last(len(shape))
            names = SOURCE_AXES[len(shape)]
            layouts.append(InputLayout(value.name, shape, perm, tuple(names[p] for p in perm), names,
                                       f"feeds {channel_op.op_type} {channel_op.name or channel_op.output[0]}",
                                       (source_layouts or {}).get(value.name)))
        else:
            names = _sequence_axes(model, value.name, len(shape)) or _generic_axes(len(shape))
            layouts.append(InputLayout(value.name, shape, tuple(range(len(shape))), names, names,
                                       "feeds no convolution or pooling along its axis 1"))
    return layouts


def _data_flow(model: onnx.ModelProto) -> nx.DiGraph:
    """Tensor -> tensor edges through AXIS_KEEPING ops only (data inputs, not shapes or weights)."""
    import networkx as nx  # why here: its import costs more than `hub check` of a ResNet-50 (hub.graph.network)

    graph = nx.DiGraph()
    for node in model.graph.node:
        if node.op_type not in AXIS_KEEPING:
            continue
        sources = node.input if node.op_type in {"Add", "Sub", "Mul", "Div", "Max", "Min"} else node.input[:1]
        graph.add_edges_from((s, o) for s in sources if s for o in node.output[:1])
    return graph


def _channel_consumer(model: onnx.ModelProto, graph: nx.DiGraph, name: str) -> onnx.NodeProto | None:
    """The first CHANNEL_OPS node whose data input is `name` or reached from it through AXIS_KEEPING ops."""
    import networkx as nx  # why here: as in _data_flow

    reached = {name} | (nx.descendants(graph, name) if name in graph else set())
    return next((n for n in model.graph.node if n.op_type in CHANNEL_OPS and n.input and n.input[0] in reached), None)


def _sequence_axes(model: onnx.ModelProto, name: str, rank: int) -> tuple[str, ...] | None:
    """The input's axis names when it reaches a recurrent op's X through Transposes and AXIS_KEEPING ops: each
    tensor on the way holds the input's axes in some order, carried edge by edge from the input."""
    import networkx as nx  # why here: as in _data_flow

    graph = nx.DiGraph()  # data input -> output; `perm` on a Transpose's edge (None: reverse, ONNX's default)
    for node in model.graph.node:
        if node.op_type == "Transpose":
            graph.add_edge(node.input[0], node.output[0], perm=next((list(a.ints) for a in node.attribute
                                                                     if a.name == "perm"), None))
        elif node.op_type in AXIS_KEEPING and node.input:
            graph.add_edge(node.input[0], node.output[0])
    held = {name: tuple(range(rank))}
    for source, target in (nx.bfs_edges(graph, name) if name in graph else []):
        axes, edge = held[source], graph.edges[source, target]
        if "perm" not in edge:
            held[target] = axes
        else:
            perm = edge["perm"] if edge["perm"] is not None else list(range(len(axes)))[::-1]
            held[target] = tuple(axes[p] for p in perm)
    for node in model.graph.node:
        if node.op_type in RNN_OPS and node.input and len(held.get(node.input[0], ())) == 3:
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
            by_input_axis = dict(zip(held[node.input[0]], RNN_AXES.get(layout, RNN_AXES[0])))
            return tuple(by_input_axis[i] for i in range(rank))
    return None


def _generic_axes(rank: int) -> tuple[str, ...]:
    """Names for axes nothing in the graph names: a rank-2 input is (batch, features)."""
    if rank <= 2:
        return ("batch", "features")[:rank]
    return ("batch", *(f"axis {i}" for i in range(1, rank)))


def to_tflite(layout: InputLayout, array: np.ndarray) -> np.ndarray:
    """Samples (N, ...) in the source's order -> the .tflite input's order, exactly as firmware fills it."""
    if tuple(array.shape[1:]) != tuple(layout.source_shape[1:]):
        raise ValueError(f"sample shape {tuple(array.shape)} does not fit input {layout.name!r} "
                         f"{tuple(layout.source_shape)}")
    return np.ascontiguousarray(np.transpose(array, layout.perm)) if layout.moved else array


def kept_names(layouts: list[InputLayout]) -> list[str]:
    """The inputs onnx2tf must leave in the source's order (its keep_shape_absolutely_input_names)."""
    return [layout.name for layout in layouts if not layout.moved and len(layout.source_shape) in SOURCE_AXES]


def data_layouts(source_layouts: dict[str, str | None], layouts: list[InputLayout]) -> dict[str, str | None]:
    """The layouts calibration and --data accept per input (hub.convert.calibration): the source framework's,
    except that an input kept in the source's order takes that order only."""
    kept = {layout.name: SOURCE_ORDER_ONLY for layout in layouts if not layout.moved and len(layout.source_shape) > 2}
    return {**source_layouts, **kept}
