"""A cheap invariant check between graph stages, in the spirit of Vela's `verify_graph_health`.

A pass or rule that breaks one of these has a bug: the converter would fail minutes later on a
message about some other node. Each check is linear in the graph; nothing runs the model.
"""
from __future__ import annotations

import onnx

from hub.artifacts import NormalisedModel


class GraphHealthError(AssertionError):
    """A stage left a graph the next stage cannot take: a bug in hub, never the user's model."""


def check_graph(normalised: NormalisedModel, stage: str) -> NormalisedModel:
    """`normalised` unchanged, or GraphHealthError naming `stage` and what it broke."""
    _raise_first(_unordered_or_undefined(normalised.onnx_model), stage)
    return normalised


def check_health(before: NormalisedModel, after: NormalisedModel, stage: str) -> NormalisedModel:
    """`after` unchanged when it is healthy and keeps `before`'s interface; else GraphHealthError."""
    _raise_first(_interface_changes(before, after), stage)
    return check_graph(after, stage)


def _raise_first(problems, stage: str) -> None:
    for problem in problems:
        raise GraphHealthError(f"the {stage} stage left an unhealthy graph: {problem}")


def _interface_changes(before: NormalisedModel, after: NormalisedModel):
    """Firmware and the fidelity reference address the model by its input and output names and shapes."""
    if [(t.name, tuple(t.shape)) for t in after.inputs] != [(t.name, tuple(t.shape)) for t in before.inputs]:
        yield "it renamed a model input or changed its shape"
    if [(t.name, tuple(t.shape)) for t in after.outputs] != [(t.name, tuple(t.shape)) for t in before.outputs]:
        yield "it renamed a model output or changed its shape"


def _unordered_or_undefined(model: onnx.ModelProto):
    """Every node reads only tensors defined before it (inputs, initializers, earlier outputs), once named."""
    graph = model.graph
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    names = set()
    for node in graph.node:
        missing = [name for name in node.input if name not in defined]
        if missing:
            yield f"node {node.name or node.op_type} reads {missing[0]!r} before anything writes it"
        if node.name and node.name in names:
            yield f"two nodes are named {node.name!r}"
        names.add(node.name)
        defined.update(node.output)
    absent = [o.name for o in graph.output if o.name not in defined]
    if absent:
        yield f"no node writes the output {absent[0]!r}"
