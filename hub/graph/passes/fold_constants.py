"""Constant folding: a node whose inputs are all constants becomes an initializer.

Constant nodes become initializers, Shape/Size of statically shaped tensors become
their values, and any other deterministic node with only constant inputs is
evaluated once with onnx's reference evaluator. Otherwise onnx2tf emits the
computation into the TFLite graph (often as ops TFLM lacks, e.g. RANGE, or int64
arithmetic), and the shape computations exporters write block later passes.

It runs to a fixed point: shape inference after one round makes more shapes static (a
traced Swin keeps 81 Shape nodes and their Gather/Cast/Range/Concat chains after one round;
two more fold 523 nodes).

A result larger than its inputs (Expand, Tile, ConstantOfShape, Swin's shifted-window mask
`Sub(const, const)`) is folded while the growth it adds to the model, summed over the whole
pass, stays within a budget in bytes (GROWTH_BUDGET_BYTES, or a quarter of the model's weights
when that is more); past it the node stays. Such a node computes a constant on the device
anyway, into an arena tensor of the same size, and onnx2tf 1.29 crashes on some of them (the
mask: `'NoneType' object has no attribute 'shape'` in its Sub accuracy correction, after
minutes). A result onnx2tf must know while converting (a weight: the light model-zoo files
build every Conv and Gemm weight with ConstantOfShape; left as nodes, onnx2tf fails with
"axes don't match array") is folded whatever its size.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hub.errors import InputError
from hub.graph.edit import graph_output_names, remove_unused_initializers, static_shape
from hub.graph.shapes import infer_shapes, tensor_nbytes
from hub.knowledge.onnx2tf_ops import needs_constant

# Ops that pass a constant on unchanged but for its shape or type: a weight built by ConstantOfShape
# often reaches its Conv or Gemm through one of them.
PASS_THROUGH = {"Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze", "Identity", "Flatten"}
NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
MIN_GROWTH_LIMIT_BYTES = 16 * 1024  # a folded output may be this large even from tiny inputs, free of the budget
GROWTH_BUDGET_BYTES = 128 * 1024  # growth all folds together may add (float32; a quarter of that once int8)
WEIGHTS_SHARE = 4  # ... or a 1/WEIGHTS_SHARE of the model's initializer bytes, when that is more
MAX_ROUNDS = 16  # a guard: each round folds what the shapes inferred after the last one made static
MAX_FOLDED_BYTES = 2**31  # protobuf's limit on one ONNX file: a weight beyond it cannot be a real model's


class _Constants:
    """Initializer values by name for one run (rewrite.constant scans the list on every call: O(n^2))."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.inputs = {v.name for v in model.graph.input}  # a graph input shadows an initializer
        self.tensors = {t.name: t for t in model.graph.initializer}
        self.values: dict[str, np.ndarray] = {}

    def known(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray | None:
        if not name or name in self.inputs or name not in self.tensors:
            return None
        if name not in self.values:
            self.values[name] = numpy_helper.to_array(self.tensors[name])
        return self.values[name]

    def add(self, model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        self.tensors[name] = model.graph.initializer[-1]
        self.values[name] = value


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    budget = _Budget(max(GROWTH_BUDGET_BYTES, sum(tensor_nbytes(t) for t in model.graph.initializer) // WEIGHTS_SHARE))
    folded, skipped = 0, set()
    for _ in range(MAX_ROUNDS):
        count, skipped = _fold_round(model, budget)
        if not count:
            break
        folded += count
        model = infer_shapes(model)  # the folds made more shapes static: the next round folds their Shape nodes
    if folded:
        remove_unused_initializers(model)
        _drop_stale_value_info(model)
    detail = f"folded {folded} constant nodes" if folded else ""
    if budget.used:
        detail += f" (adding {budget.used:,} bytes of constants)"
    if skipped:
        detail += (f"{'; ' if detail else ''}left {len(skipped)} nodes whose folded output would grow the model "
                   f"past its budget of {budget.limit:,} bytes")
    return model, folded, detail


class _Budget:
    """The bytes by which folding may grow the model, over all rounds."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, growth: int) -> bool:
        if self.used + growth > self.limit:
            return False
        self.used += growth
        return True


def _fold_round(model: onnx.ModelProto, budget: _Budget) -> tuple[int, set[str]]:
    """Fold every node whose inputs are constant now; returns how many, and the nodes left for the budget."""
    folded, skipped = 0, set()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    outputs = graph_output_names(model)
    consts = _Constants(model)
    readers = _readers(model)
    for node in list(model.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC:
            continue
        if any(o in outputs for o in node.output):
            continue  # graph outputs keep their producing node (the interface stays a computed tensor)
        required = any(_needs_constant(name, readers) for name in node.output)
        if node.op_type == "ConstantOfShape" and required and _fill_bytes(node, consts) > MAX_FOLDED_BYTES:
            raise InputError(f"node {node.name or node.output[0]!r} builds a weight of {_fill_bytes(node, consts):,} "
                             "bytes with ConstantOfShape; a model's weights must fit a 2 GB ONNX file")
        if node.op_type == "ConstantOfShape" and not required and \
                _fill_bytes(node, consts) > budget.limit - budget.used + MIN_GROWTH_LIMIT_BYTES:
            skipped.add(node.output[0])  # decided from the shape alone: no need to build the array
            continue
        values = _evaluate(model, node, opset, consts)
        if values is None:
            continue
        if not required and not budget.take(_growth(node, values, consts)):
            skipped.add(node.output[0])
            continue
        for name, value in zip(node.output, values):
            if name:
                consts.add(model, name, np.asarray(value))
        model.graph.node.remove(node)
        folded += 1
    return folded, skipped


def _readers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Tensor name -> the (node, input index) pairs that read it."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    return readers


def _needs_constant(name: str, readers: dict, depth: int = 0) -> bool:
    """Is `name` read where onnx2tf needs a constant, directly or through PASS_THROUGH ops?"""
    for node, i in readers.get(name, []):
        if needs_constant(node.op_type, i):
            return True
        if node.op_type in PASS_THROUGH and i == 0 and depth < 8 and _needs_constant(node.output[0], readers, depth + 1):
            return True
    return False


def _fill_value(node: onnx.NodeProto) -> np.ndarray:
    """ConstantOfShape's one-element `value` (default float32 0)."""
    attr = next((a for a in node.attribute if a.name == "value"), None)
    return numpy_helper.to_array(attr.t).reshape(-1)[:1] if attr is not None else np.zeros(1, np.float32)


def _fill_bytes(node: onnx.NodeProto, consts: _Constants) -> int:
    """The size of a ConstantOfShape's output, from its shape alone (0 when the shape is not constant)."""
    shape = consts.get(node.input[0]) if node.input else None
    return 0 if shape is None else int(np.prod(shape.astype(np.float64))) * _fill_value(node).itemsize


def _evaluate(model: onnx.ModelProto, node: onnx.NodeProto, opset: int, consts: _Constants) -> list[np.ndarray] | None:
    if node.op_type == "Constant":
        return [numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))] \
            if node.attribute and node.attribute[0].name == "value" else _run_reference(node, {}, opset)
    if node.op_type in ("Shape", "Size"):
        shape = static_shape(model, node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), np.int64)]
        start = next((a.i for a in node.attribute if a.name == "start"), 0)
        end = next((a.i for a in node.attribute if a.name == "end"), len(shape))
        return [np.array(shape[slice(start, end)], np.int64)]
    if not node.input or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if any(name and not consts.known(name) for name in node.input):
        return None
    inputs = {}
    for name in node.input:
        if not name:
            continue
        value = consts.get(name)
        if value is None:
            return None
        inputs[name] = value
    if node.op_type == "ConstantOfShape":  # the light model-zoo files build every weight this way
        return [np.full(tuple(int(d) for d in inputs[node.input[0]]), _fill_value(node)[0])]
    return _run_reference(node, inputs, opset)


def _run_reference(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(_single_node_model(node, inputs, opset))
        return [np.asarray(v) for v in evaluator.run(None, inputs)]
    except Exception:  # an op the reference evaluator lacks: leave the node to the converter
        return None


def _single_node_model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                    for n, v in inputs.items()]
    graph_outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", graph_inputs, graph_outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _growth(node: onnx.NodeProto, values: list[np.ndarray], consts: _Constants) -> int:
    """Bytes folding `node` adds to the model: 0 up to its inputs' size (or MIN_GROWTH_LIMIT_BYTES)."""
    out_bytes = sum(np.asarray(v).nbytes for v in values)
    in_bytes = sum(v.nbytes for v in (consts.get(n) for n in node.input) if v is not None)
    return 0 if out_bytes <= max(in_bytes, MIN_GROWTH_LIMIT_BYTES) else out_bytes - in_bytes


def _drop_stale_value_info(model: onnx.ModelProto) -> None:
    inits = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in inits]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
