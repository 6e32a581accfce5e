"""Make a Transpose above 5-D Transposes of at most 5-D that onnx2tf lays out right: its unit axes (a batch of 1)
dropped, axes that move together merged.

TFLM's TRANSPOSE takes at most 5-D (kernels/transpose.cc: "Transpose op only supports 1D-5D input
arrays"; hub.knowledge.tflm_kernels TRANSPOSE max_rank). Swin's window partition and reverse are
Reshape -> Transpose((1,6,6,4,4,32), perm (0,1,3,2,4,5)) -> Reshape, and MobileViT-v2's unfold and fold
(hub.graph.rules.unfold_gather, col2im) are of the same kind: 6-D only for the leading batch axis of 1.

An axis of size 1 does not change the order of the elements, wherever the permutation moves it; so
the Transpose drops its unit axes (their perm entries removed, the others renumbered) and reads the
tensor as it is without them. The Reshape feeding it, when it feeds only this node, writes that shape
directly; otherwise a Reshape is added. The output keeps the same elements in the same order, so a
Reshape reading it needs no change (one whose shape copies a dimension, a 0, gets the original
shape back first); any other reader gets a Reshape back to the original output shape. Exact.

Dropping the batch axis must not leave a shape onnx2tf 1.29 misreads. It keeps a tensor of rank >= 3 in
TensorFlow as channels-last and tells whether one already is by comparing shapes; when every axis after the
first has the same size the shapes cannot say, and it assumes channels-last (utils/common_functions.py,
inverted_operation_enable_disable: "Avoiding patterns of misjudgment when the second and subsequent dimensions
are all the same value"), so ops/Transpose.py maps the perm through its NCDHW -> NDHWC axis table although the
Reshape before it wrote the ONNX order. MobileViT-v2's fold of 2x2 patches on a 4x4 map, (1,48,2,2,2,2) ->
(48,2,2,2,2), computed another permutation (float32 cosine 0.30 against the source); its 2x2 map, (64,2,2) under
an identity perm, became a swap. Where the squeezed Transpose would be read so (or a perm moving the first axis
meets repeated sizes, which ops/Transpose.py matches by size), the permutation is done in steps instead: axes
that move together merged, each step one block moved into place (at most 4 merged axes), each read with as
many leading unit axes as make its shape unambiguous, at most 5-D, and its perm keeping axis 0. A perm that
only moves unit axes becomes a Reshape. A Transpose with no such plan stays as it is (hub check then says
TFLM's TRANSPOSE takes at most 5-D).
"""
from __future__ import annotations

from math import prod

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import (add_initializer, attr, constant, consumers, emit, fresh_name, graph_output_names,
                            replace_node, sole_consumer, static_shape)
from hub.knowledge.tflm_kernels import KERNELS

UNBLOCKS = ("Transpose",)  # the ops hub check names this rule for
# hub check says "the <rule> rule <DOES>"
DOES = ("drops its unit (batch) axes and merges axes that move together (in steps where onnx2tf would misread the "
        "shape) to make it 5-D at most")
MAX_RANK = KERNELS["TRANSPOSE"].max_rank
Step = tuple[list[int], list[int]]  # (the shape a Transpose reads, its perm)


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Transpose"]:
        shape = static_shape(model, node.input[0])
        if shape is None or len(shape) <= MAX_RANK:
            continue
        perm = list(attr(node, "perm") or list(range(len(shape)))[::-1])
        steps = plan(list(shape), perm)
        if steps is None:
            continue  # no steps of at most 5-D that onnx2tf reads right: left for hub check to name
        _rewrite(model, node, steps, [shape[p] for p in perm])
        rewrites.append(Rewrite(node=node.name, op="Transpose", into=_describe(steps)))
    return model, rewrites


def plan(shape: list[int], perm: list[int]) -> list[Step] | None:
    """The Transposes (each at most 5-D, none onnx2tf misreads) that permute `shape` by `perm`, in order;
    [] when the perm moves unit axes only (a Reshape); None when there are none."""
    dims, moves = _squeeze(shape, perm)
    if moves == sorted(moves):
        return []
    if len(dims) <= MAX_RANK and _unambiguous(dims, moves):
        return [(dims, moves)]  # the plain squeeze: Swin's windows, folds whose axes differ
    dims, moves = _merge(dims, moves)
    whole = _layout(dims, moves)
    if whole is not None:
        return [whole]
    steps, order = [], list(range(len(dims)))
    for i, axis in enumerate(moves):
        j = order.index(axis)
        if j == i:
            continue
        sizes = [dims[a] for a in order]  # block (order[i:j]) and axis order[j] trade places
        step = _layout(*_merge(*_squeeze([prod(sizes[:i]), prod(sizes[i:j]), sizes[j], prod(sizes[j + 1:])],
                                         [0, 2, 1, 3])))
        if step is None:
            return None
        steps.append(step)
        order.insert(i, order.pop(j))
    return steps


