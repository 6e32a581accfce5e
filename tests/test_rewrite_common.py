"""Rewrite rules for common ops TFLM lacks: HardSigmoid (rewrite_hardsigmoid), Concat of more
than 10 inputs (chain_concat), TopK with k = 1 (topk_to_argmax, with the argmax_int32 flatbuffer
pass that makes its ARG_MAX write int32). Unit tests compare onnxruntime before and after each rule at
atol 1e-5 (the rules are exact up to float32 rounding; indices must be equal); end-to-end tests convert small
torch networks with the pattern through hub (int8, synthetic calibration) and run them on TFLM."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.graph import rules
from hub.graph.shapes import infer_shapes

RNG = np.random.default_rng(0)
ATOL = 1e-5


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], outputs: list[str],
           inits: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    """Outputs named "i" (indices) are int64, the others float."""
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, TensorProto.INT64 if n == "i" else TensorProto.FLOAT, None)
                               for n in outputs],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return infer_shapes(model)


def _apply(model: onnx.ModelProto, rule: str) -> tuple[onnx.ModelProto, list]:
    """Run one rule; its outputs must match the original's under onnxruntime within ATOL."""
    feeds = {i.name: (RNG.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 4).astype(np.float32)
             for i in model.graph.input}
    before = _run(model, feeds)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after, rewrites = getattr(rules, rule).run(copy)
    after = infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    for b, a in zip(before, _run(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=ATOL)
    return after, rewrites


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


# --- rewrite_hardsigmoid ------------------------------------------------------------------------

def test_hardsigmoid_times_its_input_becomes_hardswish():
    nodes = [helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5, name="hs"),
             helper.make_node("Mul", ["g", "x"], ["y"], name="mul")]
    after, rewrites = _apply(_model(nodes, {"x": [1, 4, 5, 5]}, ["y"], {}), "rewrite_hardsigmoid")
    assert _ops(after) == ["HardSwish"] and [(r.node, r.op, r.into) for r in rewrites] == [("hs", "HardSigmoid", "HardSwish")]


@pytest.mark.parametrize("alpha, beta", [(0.2, 0.5), (1 / 6, 0.5), (0.25, 0.0)])
def test_hardsigmoid_becomes_relu6_form(alpha, beta):
    nodes = [helper.make_node("HardSigmoid", ["x"], ["y"], alpha=alpha, beta=beta, name="hs")]
    after, rewrites = _apply(_model(nodes, {"x": [1, 4, 5, 5]}, ["y"], {}), "rewrite_hardsigmoid")
    assert "HardSigmoid" not in _ops(after) and _ops(after)[-2:] == ["Clip", "Mul"]
    assert ("Add" in _ops(after)) == (beta != 0) and [r.into for r in rewrites] == ["relu6 form"]


def test_hardsigmoid_scale_and_shift_fold_into_the_conv_before():
    """MobileNetV3's squeeze-excite gate: Conv -> HardSigmoid -> Mul(x)."""
    inits = {"w": RNG.standard_normal((4, 4, 1, 1)).astype(np.float32), "b": RNG.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
             helper.make_node("Conv", ["p", "w", "b"], ["c"], name="fc"),
             helper.make_node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5, name="hs"),
             helper.make_node("Mul", ["x", "g"], ["y"], name="gate")]
    after, _ = _apply(_model(nodes, {"x": [1, 4, 5, 5]}, ["y"], inits), "rewrite_hardsigmoid")
    assert _ops(after) == ["GlobalAveragePool", "Conv", "Clip", "Mul", "Mul"]


def test_hardsigmoid_leaves_a_conv_read_elsewhere_alone():
    inits = {"w": RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("HardSigmoid", ["c"], ["g"], name="hs"),
             helper.make_node("Add", ["c", "g"], ["y"], name="add")]
    after, _ = _apply(_model(nodes, {"x": [1, 4, 5, 5]}, ["y"], inits), "rewrite_hardsigmoid")
    assert _ops(after) == ["Conv", "Mul", "Add", "Clip", "Mul", "Add"]


# --- chain_concat -------------------------------------------------------------------------------

@pytest.mark.parametrize("count, concats", [(11, 2), (25, 4), (100, 11), (101, 12)])
def test_concat_of_many_inputs_becomes_a_tree_of_at_most_ten(count, concats):
    names = [f"x{i}" for i in range(count)]
    nodes = [helper.make_node("Concat", names, ["y"], axis=1, name="cat")]
    after, rewrites = _apply(_model(nodes, {n: [1, 2, 3] for n in names}, ["y"], {}), "chain_concat")
    assert _ops(after) == ["Concat"] * concats and max(len(n.input) for n in after.graph.node) <= 10
    assert [(r.node, r.op) for r in rewrites] == [("cat", "Concat")]


def test_concat_of_ten_is_left_alone():
    names = [f"x{i}" for i in range(10)]
    model = _model([helper.make_node("Concat", names, ["y"], axis=0, name="cat")], {n: [2] for n in names}, ["y"], {})
    assert rules.chain_concat.run(model)[1] == []


# --- topk_to_argmax -----------------------------------------------------------------------------

