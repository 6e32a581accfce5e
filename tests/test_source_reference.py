"""The reference is the source (issue 25): fidelity is measured against the PyTorch module / Keras model
itself, the ONNX export is checked against it right after normalise (naming the module where they first
diverge), poor fidelity the float32 diagnosis cannot explain fails, and an absurd arena is a finding."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from onnx import TensorProto, helper

from hub import api
from hub.adapters import load
from hub.artifacts import Fidelity, LoadOptions, Memory, NormalisedModel, TFLMRun, Verification
from hub.convert.calibration import CalibrationSet
from hub.convert.converter import ConvertOptions
from hub.errors import IncompatibleError
from hub.graph.normalise import normalise_source
from hub.graph.passes import PASSES, name_of
from hub.knowledge.arena import ABSURD_ARENA_FACTOR, absurd_arena
from hub.verify import diagnose
from hub.verify.arena_check import judge_arena
from hub.verify.export_check import source_reference
from hub.verify.samples import synthetic_samples
from tests.conftest import FIXTURES, run_hub, small_cnn_onnx
from tests.test_repair_ceil_pool import CeilPooled


@pytest.fixture(scope="module")
def ceil_pooled(tmp_path_factory) -> Path:
    """CeilPooled as TorchScript with its input shape recorded, as fixtures/make_torch_fixtures.py saves them."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ceil") / "ceil_pooled.pt"
    torch.jit.save(torch.jit.script(CeilPooled().eval()), str(path),
                   _extra_files={"hub.json": json.dumps({"input_shapes": {"x": [1, 3, 12, 12]}})})
    return path


@pytest.fixture(scope="module")
def converted_ceil_pooled(ceil_pooled, tmp_path_factory) -> tuple[int, dict]:
    out = tmp_path_factory.mktemp("ceil_out") / "out"
    proc = run_hub("convert", ceil_pooled, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.returncode, json.loads((out / "report.json").read_text())


def test_a_ceil_mode_pool_converts_measured_against_the_pytorch_module(converted_ceil_pooled):
    _, report = converted_ceil_pooled
    fidelity = report["fidelity"]
    assert fidelity["reference"] == "pytorch" and fidelity["cosine"] > 0.99, fidelity
    repair = next(p for p in report["passes"] if p["name"] == "repair_ceil_pool")
    assert repair["changed"] == 1


def test_without_the_repair_the_export_check_names_the_pool(ceil_pooled, tmp_path):
    without = [name_of(p) for p in PASSES if name_of(p) != "repair_ceil_pool"]
    with pytest.raises(IncompatibleError) as caught:
        api.convert(ceil_pooled, out=tmp_path / "out", passes=without)
    message = caught.value.one_line()
    assert caught.value.exit_code == 1
    assert "the ONNX export of ceil_pooled.pt changes the model's outputs" in message
    assert "against the PyTorch module" in message
    assert "module 'pool', ONNX node /pool/AveragePool (AveragePool)" in message
    assert not (tmp_path / "out").exists()  # refused before any conversion


def test_a_keras_source_is_its_own_reference():
    source = load(FIXTURES / "keras_dense.h5", LoadOptions())
    graph = normalise_source(source, LoadOptions())
    reference = source_reference(source, graph.onnx_model, synthetic_samples(graph.onnx_model))
    assert reference.source == "keras" and len(reference.outputs) == 8


def test_an_onnx_source_is_measured_on_onnxruntime():
    source = load(FIXTURES / "tiny_cnn.onnx", LoadOptions())
    graph = normalise_source(source, LoadOptions())
    assert source_reference(source, graph.onnx_model, synthetic_samples(graph.onnx_model)) is None  # verify's own


# --- the exit rule: poor fidelity passes only when the float32 diagnosis proves the conversion exact ---

def _poor_verification() -> Verification:
    fidelity = Fidelity(samples=8, max_abs_error=1.0, rmse=0.5, cosine=0.5, top1_agreement=0.5, relative_error=0.8)
    return Verification(tflm=TFLMRun(True, True), memory=Memory(1000, 2048, 100), fidelity=fidelity, ok=True)


def test_poor_fidelity_whose_diagnosis_cannot_run_fails(monkeypatch):
    def fails(*args, **kwargs):
        raise IncompatibleError("onnx2tf died")

    monkeypatch.setattr(diagnose, "convert", fails)
    model = small_cnn_onnx()
    calibration = CalibrationSet(samples={}, held_out={}, source="synthetic", synthetic=True)
    verification, warnings = diagnose.judge_fidelity(ConvertOptions(), NormalisedModel(model, [], []), calibration,
                                                     b"", _poor_verification())
    assert not verification.ok and warnings == []
    error = verification.findings[-1]
    assert error.severity == "error"
    assert "the float32 conversion that would tell why failed: onnx2tf died" in error.message
    assert "not proven exact" in error.message


# --- an absurd arena is a finding ---

def test_absurd_arena_rule():
    assert absurd_arena(ABSURD_ARENA_FACTOR * 1000, 1000) is None
    assert "17x" in absurd_arena(17_000, 1000)
    assert absurd_arena(None, 1000) is None


def test_an_absurd_arena_fails_verification():
    model = small_cnn_onnx()
    fine = _poor_verification()
    assert judge_arena(fine, model, "int8") is fine
    huge = judge_arena(Verification(TFLMRun(True, True), Memory(300_000_000, 330_000_000, 100), None, ok=True),
                       model, "int8")
    assert not huge.ok and huge.findings[-1].severity == "error" and "absurd arena" in huge.findings[-1].message


def test_an_arena_beyond_every_board_is_a_warning_not_a_failure():
    """ResNet-50 in float32 (the light zoo's) needs tens of MB: more than any board in the table, but not a
    wrong conversion. A graph whose activations imply that much gets a warning and still passes."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 128, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 128, 128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    arena = 8 * 2**20  # both 4 MiB tensors live at once
    big = judge_arena(Verification(TFLMRun(True, True), Memory(arena, arena, 100), None, ok=True), model, "float32")
    assert big.ok and big.findings[-1].severity == "warning" and "every board" in big.findings[-1].message
