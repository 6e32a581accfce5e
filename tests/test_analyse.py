"""hub check: one test per rule family on small onnx.helper graphs, .tflite files from the real
converter, CLI exit codes, and that checking imports neither tensorflow nor torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.check.constraints import rule_hint
from hub.check.onnx import analyse_onnx
from hub.check.tflite import analyse_tflite, check_rescale_scales, check_softmax_scales
from hub.knowledge.onnx2tf_ops import LOWERINGS
from hub.graph.rules import RULES
from hub.knowledge.tflm_kernels import KERNELS, MISSING_HINTS, ONNX_LAYER
from hub.tflite.model import read_tflite
from tests.conftest import ROOT, run_hub, sign_onnx, small_cnn_onnx

F = TensorProto.FLOAT


def model_of(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def vi(name: str, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def unary(op: str, shape=(1, 8), dtype=F, **attrs) -> onnx.ModelProto:
    return model_of([helper.make_node(op, ["x"], ["y"], name="n", **attrs)], [vi("x", shape, dtype)],
                    [vi("y", None, dtype)])


def errors(result) -> list:
    return [f for f in result.findings if f.severity == "error"]


def node(result, name="n") -> dict:
    return next(n for n in result.nodes if n["name"] == name)


# --- the tables ------------------------------------------------------------------------------------

def test_tables_cite_sources_and_agree():
    assert all(k.source.startswith("kernels/") and k.source.endswith(".cc") and k.types for k in KERNELS.values())
    for low in LOWERINGS.values():
        assert low.source == f"onnx2tf/ops/{low.onnx_op}.py"
        for op in low.tflite_ops:  # every TFLite op named is either a TFLM kernel or explains its absence
            assert op in KERNELS or op in MISSING_HINTS or op.startswith("FlexOp:") or low.hint or low.fails, (low.onnx_op, op)


def test_every_op_a_rewrite_rule_unblocks_is_one_the_check_knows_and_names_the_rule_for():
    """A rule's UNBLOCKS are ONNX ops in the onnx2tf lowering table, and the check's hint for each names the
    rule with its DOES; the knowledge tables name no rule themselves (the rules are the one place)."""
    names = [rule.__name__.rsplit(".", 1)[-1] for rule in RULES]
    for name, rule in zip(names, RULES):
        assert isinstance(rule.DOES, str) and rule.DOES, name
        for op in rule.UNBLOCKS:
            assert op in LOWERINGS, (name, op)
            assert f"the {name} rule {rule.DOES}" in rule_hint(op), (name, op)
    table_hints = [low.hint for low in LOWERINGS.values()] + list(MISSING_HINTS.values())
    assert not [(name, h) for name in names for h in table_hints if name in h]
    assert all(op in LOWERINGS for op in ONNX_LAYER.values())


# --- per-node rules ----------------------------------------------------------------------------------

def test_compatible_cnn_fuses_relu_into_conv():
    result = analyse_onnx(small_cnn_onnx())
    assert result.compatible and not errors(result)
    assert node(result, "conv1")["tflite_ops"] == ["CONV_2D"]
    assert node(result, "dwconv")["tflite_ops"] == ["DEPTHWISE_CONV_2D"]
    assert node(result, "relu1")["verdict"] == "fused" and node(result, "relu1")["tflite_ops"] == []


def test_missing_tflm_kernel_gelu():
    result = analyse_onnx(model_of([helper.make_node("Gelu", ["x"], ["y"], name="n")], [vi("x", (1, 8))],
                                   [vi("y", None)], opset=20))
    [f] = errors(result)
    assert not result.compatible and f.node == "n" and f.tflite_ops == ["GELU"]
    assert "not in TFLM" in f.message and "gelu_tanh" in f.hint
    assert node(result)["verdict"] == "error"


def test_flex_op_erf():
    [f] = errors(analyse_onnx(unary("Erf")))
    assert "Flex" in f.message and f.op == "Erf"


def test_no_onnx2tf_converter_for_op():
    m = model_of([helper.make_node("Histogram", ["x"], ["y"], name="n")], [vi("x", (4,))], [vi("y", (4,))])
    [f] = errors(analyse_onnx(m))
    assert "no converter" in f.message


def test_custom_domain_op():
    n = helper.make_node("MyOp", ["x"], ["y"], name="n", domain="com.example")
    m = helper.make_model(helper.make_graph([n], "g", [vi("x", (1, 4))], [vi("y", (1, 4))]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    [f] = errors(analyse_onnx(m))
    assert "custom op" in f.message and "com.example" in f.message


def test_input_count_limit_concat():
    names = [f"x{i}" for i in range(14)]
    m = model_of([helper.make_node("Concat", names, ["y"], name="n", axis=1)], [vi(n, (1, 2)) for n in names],
                 [vi("y", (1, 28))])
    [f] = errors(analyse_onnx(m))
    assert f.message == "Concat has 14 inputs; TFLM's CONCATENATION allows 10."
    assert "steps of at most 10" in f.hint and "chain_concat" in f.hint
    ok = model_of([helper.make_node("Concat", names[:10], ["y"], name="n", axis=1)],
                  [vi(n, (1, 2)) for n in names[:10]], [vi("y", (1, 20))])
    assert analyse_onnx(ok).compatible


def test_int64_arithmetic():
    m = model_of([helper.make_node("Add", ["a", "b"], ["y"], name="n")],
                 [vi("a", (1, 4), TensorProto.INT64), vi("b", (1, 4), TensorProto.INT64)], [vi("y", (1, 4), TensorProto.INT64)])
    [f] = errors(analyse_onnx(m, quantize="float32"))
    assert "int64" in f.message and "int32" in f.hint


def test_float_only_kernel_under_int8():
    int8 = analyse_onnx(unary("Exp"), quantize="int8")
    [f] = errors(int8)
    assert f.message == "EXP gets int8 tensors; TFLM's EXP kernel takes float32." and "--quantize float32" in f.hint
    assert analyse_onnx(unary("Exp"), quantize="float32").compatible


def test_rank_limit_transpose():
    m = unary("Transpose", shape=(1, 2, 2, 2, 2, 2), perm=[0, 2, 1, 3, 4, 5])
    [f] = errors(analyse_onnx(m))
    assert "6-D" in f.message and "at most 5-D" in f.message
    assert analyse_onnx(unary("Transpose", shape=(1, 2, 3, 4), perm=[0, 2, 1, 3])).compatible


def test_broadcast_rank_limit_mul():
    m = model_of([helper.make_node("Mul", ["a", "b"], ["y"], name="n")],
                 [vi("a", (1, 2, 3, 4, 5)), vi("b", (1, 1, 1, 1, 5))], [vi("y", (1, 2, 3, 4, 5))])
    [f] = errors(analyse_onnx(m))
    assert "broadcasts 5-D" in f.message and "at most 4-D" in f.message


def test_constant_operand_needed_by_resize():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node_ = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="n", mode="nearest")
    const = model_of([node_], [vi("x", (1, 3, 4, 4))], [vi("y", (1, 3, 8, 8))], [scales])
    assert analyse_onnx(const).compatible
    assert node(analyse_onnx(const))["tflite_ops"] == ["RESIZE_NEAREST_NEIGHBOR"]
    runtime = model_of([node_], [vi("x", (1, 3, 4, 4)), vi("scales", (4,))], [vi("y", None)])
    f = errors(analyse_onnx(runtime))[0]
    assert "run-time tensor" in f.message and "onnx2tf needs its value" in f.message


def test_attribute_conditions_pick_the_tflite_op():
    two = numpy_helper.from_array(np.array(2.0, np.float32), "e")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "e")
    pow_ = helper.make_node("Pow", ["x", "e"], ["y"], name="n")
    square = analyse_onnx(model_of([pow_], [vi("x", (1, 4))], [vi("y", (1, 4))], [two]))
    assert square.compatible and node(square)["tflite_ops"] == ["MUL"]
    root = analyse_onnx(model_of([pow_], [vi("x", (1, 4))], [vi("y", (1, 4))], [half]))
    assert not root.compatible and node(root)["tflite_ops"] == ["POW"]
    lo, hi = numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    relu6 = model_of([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="n")], [vi("x", (1, 4))],
                     [vi("y", (1, 4))], [lo, hi])
    assert node(analyse_onnx(relu6))["tflite_ops"] == ["RELU6"]


def test_runtime_axes_and_scalar_inputs():
    m = model_of([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="n")],
                 [vi("x", (2, 3)), vi("axes", (1,), TensorProto.INT64)], [vi("y", None)], opset=13)
    [f] = errors(analyse_onnx(m))
    assert "input 1 (axes)" in f.message and "onnx2tf needs its value" in f.message
    scalar = model_of([helper.make_node("Add", ["x", "s"], ["y"], name="n")], [vi("x", (1, 3)), vi("s", ())],
                      [vi("y", (1, 3))])
    [f] = errors(analyse_onnx(scalar))
    assert f.node == "s" and "scalar" in f.message


def test_gather_runtime_int64_indices():
    m = model_of([helper.make_node("Gather", ["x", "i"], ["y"], name="n")],
                 [vi("x", (5, 3)), vi("i", (2,), TensorProto.INT64)], [vi("y", (2, 3))])
    [f] = errors(analyse_onnx(m, quantize="float32"))
    assert "int64 indices" in f.message and "int32" in f.hint


def test_dynamic_input_shape():
    m = model_of([helper.make_node("Relu", ["x"], ["y"], name="n")], [vi("x", ("N", 8))], [vi("y", ("N", 8))])
    [f] = errors(analyse_onnx(m))
    assert f.node == "x" and "dynamic shape" in f.message and "--input-shape" in f.hint


def test_data_dependent_output_shape():
    m = model_of([helper.make_node("NonZero", ["x"], ["y"], name="n")], [vi("x", (2, 3))],
                 [vi("y", None, TensorProto.INT64)])
    messages = " ".join(f.message for f in errors(analyse_onnx(m)))
    assert "WHERE" in messages or "depends on the data" in messages


def test_hybrid_dynamic_quantization():
    m = model_of([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="n")], [vi("x", (1, 8))],
                 [vi("q", (1, 8), TensorProto.UINT8)])
    assert any("hybrid" in f.message for f in errors(analyse_onnx(m)))


def test_float16_tensors_are_flagged():
    m = model_of([helper.make_node("Relu", ["x"], ["y"], name="n")], [vi("x", (1, 8), TensorProto.FLOAT16)],
                 [vi("y", (1, 8), TensorProto.FLOAT16)])
    result = analyse_onnx(m, quantize="float32")
    [f] = [f for f in result.findings if f.op == "Tensor"]
    assert "float16" in f.message and f.severity == "warning"


def test_int8_softmax_over_many_classes_is_a_rewrite_hub_convert_makes():
    """TFLM's int8 SOFTMAX aborts at invoke when 512+ classes tie with the top one (flat logits); hub convert's
    softmax_int16 pass has it write int16 and QUANTIZE back, so on a graph hub converts it is a rewrite, and the
    verdict "will run". A .tflite file with that SOFTMAX stays a risk (hub cannot change it), naming hub convert."""
    wide = model_of([helper.make_node("Softmax", ["x"], ["y"], name="n", axis=-1)], [vi("x", (1, 1000))],
                    [vi("y", (1, 1000))])
    result = analyse_onnx(wide)
    [f] = result.findings
    assert f.severity == "rewrite" and "1,000 classes" in f.message and "softmax_int16" in f.message
    assert result.compatible and result.verdict == "will run" and node(result, "n")["verdict"] == "ok"
    assert analyse_onnx(wide, quantize="float32").findings == []
    assert analyse_onnx(wide, quantize="int16x8").findings == []  # int16 output: the sum may reach 2^16
    assert analyse_onnx(unary("Softmax", axis=-1)).findings == []  # 8 classes cannot reach 512


def test_int8_softmax_over_many_classes_in_a_tflite_file_stays_a_risk_naming_hub_convert():
    from hub.tflite.passes import softmax_int16
    from tests.test_softmax_int16 import softmax_tflite

    result = analyse_tflite(softmax_tflite(1000))
    [f] = result.findings
    assert f.severity == "risk" and result.verdict == "unknown" and "hub convert" in f.hint
    assert analyse_tflite(softmax_int16.run(softmax_tflite(1000))[0]).findings == []  # hub convert's output


def test_module_path_and_json_shape():
    n = helper.make_node("Gelu", ["x"], ["y"], name="/layer1/layer1.0/act/Gelu")
    m = model_of([n], [vi("x", (1, 8))], [vi("y", (1, 8))], opset=20)
    d = analyse_onnx(m).to_dict()
    assert set(d) == {"compatible", "verdict", "target", "quantize", "findings", "nodes"}
    assert d["nodes"][0]["module"] == "layer1.0.act"
    assert set(d["findings"][0]) == {"node", "op", "tflite_ops", "severity", "message", "hint"}
    json.dumps(d)


def padded_maxpool_onnx(relu: bool) -> onnx.ModelProto:
    """Conv -> [Relu] -> MaxPool(3x3, stride 2, pads 1: not TF's SAME on 16x16) -> Conv + residual Add, as a
    ResNet stem; without the Relu the pool's input can be negative, so hub cannot pad it with 0 (issue 12)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 8, 3, 3)), ("b2", (8,)))]
    stem = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem")]
    stem += [helper.make_node("Relu", ["c1"], ["r1"], name="stem_relu")] if relu else []
    nodes = stem + [
        helper.make_node("MaxPool", ["r1" if relu else "c1"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], name="pool"),
        helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Add", ["c2", "p"], ["y"], name="add")]
    return model_of(nodes, [vi("image", (1, 3, 16, 16))], [vi("y", (1, 8, 8, 8))], inits)


def test_padded_maxpool_on_a_signed_input_is_an_int8_hazard():
    from hub.graph.normalise import normalise

    result = analyse_onnx(normalise(padded_maxpool_onnx(relu=False), {}).onnx_model)
    [f] = errors(result)
    assert f.op == "MaxPool" and f.tflite_ops == ["PADV2", "MAX_POOL_2D"] and "-3.4e38" in f.message
    assert analyse_onnx(normalise(padded_maxpool_onnx(relu=False), {}).onnx_model, quantize="float32").compatible
    after_relu = normalise(padded_maxpool_onnx(relu=True), {})  # pad_maxpool pads with 0: nothing to flag
    assert analyse_onnx(after_relu.onnx_model).compatible
    assert [n.op_type for n in after_relu.onnx_model.graph.node] == ["Conv", "Relu", "Pad", "MaxPool", "Conv", "Add"]


def test_tflm_aborts_where_check_predicts_the_add_rescale(tmp_path):
    """The measurement behind the rule: the converted hazard has a PADV2 of -3.4e38, the ADD after the pool
    gets an input scale ~1e36, hub check on the .tflite flags that ADD, and TFLM aborts preparing it."""
    from hub.verify.tflm import verify
    from tests.conftest import convert_model

    data, _ = convert_model(padded_maxpool_onnx(relu=False))
    model = read_tflite(data)
    assert "PADV2" in model.op_histogram()
    [f] = check_rescale_scales(model)
    assert f.op == "ADD" and "aborts" in f.message
    assert not analyse_tflite(data).compatible
    outcome = verify(data, None, None)
    assert not outcome.tflm.loads and "SIGABRT" in outcome.tflm.message, outcome.tflm


# --- .tflite files made by the real converter ------------------------------------------------------

def test_tflite_small_cnn_int8_and_float32(converted_check_models):
    for quantize in ("int8", "float32"):
        result = analyse_tflite(converted_check_models[("cnn", quantize)])
        assert result.compatible, [f.message for f in result.findings]
        assert result.quantize == quantize
        assert {n["op"] for n in result.nodes} >= {"CONV_2D", "DEPTHWISE_CONV_2D"}


def test_tflite_softmax_scale_abort_hazard(converted_check_models):
    data = converted_check_models[("tiny_softmax", "int8")]
    [f] = check_softmax_scales(read_tflite(data))
    assert f.op == "SOFTMAX" and "aborts" in f.message
    result = analyse_tflite(data)
    assert not result.compatible and any(n["verdict"] == "error" and n["op"] == "SOFTMAX" for n in result.nodes)


def test_tflite_missing_kernel(converted_check_models):
    result = analyse_tflite(converted_check_models[("sign", "float32")])
    [f] = errors(result)
    assert f.op == "SIGN" and "not in TFLM" in f.message


def test_cli_exit_codes(converted_check_models, tmp_path):
    ok, bad, tfl = tmp_path / "ok.onnx", tmp_path / "sign.onnx", tmp_path / "sign.tflite"
    onnx.save(small_cnn_onnx(), str(ok))
    onnx.save(sign_onnx(), str(bad))
    tfl.write_bytes(converted_check_models[("sign", "float32")])
    assert run_hub("check", ok).returncode == 0
    proc = run_hub("check", bad, "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["findings"][0]["tflite_ops"] == ["SIGN"]
    assert run_hub("check", tfl).returncode == 1
    assert run_hub("check", tmp_path / "missing.onnx").returncode == 2


def test_check_imports_neither_tensorflow_nor_torch(converted_check_models, tmp_path):
    onnx_path, tfl_path = tmp_path / "m.onnx", tmp_path / "m.tflite"
    onnx.save(small_cnn_onnx(), str(onnx_path))
    tfl_path.write_bytes(converted_check_models[("cnn", "int8")])
    code = textwrap.dedent(f"""
        import sys
        from hub import api
        assert api.check({str(onnx_path)!r}).compatible
        assert api.check({str(tfl_path)!r}).compatible
        heavy = [m for m in ("tensorflow", "torch") if m in sys.modules]
        assert not heavy, heavy
        # networkx costs more CPU to import than analysing a ResNet-50: only blocked models need it (host_split)
        assert "networkx" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["ic", "vww", "kws", "ad"])
def test_reference_int8_with_a_dynamic_batch_signature_is_compatible(name):
    # TensorFlow's converter writes shape_signature [-1, ...]; TFLM reads only `shape` and runs these.
    from tests.conftest import MLPERF

    result = analyse_tflite((MLPERF / name / "reference_int8.tflite").read_bytes())
    assert result.compatible and result.quantize == "int8"
    assert any("dynamic batch" in f.message and f.severity == "warning" for f in result.findings)


# --- fixes from the node-test benchmark (bench/check_accuracy.py) ---------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_argmax_int64_output_fails_at_tflm_invoke(op):
    """onnx2tf keeps ONNX's int64 indices; TFLM's ARG_MAX/ARG_MIN write int32 only (arg_min_max.cc). hub's
    argmax_int32 flatbuffer pass retypes them when they go straight to the outputs, not when computed on."""
    used = model_of([helper.make_node(op, ["x"], ["i"], name="n", axis=-1, keepdims=1),
                     helper.make_node("Cast", ["i"], ["y"], name="cast", to=TensorProto.INT32)], [vi("x", (2, 3, 4))],
                    [vi("y", (2, 3, 1), TensorProto.INT32)])
    returned = model_of([helper.make_node(op, ["x"], ["y"], name="n", axis=-1, keepdims=1)], [vi("x", (2, 3, 4))],
                        [vi("y", (2, 3, 1), TensorProto.INT64)])
    for quantize in ("float32", "int8"):
        [f] = [f for f in errors(analyse_onnx(used, quantize=quantize)) if f.op == op]
        assert f.tflite_ops == [op.upper().replace("ARGM", "ARG_M")] and "writes int32 only" in f.message
        assert analyse_onnx(returned, quantize=quantize).compatible


def test_elu_alpha_decomposes_with_exp():
    """onnx2tf's Elu.py: alpha 1 -> ELU; any other alpha -> EXP-based formula, int8 EXP is not in TFLM."""
    assert analyse_onnx(unary("Elu", alpha=1.0), quantize="int8").compatible
    other = analyse_onnx(unary("Elu", alpha=2.0), quantize="int8")
    assert "EXP" in node(other)["tflite_ops"] and any("EXP" in f.message for f in errors(other))
    assert analyse_onnx(unary("Elu", alpha=2.0), quantize="float32").compatible


def test_depth_to_space_crd_needs_6d_transpose():
    crd = analyse_onnx(unary("DepthToSpace", shape=(1, 8, 2, 3), blocksize=2, mode="CRD"), quantize="float32")
    [f] = errors(crd)
    assert "6-D" in f.message and "DCR" in f.hint
    assert analyse_onnx(unary("DepthToSpace", shape=(1, 8, 2, 3), blocksize=2, mode="DCR")).compatible


def test_float64_and_bfloat16_tensors():
    double = model_of([helper.make_node("Cast", ["x"], ["y"], name="n", to=F)], [vi("x", (3, 4), TensorProto.DOUBLE)],
                      [vi("y", (3, 4))])
    [f] = errors(analyse_onnx(double, quantize="float32"))
    assert "float64" in f.message and f.tflite_ops == ["CAST"]
    bf16 = model_of([helper.make_node("Cast", ["x"], ["y"], name="n", to=TensorProto.BFLOAT16)], [vi("x", (3, 4))],
                    [vi("y", (3, 4), TensorProto.BFLOAT16)])
    assert any("bfloat16" in f.message and "no TensorFlow type" in f.message for f in errors(analyse_onnx(bf16)))


def test_int8_inputs_convert_only_when_onnx2tf_casts_them():
    def binary(op):
        return model_of([helper.make_node(op, ["x", "y"], ["z"], name="n")],
                        [vi("x", (3, 4), TensorProto.INT8), vi("y", (3, 4), TensorProto.INT8)],
                        [vi("z", (3, 4), TensorProto.INT8)])
    assert analyse_onnx(binary("Div"), quantize="float32").compatible  # Div.py casts to float32
    [f, *_] = errors(analyse_onnx(binary("Min"), quantize="float32"))
    assert "int8" in f.message and f.op == "Input"


def test_mod_fmod_converts_as_floor_mod():
    m = model_of([helper.make_node("Mod", ["x", "y"], ["z"], name="n", fmod=1)], [vi("x", (6,)), vi("y", (6,))],
                 [vi("z", (6,))])
    for quantize in ("float32", "int8"):  # int8: kept in float32 between DEQUANTIZE and QUANTIZE
        result = analyse_onnx(m, quantize=quantize)
        assert result.compatible and node(result)["tflite_ops"] == ["FLOOR_MOD"]


def test_conv_weights_must_be_static():
    m = model_of([helper.make_node("Conv", ["x", "w"], ["y"], name="n", kernel_shape=[3, 3])],
                 [vi("x", (1, 1, 7, 5)), vi("w", (1, 1, 3, 3))], [vi("y", (1, 1, 5, 3))])
    [f] = errors(analyse_onnx(m))
    assert "input 1 (w)" in f.message and "onnx2tf needs its value" in f.message


def test_constant_node_feeding_a_graph_output_is_converted():
    """normalise folds constants except graph outputs' producers; onnx2tf must convert those."""
    m = model_of([helper.make_node("OptionalHasElement", [""], ["y"], name="n")], [], [vi("y", (), TensorProto.BOOL)],
                 opset=18)
    result = analyse_onnx(m)
    assert not result.compatible and node(result)["verdict"] == "error"


def _expanded_softmax(axis: int, shape=(3, 4, 5)) -> onnx.ModelProto:
    axes = numpy_helper.from_array(np.array([axis], np.int64), "axes")
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1, axes=[axis]),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Exp", ["d"], ["e"], name="exp"),
             helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
             helper.make_node("Div", ["e", "s"], ["y"], name="div")]
    return model_of(nodes, [vi("x", shape)], [vi("y", shape)], [axes], opset=13)


def test_expanded_softmax_on_axis_1_fuses_into_softmax():
    """The TFLite converter fuses Exp/ReduceSum/Div back into SOFTMAX when the axis ends up last."""
    fused = analyse_onnx(_expanded_softmax(1), quantize="int8")
    assert fused.compatible and node(fused, "div")["tflite_ops"] == ["SOFTMAX"]
    assert node(fused, "exp")["verdict"] == "fused"
    kept = analyse_onnx(_expanded_softmax(2), quantize="int8")  # stays EXP, which TFLM has in float32 only
    assert not kept.compatible and node(kept, "exp")["tflite_ops"] == ["EXP"]


def test_grid_sample_lowers_to_builtins_in_float32_only():
    m = model_of([helper.make_node("GridSample", ["x", "grid"], ["y"], name="n", mode="linear")],
                 [vi("x", (1, 1, 4, 4)), vi("grid", (1, 6, 6, 2))], [vi("y", (1, 1, 6, 6))], opset=20)
    f32 = analyse_onnx(m, quantize="float32")
    assert f32.compatible and "GATHER" in node(f32)["tflite_ops"]
    [f] = errors(analyse_onnx(m, quantize="int8"))
    assert "calibrating" in f.message
    cubic = model_of([helper.make_node("GridSample", ["x", "grid"], ["y"], name="n", mode="cubic")],
                     [vi("x", (1, 1, 4, 4)), vi("grid", (1, 6, 6, 2))], [vi("y", (1, 1, 6, 6))], opset=20)
    assert any("SELECT" in f.message for f in errors(analyse_onnx(cubic, quantize="float32")))


def test_int8_rank_broadcast_between_model_inputs_fails_calibration():
    two_inputs = model_of([helper.make_node("Add", ["a", "b"], ["y"], name="n")],
                          [vi("a", (3, 4, 5)), vi("b", (5,))], [vi("y", (3, 4, 5))])
    assert analyse_onnx(two_inputs, quantize="float32").compatible
    [f] = errors(analyse_onnx(two_inputs, quantize="int8"))
    assert "calibrating" in f.message and "broadcast" in f.message
    bias = numpy_helper.from_array(np.ones(5, np.float32), "b")  # a constant operand broadcasts fine
    const = model_of([helper.make_node("Add", ["a", "b"], ["y"], name="n")], [vi("a", (3, 4, 5))],
                     [vi("y", (3, 4, 5))], [bias])
    assert analyse_onnx(const, quantize="int8").compatible


def test_int16_inputs_follow_the_kernel_table():
    def binary(op):
        return model_of([helper.make_node(op, ["x", "y"], ["z"], name="n")],
                        [vi("x", (3, 4), TensorProto.INT16), vi("y", (3, 4), TensorProto.INT16)],
                        [vi("z", (3, 4), TensorProto.INT16 if op == "Mul" else TensorProto.BOOL)])
    assert analyse_onnx(binary("Mul"), quantize="float32").compatible
    [f] = errors(analyse_onnx(binary("Equal"), quantize="float32"))
    assert "int16" in f.message and f.tflite_ops == ["EQUAL"]


def test_float_fallback_does_not_cover_float64():
    m = model_of([helper.make_node("Mod", ["x", "y"], ["z"], name="n", fmod=1)],
                 [vi("x", (6,), TensorProto.DOUBLE), vi("y", (6,), TensorProto.DOUBLE)], [vi("z", (6,), TensorProto.DOUBLE)])
    assert any("float64" in f.message for f in errors(analyse_onnx(m, quantize="int8")))


def test_resize_and_reshape_take_the_static_output_shape_in_float32_only():
    node_ = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="n", mode="nearest")
    m = model_of([node_], [vi("x", (1, 1, 2, 2)), vi("scales", (4,))], [vi("y", (1, 1, 4, 4))])
    assert analyse_onnx(m, quantize="float32").compatible  # onnx2tf reads the sizes off the output shape
    [f] = errors(analyse_onnx(m, quantize="int8"))
    assert "calibration fails" in f.message and "--quantize float32" in f.hint
    anti = model_of([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="n", mode="linear", antialias=1)],
                    [vi("x", (1, 1, 4, 4))], [vi("y", (1, 1, 2, 2))],
                    [numpy_helper.from_array(np.array([1, 1, .5, .5], np.float32), "scales")], opset=18)
    assert any("antialias" in f.message for f in errors(analyse_onnx(anti, quantize="float32")))


