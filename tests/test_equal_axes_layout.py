"""equal_axes_layout: a token map reshaped to 4-D with C == H == W, which onnx2tf 1.29 lays out wrong (PVTv2,
SegFormer, Swin at 16 channels on a 16x16 map). The default run checks the rule is exact (onnxruntime before and
after, atol 1e-6) and fires only on that shape; the heavy test converts a pyramid-transformer stage transition
with the real onnx2tf and TFLM, which without the rule diverges (float32 cosine 0.8303 against onnxruntime; 1.0000 with it)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.graph.rules import equal_axes_layout
from hub.graph.shapes import infer_shapes

RNG = np.random.default_rng(0)


def _model(nodes: list[onnx.NodeProto], x: list[int], inits: dict[str, np.ndarray], output: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return infer_shapes(model)


def _tokens_to_conv(c: int, hw: int, nhwc_first: bool) -> onnx.ModelProto:
    """(1, hw*hw, c) tokens -> (1, c, hw, hw) image -> Conv k3/s2/p1, either as PVTv2's patch embedding writes it
    (Reshape to (B, H, W, C), Transpose (0,3,1,2)) or as its spatial reduction does (Transpose, Reshape)."""
    inits = {"w": RNG.standard_normal((8, c, 3, 3)).astype(np.float32)}
    if nhwc_first:
        inits["s"] = np.array([1, hw, hw, c], np.int64)
        nodes = [helper.make_node("Reshape", ["x", "s"], ["v"]),
                 helper.make_node("Transpose", ["v"], ["img"], perm=[0, 3, 1, 2])]
    else:
        inits["s"] = np.array([1, c, hw, hw], np.int64)
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                 helper.make_node("Reshape", ["t", "s"], ["img"])]
    nodes.append(helper.make_node("Conv", ["img", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    return _model(nodes, [1, hw * hw, c], inits)


def _roll(c: int) -> onnx.ModelProto:
    """Swin's shifted-window roll on tokens viewed as (1, H, W, C): Slice + Concat along H, then back to tokens."""
    inits = {"s": np.array([1, c, c, c], np.int64), "t": np.array([1, c * c, c], np.int64),
             "a0": np.array([0], np.int64), "a2": np.array([2], np.int64), "end": np.array([c], np.int64),
             "ax": np.array([1], np.int64)}
    nodes = [helper.make_node("Reshape", ["x", "s"], ["m"]),
             helper.make_node("Slice", ["m", "a2", "end", "ax"], ["tail"]),
             helper.make_node("Slice", ["m", "a0", "a2", "ax"], ["head"]),
             helper.make_node("Concat", ["tail", "head"], ["rolled"], axis=1),
             helper.make_node("Reshape", ["rolled", "t"], ["y"])]
    return _model(nodes, [1, c * c, c], inits)


def _rewritten(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list]:
    """The rule's output, checked against the original under onnxruntime."""
    x = RNG.standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    before = _run(model, x)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after, rewrites = equal_axes_layout.run(copy)
    after = infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    np.testing.assert_allclose(_run(after, x), before, atol=1e-6)
    return after, rewrites


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _perms(model: onnx.ModelProto) -> list[list[int]]:
    return [list(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]


def test_nhwc_reshape_then_transpose_becomes_two_channels_last_transposes():
    after, rewrites = _rewritten(_tokens_to_conv(8, 8, nhwc_first=True))
    assert [r.op for r in rewrites] == ["Transpose"]
    assert _perms(after) == [[0, 2, 3, 1], [0, 2, 3, 1]]


def test_nchw_reshape_gets_the_transpose_pair():
    after, rewrites = _rewritten(_tokens_to_conv(8, 8, nhwc_first=False))
    assert [r.op for r in rewrites] == ["Reshape"]
    assert _perms(after) == [[0, 2, 1], [0, 2, 3, 1], [0, 3, 1, 2]]


def test_any_reader_of_the_map_reads_it_through_the_pair():
    after, rewrites = _rewritten(_roll(4))
    assert len(rewrites) == 1
    slices = [n for n in after.graph.node if n.op_type == "Slice"]
    assert all(n.input[0].endswith("_nchw") for n in slices)


@pytest.mark.parametrize("c, hw", [(16, 8), (8, 16)])
def test_maps_whose_axes_differ_are_left(c, hw):
    model = _tokens_to_conv(c, hw, nhwc_first=False)
    _, rewrites = equal_axes_layout.run(model)
    assert rewrites == []


def test_a_map_that_is_a_graph_output_is_left():
    inits = {"s": np.array([1, 4, 4, 4], np.int64)}
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [1, 16, 4], inits)
    _, rewrites = equal_axes_layout.run(model)
    assert rewrites == []


@pytest.mark.heavy
def test_token_map_with_equal_axes_converts_and_runs_on_tflm(tmp_path):
    """PVTv2's stage transition at 16 channels on a 16x16 map, converted by the real onnx2tf and run on TFLM."""
    from hub import api  # why here: heavy test only; the default run needs no converter

    model = _tokens_to_conv(16, 16, nhwc_first=True)
    path = tmp_path / "stage.onnx"
    onnx.save(model, str(path))
    report = api.convert(path, quantize="float32", out=tmp_path / "out")
    assert report.verification.ok
    assert report.verification.fidelity.cosine > 0.9999
