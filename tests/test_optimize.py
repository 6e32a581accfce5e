"""`hub optimize` (issue 15): structured pruning, distillation, and the whole command on the digits fixture."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hub import api
from hub.artifacts import LoadOptions
from hub.errors import IncompatibleError, InputError
from hub.graph.normalise import normalise_source
from hub.optimize import run as stage
from hub.optimize import training
from tests.conftest import FIXTURES, run_hub

DIGITS = ["fixtures/digits_cnn_state.pth", "--factory", "fixtures/torch_models.py:DigitsCNN", "--input-shape", "1,1,8,8"]
ROOT = FIXTURES.parent


def _digits_cnn():
    from fixtures.torch_models import DigitsCNN

    model = DigitsCNN()
    model.load_state_dict(torch.load(FIXTURES / "digits_cnn_state.pth", weights_only=True))
    return model.eval()


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


class _Residual(nn.Module):
    """Stem, depthwise conv, residual add, classifier; with `gate`, a single-channel conv whose sigmoid
    scales every channel (a broadcast torch-pruning would tie to that one channel)."""

    def __init__(self, gate: bool = False):
        super().__init__()
        self.gate = gate
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pointwise = nn.Conv2d(16, 16, 1)
        self.mask = nn.Conv2d(16, 1, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.pointwise(torch.relu(self.depthwise(h)))  # residual: stem and pointwise share channels
        if self.gate:
            h = h * torch.sigmoid(self.mask(h))
        return self.fc(h.mean((2, 3)))


def test_prune_halves_channels_and_keeps_the_classifier():
    model, x = _digits_cnn(), torch.rand(1, 1, 8, 8)
    pruned = api.prune(copy.deepcopy(model), x, 0.5)
    assert [c.out_channels for c in _convs(pruned)] == [16, 32, 32]
    assert [c.in_channels for c in _convs(pruned)] == [1, 16, 32]
    assert (pruned.classifier.in_features, pruned.classifier.out_features) == (32, 10)
    assert pruned(torch.rand(7, 1, 8, 8)).shape == (7, 10)


def test_prune_respects_residual_and_depthwise():
    torch.manual_seed(0)
    model, x = _Residual().eval(), torch.rand(1, 3, 12, 12)
    pruned = training.prune(model, x, 0.5, round_to=4)
    assert pruned.stem.out_channels == pruned.pointwise.out_channels == 8  # tied by the add
    assert pruned.depthwise.groups == pruned.depthwise.in_channels == pruned.depthwise.out_channels == 8
    assert pruned.fc.in_features == 8 and pruned.fc.out_features == 5
    assert pruned(torch.rand(2, 3, 12, 12)).shape == (2, 5)


def test_prune_leaves_a_single_channel_gate_whole():
    """The gate's one channel scales all 16: the channels it touches stay, and the network still runs."""
    torch.manual_seed(0)
    model, x = _Residual(gate=True).eval(), torch.rand(2, 3, 12, 12)
    expected = model(x)
    pruned = training.prune(model, x[:1], 0.5)
    assert pruned.mask.out_channels == 1 and pruned.stem.out_channels == 16
    torch.testing.assert_close(pruned(x), expected)


