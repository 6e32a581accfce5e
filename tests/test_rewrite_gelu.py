"""The transformer rewrite rules (gelu_tanh, erf_approx, split_qkv_heads): each on small onnx.helper
graphs and real torch exports, onnxruntime before vs after within the rule's stated error (tolerances
below), and the trained tiny ViT end to end through onnx2tf and TFLM."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph import rules
from tests.conftest import FIXTURES, run_hub
from tests.test_passes import make, ops
from tests.test_rewrite_norms import rewrite

GELU_TOL = 5e-4  # the tanh form's 4.73e-4 from exact GELU, plus float32 rounding
ERF_TOL = 2.9e-4  # tanh(x * (a + b x^2)) is within 2.81e-4 of erf
EXACT_TOL = 1e-5  # float32 rounding only: Gelu(approximate="tanh") and the q/k/v split
SHAPE = [1, 4, 16]  # inputs are N(0, 2): they reach GELU's worst error at |x| = 2.7


def gelu_graph(order: str, scale: str = "div", swap: bool = False, opset: int = 17) -> onnx.ModelProto:
    """x -> exact GELU -> y, its product in `order`: "xe_h" (x * (1 + erf)) * 0.5 (TorchScript exporter),
    "x_he" x * (0.5 * (1 + erf)) (dynamo exporter), "hx_e" (x * 0.5) * (1 + erf) (hand-written);
    `swap` flips every binary node's operands."""
    def binary(op: str, a: str, b: str, out: str) -> onnx.NodeProto:
        return helper.make_node(op, [b, a] if swap else [a, b], [out], name=out)

    nodes = [binary("Div", "x", "sqrt2", "s") if scale == "div" else binary("Mul", "x", "rsqrt2", "s"),
             helper.make_node("Erf", ["s"], ["e"], name="erf"), binary("Add", "e", "one", "p")]
    nodes += {"xe_h": [binary("Mul", "x", "p", "m"), binary("Mul", "m", "half", "y")],
              "x_he": [binary("Mul", "half", "p", "m"), binary("Mul", "x", "m", "y")],
              "hx_e": [binary("Mul", "x", "half", "m"), binary("Mul", "m", "p", "y")]}[order]
    if scale == "div" and swap:  # Div is not commutative: keep x / sqrt 2
        nodes[0] = helper.make_node("Div", ["x", "sqrt2"], ["s"], name="s")
    consts = {"sqrt2": np.float32(math.sqrt(2)), "rsqrt2": np.float32(math.sqrt(0.5)), "one": np.float32(1),
              "half": np.float32(0.5)}
    used = {i for n in nodes for i in n.input}
    return make(nodes, {"x": SHAPE}, {"y": SHAPE}, {k: v for k, v in consts.items() if k in used}, opset)


@pytest.mark.parametrize("order", ["xe_h", "x_he", "hx_e"])
@pytest.mark.parametrize("scale, swap", [("div", False), ("div", True), ("mul", False), ("mul", True)])
def test_gelu_tanh_rewrites_each_erf_form(order, scale, swap):
    after, rewrites = rewrite(gelu_graph(order, scale, swap), "gelu_tanh", GELU_TOL)
    assert rewrites == [Rewrite(node="erf", op="Gelu", into="tanh form")]
    assert sorted(set(ops(after))) == ["Add", "Mul", "Tanh"]


