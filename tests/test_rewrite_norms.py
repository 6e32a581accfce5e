"""The normalisation rewrite rules (LayerNormalization, RMSNorm, InstanceNormalization): each on small
onnx.helper graphs, onnxruntime before vs after within float rounding (the rewrites are exact maths:
atol 1e-5 on unit-scale outputs), and end to end through onnx2tf and TFLM on trained fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from hub.artifacts import Rewrite
from hub.graph import rules
from tests.conftest import FIXTURES, run_hub
from tests.test_passes import make, ops, rand, run_ort

ATOL = 1e-5  # float32 rounding of the same maths in another order


def rewrite(model: onnx.ModelProto, rule: str, atol: float = ATOL) -> tuple[onnx.ModelProto, list[Rewrite]]:
    """Apply `rule` to a copy and check onnxruntime's outputs did not move beyond `atol`."""
    feeds = {i.name: rand(*[d.dim_value for d in i.type.tensor_type.shape.dim], scale=2.0) for i in model.graph.input}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after, rewrites = getattr(rules, rule).run(copy)
    onnx.checker.check_model(after, full_check=True)
    for b, a in zip(run_ort(model, feeds), run_ort(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    return after, rewrites


# --- decompose_layernorm ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, with_bias, opset", [
    ((1, 10, 32), -1, True, 17),  # a transformer's [N, T, C]
    ((1, 10, 32), -1, False, 18),  # no bias; ReduceMean takes axes as an input
    ((1, 8, 6, 6), 1, True, 17),  # NCHW over C, H, W
    ((1, 8, 6, 6), -1, True, 18),  # over W only
])
def test_decompose_layernorm_matches_the_op(shape, axis, with_bias, opset):
    normed = shape[axis % len(shape):]
    inits = {"s": rand(*normed) + 1, **({"b": rand(*normed)} if with_bias else {})}
    node = helper.make_node("LayerNormalization", ["x", "s", *(["b"] if with_bias else [])], ["y"], axis=axis,
                            epsilon=1e-5, name="ln")
    after, rewrites = rewrite(make([node], {"x": list(shape)}, {"y": list(shape)}, inits, opset=opset),
                              "decompose_layernorm")
    assert rewrites == [Rewrite(node="ln", op="LayerNormalization", into="builtins")]
    assert "LayerNormalization" not in ops(after)
    assert ops(after).count("Add") == 1 + with_bias and ops(after).count("ReduceMean") == 2


def test_decompose_layernorm_leaves_out_a_unit_scale():
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln")
    after, rewrites = rewrite(make([node], {"x": [1, 4, 16]}, {"y": [1, 4, 16]}, {"s": np.ones(16, np.float32)},
                                   opset=17), "decompose_layernorm")
    assert len(rewrites) == 1 and ops(after)[-2:] == ["Pow", "Mul"] and after.graph.node[-1].output[0] == "y"


def test_decompose_layernorm_keeps_a_node_whose_mean_output_is_read():
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "m"], name="ln")
    model = make([node], {"x": [1, 4, 16]}, {"y": [1, 4, 16], "m": [1, 4, 1]}, {"s": rand(16)}, opset=17)
    after, rewrites = rewrite(model, "decompose_layernorm")
    assert rewrites == [] and ops(after) == ["LayerNormalization"]


# --- decompose_rmsnorm -----------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", [((1, 10, 32), -1), ((1, 8, 6, 6), 1)])
def test_decompose_rmsnorm_matches_the_op(shape, axis):
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=axis, epsilon=1e-6, name="rms")
    model = make([node], {"x": list(shape)}, {"y": list(shape)}, {"s": rand(*shape[axis % len(shape):]) + 1}, opset=23)
    after, rewrites = rewrite(model, "decompose_rmsnorm")
    assert rewrites == [Rewrite(node="rms", op="RMSNormalization", into="builtins")]
    assert ops(after) == ["Mul", "ReduceMean", "Add", "Pow", "Mul", "Mul"]


RMSNORM_MODULE = """
import torch
from torch import nn

class RMSNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Linear(16, 32), nn.Linear(32, 8)
        self.norm, self.plain = nn.RMSNorm(32), nn.RMSNorm(32, eps=1e-5, elementwise_affine=False)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.head(torch.relu(self.plain(self.norm(self.embed(x)))))
"""