@pytest.mark.parametrize("opset, largest, into", [(17, 1, "ArgMax"), (18, 1, "ArgMax"), (13, 0, "ArgMin")])
def test_top1_becomes_a_reduction_and_an_arg_reduction(opset, largest, into):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest, name="top")
    model = _model([node], {"x": [2, 7, 3]}, ["v", "i"], {"k": np.array([1], np.int64)}, opset=opset)
    after, rewrites = _apply(model, "topk_to_argmax")
    assert sorted(_ops(after)) == sorted([into, into.replace("Arg", "Reduce")])
    assert [(r.node, r.op, r.into) for r in rewrites] == [("top", "TopK", into)]


def test_top1_ties_keep_the_lowest_index_like_topk():
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, name="top")
    model = _model([node], {"x": [1, 6]}, ["v", "i"], {"k": np.array([1], np.int64)})
    after, _ = rules.topk_to_argmax.run(infer_shapes(model))
    x = {"x": np.array([[0, 3, 1, 3, 3, 2]], np.float32)}
    assert _run(after, x)[1].tolist() == _run(model, x)[1].tolist() == [[1]]


def test_topk_of_two_is_left_alone():
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, name="top")
    model = _model([node], {"x": [1, 7]}, ["v", "i"], {"k": np.array([2], np.int64)})
    assert rules.topk_to_argmax.run(model)[1] == []


@pytest.mark.parametrize("after, blocked", [("Reshape", False), ("Cast", True)])
def test_check_passes_argmax_indices_that_only_reach_the_output(after, blocked):
    """The argmax_int32 pass retypes ARG_MAX's output when reshapes alone carry it to the outputs."""
    from hub.check.onnx import analyse_onnx

    extra = {"Reshape": (["i", "shape"], {}), "Cast": (["i"], {"to": TensorProto.INT32})}[after]
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, name="am"),
             helper.make_node(after, extra[0], ["y"], name="next", **extra[1])]
    model = _model(nodes, {"x": [1, 7]}, [], {"shape": np.array([1], np.int64)})
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.INT64 if after == "Reshape" else TensorProto.INT32, None))
    findings = analyse_onnx(model).findings
    assert any(f.op == "ArgMax" and f.severity == "error" for f in findings) == blocked


# --- end to end: torch networks through hub convert and TFLM ---------------------------------------

def _export(module, path: Path, size: int = 32) -> Path:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation warnings
        torch.onnx.export(module.eval(), (torch.rand(1, 3, size, size),), buffer, dynamo=False, opset_version=17,
                          input_names=["image"], do_constant_folding=True)
    path.write_bytes(buffer.getvalue())
    return path


def _se_net():
    """Two MobileNetV3-style blocks: Hardswish convolutions, a squeeze-excite gate with nn.Hardsigmoid."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class SE(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1),
                                    nn.Hardsigmoid())

        def forward(self, x):
            return x * self.fc(x)

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish(), SE(16), nn.Conv2d(16, 32, 3, 2, 1), nn.Hardswish(),
                         SE(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _dense_net():
    """A DenseNet block: every layer reads the concatenation of all earlier ones (the last, 12 tensors)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 2, 1)
            self.layers = nn.ModuleList(nn.Sequential(nn.Conv2d(8 + 4 * i, 4, 3, 1, 1), nn.ReLU()) for i in range(11))
            self.head = nn.Linear(8 + 44, 10)

        def forward(self, x):
            features = [torch.relu(self.stem(x))]
            for layer in self.layers:
                features.append(layer(torch.cat(features, 1)))
            return self.head(torch.cat(features, 1).mean((2, 3)))

    torch.manual_seed(0)
    return Dense()


def _top1_net():
    """A classifier that returns its best score and class: torch.topk(scores, 1)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Top1(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(16, 10))

        def forward(self, x):
            return torch.topk(self.body(x), 1, dim=1)

    torch.manual_seed(0)
    return Top1()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{name: ConvertReport} for each network, int8, converted once for the module."""
    from hub import api

    folder = tmp_path_factory.mktemp("rewrite_common")
    return {name: api.convert(_export(make(), folder / f"{name}.onnx"), out=folder / name)
            for name, make in (("se", _se_net), ("dense", _dense_net), ("top1", _top1_net))}


def _rule(report, name: str):
    return next(p for p in report.passes if p.name == name)


def test_mobilenetv3_gate_runs_on_tflm_after_the_hardsigmoid_rewrite(converted):
    report = converted["se"]
    assert len(_rule(report, "rewrite_hardsigmoid").rewrites) == 2
    assert "RELU_0_TO_1" not in report.model.ops and "HARD_SWISH" in report.model.ops
    assert report.verification.tflm.invokes and report.verification.fidelity.cosine >= 0.98


def test_densenet_concatenations_run_on_tflm_after_chaining(converted):
    report = converted["dense"]
    assert len(_rule(report, "chain_concat").rewrites) == 2  # the 11-input and the final 12-input Concat
    assert report.verification.tflm.invokes and report.verification.fidelity.cosine >= 0.98


def test_top1_head_runs_on_tflm_with_int32_indices(converted):
    report = converted["top1"]
    assert len(_rule(report, "topk_to_argmax").rewrites) == 1 and _rule(report, "argmax_int32").changed == 1
    assert "TOPK_V2" not in report.model.ops and {"ARG_MAX", "REDUCE_MAX"} <= set(report.model.ops)
    assert sorted(o["dtype"] for o in report.model.outputs) == ["int32", "int8"]
    assert report.verification.tflm.invokes and report.verification.fidelity.cosine >= 0.98
