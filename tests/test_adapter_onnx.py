"""ONNX and TFLite adapters: format sniffing, external data (and its refusals), old IR, dynamic dims."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hub.adapters
from hub.errors import InputError
from hub.graph.normalise import normalise
from tests.conftest import FIXTURES, small_cnn_onnx


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _external(tmp_path: Path) -> Path:
    """small_cnn with all weights in one external file beside the model."""
    path = tmp_path / "ext.onnx"
    onnx.save(small_cnn_onnx(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    return path


def _set_location(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


def test_onnx_is_sniffed_by_content_not_extension(tmp_path):
    path = tmp_path / "model.bin"
    onnx.save(small_cnn_onnx(), str(path))
    assert hub.adapters.find_adapter(path).framework == "onnx"
    source = hub.adapters.load(path)
    assert source.framework == "onnx" and source.source_layouts == {"image": "NCHW"}


def test_external_data_beside_the_model_loads_and_matches(tmp_path):
    source = hub.adapters.load(_external(tmp_path))
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(_run(source.onnx_model, {"image": x})[0], _run(small_cnn_onnx(), {"image": x})[0],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("location,reason", [
    ("../ext.data", "outside the model's folder"),
    ("/etc/passwd", "unsafe location"),
    ("missing.data", "is missing"),
])
def test_external_data_locations_that_escape_or_are_missing_are_refused(tmp_path, location, reason):
    path = _external(tmp_path)
    _set_location(path, location)
    with pytest.raises(InputError, match=reason):
        hub.adapters.load(path)


def test_external_data_through_a_symlink_is_refused(tmp_path):
    path = _external(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.data"
    os.replace(tmp_path / "ext.data", outside)
    os.symlink(outside, tmp_path / "link.data")
    _set_location(path, "link.data")
    with pytest.raises(InputError, match="symbolic link"):
        hub.adapters.load(path)


def test_old_ir_with_initializers_listed_as_inputs(tmp_path):
    model = small_cnn_onnx()
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    model.ir_version = 3
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    normalised = normalise(hub.adapters.load(path).onnx_model)
    assert [t.name for t in normalised.inputs] == ["image"]


def test_dynamic_batch_becomes_1_and_other_dynamic_dims_need_the_flag(tmp_path):
    model = small_cnn_onnx()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = "N"
    assert normalise(model).inputs[0].shape == (1, 3, 16, 16)
    dims[2].dim_param = "H"
    dims[3].dim_param = "W"
    with pytest.raises(InputError, match="--input-shape image="):
        normalise(model)
    fixed = normalise(model, {None: (1, 3, 24, 24)})
    assert fixed.inputs[0].shape == (1, 3, 24, 24) and fixed.outputs[0].shape == (1, 4)


def test_input_shape_errors_name_the_inputs():
    model = small_cnn_onnx()
    with pytest.raises(InputError, match="inputs are image"):
        normalise(model, {"pixels": (1, 3, 16, 16)})
    with pytest.raises(InputError, match="rank 3"):
        normalise(model, {"image": (1, 16, 16)})


def test_no_inputs_and_unsupported_dtype_are_input_errors(tmp_path):
    const = helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(2, np.float32)))
    graph = helper.make_graph([const], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "noin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(InputError, match="no inputs"):
        hub.adapters.load(path)
    ident = helper.make_node("Identity", ["s"], ["y"])
    graph = helper.make_graph([ident], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(InputError, match="unsupported type STRING"):
        hub.adapters.load(path)


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"\x08\x07garbage-that-is-not-protobuf", "not a valid ONNX"),
])
def test_broken_onnx_files(tmp_path, content, message):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        hub.adapters.load(path)


def test_truncated_onnx_is_an_input_error(tmp_path):
    data = small_cnn_onnx().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        hub.adapters.load(path)


def test_unknown_format_and_folder_are_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InputError, match="unknown model format"):
        hub.adapters.load(path)
    with pytest.raises(InputError, match="folder"):
        hub.adapters.load(tmp_path)


def test_old_opset_is_lifted_and_newer_ones_are_kept():
    model = small_cnn_onnx()
    model.opset_import[0].version = 11
    normalised = normalise(model)
    assert normalised.onnx_model.opset_import[0].version == 13
    assert normalised.passes[0].name == "convert_opset" and normalised.passes[0].changed == 1
    model.opset_import[0].version = 20
    assert normalise(model).onnx_model.opset_import[0].version == 20


def test_an_opset_the_converter_cannot_lift_is_kept_and_said():
    # An opset 7 BatchNormalization with spatial=0 (per-element statistics): no later opset can say it,
    # so the version converter refuses; onnx2tf may still read the old graph, so it is kept, with the reason.
    stats = [numpy_helper.from_array(np.ones((4, 8, 8), np.float32), n) for n in "abcd"]
    graph = helper.make_graph([helper.make_node("BatchNormalization", ["x", *"abcd"], ["y"], spatial=0)], "bn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], stats)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 4
    normalised = normalise(model)
    assert normalised.onnx_model.opset_import[0].version == 7
    assert "kept opset 7" in normalised.passes[0].detail and "spatial" in normalised.passes[0].detail


def test_tflite_wrong_extension_and_corrupt(tmp_path):
    fake = tmp_path / "model.tflite"
    fake.write_bytes(small_cnn_onnx().SerializeToString())
    assert hub.adapters.find_adapter(fake).framework == "tflite"
    with pytest.raises(InputError, match="not a TFLite flatbuffer"):
        hub.adapters.load(fake)
    corrupt = tmp_path / "c.tflite"
    corrupt.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    with pytest.raises(InputError, match="corrupt TFLite"):
        hub.adapters.load(corrupt)


def test_identity_and_dropout_are_removed_numerics_unchanged():
    model = small_cnn_onnx()
    nodes = list(model.graph.node)
    relu = next(n for n in nodes if n.name == "relu1")
    relu.output[0] = "r1_pre"
    model.graph.node.insert(nodes.index(relu) + 1, helper.make_node("Identity", ["r1_pre"], ["r1_id"]))
    model.graph.node.insert(nodes.index(relu) + 2, helper.make_node("Dropout", ["r1_id"], ["r1"]))
    normalised = normalise(model)
    ops = [n.op_type for n in normalised.onnx_model.graph.node]
    assert "Identity" not in ops and "Dropout" not in ops
    result = next(p for p in normalised.passes if p.name == "remove_identity")
    assert result.changed == 2
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(_run(normalised.onnx_model, {"image": x})[0], _run(small_cnn_onnx(), {"image": x})[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_cnn.onnx", "tiny_cnn_external.onnx"])
def test_onnx_fixtures_match_the_file_in_onnxruntime(name):
    path = FIXTURES / name
    source = hub.adapters.load(path)
    normalised = normalise(source.onnx_model)
    assert normalised.inputs[0].shape == (1, 3, 32, 32)  # dynamic "batch" fixed to 1
    x = np.random.default_rng(7).random((1, 3, 32, 32), dtype=np.float32)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {reference.get_inputs()[0].name: x})[0]
    got = _run(normalised.onnx_model, {normalised.inputs[0].name: x})[0]
    assert np.abs(got - expected).max() / max(1e-6, np.abs(expected).max()) < 1e-4
