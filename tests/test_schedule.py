"""The arena scheduler (hub.tflite.schedule): exact optimum on small graphs, bit-identical invoke after
reordering, never a larger arena on a converted fixture."""
from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from hub.tflite import schedule
from hub.tflite.model import read_tflite


def synthetic(ops: list[tuple[list[str], list[str]]], sizes: dict[str, int], inputs=(), outputs=()) -> nx.DiGraph:
    """The scheduler's DiGraph from (inputs, outputs) tensor names per op."""
    graph = nx.DiGraph()
    for name, size in sizes.items():
        graph.add_node(("t", name), bytes=size, graph_input=name in inputs, graph_output=name in outputs)
    for i, (ins, outs) in enumerate(ops):
        graph.add_node(("op", i))
        graph.add_edges_from((("t", t), ("op", i)) for t in ins)
        graph.add_edges_from((("op", i), ("t", t)) for t in outs)
    return graph


def two_branches() -> nx.DiGraph:
    """x -> (a1 big -> a2), (b1 big -> b2) -> concat: run in file order 0, 2, 1, 3, both big ones meet."""
    ops = [(["x"], ["a1"]), (["x"], ["b1"]), (["a1"], ["a2"]), (["b1"], ["b2"]), (["a2", "b2"], ["y"])]
    sizes = {"x": 16, "a1": 160, "b1": 160, "a2": 16, "b2": 16, "y": 32}
    return synthetic(ops, sizes, inputs=["x"], outputs=["y"])


def brute_force(graph: nx.DiGraph, n: int) -> int:
    return min(schedule.peak_bytes(graph, list(order)) for order in nx.all_topological_sorts(schedule.precedence(graph)))


def test_two_branches_run_one_after_the_other():
    graph = two_branches()
    assert schedule.peak_bytes(graph, [0, 1, 2, 3, 4]) == 16 + 160 + 160
    plan = schedule.min_peak_order(graph, 5)
    # x + a1 + a2 while a2 is written, then x + a2 + b1, then a2 + b1 + b2
    assert (plan.peak_bytes, plan.default_peak_bytes, plan.exact) == (192, 336, True)
    assert plan.order in ([0, 2, 1, 3, 4], [1, 3, 0, 2, 4]) and plan.lower_bound_bytes == 192


def test_chain_keeps_its_order_and_counts_outputs_to_the_end():
    ops = [(["x"], ["a"]), (["a"], ["b", "dead"]), (["b"], ["y"])]
    graph = synthetic(ops, {"x": 32, "a": 64, "b": 16, "dead": 48, "y": 16}, inputs=["x"], outputs=["y"])
    plan = schedule.min_peak_order(graph, 3)
    assert plan.order == [0, 1, 2] and plan.peak_bytes == 64 + 16 + 48  # a, b and the unread output together


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force_on_random_dags(seed):
    rng = np.random.default_rng(seed)
    n = 7
    ops, sizes = [], {"in": 16 * int(rng.integers(1, 6))}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)] + ["in"]
        ins = list(rng.choice(earlier, size=min(len(earlier), int(rng.integers(1, 3))), replace=False))
        ops.append((ins, [f"t{i}"]))
        sizes[f"t{i}"] = 16 * int(rng.integers(1, 10))
    graph = synthetic(ops, sizes, inputs=["in"], outputs=[f"t{n - 1}"])
    plan = schedule.min_peak_order(graph, n)
    assert plan.exact and plan.peak_bytes == brute_force(graph, n)
    assert schedule.peak_bytes(graph, plan.order) == plan.peak_bytes


def test_narrow_beam_is_a_heuristic_with_a_valid_bound():
    parts = [(["x"], [f"a{k}"]) for k in range(4)] + [([f"a{k}"], [f"b{k}"]) for k in range(4)]
    ops = parts + [([f"b{k}" for k in range(4)], ["y"])]
    sizes = {"x": 16, "y": 16, **{f"a{k}": 160 for k in range(4)}, **{f"b{k}": 16 for k in range(4)}}
    graph = synthetic(ops, sizes, inputs=["x"], outputs=["y"])
    exact = schedule.min_peak_order(graph, len(ops))
    narrow = schedule.min_peak_order(graph, len(ops), beam=2)
    assert exact.exact and not narrow.exact
    assert narrow.lower_bound_bytes <= exact.peak_bytes <= narrow.peak_bytes <= narrow.default_peak_bytes


# --- on a converted model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unet_default(tmp_path_factory):
    """fixtures/tiny_unet.pt converted with --schedule default (the converter's order): the report."""
    from hub import api
    from tests.conftest import FIXTURES

    return api.convert(FIXTURES / "tiny_unet.pt", out=tmp_path_factory.mktemp("unet") / "out", schedule="default")


@pytest.fixture(scope="module")
def unet_tflite(unet_default) -> bytes:
    return (unet_default.output / "model.tflite").read_bytes()


def _invoke(tflite_bytes: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=1 << 22)
    outputs = []
    for array in inputs:
        interp.reset()
        interp.set_input(array, 0)
        interp.invoke()
        outputs.append(np.array(interp.get_output(0)))
    return outputs


