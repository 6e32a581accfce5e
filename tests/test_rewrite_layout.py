"""Rewrite rules for the layout ops of windowed attention and patch folding: unit_batch_transpose (Swin's 6-D
window partition), col2im (F.fold) and unfold_gather (F.unfold as the dynamo exporter writes it). Each is
exact: onnxruntime before and after each rule agree at atol 1e-6, and every Transpose left is at most 5-D.
The end-to-end case (a module using F.fold, exported by the dynamo exporter after the TorchScript one
refuses, converted and run on TFLM) is in tests/test_adapter_pytorch.py."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.graph import rules
from hub.graph.edit import static_shape
from hub.graph.rules import unit_batch_transpose
from hub.graph.shapes import infer_shapes

RNG = np.random.default_rng(0)


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], outputs: list[str],
           inits: dict[str, np.ndarray], opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return infer_shapes(model)


def _apply(model: onnx.ModelProto, *names: str) -> tuple[onnx.ModelProto, list]:
    """Run the rules in order; the outputs must match the original's under onnxruntime."""
    feeds = {i.name: RNG.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    before = _run(model, feeds)
    after = onnx.ModelProto()
    after.CopyFrom(model)
    rewrites = []
    for name in names:
        after, done = getattr(rules, name).run(after)
        after = infer_shapes(after)
        rewrites += done
    onnx.checker.check_model(after, full_check=True)
    for b, a in zip(before, _run(after, feeds)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    return after, rewrites


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _transpose_ranks(model: onnx.ModelProto) -> list[int]:
    return [len(static_shape(model, n.input[0])) for n in model.graph.node if n.op_type == "Transpose"]


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64)))


# --- unit_batch_transpose -------------------------------------------------------------------------------

def _window_partition(tail: str) -> onnx.ModelProto:
    """Swin's window partition on a (1, 8, 8, 4) map with 4x4 windows: Reshape -> 6-D Transpose ->
    `tail` ("reshape": Reshape to (4, 16, 4); "add": an Add reads the 6-D result; "output": it is the output)."""
    nodes = [helper.make_node("Reshape", ["x", "s6"], ["w6"]),
             helper.make_node("Transpose", ["w6"], ["t6"], perm=[0, 1, 3, 2, 4, 5])]
    inits = {"s6": np.array([1, 2, 4, 2, 4, 4], np.int64)}
    if tail == "reshape":
        nodes.append(helper.make_node("Reshape", ["t6", "s3"], ["y"]))
        inits["s3"] = np.array([4, 16, 4], np.int64)
    elif tail == "add":
        nodes.append(helper.make_node("Add", ["t6", "b"], ["y"]))
        inits["b"] = RNG.standard_normal((1, 2, 2, 4, 4, 4)).astype(np.float32)
    return _model(nodes, {"x": [1, 8, 8, 4]}, ["t6" if tail == "output" else "y"], inits)


@pytest.mark.parametrize("tail", ["reshape", "add", "output"])
def test_unit_batch_transpose_makes_swins_window_partition_5d(tail):
    after, rewrites = _apply(_window_partition(tail), "unit_batch_transpose")
    assert [(r.op, r.into) for r in rewrites] == [("Transpose", "5-D Transpose")]
    assert _transpose_ranks(after) == [5]
    # The feeding Reshape writes the 5-D shape itself; a Reshape back appears only where a reader needs 6-D.
    expected = ["Reshape", "Transpose", "Reshape"] + (["Add"] if tail == "add" else [])
    assert _ops(after) == expected


def test_unit_batch_transpose_squeezes_an_input_no_reshape_writes_and_unit_axes_the_perm_moves():
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 3, 2, 5, 4])]
    after, rewrites = _apply(_model(nodes, {"x": [1, 3, 2, 1, 4, 5]}, ["y"], {}), "unit_batch_transpose")
    assert len(rewrites) == 1 and _transpose_ranks(after) == [4]


def test_unit_batch_transpose_merges_axes_that_move_together():
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2, 4, 5])]
    after, rewrites = _apply(_model(nodes, {"x": [2, 2, 3, 2, 2, 2]}, ["y"], {}), "unit_batch_transpose")
    assert len(rewrites) == 1 and _transpose_ranks(after) == [4]


def test_unit_batch_transpose_leaves_what_no_unambiguous_steps_do():
    """Four real axes of one size: every step's shape is one onnx2tf misreads, so the 6-D Transpose stays
    (hub check: TFLM's TRANSPOSE takes at most 5-D)."""
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 2, 4, 3, 5])]
    after, rewrites = _apply(_model(nodes, {"x": [1, 1, 2, 2, 2, 2]}, ["y"], {}), "unit_batch_transpose")
    assert rewrites == [] and _transpose_ranks(after) == [6]


