"""The rules for what tf2onnx writes for Keras LayerNormalization (Sqrt -> Reciprocal, Neg): onnxruntime before vs
after on onnx.helper graphs; and a Keras model with a LayerNormalization converts to int8 with no float island."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from hub.artifacts import Rewrite
from tests.test_passes import make, ops
from tests.test_rewrite_norms import rewrite


def _inverse_std(form: str) -> onnx.ModelProto:
    """y = x * 1/sqrt(v + eps) with v a per-row variance, as tf2onnx writes tf.math.rsqrt (or as Div(1, .))."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["x2"]),
             helper.make_node("ReduceMean", ["x2"], ["v"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["std"]),
             (helper.make_node("Reciprocal", ["std"], ["inv"], name="recip") if form == "reciprocal" else
              helper.make_node("Div", ["one", "std"], ["inv"], name="recip")),
             helper.make_node("Mul", ["x", "inv"], ["y"])]
    inits = {"eps": np.array(1e-6, np.float32), **({"one": np.array(1.0, np.float32)} if form == "div" else {})}
    return make(nodes, {"x": [1, 6, 16]}, {"y": [1, 6, 16]}, inits, opset=13)


def test_reciprocal_sqrt_becomes_one_pow():
    for form, op in (("reciprocal", "Reciprocal(Sqrt)"), ("div", "Div(Sqrt)")):
        after, rewrites = rewrite(_inverse_std(form), "reciprocal_sqrt")
        assert rewrites == [Rewrite(node="recip", op=op, into="Pow(v, -0.5)")]
        assert ops(after) == ["Mul", "ReduceMean", "Add", "Pow", "Mul"]


def test_reciprocal_sqrt_leaves_a_sqrt_read_elsewhere():
    model = _inverse_std("reciprocal")
    model.graph.output.append(helper.make_tensor_value_info("std", onnx.TensorProto.FLOAT, [1, 6, 1]))
    after, rewrites = rewrite(model, "reciprocal_sqrt")
    assert rewrites == [] and "Sqrt" in ops(after)


def test_neg_becomes_mul_by_minus_one():
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
             helper.make_node("Neg", ["m"], ["n"], name="neg"), helper.make_node("Add", ["x", "n"], ["y"])]
    after, rewrites = rewrite(make(nodes, {"x": [1, 6, 16]}, {"y": [1, 6, 16]}, {}, opset=13), "neg_to_mul")
    assert rewrites == [Rewrite(node="neg", op="Neg", into="Mul by -1")] and ops(after) == ["ReduceMean", "Mul", "Add"]
