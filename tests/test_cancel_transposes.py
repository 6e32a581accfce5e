"""cancel_transposes: a Transpose and its inverse around elementwise ops with scalar operands (tf2onnx's export of a
Keras Rescaling layer before the first convolution) are dropped, exactly, and the input then moves channels-last
in the .tflite as a Keras user's samples are."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hub.adapters import load
from hub.artifacts import LoadOptions
from hub.convert.layout import channels_last, decide_layouts
from hub.graph.normalise import normalise, normalise_source
from hub.graph.passes import cancel_transposes
from tests.hub_models import BY_NAME, save


def rescaled_conv(inner_perm: list[int]) -> onnx.ModelProto:
    """x NCHW -> Transpose(0,2,3,1) -> Mul(1/127.5) -> Add(-1) -> Transpose(inner_perm) -> Conv, as tf2onnx writes a
    Keras Rescaling layer."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Mul", ["nhwc", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "offset"], ["shifted"]),
             helper.make_node("Transpose", ["shifted"], ["nchw"], perm=inner_perm),
             helper.make_node("Conv", ["nchw", "w"], ["y"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale"),
             numpy_helper.from_array(np.array([-1.0], np.float32), "offset"), numpy_helper.from_array(w, "w")]
    graph = helper.make_graph(nodes, "rescaled_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_pair_is_dropped_and_the_outputs_are_the_same():
    model = rescaled_conv([0, 3, 1, 2])
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    expected = run(model, x)
    out, changed, detail = cancel_transposes.run(onnx.ModelProto.FromString(model.SerializeToString()))
    assert changed == 1 and "Transpose pairs" in detail
    assert [n.op_type for n in out.graph.node] == ["Mul", "Add", "Conv"]
    np.testing.assert_allclose(run(out, x), expected, rtol=1e-6, atol=1e-5)
    assert decide_layouts(normalise(model).onnx_model)[0].perm == channels_last(4)


def test_a_transpose_that_is_not_the_inverse_stays():
    model = rescaled_conv([0, 3, 2, 1])  # not the inverse: the Conv reads the map transposed
    _, changed, _ = cancel_transposes.run(model)
    assert changed == 0


def test_keras_mobilenetv3_input_moves_channels_last_as_keras_holds_it(tmp_path):
    """Keras MobileNetV3Small's own Rescaling (include_preprocessing) through the Keras adapter: 10 Transpose pairs
    around it and its hard-swish scalars, one of them between the input and the first Conv. Kept, the input stayed
    channels-first in the .tflite and a Keras user's (N, H, W, C) samples were refused."""
    model = BY_NAME["keras_mobilenetv3_small"]
    source = load(save(model, "keras", tmp_path))
    graph = normalise_source(source, LoadOptions())
    assert next(p for p in graph.passes if p.name == "cancel_transposes").changed >= 1
    layout = decide_layouts(graph.onnx_model, source.source_layouts)[0]
    assert layout.perm == channels_last(4) and layout.framework_layout == "NHWC" and "Conv" in layout.reason