def test_rms_norm_eyelike_and_instance_norm_rows():
    rms = model_of([helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="n", axis=-1)],
                   [vi("x", (2, 3, 5)), vi("s", (5,))], [vi("y", (2, 3, 5))], opset=23)
    assert any("lower-rank scale" in f.message for f in errors(analyse_onnx(rms, quantize="float32")))
    full = model_of([helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="n", axis=0)],
                    [vi("x", (2, 3, 5)), vi("s", (2, 3, 5))], [vi("y", (2, 3, 5))], opset=23)
    assert analyse_onnx(full, quantize="int8").compatible  # SQUARE stays float32 between (DE)QUANTIZE
    eye = model_of([helper.make_node("EyeLike", ["x"], ["y"], name="n", k=1)], [vi("x", (4, 5))], [vi("y", (4, 5))])
    assert any("symbolic" in f.message for f in errors(analyse_onnx(eye, quantize="float32")))
    inorm = model_of([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="n")],
                     [vi("x", (1, 2, 3, 3)), vi("s", (2,)), vi("b", (2,))], [vi("y", (1, 2, 3, 3))])
    assert any("input 1 (s)" in f.message for f in errors(analyse_onnx(inorm, quantize="float32")))


def test_layer_norm_expansion_flattening_several_inputs_fails_int8():
    def flatten_model(with_weight: bool):
        nodes = [helper.make_node("Flatten", ["x"], ["x2"], name="n", axis=1)]
        inputs, out = [vi("x", (2, 3, 4, 5))], "x2"
        if with_weight:
            nodes += [helper.make_node("Flatten", ["w"], ["w2"], axis=0), helper.make_node("Mul", ["x2", "w2"], ["y"])]
            inputs, out = inputs + [vi("w", (3, 4, 5))], "y"
        return model_of(nodes, inputs, [vi(out, (2, 60))])
    assert analyse_onnx(flatten_model(False), quantize="int8").compatible  # flatten_negative_axis3 runs
    assert analyse_onnx(flatten_model(True), quantize="float32").compatible
    assert any("LayerNormalization" in f.message for f in errors(analyse_onnx(flatten_model(True), quantize="int8")))


