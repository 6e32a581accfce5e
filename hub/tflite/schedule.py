"""Schedule stage: the operator order of a converted .tflite that needs the least TFLM arena.

TFLM runs operators in flatbuffer order and plans its arena from the lifetimes that order gives
(tflite-micro micro_allocation_info.cc): a graph input lives from scope 0, an op's outputs from
the op that writes them to the last op that reads them, a graph output to the end; constants,
variables and empty tensors are not planned; every buffer is rounded up to arena.ALIGN
(greedy_memory_planner.cc). The converter's order is not chosen for memory, so on branchy
graphs (residual blocks, fire modules, U-Nets) another topological order has a lower peak of
live bytes, and so a smaller arena.

- The graph: a networkx DiGraph of ops and activation tensors (op -> tensor it writes,
  tensor -> op that reads it).
- The search: dynamic programming over the sets of ops already run (the downsets of the DAG;
  what is live after a set depends on the set alone), level by level, keeping for each set
  the order with the lowest peak. Exact while every level holds at most BEAM sets; beyond,
  only the BEAM sets with the lowest (peak, live bytes) survive and the result is a heuristic,
  reported with the lower bound it could not beat (the largest single op's inputs + outputs).
- The rewrite: the subgraph's operator vector holds relative offsets to the operator tables;
  permuting them patches 4 bytes per op in place: nothing else in the flatbuffer moves.
- The decision: the new order is kept only when the arena TFLM needs (measured, hub.verify.tflm)
  drops. TFLM's greedy planner does not always reach an order's peak: where packing the
  lifetimes otherwise does better, an offline plan (hub.tflite.offline_plan) is added, also kept only
  when the measured arena drops.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Callable

import flatbuffers
import networkx as nx
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.artifacts import Memory, PassResult, ScheduleArena, Verification
from hub.knowledge.arena import ALIGN
from hub.tflite import offline_plan
from hub.tflite.model import SUBGRAPH_OPERATORS_SLOT, TFLiteModel, numpy_dtype, read_tflite

NAME = "schedule"
BEAM = 1000  # downsets kept per level; CNNs with a few parallel branches stay far below (exact)


@dataclass
class Schedule:
    """What the search found, in bytes of planned activations (without TFLM's persistent tail)."""

    order: list[int]  # op indices of the original file, in the new execution order
    peak_bytes: int
    default_peak_bytes: int
    lower_bound_bytes: int  # no order needs fewer: == peak_bytes when exact
    exact: bool


@dataclass
class ScheduleResult:
    """The stage's record for report.json: searched peaks and TFLM-measured arenas."""

    default_peak_bytes: int
    peak_bytes: int
    lower_bound_peak_bytes: int
    exact: bool
    default_arena_bytes: int | None = None  # converter's order, TFLM's own plan (None: not measured here)
    arena_bytes: int | None = None  # what the stage keeps
    reordered: bool = False
    offline_plan: bool = False

    def pass_result(self) -> PassResult:
        """report.json `passes` entry: what the search reached and what TFLM measured."""
        how = "exact" if self.exact else f"heuristic, bound {self.lower_bound_peak_bytes:,}"
        detail = f"peak live bytes {self.default_peak_bytes:,} -> {self.peak_bytes:,} ({how})"
        if self.arena_bytes is not None:
            kept = [what for what, used in (("new order", self.reordered), ("offline plan", self.offline_plan)) if used]
            detail += (f"; TFLM arena {self.default_arena_bytes:,} -> {self.arena_bytes:,}"
                       + (f" with {' and '.join(kept)}" if kept else ": converter's order and TFLM's planner kept"))
        return PassResult(name=NAME, changed=int(self.reordered) + int(self.offline_plan), detail=detail)

    def arena_figures(self, memory: Memory) -> ScheduleArena:
        """report.json `memory` additions, for the verified model's `memory`: the arena lower bound (no order's
        live tensors need less, plus the persistent tail TFLM measured) and the arena in the converter's own
        order. The recorded tail counts alignment padding the smallest arena can do without (seen: 8 bytes),
        so ALIGN comes off it."""
        tail = memory.arena_persistent_bytes
        default = self.default_arena_bytes if self.default_arena_bytes is not None else memory.arena_bytes
        return ScheduleArena(arena_lower_bound_bytes=None if tail is None else self.lower_bound_peak_bytes + tail - ALIGN,
                             arena_default_order_bytes=default)

    def joined(self, verification: Verification) -> Verification:
        """`verification` (of the scheduled model) with these figures in its memory: a new value."""
        memory = replace(verification.memory, schedule=self.arena_figures(verification.memory))
        return replace(verification, memory=memory)


def tensor_graph(model: TFLiteModel) -> nx.DiGraph:
    """Ops ("op", i) and planned tensors ("t", j, with `bytes` rounded to ALIGN) as a DiGraph."""
    graph = nx.DiGraph()
    planned = {t.index for t in model.tensors
               if not t.is_constant and not t.is_variable and _aligned_bytes(model, t.index) > 0}
    for t in planned:
        graph.add_node(("t", t), bytes=_aligned_bytes(model, t), graph_input=t in model.inputs,
                       graph_output=t in model.outputs)
    for op in model.ops:
        graph.add_node(("op", op.index))
        graph.add_edges_from((("t", t), ("op", op.index)) for t in op.inputs if t in planned)
        graph.add_edges_from((("op", op.index), ("t", t)) for t in op.outputs if t in planned)
    return graph


def precedence(graph: nx.DiGraph) -> nx.DiGraph:
    """The ops alone: an edge from each op to every op that reads what it writes."""
    dag = nx.DiGraph()
    dag.add_nodes_from(op for kind, op in graph if kind == "op")
    for tensor in (v for v in graph if v[0] == "t"):
        dag.add_edges_from((w, r) for (_, w), _ in graph.in_edges(tensor) for _, (_, r) in graph.out_edges(tensor))
    return dag


def _aligned_bytes(model: TFLiteModel, index: int) -> int:
    t = model.tensors[index]
    size = int(np.prod(t.shape, dtype=np.int64)) * numpy_dtype(t.dtype).itemsize  # () is a scalar: 1 element
    return -(-size // ALIGN) * ALIGN


class _Problem:
    """The graph as bitmasks over op positions, for a fast search."""

    def __init__(self, graph: nx.DiGraph, op_count: int):
        self.n = op_count
        dag = precedence(graph)
        self.pred = [sum(1 << w for w in dag.predecessors(op)) for op in range(op_count)]  # must run before op
        self.succ = [list(dag.successors(op)) for op in range(op_count)]
        self.out_bytes = [0] * op_count
        self.frees: list[list[tuple[int, int]]] = [[] for _ in range(op_count)]  # (readers mask, bytes) of inputs
        self.dead_out = [0] * op_count  # outputs nobody reads: freed right after the op
        self.start_bytes = 0  # graph inputs, live from scope 0
        for node, data in graph.nodes(data=True):
            if node[0] != "t":
                continue
            readers = {op for _, (_, op) in graph.out_edges(node)}
            writers = [op for (_, op), _ in graph.in_edges(node)]
            for w in writers:
                self.out_bytes[w] += data["bytes"]
                if not readers and not data["graph_output"]:
                    self.dead_out[w] += data["bytes"]
            if not writers and data["graph_input"] and readers:
                self.start_bytes += data["bytes"]
            if not data["graph_output"]:  # outputs live to the end
                mask = sum(1 << r for r in readers)
                for r in readers:
                    self.frees[r].append((mask, data["bytes"]))

    def step(self, done: int, live: int, op: int) -> tuple[int, int]:
        """(bytes live while `op` runs, bytes live after it) from the set `done` already run."""
        during = live + self.out_bytes[op]
        after_done = done | 1 << op
        freed = self.dead_out[op] + sum(size for mask, size in self.frees[op] if mask & ~after_done == 0)
        return during, during - freed


def peak_bytes(graph: nx.DiGraph, order: list[int]) -> int:
    """Peak planned bytes when the ops run in `order` (op indices)."""
    problem = _Problem(graph, len(order))
    done, live, peak = 0, problem.start_bytes, problem.start_bytes
    for op in order:
        during, live = problem.step(done, live, op)
        done |= 1 << op
        peak = max(peak, during)
    return peak


def min_peak_order(graph: nx.DiGraph, op_count: int, beam: int = BEAM) -> Schedule:
    """The order with the least peak (exact DP over downsets while they fit in `beam` per level)."""
    problem = _Problem(graph, op_count)
    default = list(range(op_count))
    roots = sum(1 << i for i in range(op_count) if problem.pred[i] == 0)
    level = {0: (problem.start_bytes, problem.start_bytes, roots)}  # downset -> (peak, live, ready mask)
    steps: list[dict[int, tuple[int, int]]] = []  # per level: downset -> (the downset before, op run)
    exact = True
    for _ in range(op_count):
        following: dict[int, tuple[int, int, int]] = {}
        back: dict[int, tuple[int, int]] = {}
        for done, (peak, live, ready) in level.items():
            for op in _bits(ready):
                during, after = problem.step(done, live, op)
                key, new_peak = done | 1 << op, max(peak, during)
                if key not in following or new_peak < following[key][0]:  # ties: the first found stays
                    following[key] = (new_peak, after, _ready_after(problem, key, ready, op))
                    back[key] = (done, op)
        if len(following) > beam:
            exact = False
            following = dict(sorted(following.items(), key=lambda kv: kv[1][:2])[:beam])
        level = following
        steps.append(back)
    key, (peak, _, _) = min(level.items(), key=lambda kv: kv[1][0])
    order = []
    for back in reversed(steps):
        key, op = back[key]
        order.append(op)
    order.reverse()
    default_peak = peak_bytes(graph, default)
    if default_peak <= peak:
        order, peak = default, default_peak
    bound = peak if exact else _op_bound(graph, problem)
    return Schedule(order, peak, default_peak, bound, exact)


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _ready_after(problem: _Problem, done: int, ready: int, op: int) -> int:
    ready &= ~(1 << op)
    for s in problem.succ[op]:
        if problem.pred[s] & ~done == 0:
            ready |= 1 << s
    return ready


def _op_bound(graph: nx.DiGraph, problem: _Problem) -> int:
    """No order beats the largest working set of one op: its planned inputs and outputs live together."""
    best = problem.start_bytes
    for op in range(problem.n):
        inputs = sum(graph.nodes[t]["bytes"] for t, _ in graph.in_edges(("op", op)))
        best = max(best, inputs + problem.out_bytes[op])
    return best


def reorder(tflite_bytes: bytes, order: list[int]) -> bytes:
    """The flatbuffer with subgraph 0's operators run in `order` (patched in place, 4 bytes per op)."""
    sg = schema.Model.GetRootAs(tflite_bytes, 0).Subgraphs(0)
    tab = sg._tab
    vector = tab.Vector(flatbuffers.number_types.UOffsetTFlags.py_type(tab.Offset(SUBGRAPH_OPERATORS_SLOT)))
    tables = [vector + 4 * i + struct.unpack_from("<I", tflite_bytes, vector + 4 * i)[0] for i in range(len(order))]
    data = bytearray(tflite_bytes)
    for position, op in enumerate(order):
        slot = vector + 4 * position
        struct.pack_into("<I", data, slot, tables[op] - slot)  # tables lie after the vector: offsets stay positive
    return bytes(data)


def search(tflite_bytes: bytes) -> Schedule:
    model = read_tflite(tflite_bytes)
    return min_peak_order(tensor_graph(model), len(model.ops))


Measure = Callable[[bytes], Memory]  # TFLM's memory figures of a model (hub.verify.tflm: arena_bytes, arena_persistent_bytes)


def run(tflite_bytes: bytes, measure: Measure | None) -> tuple[bytes, ScheduleResult]:
    """The least-arena order of `tflite_bytes`, then an offline plan where TFLM's planner stays above the
    order's peak; each kept only when `measure` says TFLM's arena drops. With `measure` None nothing
    changes (`--schedule default`): only the bound is computed."""
    model = read_tflite(tflite_bytes)
    plan = min_peak_order(tensor_graph(model), len(model.ops))
    result = ScheduleResult(plan.default_peak_bytes, plan.peak_bytes, plan.lower_bound_bytes, plan.exact)
    if measure is None or model.subgraphs > 1:  # control-flow subgraphs (IF, WHILE) share the arena: left alone
        return tflite_bytes, result
    memory = measure(tflite_bytes)
    result.default_arena_bytes = result.arena_bytes = memory.arena_bytes
    if result.arena_bytes is None:
        return tflite_bytes, result  # TFLM cannot run it: verification says why
    best = tflite_bytes
    if plan.order != sorted(plan.order):
        best, memory, result.reordered = _better(best, memory, reorder(tflite_bytes, plan.order), measure)
    best, memory, result.offline_plan = _better(best, memory, _with_offline_plan(best, memory), measure)
    result.arena_bytes = memory.arena_bytes
    return best, result


def _with_offline_plan(tflite_bytes: bytes, memory: Memory) -> bytes | None:
    """The model with an offline plan, when packing its lifetimes beats the head TFLM's planner reached."""
    model = read_tflite(tflite_bytes)
    offsets, height = offline_plan.place(offline_plan.buffers(model, tensor_graph(model)))
    head = memory.arena_bytes - (memory.arena_persistent_bytes or 0)
    return offline_plan.attach(tflite_bytes, offsets, len(model.tensors)) if height + ALIGN < head else None


def _better(best: bytes, memory: Memory, candidate: bytes | None, measure: Measure) -> tuple[bytes, Memory, bool]:
    """(model, its memory, taken?): the candidate when TFLM runs it in a smaller arena."""
    if candidate is None:
        return best, memory, False
    measured = measure(candidate)
    if measured.arena_bytes is not None and measured.arena_bytes < memory.arena_bytes:
        return candidate, measured, True
    return best, memory, False