def _read_right_by_onnx2tf(model: onnx.ModelProto) -> bool:
    """Every Transpose at most 5-D, on a shape onnx2tf does not take for channels-last whatever it holds."""
    shapes = [list(static_shape(model, n.input[0])) for n in model.graph.node if n.op_type == "Transpose"]
    return all(len(s) <= 5 and not unit_batch_transpose.misread(s) for s in shapes)


# --- col2im (F.fold) and unfold_gather (F.unfold) --------------------------------------------------------

def _fold(k: int, stride: int, image: tuple[int, int], blocks: int, channels: int = 3) -> onnx.ModelProto:
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], strides=[stride, stride])
    return _model([node], {"x": [1, channels * k * k, blocks]}, ["y"],
                  {"image": np.array(image, np.int64), "block": np.array([k, k], np.int64)})


@pytest.mark.parametrize("k, image", [(2, (8, 6)), (3, (6, 9))])
def test_col2im_with_stride_equal_to_the_block_is_a_5d_transpose(k, image):
    model = _fold(k, k, image, (image[0] // k) * (image[1] // k))
    after, rewrites = _apply(model, "col2im", "unit_batch_transpose")
    assert [r.op for r in rewrites] == ["Col2Im", "Transpose"] and "Col2Im" not in _ops(after)
    assert _transpose_ranks(after) == [5]


@pytest.mark.parametrize("channels, image, transposes", [(48, (4, 4), 2), (8, (2, 2), 0)])
def test_col2im_on_a_map_of_equal_axes_is_done_in_steps_onnx2tf_reads_right(channels, image, transposes):
    """MobileViT-v2 at 64x64: 2x2 patches folded into a 4x4 map, (1,48,2,2,2,2) -> (48,2,2,2,2), which onnx2tf
    takes for channels-last; into a 2x2 map the perm only moves unit axes (a Reshape)."""
    model = _fold(2, 2, image, (image[0] // 2) * (image[1] // 2), channels)
    after, rewrites = _apply(model, "col2im", "unit_batch_transpose")
    assert [r.op for r in rewrites] == ["Col2Im", "Transpose"] and _ops(after).count("Transpose") == transposes
    assert _read_right_by_onnx2tf(after)


def test_col2im_leaves_overlapping_blocks():
    """Stride 1 with 2x2 blocks sums overlapping pixels: no reshape can do that."""
    after, rewrites = _apply(_fold(2, 1, (4, 4), 9), "col2im")
    assert rewrites == [] and _ops(after) == ["Col2Im"]


def _unfold(k: int, h: int, w: int, table=None) -> onnx.ModelProto:
    """torch 2.13's dynamo export of F.unfold(x, k, stride=k): a (k, blocks) index Gather per spatial axis,
    then Transpose (0, 1, 2, 4, 3, 5) and Reshape to (1, C*k*k, blocks)."""
    rows = table if table is not None else np.arange(h // k)[None, :] * k + np.arange(k)[:, None]
    cols = np.arange(w // k)[None, :] * k + np.arange(k)[:, None]
    nodes = [_const("rows", rows), _const("cols", cols),
             helper.make_node("Gather", ["x", "rows"], ["g1"], axis=2),
             helper.make_node("Gather", ["g1", "cols"], ["g2"], axis=4),
             helper.make_node("Transpose", ["g2"], ["t"], perm=[0, 1, 2, 4, 3, 5]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    model = _model(nodes, {"x": [1, 4, h, w]}, ["y"], {"shape": np.array([1, 4 * k * k, (h // k) * (w // k)], np.int64)})
    from hub.graph.passes import fold_constants  # the Constants become initializers, as normalise leaves them

    return fold_constants.run(model)[0]


def test_unfold_gathers_become_reshape_and_transpose_of_at_most_5d():
    after, rewrites = _apply(_unfold(2, 8, 6), "unfold_gather", "unit_batch_transpose")
    assert [r.op for r in rewrites] == ["Gather", "Gather", "Transpose", "Transpose"]
    assert "Gather" not in _ops(after) and max(_transpose_ranks(after)) <= 5
    assert all(len(static_shape(after, n.output[0])) <= 5 for n in after.graph.node)


@pytest.mark.parametrize("h", [4, 2])
def test_unfold_on_a_map_of_equal_axes_leaves_shapes_onnx2tf_reads_right(h):
    after, rewrites = _apply(_unfold(2, h, h), "unfold_gather", "unit_batch_transpose")
    assert "Gather" not in _ops(after) and _read_right_by_onnx2tf(after)


def test_unfold_gather_leaves_other_index_tables():
    table = np.array([[0, 2, 4, 6], [1, 3, 5, 6]])  # the last block repeats a row: not a plain unfold
    after, rewrites = _apply(_unfold(2, 8, 6, table), "unfold_gather")
    assert len(rewrites) == 1 and _ops(after).count("Gather") == 1