def test_int16_input_refused_outside_the_ops_seen_converting_it():
    m = model_of([helper.make_node("Min", ["x", "y"], ["z"], name="n")],
                 [vi("x", (3, 4), TensorProto.INT16), vi("y", (3, 4), TensorProto.INT16)], [vi("z", (3, 4), TensorProto.INT16)])
    assert any(f.op == "Input" and "int16" in f.message for f in errors(analyse_onnx(m, quantize="float32")))


def test_isnan_and_isinf_lower_to_builtins_in_float32_only():
    for dtype in (TensorProto.FLOAT, TensorProto.FLOAT16):
        m = unary("IsNaN", shape=(6,), dtype=dtype)
        m.graph.output[0].type.tensor_type.elem_type = TensorProto.BOOL
        result = analyse_onnx(m, quantize="float32")
        assert result.compatible and node(result)["tflite_ops"] == ["NOT_EQUAL"]
        assert any("crashed" in f.message for f in errors(analyse_onnx(m, quantize="int8")))
    one_sided = unary("IsInf", shape=(6,), detect_negative=0)
    one_sided.graph.output[0].type.tensor_type.elem_type = TensorProto.BOOL
    assert any("one-sided" in f.message for f in errors(analyse_onnx(one_sided, quantize="float32")))


def test_cast_to_float64_model_output_leaves_no_op():
    out = model_of([helper.make_node("Cast", ["x"], ["y"], name="n", to=TensorProto.DOUBLE)], [vi("x", (3, 4))],
                   [vi("y", (3, 4), TensorProto.DOUBLE)])
    result = analyse_onnx(out, quantize="float32")
    assert result.compatible and node(result)["tflite_ops"] == []
    inner = model_of([helper.make_node("Cast", ["x"], ["d"], name="n", to=TensorProto.DOUBLE),
                      helper.make_node("Cast", ["d"], ["y"], name="back", to=F)], [vi("x", (3, 4))], [vi("y", (3, 4))])
    assert any("float64" in f.message for f in errors(analyse_onnx(inner, quantize="float32")))


