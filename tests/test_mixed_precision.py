"""--quantize auto: mixed int8/int16x8 flatbuffers (hub.tflite.mixed) checked op by op and run on TFLM against the
source, the search (hub.optimize.precision) staying int8 where int8 is good, and the quantize table's answers."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper, numpy_helper

from hub import api
from hub.artifacts import ConvertedModel, MixedPrecision, PrecisionStep
from hub.convert.calibration import build_calibration
from hub.convert.converter import ConvertOptions, convert
from hub.errors import InputError
from hub.graph.normalise import normalise
from hub.knowledge.int16_kernels import INT16_OPS, runs_int16
from hub.optimize import precision
from hub.targets import Quantize, resolve
from hub.tflite import mixed, offline_plan, split_weights
from hub.tflite.edit import unpack
from hub.tflite.mixed import splice, twins, widen
from hub.tflite.model import read_tflite
from hub.verify.tflm import verify
from tests.conftest import ROOT, convert_model, run_hub, small_cnn_onnx

DIGITS = ["fixtures/digits_cnn_state.pth", "--factory", "fixtures/torch_models.py:DigitsCNN",
          "--input-shape", "1,1,8,8", "--calibration", "fixtures/digits_train.npz"]


@pytest.fixture(scope="module")
def cnn_pair(small_cnn_int8_tflite) -> tuple[bytes, bytes, object]:
    """The small CNN converted int8 (the session's) and int16x8, same calibration: (int8, int16x8, normalised)."""
    int16, normalised = convert_model(small_cnn_onnx(), "int16x8")
    return small_cnn_int8_tflite[0].read_bytes(), int16, normalised


def _conv_chain_onnx() -> onnx.ModelProto:
    """Conv 3x3 (3->8) -> Relu -> depthwise 3x3 -> Relu -> Conv 1x1 (8->8), pooled: little but filters to lose in
    int16x8, the first one's channels scaled over 1-30x as a folded BatchNorm leaves them (NCHW 1x3x16x16)."""
    rng = np.random.default_rng(3)
    gains = np.geomspace(1.0, 30.0, 8).astype(np.float32)[:, None, None, None]
    arrays = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.2 * gains, "w2": rng.standard_normal((8, 1, 3, 3)) * 0.3,
              "w3": rng.standard_normal((8, 8, 1, 1)) * 0.3}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"]),
             helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
             helper.make_node("Flatten", ["p"], ["out"])]
    graph = helper.make_graph(nodes, "conv_chain", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                   [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture(scope="module")
def chain_int16() -> tuple[ConvertedModel, object]:
    """_conv_chain_onnx converted int16x8 with its float32 twin (the same graph unquantized): (converted,
    normalised)."""
    normalised = normalise(_conv_chain_onnx(), {})
    samples = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    return convert(normalised, samples, ConvertOptions("tflm", "int16x8"), float32_twin=True), normalised


def test_quantize_table_takes_auto_on_tflm_only():
    assert resolve("tflm", "auto")[1] is Quantize.AUTO
    assert Quantize.AUTO.converted_as is Quantize.INT8 and Quantize.AUTO.widest is Quantize.INT16X8
    for target in ("ethos-u", "tflite"):
        with pytest.raises(InputError, match="--quantize auto is refused"):
            resolve(target, "auto")


def test_int16_table_is_the_kernel_rows():
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SOFTMAX", "QUANTIZE"} <= set(INT16_OPS)
    assert not runs_int16("EXP") and not runs_int16("NOT_EQUAL")  # float-only / no int16 case in their kernels


def test_spliced_model_has_int16_ops_between_quantize_boundaries_and_matches_the_source(cnn_pair):
    int8, int16, normalised = cnn_pair
    found = twins(int8, int16)
    assert [t.name for t in found][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    promoted = found[1]  # the depthwise conv alone: int8 on both sides of it
    mixed = splice(int8, int16, [promoted])
    model = read_tflite(mixed)
    dw = next(op for op in model.ops if op.name == "DEPTHWISE_CONV_2D")
    x, w, b = (model.tensors[i] for i in dw.inputs)
    assert (x.dtype, w.dtype, b.dtype, model.tensors[dw.outputs[0]].dtype) == ("int16", "int8", "int64", "int16")
    before = next(op for op in model.ops if op.outputs == [dw.inputs[0]])
    after = next(op for op in model.ops if op.inputs == [dw.outputs[0]])
    assert before.name == after.name == "QUANTIZE"
    assert model.tensors[before.inputs[0]].dtype == "int8" and model.tensors[after.outputs[0]].dtype == "int8"
    assert model.op_histogram()["QUANTIZE"] == 2 and len(model.ops) == len(read_tflite(int8).ops) + 2
    checked = verify(mixed, normalised.onnx_model, None)  # onnxruntime on the source graph, TFLM on the mix
    assert checked.ok and checked.fidelity.cosine > 0.999


def _refused(data: bytes, op: int) -> bytes:
    """`data` with op `op`'s filter typed uint8: TFLM's conv kernels refuse it in Prepare ("Hybrid models are not
    supported"), as they would a twin whose int16 kernel rejects its tensors."""
    model = unpack(data)
    model.subgraphs[0].tensors[int(model.subgraphs[0].operators[op].inputs[1])].type = schema.TensorType.UINT8
    return offline_plan.pack(model, len(data))


def test_a_twin_tflm_refuses_is_left_int8_and_the_mix_measured_again(cnn_pair):
    int8, int16, normalised = cnn_pair
    conv, dw = twins(int8, int16)[:2]
    broken = _refused(int16, dw.twin)
    samples = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    measure = precision._measurer(normalised, samples, None, precision.Goal("cosine", 0.99), None, None)
    search = precision._Search(int8, broken, twins(int8, broken), measure)
    data, step = search.mix([dw, conv], "top 2")  # TFLM refuses the depthwise twin: it stays int8, the conv is promoted
    assert step.invokes and step.cosine > 0.99 and search.refused == [dw]
    assert [op.split()[0] for op in step.int16_ops] == ["CONV_2D"]
    assert step.promoted_compute == 1  # what was promoted, not what was asked for
    assert {read_tflite(data).tensors[i].dtype for op in read_tflite(data).ops if op.name == "DEPTHWISE_CONV_2D"
            for i in op.inputs} == {"int8", "int32"}


def test_widened_int16_ranges_keep_the_model_exact_on_tflm(cnn_pair):
    int8, int16, normalised = cnn_pair
    wide = widen(int16, 4.0)
    before, after = read_tflite(int16), read_tflite(wide)
    conv = next(op for op in before.ops if op.name == "CONV_2D")
    out_before, out_after = before.tensors[conv.outputs[0]], after.tensors[conv.outputs[0]]
    assert out_after.scales[0] == pytest.approx(4 * out_before.scales[0])  # a free range: widened
    logits = before.tensors[before.ops[-1].outputs[0]]
    assert after.tensors[before.ops[-1].outputs[0]].scales[0] == pytest.approx(4 * logits.scales[0])
    checked = verify(wide, normalised.onnx_model, None)
    assert checked.ok and checked.fidelity.cosine > 0.999


def test_split_filters_run_on_tflm_closer_to_the_source_than_int16x8(chain_int16):
    converted, normalised = chain_int16
    int16, float32 = converted.tflite_bytes, converted.float32_bytes
    convs = split_weights.candidates(int16, float32)
    assert [read_tflite(int16).ops[i].name for i in convs] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    data = split_weights.split(int16, float32, convs)
    model = read_tflite(data)
    assert model.op_histogram()["ADD"] == 3 and len(model.ops) == len(read_tflite(int16).ops) + 6
    for hi, lo in ((model.ops[0], model.ops[1]), (model.ops[3], model.ops[4])):
        add = next(op for op in model.ops if op.name == "ADD" and hi.outputs[0] in op.inputs)
        assert lo.outputs[0] in add.inputs and lo.inputs[0] == hi.inputs[0]
        assert hi.fused_activation == lo.fused_activation == "NONE" and add.fused_activation == "RELU"
        assert model.tensors[add.outputs[0]].dtype == "int16" and model.tensors[lo.inputs[1]].dtype == "int8"
        # the residual's step is finer than the filter's by ~127x on every channel
        lo_scales, hi_scales = (np.asarray(model.tensors[op.inputs[1]].scales) for op in (lo, hi))
        assert np.all(lo_scales < hi_scales / 50)
    plain, halves = verify(int16, normalised.onnx_model, None), verify(data, normalised.onnx_model, None)
    assert halves.ok and halves.fidelity.rmse < plain.fidelity.rmse / 10  # measured: 0.0386 -> 0.0006


def test_a_convolution_fused_with_an_activation_that_bends_is_not_split(chain_int16):
    converted, _ = chain_int16
    model = unpack(converted.tflite_bytes)
    model.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.TANH
    tanh = offline_plan.pack(model, len(converted.tflite_bytes))  # y_hi clipped at y's range would change tanh(y)
    assert split_weights.candidates(tanh, converted.float32_bytes) == split_weights.candidates(
        converted.tflite_bytes, converted.float32_bytes)[1:]


def _on_the_grid(int16: bytes, float32: bytes) -> bytes:
    """`float32` with each filter replaced by the int16x8 model's, dequantized: a quantization-aware-trained model's."""
    m16, f32 = unpack(int16), unpack(float32)
    filters = {m16.subgraphs[0].tensors[op.outputs[0]].name: m16.subgraphs[0].tensors[op.inputs[1]]
               for op in m16.subgraphs[0].operators if len(op.inputs) > 1}
    for op in f32.subgraphs[0].operators:
        w = filters.get(f32.subgraphs[0].tensors[op.outputs[0]].name)
        if w is not None and w.type == schema.TensorType.INT8:
            shape = [1] * len(w.shape)
            shape[w.quantization.quantizedDimension] = -1
            values = np.frombuffer(bytes(m16.buffers[w.buffer].data), np.int8).reshape(w.shape) * np.asarray(
                w.quantization.scale, np.float32).reshape(shape)
            f32.buffers[f32.subgraphs[0].tensors[op.inputs[1]].buffer].data = np.frombuffer(
                values.astype(np.float32).tobytes(), np.uint8)
    return offline_plan.pack(f32, 2 * len(float32))


def test_filters_already_on_the_int8_grid_split_into_a_zero_residual_that_changes_nothing(chain_int16):
    converted, normalised = chain_int16
    int16, qat = converted.tflite_bytes, _on_the_grid(converted.tflite_bytes, converted.float32_bytes)
    data = split_weights.split(int16, qat, split_weights.candidates(int16, qat))
    plain, halves = verify(int16, normalised.onnx_model, None), verify(data, normalised.onnx_model, None)
    assert halves.ok and halves.fidelity.max_abs_error == pytest.approx(plain.fidelity.max_abs_error, abs=1e-6)


def test_auto_splits_the_fewest_filters_that_meet_the_target(chain_int16):
    converted, normalised = chain_int16
    int16, float32 = converted.tflite_bytes, converted.float32_bytes
    samples = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    plain = verify(int16, normalised.onnx_model, samples.held_out_samples()).fidelity
    goal = precision.Goal("cosine", 1 - (1 - plain.cosine) / 4)  # int16x8 misses it
    measure = precision._measurer(normalised, samples, None, goal, None, None)
    job = precision._Search(int16, int16, [], measure)
    whole = precision._step("int16x8", -1, int16, *measure(int16)[:2])
    data, chosen = job.split(float32, goal, (int16, whole))
    assert not goal.met(whole.score) and goal.met(chosen.score)
    k = int(chosen.label.split()[2])
    assert chosen.label == f"int16x8, first {k} of 3 conv filters split"
    assert read_tflite(data).op_histogram()["ADD"] == k
    assert all(not goal.met(s.score) for s in job.steps if int(s.label.split()[2]) < k)  # the fewest that hold


def test_auto_stays_int8_where_int8_meets_the_target(cnn_pair):
    int8, _, normalised = cnn_pair
    samples = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    converted = ConvertedModel(int8, "int8", "tflm", samples.summary())
    chosen, mixed = precision.auto(normalised, samples, converted, ConvertOptions("tflm", "int8"), None,
                                   precision.Goal("cosine", 0.99))
    assert chosen.tflite_bytes == int8 and chosen.quantize == "auto"
    assert [s.label for s in mixed.steps] == ["int8"] and mixed.chosen.cosine >= 0.99 and not mixed.chosen.int16_ops


@pytest.mark.heavy
def test_auto_promotes_until_an_unreachable_cosine_then_keeps_the_best(cnn_pair):
    int8, int16, normalised = cnn_pair
    samples = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    goal = precision.Goal("cosine", 1.0)
    measure = precision._measurer(normalised, samples, None, goal, None, None)
    first = precision._step("int8", 0, int8, *measure(int8)[:2])
    candidates = twins(int8, int16)
    data, mixed = precision.search(int8, int16, candidates, lambda: (precision.rank(None, candidates), "network order"),
                                   goal, measure, first)
    assert mixed.steps[1].promoted_compute == -1 and len(mixed.steps) > 2
    assert mixed.chosen.score >= first.score  # never below int8's fidelity
    assert verify(data, normalised.onnx_model, None).ok


@pytest.mark.heavy
def test_digits_auto_meets_max_accuracy_drop_on_tflm(tmp_path):
    out = tmp_path / "digits"
    result = run_hub("convert", *DIGITS, "--quantize", "auto", "--data", "fixtures/digits_val.npz",
                     "--max-accuracy-drop", "0.5", "--out", str(out), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads((Path(out) / "report.json").read_text())
    assert report["quantize"] == "auto" and report["mixed_precision"]["metric"] == "accuracy_drop"
    assert report["mixed_precision"]["chosen"]["score"] <= 0.5


def _hardswish_cnn():
    """small_cnn_onnx with its first Relu a HardSwish (opset 14): TFLM has no int16 HARD_SWISH kernel and the TF
    converter no 16x8 version of it."""
    model = small_cnn_onnx()
    relu = next(n for n in model.graph.node if n.name == "relu1")
    relu.op_type = "HardSwish"
    model.opset_import[0].version = 14
    return model


@pytest.mark.heavy
def test_an_op_without_an_int16_kernel_is_promoted_as_float32_between_dequantize_and_quantize():
    """Two conversions (int8, int16x8 with float fallback) of a HardSwish CNN: ~20 s of CPU, hence heavy."""
    graph = normalise(_hardswish_cnn(), {})
    samples = build_calibration(graph.inputs, None, (0.0, 1.0), {})
    int8 = convert(graph, samples, ConvertOptions("tflm", "int8")).tflite_bytes
    int16 = convert(graph, samples, ConvertOptions("tflm", "int16x8", float_fallback=True)).tflite_bytes
    found = twins(int8, int16)
    floats = [t for t in found if t.float32]
    assert [t.name for t in floats] == ["HARD_SWISH"]
    mixed_bytes = splice(int8, int16, found)
    model = read_tflite(mixed_bytes)
    hs = next(op for op in model.ops if op.name == "HARD_SWISH")
    assert model.tensors[hs.inputs[0]].dtype == model.tensors[hs.outputs[0]].dtype == "float32"
    before = next(op for op in model.ops if op.outputs == [hs.inputs[0]])
    after = [op for op in model.ops if hs.outputs[0] in op.inputs]
    assert before.name == "DEQUANTIZE" and model.tensors[before.inputs[0]].dtype == "int16"
    assert [op.name for op in after] == ["QUANTIZE"] and model.tensors[after[0].outputs[0]].dtype == "int16"
    checked = verify(mixed_bytes, graph.onnx_model, None)
    assert checked.ok and checked.fidelity.cosine > 0.999


def _late_outlier_onnx() -> onnx.ModelProto:
    """Conv(3->8) on a 32x32 map (the arena's peak) -> Relu -> GlobalAveragePool -> Gemm(8->16) -> Gemm(16->4). The
    first Gemm's output 0 is an outlier (bias 300) the second ignores: int8's one scale for that vector rounds the
    other 15 features away, int16's 65536 steps keep them. The error is late, the arena's peak early: the int8
    prefix (conv and pool) with int16 Gemms meets the target in little more than int8's arena."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 8)) * 0.5).astype(np.float32)
    b2 = np.zeros(16, np.float32)
    b2[0] = 300.0
    w3 = (rng.standard_normal((4, 16)) * 0.5).astype(np.float32)
    w3[:, 0] = 0.0
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (np.zeros(8, np.float32), "b1"), (w2, "w2"),
                                                        (b2, "b2"), (w3, "w3"), (np.zeros(4, np.float32), "b3"))]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["h"], transB=1, name="fc1"),
             helper.make_node("Gemm", ["h", "w3", "b3"], ["logits"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "late_outlier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def test_strictly_better_is_better_and_not_equal():
    cosine, drop = precision.Goal("cosine", 0.99), precision.Goal("accuracy_drop", 1.0)
    assert cosine.strictly_better(0.95, 0.9) and not cosine.strictly_better(0.9, 0.9)
    assert not cosine.strictly_better(None, 0.9) and cosine.strictly_better(0.9, None)
    assert drop.strictly_better(0.5, 1.0) and not drop.strictly_better(1.0, 1.0) and not drop.strictly_better(2.0, 1.0)


def test_auto_keeps_an_int8_prefix_with_less_arena_than_whole_int16x8_on_tflm():
    """The search on a model whose error is late: the longest int8 prefix that meets the target is chosen (the
    worst-ops search is never run: its ranking would fail the test), one QUANTIZE int8 -> int16 between the int8
    ops and the int16 ones, run on TFLM with less arena than whole int16x8."""
    int8, graph = convert_model(_late_outlier_onnx(), "int8")
    int16, _ = convert_model(_late_outlier_onnx(), "int16x8")
    samples = build_calibration(graph.inputs, None, (0.0, 1.0), {})
    goal = precision.Goal("cosine", 0.99)
    measure = precision._measurer(graph, samples, None, goal, None, None)
    first = precision._step("int8", 0, int8, *measure(int8)[:2])
    assert first.cosine < 0.99  # int8 misses the target

    def ranked():
        raise AssertionError("the prefix saved arena: no worst-ops search")

    data, mixed = precision.search(int8, int16, twins(int8, int16), ranked, goal, measure, first)
    whole16 = next(s for s in mixed.steps if s.promoted_compute == -1)
    assert mixed.chosen.label == "int8 first 2" and mixed.chosen.cosine >= 0.99
    assert mixed.chosen.arena_bytes < whole16.arena_bytes and "int8 prefix" in mixed.ranking
    model = read_tflite(data)
    kinds = [(op.name, model.tensors[op.outputs[0]].dtype) for op in model.ops]
    assert kinds == [("CONV_2D", "int8"), ("AVERAGE_POOL_2D", "int8"), ("QUANTIZE", "int16"),
                     ("FULLY_CONNECTED", "int16"), ("FULLY_CONNECTED", "int16"), ("QUANTIZE", "int8")]
    checked = verify(data, graph.onnx_model, None)
    assert checked.ok and checked.fidelity.cosine >= 0.99


def test_close_regions_takes_the_data_movement_inside_a_promoted_region_only():
    """conv0 -> reshape1 -> pad2 -> fc3 -> reshape4 -> add6 <- conv5: with conv0 and fc3 promoted, the movers between
    them join the region; reshape4 feeds the int8 add, so it stays int8 (one boundary, not two)."""
    dag = nx.DiGraph([(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (5, 6)])
    names = ["CONV_2D", "RESHAPE", "PAD", "FULLY_CONNECTED", "RESHAPE", "CONV_2D", "ADD"]
    candidates = [mixed.Twin(i, i, name) for i, name in enumerate(names)]
    closed = precision.close_regions(dag, candidates, [candidates[0], candidates[3]])
    assert [t.op for t in closed] == [0, 1, 2, 3]
    assert [t.op for t in precision.close_regions(dag, candidates, candidates[3:4])] == [3]  # fed by int8 conv0


def test_a_mix_is_diagnosed_as_auto_not_as_the_int8_model_it_started_from():
    # the int8 profile names tensors the mix renamed ("op #-1 ?" in the warning before), so a mix is not profiled
    options = ConvertOptions("tflm", "int8")
    step = lambda label: PrecisionStep(label, 0, 0.9, 0.9, 1.0, 1, 1, 1.0, True)  # noqa: E731
    mixed = lambda label: MixedPrecision("cosine", 0.99, 0.99, 3, step(label), [step(label)], "")  # noqa: E731
    assert api._delivered(options, None) is options and api._delivered(options, mixed("int8")) is options
    assert api._delivered(options, mixed("int8 first 2")).quantize == "auto"
    assert api._delivered(options, mixed("int16x8, first 4 of 27 conv filters split")).quantize == "auto"
