"""arange_gather: a Gather of every index in order (the dynamo exporter's `as_strided`, Swin's pooler) is a Reshape.
Exact under onnxruntime; a Gather that skips, repeats or reorders indices is left."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.graph.rules import arange_gather
from hub.graph.shapes import infer_shapes

RNG = np.random.default_rng(0)


def _gather(shape: list[int], index: np.ndarray, axis: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(index.astype(np.int64), "i")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return infer_shapes(model)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("shape, index, axis", [
    ([32], np.arange(32).reshape(1, 32, 1, 1), 0),  # Swin's pooler as the dynamo exporter writes it
    ([2, 6, 3], np.arange(6).reshape(2, 3), 1),
    ([4, 5], np.arange(-5, 0), -1),  # negative indices count from the end
])
def test_gather_of_every_index_in_order_is_a_reshape(shape, index, axis):
    model = _gather(shape, index, axis)
    x = RNG.standard_normal(shape).astype(np.float32)
    expected = _run(model, x)
    after, rewrites = arange_gather.run(model)
    after = infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    assert [n.op_type for n in after.graph.node] == ["Reshape"] and len(rewrites) == 1
    np.testing.assert_array_equal(_run(after, x), expected)


@pytest.mark.parametrize("index", [np.array([1, 0, 2, 3]), np.array([0, 1, 2]), np.array([0, 0, 1, 2, 3])])
def test_reordered_partial_or_repeated_indices_are_left(index):
    _, rewrites = arange_gather.run(_gather([4, 3], index, 0))
    assert rewrites == []