def test_model_without_inputs_and_group_norm_and_lp_norm_rows():
    const = helper.make_node("Constant", [], ["y"], name="n",
                             value=numpy_helper.from_array(np.ones((2, 2), np.float32)))
    [f] = errors(analyse_onnx(model_of([const], [], [vi("y", (2, 2))])))
    assert "no run-time input" in f.message
    gn = model_of([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="n", num_groups=2)],
                  [vi("x", (1, 4, 2, 2)), vi("s", (4,)), vi("b", (4,))], [vi("y", (1, 4, 2, 2))], opset=21)
    assert any("input 1 (s)" in f.message for f in errors(analyse_onnx(gn, quantize="float32")))
    l2 = unary("LpNormalization", shape=(2, 2, 3), axis=0, p=2)
    assert analyse_onnx(l2, quantize="float32").compatible
    assert any("crashed" in f.message for f in errors(analyse_onnx(l2, quantize="int8")))
    assert analyse_onnx(unary("LpNormalization", shape=(2, 2, 3), axis=0, p=1), quantize="int8").compatible


def test_int8_input_read_only_by_identity_converts():
    m = model_of([helper.make_node("Identity", ["x"], ["y"], name="n")], [vi("x", (3,), TensorProto.INT8)],
                 [vi("y", (3,), TensorProto.INT8)])
    assert analyse_onnx(m, quantize="float32").compatible


