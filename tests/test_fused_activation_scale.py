"""raise_tiny_scales' second hazard: an int16x8 output scale too small for its op's fused RELU6 (TFLM's Prepare
quantizes the bound 6 into int32 with that scale: "no_integer_overflow_from_quantization"), seen on Keras
MobileNetV2-0.35's last depthwise convolutions. The pass raises the scale; the model then runs and still matches
onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hub.check.tflite import analyse_tflite
from hub.knowledge.tflm_kernels import MIN_INT8_INPUT_SCALE, min_output_scale
from hub.tflite.model import read_tflite
from hub.tflite.passes import raise_tiny_scales
from hub.verify.tflm import verify
from tests.conftest import convert_model, tiny_softmax_onnx


def barely_varying_relu6() -> onnx.ModelProto:
    """x(1,16) -> Gemm with weights ~1e-7 -> Clip(0, 6) (fused into the FULLY_CONNECTED as RELU6) -> Gemm: the
    first output spans ~1e-6, so its int16 scale (~3e-11) puts 6 / scale past int32."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((8, 16)) * 1e-7, "b1": np.zeros(8), "w2": rng.standard_normal((4, 8)),
              "b2": np.zeros(4), "lo": np.array(0.0), "hi": np.array(6.0)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Clip", ["h", "lo", "hi"], ["r"], name="relu6"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "barely_varying_relu6",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_an_int16_relu6_output_scale_too_small_for_tflm_is_raised_and_the_model_runs():
    model = barely_varying_relu6()
    data, _ = convert_model(model, "int16x8")
    before = verify(data, None, None)
    assert not before.tflm.invokes and "no_integer_overflow_from_quantization" in (before.tflm.message or "")
    fixed, changed, detail = raise_tiny_scales.run(data)
    assert changed == 1 and "FULLY_CONNECTED #0 output scale" in detail
    tensor = read_tflite(fixed).tensors[read_tflite(fixed).ops[0].outputs[0]]
    assert tensor.scales[0] >= min_output_scale("RELU6")
    x = np.random.default_rng(1).uniform(0, 1, (1, 16)).astype(np.float32)
    after = verify(fixed, model, [{"x": x}])
    assert after.tflm.invokes and after.fidelity.cosine > 0.999, after.fidelity


def test_hub_check_on_the_tflite_says_it_will_not_run_and_why():
    data, _ = convert_model(barely_varying_relu6(), "int16x8")
    findings = [f for f in analyse_tflite(data).findings if "its fused RELU6" in f.message]
    assert len(findings) == 1 and findings[0].severity == "error" and findings[0].op == "FULLY_CONNECTED"
    assert "no_integer_overflow_from_quantization" in findings[0].message


def test_a_tensor_both_hazards_hit_takes_the_larger_scale():
    """A RELU6-fused FULLY_CONNECTED feeding an int8 SOFTMAX, its logits barely varying: the softmax's limit
    (2^-26) is the larger and must win, or TFLM aborts in SOFTMAX's Prepare."""
    model = tiny_softmax_onnx(weight_scale=1e-9)
    nodes = list(model.graph.node)
    nodes[0].output[0] = "pre"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n)
                                    for n, v in (("lo", 0.0), ("hi", 6.0))])
    del model.graph.node[:]
    model.graph.node.extend([nodes[0], helper.make_node("Clip", ["pre", "lo", "hi"], ["logits"], name="relu6"),
                             nodes[1]])
    data, _ = convert_model(model, "int8")
    fixed, changed, _ = raise_tiny_scales.run(data)
    parsed = read_tflite(fixed)
    softmax = next(op for op in parsed.ops if op.name == "SOFTMAX")
    assert changed == 1 and parsed.tensors[softmax.inputs[0]].scales[0] > MIN_INT8_INPUT_SCALE["SOFTMAX"]
    assert verify(fixed, None, None).tflm.invokes