def test_prune_removes_the_weakest_channels_first():
    """Half the channels of each layer carry nothing: pruning half must remove exactly those, and no output
    changes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight[4:], model[0].bias[4:], model[2].weight[:, 4:] = 0, 0, 0
        model[2].weight[2:], model[2].bias[2:], model[4].weight[:, 32:] = 0, 0, 0
    x = torch.rand(5, 2, 8, 8)
    expected = model(x)
    training.prune(model, x[:1], 0.5)
    assert model[0].out_channels == 4 and model[2].out_channels == 2
    torch.testing.assert_close(model(x), expected)


def test_unpruned_pass_through_is_the_same_network():
    model, x = _digits_cnn(), torch.rand(4, 1, 8, 8)
    expected = model(x)
    assert training.prune(model, x[:1], 0.0) is model
    torch.testing.assert_close(model(x), expected)


def test_onnx_route_reproduces_the_graph_and_prunes_residuals():
    """resnet_tiny.pt is TorchScript: it comes in through its ONNX graph and onnx2torch."""
    options = LoadOptions()
    normalised = normalise_source(api.load_source(FIXTURES / "resnet_tiny.pt", options), options)
    teacher = stage.trainable(FIXTURES / "resnet_tiny.pt", options, normalised)
    assert teacher.route == "ONNX -> onnx2torch" and not teacher.probabilities
    x = torch.rand(1, 3, 32, 32)
    before = training.count(teacher.module, x)
    student = training.prune(copy.deepcopy(teacher.module), x, 0.5)
    after = training.count(student, x)
    assert after["macs"] < 0.4 * before["macs"]
    assert student(torch.rand(3, 3, 32, 32)).shape == (3, 10)


def test_distill_without_labels_learns_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Linear(6, 4).eval()  # a learnable task: linear decision regions, confident logits
    with torch.no_grad():
        teacher.weight *= 5
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    x = np.random.default_rng(0).normal(size=(512, 6)).astype(np.float32)
    losses: list[float] = []
    options = training.DistillOptions(epochs=30, lr=1e-2, on_epoch=lambda epoch, loss: losses.append(loss))
    before = training.scores(training.predict(student, x), training.predict(teacher, x), None, False)["agreement"]
    training.distill(teacher, student, x, None, options)
    after = training.scores(training.predict(student, x), training.predict(teacher, x), None, False)
    assert after["accuracy"] is None
    assert losses[-1] < 0.3 * losses[0]
    assert after["agreement"] > max(0.9, before)


def test_distill_is_deterministic():
    x = np.random.default_rng(1).random((64, 1, 8, 8), dtype=np.float32)
    students = []
    for _ in range(2):
        torch.manual_seed(3)
        student = training.prune(_digits_cnn(), torch.from_numpy(x[:1]), 0.5)
        students.append(training.distill(_digits_cnn(), student, x, None, training.DistillOptions(epochs=2, seed=5)))
    torch.testing.assert_close(students[0](torch.from_numpy(x)), students[1](torch.from_numpy(x)), rtol=0, atol=0)


def test_no_distill_needs_labels():
    with pytest.raises(InputError, match="needs labels"):
        training.distill(nn.Linear(2, 2), nn.Linear(2, 2), np.zeros((4, 2), np.float32), None,
                      training.DistillOptions(alpha=0.0))


def test_two_input_model_is_refused(tmp_path):
    options = api.load_options(["image=1,3,16,16", "extra=1,6"], "fixtures/torch_models.py:TwoInputNet")
    normalised = normalise_source(api.load_source("fixtures/torch_models.py", options), options)
    with pytest.raises(IncompatibleError, match="one input and one output"):
        stage.trainable(Path("fixtures/torch_models.py"), options, normalised)


@pytest.mark.parametrize("args, code, words", [
    (["--prune", "1.5"], 2, "--prune must be in [0, 1)"),
    (["--target", "tflite"], 2, "--target must be tflm"),
    (["--no-distill", "--data", "{unlabelled}"], 2, "has none (no y array)"),
    (["--data", "{missing}"], 2, "no such file"),
    (["--qat", "--cluster", "16"], 2, "cannot be combined"),
    (["--cluster", "16", "--cluster-scope", "row"], 2, "--cluster-scope 'row'"),
    (["--cluster", "300"], 2, "2 to 128 values"),
    (["--board", "abacus"], 2, "unknown board"),
    (["--board", "pico", "--ram", "64"], 2, "not both"),
    (["--board", "pico", "--prune", "0.5"], 2, "drop --prune"),
    (["--prune-levels", "0,0.5"], 2, "is for the board search"),
    (["--ram", "64", "--prune-levels", "0,1.5"], 2, "--prune-levels must be fractions"),
])
def test_failures_are_one_line(tmp_path, args, code, words):
    unlabelled = tmp_path / "x_only.npz"
    np.savez(unlabelled, x=np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32))
    args = [a.format(unlabelled=unlabelled, missing=tmp_path / "nope.npz") for a in args]
    data = [] if "--data" in args else ["--data", "fixtures/digits_train.npz"]
    proc = run_hub("optimize", *DIGITS, *data, *args, "--epochs", "0", "--out", tmp_path / "out", cwd=ROOT)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub: error:") and words in lines[0], proc.stderr


@pytest.mark.slow
def test_hub_optimize_digits_end_to_end(tmp_path):
    """Two epochs of distillation: teacher and student converted, measured on TFLM, report.json/.html."""
    out = tmp_path / "digits"
    proc = run_hub("optimize", *DIGITS, "--data", "fixtures/digits_train.npz", "--val", "fixtures/digits_val.npz",
                   "--prune", "0.5", "--epochs", "2", "--out", out, "--json", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    section = json.loads(proc.stdout)["optimize"]
    assert section == json.loads((out / "report.json").read_text())["optimize"]
    teacher, student, change = section["teacher"], section["student"], section["change"]
    assert section["validation"]["samples"] == 359 and section["labels"] and section["route"] == "nn.Module"
    assert change["macs"] <= -0.4 and change["flash_bytes"] <= -0.35 and change["arena_bytes"] <= -0.25
    assert teacher["float_accuracy"] > 0.98 and student["int8_accuracy_tflm"] > 0.9
    assert 0.9 < student["int8_agreement_tflm"] <= 1.0
    assert 'id="optimize"' in (out / "report.html").read_text()
    assert (out / "digits_cnn_state_model_settings.h").exists()


@pytest.mark.parametrize("mode, stride, size", [("SAME_UPPER", 2, 8), ("SAME_LOWER", 2, 8), ("SAME_UPPER", 1, 7)])
def test_explicit_pads_compute_the_same(mode, stride, size):
    """onnx2torch cannot build auto_pad SAME_*: the route writes the same padding out (Keras' resnet8 has it)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[stride, stride])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = np.random.default_rng(1).normal(size=(1, 3, size, size)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    expected = run(model)
    explicit = stage._explicit_pads(copy.deepcopy(model))
    assert not any(a.name == "auto_pad" and a.s != b"NOTSET" for a in explicit.graph.node[0].attribute)
    np.testing.assert_allclose(run(explicit), expected, rtol=1e-5, atol=1e-5)