def misread(shape: list[int]) -> bool:
    """onnx2tf 1.29 takes a tensor of this static shape for channels-last whatever its layout."""
    return len(shape) >= 3 and all(d == shape[1] for d in shape[1:])


def _squeeze(shape: list[int], perm: list[int]) -> tuple[list[int], list[int]]:
    keep = [i for i, d in enumerate(shape) if d != 1]
    return [shape[i] for i in keep], [keep.index(p) for p in perm if p in keep]


def _merge(dims: list[int], perm: list[int]) -> tuple[list[int], list[int]]:
    """The same permutation with each run of axes that stay side by side merged into one axis."""
    runs: list[list[int]] = []
    for p in perm:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    by_input = sorted(runs)
    return [prod(dims[a] for a in run) for run in by_input], [by_input.index(run) for run in runs]


def _unambiguous(dims: list[int], perm: list[int]) -> bool:
    """onnx2tf lowers this Transpose as ONNX means it: the shape is not misread, and a perm that moves axis 0
    (which ops/Transpose.py matches by size) meets no repeated size."""
    return not misread(dims) and (perm[0] == 0 or len(set(dims)) == len(dims))


def _layout(dims: list[int], perm: list[int]) -> Step | None:
    """`dims`/`perm` behind the fewest leading unit axes that make them unambiguous, at most 5-D."""
    for units in range(MAX_RANK - len(dims) + 1):
        shape, moves = [1] * units + dims, list(range(units)) + [p + units for p in perm]
        if _unambiguous(shape, moves):
            return shape, moves
    return None


def _describe(steps: list[Step]) -> str:
    if not steps:
        return "Reshape"
    ranks = [len(shape) for shape, _ in steps]
    return f"{ranks[0]}-D Transpose" if len(steps) == 1 else f"{len(steps)} Transposes of at most {max(ranks)}-D"


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, steps: list[Step], out_shape: list[int]) -> None:
    """Replace `node` by Reshape -> Transpose per step, then a Reshape back to `out_shape` where a reader needs it."""
    base, name = node.name or node.output[0], node.output[0]
    if not steps:
        replace_node(model, node, [emit("Reshape", [node.input[0], _shape(model, out_shape, f"{base}_shape")], name)])
        return
    restore = name in graph_output_names(model) or not all(_reshapes_alone(model, r, name)
                                                           for r in consumers(model, name))
    nodes, current = [], node.input[0]
    for k, (shape, perm) in enumerate(steps):
        target = _shape(model, shape, f"{base}_step{k}_shape")
        feeder = next((n for n in model.graph.node if current in n.output), None)
        if k == 0 and feeder is not None and feeder.op_type == "Reshape" and sole_consumer(model, current) is node:
            feeder.input[1] = target  # the Reshape feeding it writes the step's shape itself
        else:
            reshaped = fresh_name(model, f"{base}_step{k}_in")
            nodes.append(emit("Reshape", [current, target], reshaped))
            current = reshaped
        last = k == len(steps) - 1
        out = name if last and not restore else fresh_name(model, f"{base}_out" if last else f"{base}_step{k}")
        nodes.append(emit("Transpose", [current], out, perm=perm))
        current = out
    if restore:
        nodes.append(emit("Reshape", [current, _shape(model, out_shape, f"{base}_out_shape")], name))
    replace_node(model, node, nodes)


def _shape(model: onnx.ModelProto, shape: list[int], base: str) -> str:
    return add_initializer(model, np.array(shape, np.int64), base)


def _reshapes_alone(model: onnx.ModelProto, reader: onnx.NodeProto, name: str) -> bool:
    """A Reshape of `name` to a constant shape that copies no input dimension (no 0 with allowzero=0)."""
    if reader.op_type != "Reshape" or list(reader.input).index(name) != 0 or name in reader.input[1:]:
        return False
    target = constant(model, reader.input[1])
    return target is not None and (attr(reader, "allowzero", 0) or not np.any(target == 0))
