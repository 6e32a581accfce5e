"""Architectures people take from model libraries (tests/hub_models.py: transformers' own classes from small
configs): `hub check` judges the graph conversion will see, and agrees with what `hub convert` then does.

The check-only tests cover the false alarms of issue 28 (each model converts and runs on TFLM:
bench/results/model_hub.md); one quick model is checked and converted end to end in the default run, more under
`-m heavy`. bench/model_hub.py runs the whole corpus.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub import api
from hub.artifacts import LoadOptions
from hub.check.onnx import analyse_onnx
from tests.conftest import run_hub
from tests.hub_models import BY_NAME, hub_args, save


@pytest.fixture(scope="session")
def hub_file(tmp_path_factory):
    """(model name, format) -> the saved file, built once per session."""
    folder = tmp_path_factory.mktemp("hub_models")
    files: dict[tuple[str, str], Path] = {}

    def get(name: str, fmt: str) -> Path:
        if (name, fmt) not in files:
            files[name, fmt] = save(BY_NAME[name], fmt, folder)
        return files[name, fmt]
    return get


def check(path: Path, name: str, fmt: str):
    shapes = {None: BY_NAME[name].input_shape} if fmt == "torchscript" else {}
    return api.check(path, options=LoadOptions(input_shapes=shapes))


def blockers(result) -> set[str]:
    return {f.op for f in result.findings if f.severity == "error"}


# (model, format, the ops the check wrongly blamed before): each converts and runs on TFLM in int8.
FALSE_ALARMS = [
    ("mobilevit", "onnx", {"Gather", "Reshape"}),  # shape chains onnx2tf computes while converting
    ("swiftformer", "onnx", {"Clip", "Tile"}),  # clamp_min with an empty max; a Tile the converter broadcasts
]


@pytest.mark.parametrize("name,fmt,blamed", FALSE_ALARMS, ids=[f"{n}-{f}" for n, f, _ in FALSE_ALARMS])
def test_no_false_alarm(hub_file, name, fmt, blamed):
    result = check(hub_file(name, fmt), name, fmt)
    assert not blockers(result) & blamed, [f.message for f in result.findings if f.severity == "error"]
    assert result.verdict == "will run"


@pytest.mark.heavy  # 2.5-4 min on the shared 2 cores (34 s CPU): over the default run's 30 s budget
def test_quick_model_check_agrees_with_convert(hub_file, tmp_path):
    """The corpus' quickest model through the real CLI: check says it will run, and it converts and runs."""
    name, fmt = "poolformer", "torchscript"
    path = hub_file(name, fmt)
    checked = run_hub("check", path, *hub_args(BY_NAME[name], fmt, "check"), "--json")
    converted = run_hub("convert", path, "--target", "tflm", "--out", tmp_path / "out", "--json",
                        "--schedule", "default", *hub_args(BY_NAME[name], fmt))
    assert checked.returncode == converted.returncode == 0, (checked.stdout[-400:], converted.stdout[-400:])
    report = json.loads(converted.stdout)
    assert json.loads(checked.stdout)["verdict"] == "will run"
    assert report["fidelity"]["cosine"] > 0.9  # vs the PyTorch module itself


@pytest.mark.heavy
@pytest.mark.parametrize("name,fmt", [("mobilevit", "onnx"), ("swiftformer", "onnx"), ("resnet", "torchscript"),
                                      ("convnext", "torchscript")])
def test_check_agrees_with_convert(hub_file, tmp_path, name, fmt):
    path = hub_file(name, fmt)
    checked = run_hub("check", path, *hub_args(BY_NAME[name], fmt, "check"), "--json")
    converted = run_hub("convert", path, "--target", "tflm", "--out", tmp_path / "out", "--json",
                        *hub_args(BY_NAME[name], fmt))
    assert (checked.returncode == 0) == (converted.returncode == 0), (checked.stdout[-600:], converted.stdout[-600:])


def _graph(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _tile_model(reader: str | None) -> onnx.ModelProto:
    """x (1,1,8) tiled to (1,4,8), then read by `reader` with y (1,4,8), or returned itself."""
    reps = numpy_helper.from_array(np.array([1, 4, 1], np.int64), "reps")
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t"])]
    if reader:
        nodes.append(helper.make_node(reader, ["t", "y"], ["z"]))
    return _graph(nodes, [_float("x", [1, 1, 8]), _float("y", [1, 4, 8])],
                  [_float("z" if reader else "t", [1, 4, 8])], [reps])


def test_tile_into_a_broadcasting_binary_is_no_blocker():
    """The TFLite converter drops a TILE whose reader broadcasts anyway; a Tile that is the result stays TILE."""
    assert "Tile" not in blockers(analyse_onnx(_tile_model("Mul")))
    assert "Tile" in blockers(analyse_onnx(_tile_model(None)))


def test_isnan_blocks_int8_only_as_a_model_output():
    """The dynamo exporter's attention guard Where(IsNaN(x), 0, x) converts in int8 (DeiT, ViT, AST); the
    converter crashes when IsNaN's bool result is itself a model output (the isnan node test)."""
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    guard = _graph([helper.make_node("IsNaN", ["x"], ["nan"]), helper.make_node("Where", ["nan", "zero", "x"], ["y"])],
                   [_float("x", [1, 8])], [_float("y", [1, 8])], [zero])
    alone = _graph([helper.make_node("IsNaN", ["x"], ["y"])], [_float("x", [1, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.BOOL, [1, 8])])
    assert "IsNaN" not in blockers(analyse_onnx(guard))
    assert "IsNaN" in blockers(analyse_onnx(alone))


@pytest.mark.parametrize("bounds,fires", [(["", ""], True), (["lo", ""], False)])
def test_clip_empty_bounds(bounds, fires):
    """onnx2tf fails on Clip only when min and max are both empty (clip_default_inbounds)."""
    lo = numpy_helper.from_array(np.array(1e-6, np.float32), "lo")
    model = _graph([helper.make_node("Clip", ["x", *bounds], ["y"])], [_float("x", [1, 8])], [_float("y", [1, 8])],
                   [lo] if "lo" in bounds else [])
    assert ("Clip" in blockers(analyse_onnx(model, quantize="float32"))) == fires