def test_gelu_tanh_keeps_x_half_when_another_node_reads_it():
    model = gelu_graph("hx_e")
    model.graph.node.append(helper.make_node("Neg", ["m"], ["other"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("other", onnx.TensorProto.FLOAT, SHAPE))
    after, rewrites = rewrite(model, "gelu_tanh", GELU_TOL)
    assert len(rewrites) == 1 and "Erf" not in ops(after) and "m" in {o for n in after.graph.node for o in n.output}


@pytest.mark.parametrize("approximate, tol", [("none", GELU_TOL), ("tanh", EXACT_TOL)])
def test_gelu_tanh_rewrites_the_opset_20_gelu_op(approximate, tol):
    model = make([helper.make_node("Gelu", ["x"], ["y"], name="gelu", approximate=approximate)],
                 {"x": SHAPE}, {"y": SHAPE}, {}, opset=20)
    after, rewrites = rewrite(model, "gelu_tanh", tol)
    assert rewrites == [Rewrite(node="gelu", op="Gelu", into="tanh form")] and "Gelu" not in ops(after)


@pytest.mark.parametrize("approximate, expected", [("none", 1), ("tanh", 0)])
def test_gelu_tanh_on_torchscript_exports(tmp_path, approximate, expected):
    """nn.GELU() as torch.onnx.export (dynamo=False, the PyTorch adapter's exporter) writes it; the tanh
    form it writes for approximate="tanh" already converts to MUL/ADD/TANH and is left alone."""
    import torch

    from hub.graph.normalise import normalise

    path = tmp_path / "gelu.onnx"
    module = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(approximate=approximate)).eval()
    torch.onnx.export(module, (torch.randn(*SHAPE),), str(path), dynamo=False, opset_version=17)
    after, rewrites = rewrite(normalise(onnx.load(str(path))).onnx_model, "gelu_tanh", GELU_TOL)
    assert len(rewrites) == expected and "Erf" not in ops(after)


def test_gelu_tanh_leaves_an_erf_that_is_no_gelu_to_erf_approx():
    nodes = [helper.make_node("Div", ["x", "two"], ["s"], name="s"), helper.make_node("Erf", ["s"], ["y"], name="erf")]
    model = make(nodes, {"x": SHAPE}, {"y": SHAPE}, {"two": np.float32(2)})
    assert rewrite(model, "gelu_tanh", 0)[1] == []
    after, rewrites = rewrite(model, "erf_approx", ERF_TOL)
    assert rewrites == [Rewrite(node="erf", op="Erf", into="tanh(x*(a+b*x^2))")]
    assert sorted(set(ops(after))) == ["Add", "Div", "Mul", "Tanh"]


def test_erf_approx_error_bound_holds_over_the_real_line():
    x = np.linspace(-10, 10, 200001)
    from hub.graph.rules.erf_approx import A, B

    approx = np.tanh(x * (A + B * x * x))
    assert np.max(np.abs(approx - np.vectorize(math.erf)(x))) < 2.82e-4


# --- split_qkv_heads -------------------------------------------------------------------------

def qkv_graph(take: str, tokens: int = 16, heads: int = 4, width: int = 8) -> onnx.ModelProto:
    """qkv [1, N, 3*H*D] -> Reshape [1, N, 3, H, D] -> Transpose(2, 0, 3, 1, 4) -> q, k, v [1, H, N, D],
    taken apart by `take`: "split" (Split + Squeeze, torch's unbind) or "gather" (qkv[i])."""
    dim = heads * width
    nodes = [helper.make_node("Reshape", ["qkv", "shape5"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[2, 0, 3, 1, 4])]
    inits = {"shape5": np.array([1, tokens, 3, heads, width], np.int64)}
    if take == "split":
        inits |= {"ones": np.ones(3, np.int64), "axis0": np.array([0], np.int64)}
        nodes.append(helper.make_node("Split", ["t", "ones"], ["s0", "s1", "s2"], name="split", axis=0))
        nodes += [helper.make_node("Squeeze", [f"s{i}", "axis0"], [out], name=out) for i, out in enumerate("qkv")]
    else:
        inits |= {f"i{i}": np.array(i, np.int64) for i in range(3)}
        nodes += [helper.make_node("Gather", ["t", f"i{i}"], [out], name=out, axis=0) for i, out in enumerate("qkv")]
    return make(nodes, {"qkv": [1, tokens, 3 * dim]}, {o: [1, heads, tokens, width] for o in "qkv"}, inits)


@pytest.mark.parametrize("take", ["split", "gather"])
def test_split_qkv_heads_removes_every_5d_tensor(take):
    after, rewrites = rewrite(qkv_graph(take), "split_qkv_heads", EXACT_TOL)
    assert rewrites == [Rewrite(node="reshape", op="5-D q/k/v head split", into="4-D split")]
    written = {o for n in after.graph.node for o in n.output}
    ranks = [len(v.type.tensor_type.shape.dim) for v in onnx.shape_inference.infer_shapes(after).graph.value_info
             if v.name in written]
    assert max(ranks) == 4 and ops(after).count("Split") == 1


def test_split_qkv_heads_leaves_a_5d_transpose_that_does_not_put_the_parts_first():
    nodes = [helper.make_node("Reshape", ["qkv", "shape5"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[0, 2, 3, 1, 4])]
    model = make(nodes, {"qkv": [1, 16, 96]}, {"y": [1, 3, 4, 16, 8]}, {"shape5": np.array([1, 16, 3, 4, 8], np.int64)})
    assert rules.split_qkv_heads.run(model)[1] == []


# --- end to end: the trained tiny ViT --------------------------------------------------------

@pytest.fixture(scope="module")
def vit_int8(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vit") / "out"
    result = run_hub("convert", FIXTURES / "tiny_vit.pt2", "--target", "tflm", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_tiny_vit_runs_on_tflm_in_int8(vit_int8):
    """LayerNorm, exact GELU and 5-D head splits rewritten; attention's MatMuls and Softmax run as
    BATCH_MATMUL and SOFTMAX; measured cosine 0.9998 (int8) and 0.99998 (int16x8)."""
    assert vit_int8["tflm"]["invokes"] and vit_int8["fidelity"]["cosine"] >= 0.98
    rules = {p["name"]: p["changed"] for p in vit_int8["passes"] if p["rewrites"]}
    assert rules == {"decompose_layernorm": 5, "gelu_tanh": 2, "split_qkv_heads": 2}
    assert {"BATCH_MATMUL", "SOFTMAX", "TANH"} <= set(vit_int8["model"]["ops"])
