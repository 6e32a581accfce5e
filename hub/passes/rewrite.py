"""Small graph-editing helpers shared by the passes."""
from __future__ import annotations

import onnx


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def graph_output_names(model: onnx.ModelProto) -> set[str]:
    return {o.name for o in model.graph.output}


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
        producer = next((n for n in model.graph.node if src in n.output), None)
        if producer is None or src in outputs:
            return False
        # Rename the producer's output to the graph output name instead.
        for i, name in enumerate(producer.output):
            if name == src:
                producer.output[i] = dst
        rename_input(model, src, dst)
    else:
        rename_input(model, dst, src)
    model.graph.node.remove(node)
    return True
