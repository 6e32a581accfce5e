"""The convert stage on its own: one variant, the right tensor types, calibration, determinism."""
from __future__ import annotations

import pytest

from hub.artifacts import NormalisedModel, TensorSpec
from hub.convert.calibration import build_calibration
from hub.convert.converter import ConvertOptions, convert
from hub.errors import InputError
from hub.targets import resolve
from hub.tflite.model import read_tflite
from tests.conftest import small_cnn_onnx

INPUTS = [TensorSpec("image", (1, 3, 16, 16), "float32")]
OUTPUTS = [TensorSpec("logits", (1, 4), "float32")]


@pytest.fixture(scope="module")
def normalised() -> NormalisedModel:
    return NormalisedModel(small_cnn_onnx(), INPUTS, OUTPUTS)


@pytest.fixture(scope="module")
def converted(normalised):
    cal = build_calibration(INPUTS)
    return {q: convert(normalised, cal, ConvertOptions(quantize=q)) for q in ("int8", "int16x8", "float32")}


def _activation_dtypes(model) -> set[str]:
    return {model.tensors[i].dtype for op in model.ops for i in op.outputs}


def _conv_weights(model):
    return [model.tensors[op.inputs[1]] for op in model.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]


def test_int8_is_full_integer_with_per_channel_conv_weights(converted):
    model = read_tflite(converted["int8"].tflite_bytes)
    assert [model.tensors[i].dtype for i in model.inputs + model.outputs] == ["int8", "int8"]
    assert _activation_dtypes(model) == {"int8"}
    weights = _conv_weights(model)
    assert len(weights) == 2 and all(w.dtype == "int8" for w in weights)
    # one scale per output channel: 8 for the conv, 8 for the depthwise conv
    assert [len(w.scales) for w in weights] == [8, 8]
    assert model.op_histogram()["CONV_2D"] == 1 and model.op_histogram()["DEPTHWISE_CONV_2D"] == 1


def test_int16x8_has_int16_activations_and_int8_per_channel_weights(converted):
    model = read_tflite(converted["int16x8"].tflite_bytes)
    assert [model.tensors[i].dtype for i in model.inputs + model.outputs] == ["int16", "int16"]
    assert _activation_dtypes(model) == {"int16"}
    assert all(w.dtype == "int8" and len(w.scales) == 8 for w in _conv_weights(model))


def test_float32_keeps_every_tensor_float(converted):
    model = read_tflite(converted["float32"].tflite_bytes)
    assert {t.dtype for t in model.tensors} == {"float32"} or {t.dtype for t in model.tensors} <= {"float32", "int32"}
    assert all(not t.scales for t in model.tensors if t.dtype == "float32")


def test_input_is_channels_last_for_firmware(converted):
    model = read_tflite(converted["int8"].tflite_bytes)
    assert model.tensors[model.inputs[0]].shape == (1, 16, 16, 3)
    assert model.io_specs("inputs")[0]["name"] == "image"  # ONNX names survive in the signature


def test_conversion_is_deterministic(normalised, converted):
    again = convert(normalised, build_calibration(INPUTS), ConvertOptions(quantize="int8"))
    assert again.tflite_bytes == converted["int8"].tflite_bytes


def test_calibration_data_changes_quantization(normalised, converted):
    wide = build_calibration(INPUTS, input_range=(-4.0, 4.0))
    model = read_tflite(convert(normalised, wide, ConvertOptions(quantize="int8")).tflite_bytes)
    default = read_tflite(converted["int8"].tflite_bytes)
    assert model.tensors[model.inputs[0]].scales[0] == pytest.approx(8 / 255, rel=0.02)
    assert default.tensors[default.inputs[0]].scales[0] == pytest.approx(1 / 255, rel=0.02)


@pytest.mark.parametrize("target,quantize,reason", [
    ("tflm", "float16", "no float16 kernels"),
    ("tflm", "dynamic", "hybrid"),
    ("tflm", "int4", "unknown --quantize 'int4' for --target tflm: choose one of int8, int16x8, auto, float32"),
    ("esp32", "int8", "unknown --target 'esp32' for hub convert: choose one of tflm, ethos-u, tflite"),
])
def test_refused_requests_name_the_reason(target, quantize, reason):
    with pytest.raises(InputError, match=reason):
        resolve(target, quantize)


def test_float16_is_allowed_for_mobile_tflite(normalised):
    resolve("tflite", "float16")
    model = read_tflite(convert(normalised, build_calibration(INPUTS), ConvertOptions("tflite", "float16")).tflite_bytes)
    assert "float16" in {t.dtype for t in model.tensors}


def _dense_weights(model):
    return [model.tensors[op.inputs[1]] for op in model.ops if op.name == "FULLY_CONNECTED"]


def test_dense_weights_are_per_tensor_by_default_and_per_channel_on_request(normalised, converted):
    default = _dense_weights(read_tflite(converted["int8"].tflite_bytes))
    assert len(default) == 1 and len(default[0].scales) == 1
    per_channel = convert(normalised, build_calibration(INPUTS), ConvertOptions(quantize="int8", per_channel_dense=True))
    weights = _dense_weights(read_tflite(per_channel.tflite_bytes))
    assert len(weights) == 1 and len(weights[0].scales) == 4  # one per output class
    assert len(per_channel.tflite_bytes) > len(converted["int8"].tflite_bytes)


# onnx2tf's stderr when NASNetMobile's Conv met a mis-laid-out input (before canonical_slice), trimmed.
NASNET_STDERR = """\x1b[31mERROR:\x1b[0m The trace log is below.
Traceback (most recent call last):
ValueError: Exception encountered when calling layer "tf.nn.convolution_24" (type TFOpLambda).

Depth of input (25) is not a multiple of input depth of filter (44) for '{{node tf.nn.convolution_24/convolution}} = Conv2D[T=DT_FLOAT]'

Call arguments received by layer "tf.nn.convolution_24" (type TFOpLambda):
\x1b[31mERROR:\x1b[0m onnx_op_name: nasnet_mobile_1/adjust_conv_2_0_1/convolution
\x1b[31mERROR:\x1b[0m Read this and deal with it. https://github.com/PINTO0309/onnx2tf#parameter-replacement
ValueError: Exception encountered when calling layer "tf.nn.convolution_24" (type TFOpLambda).
"""


def test_converter_failure_names_the_node_and_the_cause_not_the_keras_wrapper():
    from hub.convert.converter import converter_error

    assert converter_error(NASNET_STDERR) == ("nasnet_mobile_1/adjust_conv_2_0_1/convolution",
                                              "Depth of input (25) is not a multiple of input depth of filter (44)")
    node, detail = converter_error("Traceback\nUnicodeDecodeError: 'utf-8' codec can't decode byte 0x82\n")
    assert node is None and "UnicodeDecodeError" not in detail