def test_build_graph_names_nodes_as_the_check_does():
    from hub.graph.network import build_graph, op_nodes, ordered_nodes

    m = small_cnn_onnx()
    g = build_graph(m)
    assert [n for n, _ in op_nodes(g)] == [n for n, _ in ordered_nodes(m)]
    assert all("tensor" in d and "dtype" in d for _, _, d in g.edges(data=True))


def test_full_corpus_rows_pool_shape_softsign_blocked_quant():
    assert any("legalise" in f.message for f in errors(analyse_onnx(unary("Softsign"), quantize="float32")))
    lp2 = unary("LpPool", shape=(1, 3, 8, 8), kernel_shape=[2, 2], p=2)
    assert analyse_onnx(lp2, quantize="float32").compatible and "SQRT" in node(analyse_onnx(lp2))["tflite_ops"]
    assert not analyse_onnx(unary("LpPool", shape=(1, 3, 8, 8), kernel_shape=[2, 2], p=3), quantize="float32").compatible
    dilated = unary("MaxPool", shape=(1, 1, 4, 4), kernel_shape=[2, 2], dilations=[2, 2])
    assert any("dilated" in f.message for f in errors(analyse_onnx(dilated, quantize="float32")))
    clip = model_of([helper.make_node("Shape", ["x"], ["y"], name="n", end=10)], [vi("x", (3, 4, 5))],
                    [vi("y", (3,), TensorProto.INT64)], opset=15)
    assert any("start/end" in f.message for f in errors(analyse_onnx(clip, quantize="float32")))
    blocked = model_of([helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="n", axis=1, block_size=2,
                                         output_dtype=TensorProto.INT16)],
                       [vi("x", (3, 4)), vi("s", (3, 2))], [vi("y", (3, 4), TensorProto.INT16)], opset=21)
    assert "TILE" in node(analyse_onnx(blocked, quantize="float32"))["tflite_ops"]
    assert not analyse_onnx(blocked, quantize="float32").compatible