def test_nn_rmsnorm_exports_as_builtin_maths(tmp_path):
    """torch 2.13's TorchScript exporter refuses aten::rms_norm; the adapter's symbolic writes it out
    (with Pow(v, -0.5), which converts to RSQRT)."""
    torch = pytest.importorskip("torch")
    import hub.adapters
    from hub import api

    (tmp_path / "rms_mlp.py").write_text(RMSNORM_MODULE)
    source = hub.adapters.load(tmp_path / "rms_mlp.py", api.load_options(["1,10,16"], factory="RMSNormMLP"))
    assert "RMSNormalization" not in ops(source.onnx_model) and ops(source.onnx_model).count("Pow") == 2
    namespace: dict = {}
    exec(RMSNORM_MODULE, namespace)
    x = torch.randn(1, 10, 16) * 3
    expected = namespace["RMSNormMLP"]().eval()(x).detach().numpy()
    np.testing.assert_allclose(run_ort(source.onnx_model, {source.onnx_model.graph.input[0].name: x.numpy()})[0],
                               expected, rtol=0, atol=ATOL)


# --- end to end: onnx2tf, then the TFLM interpreter vs onnxruntime ----------------------------

MIN_COSINE = 0.98  # issue 14's bar for int8/int16x8 against the float ONNX


def convert(path: Path, out: Path, *args: str) -> dict:
    proc = run_hub("convert", path, *args, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def rewritten(report: dict) -> dict[str, int]:
    return {p["name"]: len(p["rewrites"]) for p in report["passes"] if p.get("rewrites")}


def test_layernorm_token_mlp_runs_on_tflm_in_int8(tmp_path):
    """Trained LayerNormMLP ([1, 32, 96] tokens, two nn.LayerNorm exported at opset 17 as the op)."""
    report = convert(FIXTURES / "layernorm_mlp_state.pth", tmp_path / "o", "--factory",
                     f"{FIXTURES / 'torch_models.py'}:LayerNormMLP", "--input-shape", "1,32,96")
    assert rewritten(report) == {"decompose_layernorm": 2}
    assert report["model"]["ops"]["RSQRT"] == 2 and "SQRT" not in report["model"]["ops"]  # int8 through and through
    assert report["fidelity"]["cosine"] >= MIN_COSINE and report["fidelity"]["top1_agreement"] == 1.0


def test_instancenorm_cnn_runs_on_tflm_in_int8_without_a_rule(tmp_path):
    """Standalone InstanceNormalization needs no rewrite: onnx2tf lowers it right (MEAN, SQUARED_DIFFERENCE, RSQRT)."""
    report = convert(FIXTURES / "instancenorm_cnn_state.pth", tmp_path / "o", "--factory",
                     f"{FIXTURES / 'torch_models.py'}:InstanceNormCNN", "--input-shape", "1,3,32,32")
    assert rewritten(report) == {} and report["model"]["ops"]["RSQRT"] == 2
    assert report["fidelity"]["cosine"] >= MIN_COSINE and report["fidelity"]["top1_agreement"] == 1.0


def test_rmsnormalization_op_runs_on_tflm_in_int16x8(tmp_path):
    """Without the rule onnx2tf's SQUARE has no int16 kernel and the int16x8 conversion stops."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("RMSNormalization", ["h", "s"], ["n"], epsilon=1e-6, name="rms"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    inits = {"w1": (rng.standard_normal((16, 32)) * 0.4).astype(np.float32),
             "s": rng.uniform(0.5, 1.5, 32).astype(np.float32),
             "w2": (rng.standard_normal((32, 8)) * 0.3).astype(np.float32)}
    onnx.save(make(nodes, {"x": [1, 10, 16]}, {"y": [1, 10, 8]}, inits, opset=23), str(tmp_path / "rms.onnx"))
    report = convert(tmp_path / "rms.onnx", tmp_path / "o", "--quantize", "int16x8")
    assert rewritten(report) == {"decompose_rmsnorm": 1}
    assert "SQUARE" not in report["model"]["ops"] and report["fidelity"]["cosine"] >= MIN_COSINE
