"""Quantization-aware fine-tuning (hub/optimize/qat.py): the fake-quantized weights are the converter's int8 weights,
and the returned module is the plain float module again, trained deterministically."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from hub import api
from hub.artifacts import TensorSpec
from hub.optimize import qat
from hub.optimize import run as stage
from hub.optimize import training
from hub.optimize.training import DistillOptions
from hub.tflite.model import read_tflite
from tests.conftest import small_cnn_onnx

SHAPE = (1, 1, 8, 8)


class _Tiny(nn.Module):
    """Conv-BN-ReLU (BatchNorm with some negative gammas: the converter folds it into the conv), depthwise
    conv-ReLU, global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.relu = nn.ReLU()  # shared by both convs: one range per call
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.relu(self.depthwise(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _tiny() -> _Tiny:
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([1.5, -0.7, 0.3, 2.0, -1.2, 0.9, 0.05, -3.0]))
        model.bn.bias.uniform_(-0.2, 0.5)
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.2, 2.0)
        model.fc.weight.mul_(4.0)  # logits that spread like a trained model's
    return model.eval()


def _samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE[1:]), dtype=np.float32)


CALIBRATION = _samples(64)


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Callable[[bool], bytes]:
    """_tiny() through the real int8 converter (calibrated on CALIBRATION), with or without
    --per-channel-dense: model.tflite's bytes, each converted once."""
    folder = tmp_path_factory.mktemp("qat")
    onnx_path, calibration = folder / "tiny.onnx", folder / "calibration.npz"
    training.export_onnx(_tiny(), TensorSpec("image", SHAPE, "float32"), "logits", onnx_path)
    np.savez(calibration, image=CALIBRATION)
    done: dict[bool, bytes] = {}

    def tflite(per_channel_dense: bool) -> bytes:
        if per_channel_dense not in done:
            report = api.convert(onnx_path, calibration=calibration, out=folder / f"out_{per_channel_dense}",
                                 per_channel_dense=per_channel_dense)
            done[per_channel_dense] = (Path(report.output) / "model.tflite").read_bytes()
        return done[per_channel_dense]
    return tflite


def _filters(tflite: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{op name: (int8 filter in torch's layout, scales)} for the model's conv, depthwise and dense op."""
    model, raw = read_tflite(tflite), schema.Model.GetRootAs(tflite, 0)
    graph = raw.Subgraphs(0)
    found = {}
    for op in model.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        info = model.tensors[op.inputs[1]]
        data = raw.Buffers(graph.Tensors(info.index).Buffer()).DataAsNumpy()
        values = np.frombuffer(data.tobytes(), np.int8).reshape(info.shape)
        layout = {"CONV_2D": (0, 3, 1, 2), "DEPTHWISE_CONV_2D": (3, 0, 1, 2), "FULLY_CONNECTED": (0, 1)}[op.name]
        assert op.name not in found and info.dtype == "int8"
        found[op.name] = values.transpose(layout), np.array(info.scales)
    return found


def _fake_quantized_int8(layer: nn.Module, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The int8 values and scales behind the weight the fake-quantized forward pass uses."""
    q, scale = qat.int8_weights(layer.parametrizations.weight.original, axis)
    assert torch.equal(layer.weight, q.float() * scale)  # the parametrized weight is exactly that grid
    return q.numpy(), scale.flatten().numpy()


@pytest.mark.parametrize("per_channel_dense", [False, True])
def test_fake_quantized_weights_are_the_converters_int8_weights(converted, per_channel_dense):
    tflite = _filters(converted(per_channel_dense))
    model = _tiny()
    with qat.fake_quantized(model, torch.zeros(SHAPE), per_channel_dense=per_channel_dense):
        conv = _fake_quantized_int8(model.conv, 0)
        depthwise = _fake_quantized_int8(model.depthwise, 0)
        dense = _fake_quantized_int8(model.fc, 0 if per_channel_dense else None)
    # The converter folds BatchNorm into the conv: each channel times gamma / sqrt(var + eps), of either sign.
    fold = (model.bn.weight / torch.sqrt(model.bn.running_var + model.bn.eps)).detach().numpy()
    sign = np.sign(fold).astype(np.int8).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(tflite["CONV_2D"][0], sign * conv[0])
    np.testing.assert_allclose(tflite["CONV_2D"][1], np.abs(fold) * conv[1], rtol=1e-5)
    for name, ours in (("DEPTHWISE_CONV_2D", depthwise), ("FULLY_CONNECTED", dense)):
        np.testing.assert_array_equal(tflite[name][0], ours[0])
        np.testing.assert_allclose(tflite[name][1], ours[1], rtol=1e-6)
    assert len(tflite["FULLY_CONNECTED"][1]) == (4 if per_channel_dense else 1) and len(tflite["CONV_2D"][1]) == 8


def test_activation_ranges_are_the_converters(converted):
    """One range per int8 tensor TFLite keeps, calibrated close to the converter's own (which calibrates on
    part of the same samples and holds the rest out): input, conv+BN+ReLU, depthwise+ReLU (the shared
    ReLU has one range per call), the pool on its input's grid, the dense output."""
    model = _tiny()
    with qat.fake_quantized(model, torch.zeros(SHAPE)) as ranges:
        qat._calibrate(model, CALIBRATION, ranges, DistillOptions(batch=len(CALIBRATION)))
    outputs = ranges.outputs
    assert list(outputs) == [(id(m), i) for m, i in ((model.relu, 0), (model.relu, 1), (model.pool, 0), (model.fc, 0))]
    assert outputs[(id(model.pool), 0)].source is outputs[(id(model.relu), 1)]
    tflite = read_tflite(converted(False))
    theirs = [tflite.tensors[tflite.inputs[0]]] + [tflite.tensors[op.outputs[0]] for op in tflite.ops]
    assert [op.name for op in tflite.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED"]
    ours = [ranges.input, *(r if isinstance(r, qat._Range) else r.source for r in outputs.values())]
    for tensor, r in zip(theirs, ours):
        scale, zero = r.grid()
        assert tensor.scales[0] == pytest.approx(scale, rel=0.01) and abs(tensor.zero_points[0] - zero) <= 1


def _train(model: nn.Module, teacher: nn.Module) -> nn.Module:
    x = _samples(96, seed=1)
    y = np.random.default_rng(2).integers(0, 4, 96)
    return qat.quantization_aware(model, x, teacher, y, DistillOptions(epochs=2, batch=32))


def test_returns_the_plain_module_trained_deterministically():
    teacher = _tiny()
    first, second = _train(copy.deepcopy(teacher), teacher), _train(copy.deepcopy(teacher), teacher)
    for model in (first, second):
        assert list(model.state_dict()) == list(teacher.state_dict())
        assert not any(parametrize_left(m) or m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert type(model.conv) is nn.Conv2d
    assert not torch.equal(first.conv.weight, teacher.conv.weight)  # it trained
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def parametrize_left(module: nn.Module) -> bool:
    return torch.nn.utils.parametrize.is_parametrized(module)


def test_onnx2torch_modules_are_fake_quantized():
    """The ONNX route: onnx2torch's GraphModule of Conv-Relu-depthwise Conv-Relu-GlobalAveragePool-Gemm."""
    module = stage.onnx_to_torch(small_cnn_onnx(), Path("small_cnn.onnx"))
    with qat.fake_quantized(module, torch.zeros(1, 3, 16, 16)) as ranges:
        layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == 3 and all(parametrize_left(m) for m in layers)
        assert len(ranges.outputs) == 4  # two ReLUs, the pool, the dense output
    assert not any(parametrize_left(m) for m in module.modules())
