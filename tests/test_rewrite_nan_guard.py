"""The drop_softmax_nan_guard rule: torch's dynamo exporter guards attention's softmax with
Where(IsNaN(s), 0, s); the rule drops it (softmax over finite inputs is never NaN), which lets the TF
converter quantize attention to int16x8 (it has no 16x8 NOT_EQUAL). onnxruntime before and after, and
the int16x8 conversion of a small attention block with the guard, run on TFLM."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.convert.calibration import build_calibration
from hub.convert.converter import ConvertOptions, convert
from hub.graph.normalise import normalise
from hub.graph.rewrite import rewrite
from hub.graph.rules import drop_softmax_nan_guard
from hub.graph.shapes import infer_shapes
from hub.tflite.model import read_tflite
from hub.verify.tflm import verify

TOKENS, DIM = 8, 16


def guarded_attention(guard_softmax: bool = True) -> onnx.ModelProto:
    """One attention head as the dynamo exporter writes it: q k^T / sqrt(d) -> Softmax -> Where(IsNaN) -> @ v,
    then a projection. With guard_softmax=False the guard sits on the scores instead (not a softmax: kept)."""
    rng = np.random.default_rng(0)
    weights = {n: numpy_helper.from_array((rng.standard_normal((DIM, DIM)) * 0.3).astype(np.float32), n)
               for n in ("wq", "wk", "wv", "wo")}
    consts = [numpy_helper.from_array(np.array(DIM**-0.5, np.float32), "scale"),
              numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    guarded = "probs" if guard_softmax else "scores"
    nodes = [helper.make_node("MatMul", ["x", w], [w[1]], name=f"proj_{w[1]}") for w in ("wq", "wk", "wv")]
    nodes += [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["qk"], name="qk"),
        helper.make_node("Mul", ["qk", "scale"], ["scores"], name="scale"),
        helper.make_node("IsNaN", [guarded], ["nan"], name="isnan"),
        helper.make_node("Where", ["nan", "zero", guarded], ["safe"], name="guard"),
        helper.make_node("Softmax", ["safe" if not guard_softmax else "scores"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["safe" if guard_softmax else "probs", "v"], ["attn"], name="av"),
        helper.make_node("MatMul", ["attn", "wo"], ["y"], name="out"),
    ]
    order = ["proj_q", "proj_k", "proj_v", "kt", "qk", "scale"]
    order += ["softmax", "isnan", "guard"] if guard_softmax else ["isnan", "guard", "softmax"]
    order += ["av", "out"]
    by_name = {n.name: n for n in nodes}
    graph = helper.make_graph([by_name[n] for n in order], "attention",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, DIM])],
                              [*weights.values(), *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return infer_shapes(model)


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_guard_after_softmax_is_removed_exactly():
    before = guarded_attention()
    after, rewrites = drop_softmax_nan_guard.run(onnx.load_from_string(before.SerializeToString()))
    onnx.checker.check_model(after, full_check=True)
    assert [r.node for r in rewrites] == ["guard"]
    assert not {"IsNaN", "Where"} & {n.op_type for n in after.graph.node}
    for scale in (1.0, 30.0, 1e4):  # large scores: softmax saturates to exact 0 and 1, still no NaN
        x = (np.random.default_rng(1).standard_normal((1, TOKENS, DIM)) * scale).astype(np.float32)
        np.testing.assert_array_equal(run_ort(after, x), run_ort(before, x))


def test_guard_on_anything_but_a_softmax_stays():
    model = guarded_attention(guard_softmax=False)
    after, rewrites = drop_softmax_nan_guard.run(model)
    assert rewrites == [] and {"IsNaN", "Where"} <= {n.op_type for n in after.graph.node}


@pytest.mark.slow
def test_guarded_attention_converts_to_int16x8_and_runs_on_tflm():
    normalised = normalise(guarded_attention(), {})
    calibration = build_calibration(normalised.inputs, None, (-1.0, 1.0), {})
    graph = rewrite(normalised, calibration.samples)
    converted = convert(graph, calibration, ConvertOptions("tflm", "int16x8"))
    model = read_tflite(converted.tflite_bytes)
    assert "NOT_EQUAL" not in {op.name for op in model.ops}
    assert {model.tensors[i].dtype for op in model.ops for i in op.outputs} == {"int16"}
    result = verify(converted.tflite_bytes, normalised.onnx_model, calibration.held_out_samples(), measure_arena=False)
    assert result.fidelity.cosine > 0.999, result.fidelity
