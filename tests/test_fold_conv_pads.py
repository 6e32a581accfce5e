"""fold_conv_pads: a strided Conv whose padding is SAME's takes auto_pad SAME_UPPER (no PAD in the .tflite);
otherwise only its unread end padding goes. Both keep the outputs (onnxruntime, float32)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.graph.edit import attr
from hub.graph.passes import fold_conv_pads
from hub.graph.shapes import infer_shapes


def strided_conv(size: int, kernel: int = 3, pad: int = 1, stride: int = 2, dilation: int = 1, group: int = 1):
    rng = np.random.default_rng(size)
    weight = rng.standard_normal((4, 4 // group, kernel, kernel)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[pad] * 4, strides=[stride] * 2,
                            dilations=[dilation] * 2, group=group, name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return infer_shapes(model)


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("size, kernel, pad, stride, dilation, group, expect", [
    (33, 3, 1, 2, 1, 1, "SAME"),  # odd size: PyTorch's padding is SAME's
    (33, 3, 1, 2, 1, 4, "SAME"),  # depthwise
    (32, 3, 1, 2, 1, 4, "SAME 4x4"),  # depthwise, even: one zero tap more
    (32, 5, 2, 2, 1, 4, "SAME 6x6"),
    (35, 5, 2, 2, 1, 1, "SAME"),
    (32, 3, 1, 2, 1, 1, [1, 1, 0, 0]),  # even: windows one pixel off SAME's, only the unread end goes
    (224, 7, 3, 2, 1, 1, [3, 3, 2, 2]),  # ResNet stem
    (31, 3, 2, 2, 2, 1, [2, 2, 2, 2]),  # dilated: SAME's padding, but onnxruntime has no dilated SAME_UPPER
    (16, 3, 1, 3, 1, 1, "SAME"),  # stride 3: symmetric SAME
])
def test_fold_keeps_outputs(size, kernel, pad, stride, dilation, group, expect):
    model = strided_conv(size, kernel, pad, stride, dilation, group)
    x = np.random.default_rng(1).standard_normal((1, 4, size, size)).astype(np.float32)
    before = outputs(model, x)
    folded, changed, detail = fold_conv_pads.run(onnx.ModelProto.FromString(model.SerializeToString()))
    node = folded.graph.node[0]
    if isinstance(expect, str):
        assert attr(node, "auto_pad") == b"SAME_UPPER" and attr(node, "pads") is None and changed == 1
        weight = numpy_helper.to_array(next(t for t in folded.graph.initializer if t.name == node.input[1]))
        assert weight.shape[2:] == ((kernel, kernel) if expect == "SAME" else (kernel + 1, kernel + 1))
        assert ("folded into SAME" if expect == "SAME" else "zero-extended kernel") in detail
    else:
        assert list(attr(node, "pads")) == expect and changed == int(expect != [pad] * 4)
        assert "kept as PAD" in detail
    np.testing.assert_allclose(outputs(infer_shapes(folded), x), before, rtol=0, atol=1e-5)


def test_stride_one_same_size_is_left_to_onnx2tf():
    model = strided_conv(16, stride=1)
    _, changed, detail = fold_conv_pads.run(model)
    assert (changed, detail) == (0, "")


def strided_block(size: int) -> onnx.ModelProto:
    """A stem Conv(3x3, stride 2, padding 1), then MobileNetV2's downsampling block: expand 1x1, depthwise
    3x3 stride 2 padding 1, project 1x1; then global pool."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("we", (24, 8, 1, 1)), ("wd", (24, 1, 3, 3)), ("wp", (8, 24, 1, 1)))]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1] * 4, strides=[2, 2], name="stem"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "we"], ["e"], name="expand"),
             helper.make_node("Relu", ["e"], ["re"], name="relu2"),
             helper.make_node("Conv", ["re", "wd"], ["d"], pads=[1] * 4, strides=[2, 2], group=24, name="dw"),
             helper.make_node("Relu", ["d"], ["rd"], name="relu3"),
             helper.make_node("Conv", ["rd", "wp"], ["p"], name="project"),
             helper.make_node("GlobalAveragePool", ["p"], ["out"], name="pool")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _convert(tmp_path, model: onnx.ModelProto, fold: bool):
    from hub import api
    from hub.graph.passes import PASSES, name_of

    path = tmp_path / f"model_{fold}.onnx"
    onnx.save(model, str(path))
    passes = [name_of(p) for p in PASSES if fold or name_of(p) != "fold_conv_pads"]
    return api.convert(path, out=tmp_path / f"out_{fold}", min_cosine=0.99, passes=passes, schedule="default")


def _invoke(tflite_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(tflite_bytes, arena_size=1 << 22)
    interp.set_input(x, 0)
    interp.invoke()
    return np.array(interp.get_output(0))


def test_even_depthwise_loses_its_pad_bit_identically(tmp_path):
    """32x32: the stem (a full Conv) keeps its PAD, the depthwise Conv loses its own, the arena shrinks and the
    int8 outputs stay the same to the bit. (On odd sizes TensorFlow's converter folds the PADs itself.)"""
    folded, plain = _convert(tmp_path, strided_block(32), True), _convert(tmp_path, strided_block(32), False)
    assert plain.model.ops.get("PAD") == 2 and folded.model.ops.get("PAD") == 1 and folded.verification.ok
    assert folded.verification.memory.arena_bytes < plain.verification.memory.arena_bytes
    x = np.random.default_rng(2).integers(-128, 128, (1, 32, 32, 3), dtype=np.int8)
    [a, b] = [_invoke((r.output / "model.tflite").read_bytes(), x) for r in (folded, plain)]
    assert np.array_equal(a, b)
