"""The normalisation rewrite rules (LayerNormalization, RMSNorm, InstanceNormalization): each on small
onnx.helper graphs, onnxruntime before vs after within float rounding (the rewrites are exact maths:
atol 1e-5 on unit-scale outputs), and end to end through onnx2tf and TFLM on trained fixtures."""
from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
from onnx import helper

from hub.artifacts import Rewrite
from tests.test_passes import make, ops, rand, run_ort

ATOL = 1e-5  # float32 rounding of the same maths in another order


def rewrite(model: onnx.ModelProto, rule: str, atol: float = ATOL) -> tuple[onnx.ModelProto, list[Rewrite]]:
    """Apply `rule` to a copy and check onnxruntime's outputs did not move beyond `atol`."""
    feeds = {i.name: rand(*[d.dim_value for d in i.type.tensor_type.shape.dim], scale=2.0) for i in model.graph.input}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after, rewrites = importlib.import_module(f"hub.passes.{rule}").run(copy)
    onnx.checker.check_model(after, full_check=True)
    for b, a in zip(run_ort(model, feeds), run_ort(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    return after, rewrites


# --- decompose_layernorm ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, with_bias, opset", [
    ((1, 10, 32), -1, True, 17),  # a transformer's [N, T, C]
    ((1, 10, 32), -1, False, 18),  # no bias; ReduceMean takes axes as an input
    ((1, 8, 6, 6), 1, True, 17),  # NCHW over C, H, W
    ((1, 8, 6, 6), -1, True, 18),  # over W only
])
def test_decompose_layernorm_matches_the_op(shape, axis, with_bias, opset):
    normed = shape[axis % len(shape):]
    inits = {"s": rand(*normed) + 1, **({"b": rand(*normed)} if with_bias else {})}
    node = helper.make_node("LayerNormalization", ["x", "s", *(["b"] if with_bias else [])], ["y"], axis=axis,
                            epsilon=1e-5, name="ln")
    after, rewrites = rewrite(make([node], {"x": list(shape)}, {"y": list(shape)}, inits, opset=opset),
                              "decompose_layernorm")
    assert rewrites == [Rewrite(node="ln", op="LayerNormalization", into="builtins")]
    assert "LayerNormalization" not in ops(after)
    assert ops(after).count("Add") == 1 + with_bias and ops(after).count("ReduceMean") == 2


def test_decompose_layernorm_leaves_out_a_unit_scale():
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln")
    after, rewrites = rewrite(make([node], {"x": [1, 4, 16]}, {"y": [1, 4, 16]}, {"s": np.ones(16, np.float32)},
                                   opset=17), "decompose_layernorm")
    assert len(rewrites) == 1 and ops(after)[-1] == "Div" and after.graph.node[-1].output[0] == "y"


def test_decompose_layernorm_keeps_a_node_whose_mean_output_is_read():
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "m"], name="ln")
    model = make([node], {"x": [1, 4, 16]}, {"y": [1, 4, 16], "m": [1, 4, 1]}, {"s": rand(16)}, opset=17)
    after, rewrites = rewrite(model, "decompose_layernorm")
    assert rewrites == [] and ops(after) == ["LayerNormalization"]