def late_order(tflite_bytes: bytes) -> list[int]:
    """A valid order that runs each op as late as it can: the skip reductions of the U-Net run just
    before their concatenation, so its full-width encoder features stay live across the bottleneck."""
    model = read_tflite(tflite_bytes)
    dag = schedule.precedence(schedule.tensor_graph(model))
    return list(nx.lexicographical_topological_sort(dag, key=lambda op: -op))


@pytest.fixture(scope="module")
def late_unet(unet_tflite) -> bytes:
    return schedule.reorder(unet_tflite, late_order(unet_tflite))


def test_unet_search_moves_the_top_down_reduction_before_the_decoder(unet_tflite):
    plan = schedule.search(unet_tflite)
    assert plan.exact and plan.lower_bound_bytes == plan.peak_bytes < plan.default_peak_bytes


def test_reordered_model_invokes_bit_identically(unet_tflite, late_unet):
    order = late_order(unet_tflite)
    assert order != sorted(order) and len(late_unet) == len(unet_tflite)
    assert [op.name for op in read_tflite(late_unet).ops] == [read_tflite(unet_tflite).ops[i].name for i in order]
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-128, 128, (1, 32, 32, 3), dtype=np.int8) for _ in range(3)]
    for before, after in zip(_invoke(unet_tflite, inputs), _invoke(late_unet, inputs)):
        assert before.dtype == after.dtype and np.array_equal(before, after)


def measure(data: bytes) -> dict:
    from hub.verify.tflm import verify

    return verify(data, None, None).memory


def test_schedule_recovers_from_a_bad_order_and_never_grows_the_arena(late_unet):
    scheduled, result = schedule.run(late_unet, measure)
    assert result.exact and result.lower_bound_peak_bytes == result.peak_bytes < result.default_peak_bytes
    assert result.reordered and result.arena_bytes < result.default_arena_bytes
    assert schedule.search(scheduled).default_peak_bytes == result.peak_bytes


@pytest.fixture(scope="module")
def resnet_tflite(tmp_path_factory) -> bytes:
    """fixtures/resnet_tiny.pt in the converter's order: TFLM's planner leaves its head above the peak."""
    from hub import api
    from tests.conftest import FIXTURES

    out = tmp_path_factory.mktemp("resnet") / "out"
    api.convert(FIXTURES / "resnet_tiny.pt", out=out, schedule="default")
    return (out / "model.tflite").read_bytes()


def _head_bytes(tflite_bytes: bytes) -> int:
    """The arena head TFLM planned, from its own allocation record (in a child: TFLM prints from C)."""
    import re
    import subprocess
    import sys

    code = ("import sys; from tflite_micro import runtime; "
            "runtime.Interpreter.from_bytes(sys.stdin.buffer.read(), arena_size=1 << 22).print_allocations()")
    proc = subprocess.run([sys.executable, "-c", code], input=tflite_bytes, capture_output=True, timeout=120)
    return int(re.search(rb"Arena allocation head (\d+) bytes", proc.stderr).group(1))


def test_offline_plan_is_used_by_tflm_and_keeps_outputs(resnet_tflite):
    scheduled, result = schedule.run(resnet_tflite, measure)
    assert result.offline_plan and not result.reordered
    assert _head_bytes(scheduled) == result.peak_bytes < _head_bytes(resnet_tflite)
    assert result.arena_bytes < result.default_arena_bytes
    inputs = [np.random.default_rng(1).integers(-128, 128, (1, 32, 32, 3), dtype=np.int8) for _ in range(2)]
    for before, after in zip(_invoke(resnet_tflite, inputs), _invoke(scheduled, inputs)):
        assert np.array_equal(before, after)


def test_reorder_round_trips(unet_tflite):
    """reorder only permutes the operator offsets: an order then its inverse gives the same bytes back."""
    order = late_order(unet_tflite)
    inverse = [order.index(i) for i in range(len(order))]
    assert schedule.reorder(schedule.reorder(unet_tflite, order), inverse) == unet_tflite


def test_default_schedule_reports_the_bound_and_keeps_the_order(unet_default, unet_tflite):
    memory = unet_default.to_dict()["memory"]
    assert memory["arena_default_order_bytes"] == memory["arena_bytes"]
    assert memory["arena_lower_bound_bytes"] < memory["arena_bytes"]
    [entry] = [p for p in unet_default.passes if p.name == "schedule"]
    assert entry.changed == 0 and entry.detail == "peak live bytes 43,008 -> 41,472 (exact)"
    assert schedule.search(unet_tflite).order != list(range(len(read_tflite(unet_tflite).ops)))


def test_convert_schedules_by_default_and_says_so(tmp_path):
    from tests.conftest import FIXTURES, run_hub

    proc = run_hub("convert", FIXTURES / "tiny_unet.pt", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lower bound" in proc.stdout and "with --schedule default" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    memory = report["memory"]
    assert memory["arena_lower_bound_bytes"] <= memory["arena_bytes"] < memory["arena_default_order_bytes"]
    assert "arena against its lower bound" in (tmp_path / "out" / "report.html").read_text()


def test_unknown_schedule_is_a_usage_error(tmp_path):
    from tests.conftest import FIXTURES, run_hub

    proc = run_hub("convert", FIXTURES / "tiny_unet.pt", "--schedule", "fastest", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "--schedule 'fastest'" in proc.stderr