def test_float64_model_input_cannot_be_calibrated():
    out = model_of([helper.make_node("Cast", ["x"], ["y"], name="n", to=F)], [vi("x", (3, 4), TensorProto.DOUBLE)],
                   [vi("y", (3, 4))])
    assert any(f.op == "Input" and "calibrate" in f.message for f in errors(analyse_onnx(out, quantize="int8")))


def test_blocked_tail_gets_a_cut_point_and_a_blocked_middle_does_not():
    """networkx's reachability: a TopK at the end can run on the host after cutting the model at its
    input; the same TopK feeding more layers cannot be cut off."""
    w = numpy_helper.from_array(np.ones((10, 8), np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((10, 10), np.float32), "w2")
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    layers = [helper.make_node("Gemm", ["x", "w"], ["l"], transB=1, name="fc"),
              helper.make_node("Relu", ["l"], ["r"], name="relu"),
              helper.make_node("Gemm", ["r", "w2"], ["l2"], transB=1, name="fc2")]
    tail = model_of(layers + [helper.make_node("TopK", ["l2", "k"], ["v", "i"], name="topk")], [vi("x", (1, 8))],
                    [vi("v", (1, 3)), vi("i", (1, 3), TensorProto.INT64)], inits=[w, w2, k])
    [split] = [f for f in analyse_onnx(tail).findings if f.severity == "info"]
    assert "cut the model at l2 and TFLM runs the other 3 nodes; run topk on the host" in split.message
    middle = model_of([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk")] + [
        helper.make_node("Gemm", ["v", "w3"], ["y"], transB=1, name="fc")], [vi("x", (1, 8))], [vi("y", (1, 4))],
        inits=[k, numpy_helper.from_array(np.ones((4, 3), np.float32), "w3")])
    assert not [f for f in analyse_onnx(middle).findings if f.severity == "info"]
