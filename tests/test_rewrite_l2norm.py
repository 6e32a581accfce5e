"""The l2_normalize rule (F.normalize -> x * rsqrt(max(sum(x*x), eps^2))): the forms torch's exporters write, each
on an onnx.helper graph, onnxruntime before vs after; and end to end, a TorchScript model normalising over the
channel axis and over the last axis converts to int8 with no float island and matches the PyTorch module on TFLM."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from hub.artifacts import Rewrite
from tests.conftest import run_hub
from tests.test_passes import make, ops, rand, run_ort
from tests.test_rewrite_norms import rewrite

EPS = 1e-12  # F.normalize's default
INTO = "x * rsqrt(max(sum(x*x), eps^2))"


def _norm_nodes(form: str, opset: int, axes: list[int]) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """||x|| over `axes` as `form` writes it: "reduce_l2" (both exporters), "pow" or "mul" (hand-written)."""
    axes_kw, axes_in, inits = ({}, ["axes"], {"axes": np.array(axes, np.int64)}) if opset >= 18 else \
        ({"axes": axes}, [], {})
    if form == "reduce_l2":
        return [helper.make_node("ReduceL2", ["x", *axes_in], ["norm"], keepdims=1, **axes_kw)], inits
    square = (helper.make_node("Pow", ["x", "two"], ["sq"]) if form == "pow" else
              helper.make_node("Mul", ["x", "x"], ["sq"]))
    sum_axes_in, sum_kw = (["sum_axes"], {}) if opset >= 13 else ([], {"axes": axes})
    return [square, helper.make_node("ReduceSum", ["sq", *sum_axes_in], ["ss"], keepdims=1, **sum_kw),
            helper.make_node("Sqrt", ["ss"], ["norm"])], {**inits, "two": np.array(2.0, np.float32),
                                                          "sum_axes": np.array(axes, np.int64)}


def _normalize_model(shape: list[int], axis: int, form: str, floor: str | None, expand: bool,
                     opset: int) -> onnx.ModelProto:
    nodes, inits = _norm_nodes(form, opset, [axis])
    if "sum_axes" in inits and opset < 13:
        del inits["sum_axes"]
    denominator = "norm"
    if floor is not None:
        inits["eps"] = np.array(EPS, np.float32)
        nodes.append(helper.make_node("Clip", ["norm", "eps", ""], ["floored"]) if floor == "clip" else
                     helper.make_node("Max", ["eps", "norm"], ["floored"]))
        denominator = "floored"
    if expand:  # TorchScript's expand_as(x); dynamo writes the same with a constant shape
        inits["shape"] = np.array(shape, np.int64)
        nodes.append(helper.make_node("Expand", [denominator, "shape"], ["expanded"]))
        denominator = "expanded"
    nodes.append(helper.make_node("Div", ["x", denominator], ["y"], name="div"))
    return make(nodes, {"x": shape}, {"y": shape}, inits, opset=opset)


@pytest.mark.parametrize("shape, axis, form, floor, expand, opset", [
    ([1, 8, 5, 5], 1, "reduce_l2", "clip", True, 17),  # F.normalize(dim=1), torch.onnx.export(dynamo=False)
    ([1, 6, 16], -1, "reduce_l2", "clip", True, 18),  # F.normalize(dim=-1), dynamo=True: axes an input
    ([1, 6, 16], 2, "pow", "max", False, 17),  # x / x.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(eps)
    ([1, 8, 5, 5], 1, "mul", None, False, 13),  # x / sqrt(sum(x * x)): no floor, no MAXIMUM
])
def test_l2_normalize_matches_every_exported_form(shape, axis, form, floor, expand, opset):
    after, rewrites = rewrite(_normalize_model(shape, axis, form, floor, expand, opset), "l2_normalize")
    assert rewrites == [Rewrite(node="div", op="L2 normalisation", into=INTO)]
    assert ops(after) == ["Mul", "ReduceSum", *(["Max"] * (floor is not None)), "Pow", "Mul"]


def test_l2_normalize_keeps_eps_on_an_all_zero_row():
    """A zero vector normalises to zeros through max(., eps^2), not to NaN (eps^2 = 1e-24 is a normal float32)."""
    model = _normalize_model([1, 4, 8], -1, "reduce_l2", "clip", True, 17)
    after, rewrites = rewrite(model, "l2_normalize")
    x = rand(1, 4, 8)
    x[0, 1] = 0.0
    expected = run_ort(model, {"x": x})[0]
    assert len(rewrites) == 1 and not expected[0, 1].any()
    np.testing.assert_allclose(run_ort(after, {"x": x})[0], expected, rtol=0, atol=1e-6)


def test_l2_normalize_leaves_a_norm_that_is_read_elsewhere_or_of_another_tensor():
    nodes, inits = _norm_nodes("reduce_l2", 17, [1])
    shared = make(nodes + [helper.make_node("Div", ["x", "norm"], ["y"])], {"x": [1, 4, 3]},
                  {"y": [1, 4, 3], "norm": [1, 1, 3]}, inits, opset=17)
    other = make(nodes + [helper.make_node("Div", ["z", "norm"], ["y"])], {"x": [1, 4, 3], "z": [1, 4, 3]},
                 {"y": [1, 4, 3]}, inits, opset=17)
    for model in (shared, other):
        after, rewrites = rewrite(model, "l2_normalize")
        assert rewrites == [] and "ReduceL2" in ops(after)


# --- end to end: TorchScript -> int8 on TFLM ---------------------------------------------------

NORMALIZE_MODULE = """
import torch
from torch import nn
from torch.nn import functional as F

class NormalizeNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.proj = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        y = F.normalize(self.conv(x), dim=1)  # over channels: NHWC's last axis in TFLite
        tokens = F.normalize(self.proj(y.flatten(2).transpose(1, 2)), dim=-1)  # over features
        return tokens.mean(1)
"""


def test_f_normalize_converts_to_int8_without_a_float_island(tmp_path):
    (tmp_path / "normalize_net.py").write_text(NORMALIZE_MODULE)
    proc = run_hub("convert", tmp_path / "normalize_net.py", "--factory", "NormalizeNet", "--input-shape", "1,3,16,16",
                   "--out", tmp_path / "o", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert {p["name"]: len(p["rewrites"]) for p in report["passes"] if p.get("rewrites")} == {"l2_normalize": 2}
    used = report["model"]["ops"]
    assert report["float_islands"] == [] and not {"DEQUANTIZE", "QUANTIZE", "SQRT", "SQUARE", "DIV"} & set(used)
    assert used["RSQRT"] == 2 and used["MAXIMUM"] == 2
    assert report["fidelity"]["reference"] == "pytorch" and report["fidelity"]["cosine"] >= 0.99
