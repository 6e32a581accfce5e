"""Verification on the real TFLM interpreter: arena measured exactly, fidelity against onnxruntime,
and models TFLM cannot run (abort, missing op, prepare failure) reported without killing the caller."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.knowledge.arena import recommended_arena
from hub.tflite.model import read_tflite
from hub.tflite.passes.raise_tiny_scales import scale_hazards
from hub.verify.metrics import compare, is_classifier_shaped
from hub.verify.samples import dequantise, quantise, to_tflite_inputs
from hub.verify.tflm import probe_arena, verify
from tests.conftest import MLPERF, convert_through_pipeline, run_hub

# Smallest arenas listed in /work/shared/mlperf_tiny/README.md (measured elsewhere, by bisection).
MLPERF_README_ARENA = {"ic": 55_996, "vww": 103_673, "kws": 24_286, "ad": 4_639}


def held_out(reference: onnx.ModelProto, count: int = 8, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """NCHW float samples in [0, 1), like hub's synthetic held-out set (a seed the calibration never used)."""
    rng = np.random.default_rng(seed)
    inp = reference.graph.input[0]
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    return [{inp.name: rng.random(shape, dtype=np.float32)} for _ in range(count)]


def assert_exact_arena(tflite_bytes: bytes, arena: int) -> None:
    assert probe_arena(tflite_bytes, arena), f"{arena} B should allocate and invoke"
    assert not probe_arena(tflite_bytes, arena - 1), f"{arena - 1} B should not suffice"
    assert not probe_arena(tflite_bytes, arena - 16)


@pytest.fixture(scope="module")
def small_cnn_verified(small_cnn_int8_tflite):
    tflite, reference = small_cnn_int8_tflite
    model = onnx.load(str(reference))
    return tflite.read_bytes(), model, verify(tflite.read_bytes(), model, held_out(model))


def test_pipeline_model_loads_invokes_and_matches_onnx(small_cnn_verified):
    data, _, result = small_cnn_verified
    assert result.ok and result.findings == []
    assert result.tflm.invoke_us_host > 0  # timed over the samples it compared
    assert (result.tflm.loads, result.tflm.invokes, result.tflm.message) == (True, True, None)
    fid = result.fidelity
    assert set(fid.to_dict()) == {"reference", "samples", "max_abs_error", "rmse", "cosine", "top1_agreement", "relative_error", "output_steps"}
    assert fid.relative_error < 0.1 and fid.output_steps > 16  # int8 output: its scale fits the logits
    assert fid.reference == "onnxruntime"  # hub verify --reference M.onnx: onnxruntime on that graph
    assert fid.samples == 8
    assert fid.cosine > 0.99 and 0 < fid.rmse <= fid.max_abs_error < 0.1
    assert fid.top1_agreement is not None and fid.top1_agreement >= 0.75  # (1, 4) logits: a classifier
    assert result.memory.flash_bytes == len(data)
    assert set(result.to_dict()) == {"tflm", "memory", "fidelity"}


def test_pipeline_model_arena_is_the_exact_minimum(small_cnn_verified):
    data, _, result = small_cnn_verified
    arena = result.memory.arena_bytes
    assert_exact_arena(data, arena)
    assert result.memory.arena_recommended_bytes == math.ceil(arena * 1.1 / 1024) * 1024


@pytest.mark.parametrize("name", ["kws", "ad", "ic", "vww"])
def test_mlperf_reference_arena_is_exact_and_matches_the_readme(name):
    data = (MLPERF / name / "reference_int8.tflite").read_bytes()
    result = verify(data, None, None)
    assert result.ok and result.fidelity is None
    arena = result.memory.arena_bytes
    assert_exact_arena(data, arena)
    # The README's figures were measured elsewhere; they agree within TFLM's 16-byte arena alignment.
    assert abs(arena - MLPERF_README_ARENA[name]) < 16, (arena, MLPERF_README_ARENA[name])


def test_fidelity_catches_a_wrong_reference(small_cnn_int8_tflite, small_cnn_verified):
    """A reference with other weights must score visibly worse: the comparison is not vacuous."""
    from tests.conftest import small_cnn_onnx

    data, model, good = small_cnn_verified
    other = verify(data, small_cnn_onnx(seed=5), held_out(model))
    assert other.fidelity.cosine < good.fidelity.cosine - 0.05


def test_min_cosine_gates_ok(small_cnn_verified):
    data, model, _ = small_cnn_verified
    failing = verify(data, model, held_out(model), min_cosine=1.01)
    assert not failing.ok
    assert any(f.severity == "error" and "min-cosine" in f.message for f in failing.findings)
    assert verify(data, model, held_out(model), min_cosine=0.9).ok


def test_abort_in_tflm_becomes_a_finding_and_the_caller_survives(tiny_softmax_int8_tflite):
    data = tiny_softmax_int8_tflite.read_bytes()
    assert scale_hazards(read_tflite(data)), "fixture should have a tiny int8 softmax input scale"
    result = verify(data, None, None)
    assert not result.ok and result.tflm.loads is False and result.tflm.invokes is False
    [finding] = result.findings
    assert finding.severity == "error" and finding.op == "SOFTMAX" and finding.tflite_ops == ["SOFTMAX"]
    assert "SIGABRT" in finding.message and "QuantizeMultiplierGreaterThanOne" in finding.message
    assert result.memory.arena_bytes is None and result.fidelity is None


def test_missing_kernel_is_reported_with_tflms_message(tile_float_tflite):
    result = verify(tile_float_tflite.read_bytes(), None, None)
    assert not result.ok and not result.tflm.loads
    [finding] = result.findings
    assert finding.op == "TILE" and finding.node == "op #0 TILE" and finding.severity == "error"
    assert "Didn't find op for builtin opcode 'TILE'" in finding.message
    assert result.tflm.message == finding.message


def test_prepare_failure_names_the_op_and_the_kernels_reason(exp_int8_tflite):
    result = verify(exp_int8_tflite.read_bytes(), None, None)
    assert not result.ok
    [finding] = result.findings
    assert finding.op == "EXP" and "failed to prepare" in finding.message
    assert "kTfLiteFloat32" in finding.message  # the kernel's own complaint: float-only


def conv_only_onnx() -> onnx.ModelProto:
    """Conv(3->5) + Relu with a 4-D NCHW output (1,5,8,6): the TFLite output is NHWC."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((5, 3, 3, 3)) * 0.4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv_only", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 8, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(5, 0.05, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_nchw_inputs_and_outputs_are_transposed_for_comparison(tmp_path):
    tflite, reference = convert_through_pipeline(conv_only_onnx(), tmp_path)
    data, model = tflite.read_bytes(), onnx.load(str(reference))
    tfl = read_tflite(data)
    assert tfl.io_specs("inputs")[0]["shape"] == [1, 8, 6, 3] and tfl.io_specs("outputs")[0]["shape"] == [1, 8, 6, 5]
    result = verify(data, model, held_out(model))
    assert result.ok and result.fidelity.cosine > 0.99
    assert result.fidelity.top1_agreement is None  # feature map, not a classifier


def test_inputs_map_by_name_transpose_and_quantise(small_cnn_int8_tflite):
    model = read_tflite(small_cnn_int8_tflite[0].read_bytes())
    spec = model.io_specs("inputs")[0]
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    [q] = to_tflite_inputs(model, {spec["name"]: x})
    assert q.dtype == np.int8 and q.shape == (1, 16, 16, 3)
    back = dequantise(q, spec)
    np.testing.assert_allclose(back, x.transpose(0, 2, 3, 1), atol=spec["scale"] / 2 + 1e-7)


def test_quantise_clamps_to_the_types_range():
    spec = {"dtype": "int8", "scale": 0.5, "zero_point": -10}
    np.testing.assert_array_equal(quantise(np.array([-1000.0, 0.0, 1.0, 1000.0]), spec), [-128, -10, -8, 127])
    assert quantise(np.array([1.5]), {"dtype": "float32", "scale": None, "zero_point": None}).dtype == np.float32


def test_classifier_shape_and_recommendation_rules():
    assert is_classifier_shaped((1, 10)) and not is_classifier_shaped((1, 1))
    assert not is_classifier_shaped((1, 8, 8, 4)) and not is_classifier_shaped((1, 5000))
    assert recommended_arena(4632) == 5120 and recommended_arena(None) is None
    assert recommended_arena(1024) == 2048  # 1126.4 rounds up to whole KB


def test_several_outputs_report_the_worst_and_each(small_cnn_int8_tflite):
    """compare() on a 2-output reference: top-level figures are the worst of the per-output ones."""
    data = small_cnn_int8_tflite[0].read_bytes()
    tfl = read_tflite(data)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])], "two",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])])
    reference = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    reference.ir_version = 8
    tfl.outputs = [tfl.outputs[0], tfl.outputs[0]]  # two float views of the same tensor spec
    tfl.signature_names = {}
    spec = tfl.io_specs("outputs")[0]
    samples = [{"x": np.array([[0.1, 0.2, -0.3, 0.4]], np.float32)}]
    q = quantise(samples[0]["x"], spec)
    fid = compare(tfl, reference, samples, [[q, q]])
    assert [o.name for o in fid.outputs] == [spec["name"]] * 2
    assert fid.cosine == min(o.cosine for o in fid.outputs) < 0  # the negated output disagrees
    assert fid.max_abs_error == max(o.max_abs_error for o in fid.outputs)


def test_cli_verify_with_reference(small_cnn_int8_tflite):
    tflite, reference = small_cnn_int8_tflite
    proc = run_hub("verify", tflite, "--reference", reference, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["tflm"]["invokes"] and doc["fidelity"]["cosine"] > 0.99 and doc["fidelity"]["samples"] == 8
    assert doc["memory"]["arena_bytes"] > 0
    gated = run_hub("verify", tflite, "--reference", reference, "--min-cosine", "1.01")
    assert gated.returncode == 1 and "Traceback" not in gated.stderr


def test_cli_verify_reports_an_abort_with_exit_1(tiny_softmax_int8_tflite):
    proc = run_hub("verify", tiny_softmax_int8_tflite)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "SOFTMAX" in proc.stdout and "SIGABRT" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_export_refuses_a_model_tflm_cannot_run(tile_float_tflite, tmp_path):
    proc = run_hub("export", tile_float_tflite, "--out", tmp_path / "fw")
    assert proc.returncode == 1
    assert "TILE" in proc.stderr and not (tmp_path / "fw").exists()


def test_a_reference_that_does_not_fit_is_an_input_error(small_cnn_int8_tflite):
    from hub.errors import InputError

    data = small_cnn_int8_tflite[0].read_bytes()
    with pytest.raises(InputError, match="do not fit"):
        verify(data, conv_only_onnx(), [{"x": np.zeros((1, 3, 8, 6), np.float32)}])


def test_arena_by_child_probes_matches_the_in_child_search():
    # The fallback used when the in-child search crashes must find the same exact minimum.
    from hub.verify.tflm import arena_by_probes
    from tests.conftest import MLPERF

    data = (MLPERF / "ad" / "reference_int8.tflite").read_bytes()
    measured = verify(data, None, None).memory.arena_bytes
    assert arena_by_probes(data, measured - 200) == measured
    assert arena_by_probes(data, None) == measured


def test_tiny_softmax_scale_is_raised_so_tflm_runs_it(tiny_softmax_int8_tflite):
    """hub convert's flatbuffer pass turns the abort above into a model that runs and still computes
    the softmax of logits that barely vary (uniform within 4e-6)."""
    from hub.tflite.passes import run_passes

    raw = tiny_softmax_int8_tflite.read_bytes()
    fixed, results = run_passes(raw)
    [result] = [r for r in results if r.changed]
    assert result.name == "raise_tiny_scales" and result.changed == 1 and "SOFTMAX" in result.detail
    assert len(fixed) == len(raw) and scale_hazards(read_tflite(fixed)) == []
    reference = onnx.load(str(tiny_softmax_int8_tflite.with_name("model.onnx")))
    verified = verify(fixed, reference, held_out(reference))
    assert verified.ok and verified.fidelity.max_abs_error < 1e-3
    assert run_passes(fixed)[1][0].changed == 0  # nothing left to raise


def test_verification_documents_keep_report_json_keys():
    """to_dict() is report.json: optional keys appear only when measured, in report.json's order."""
    from hub.artifacts import Diagnosis, Fidelity, Memory, OutputFidelity, ScheduleArena, TFLMRun

    assert list(TFLMRun(True, True).to_dict()) == ["loads", "invokes", "message"]
    assert list(TFLMRun(True, True, None, 1.5).to_dict())[-1] == "invoke_us_host"
    assert list(Memory(100, 1024, 50).to_dict()) == ["arena_bytes", "arena_recommended_bytes", "flash_bytes"]
    assert list(Memory(100, 1024, 50, 20, ScheduleArena(None, 120)).to_dict()) == [
        "arena_bytes", "arena_recommended_bytes", "flash_bytes", "arena_persistent_bytes", "arena_lower_bound_bytes",
        "arena_default_order_bytes"]
    unmatched = Fidelity(8, None, None, None, None, cosine_undefined="no TFLite output matches").to_dict()
    assert list(unmatched) == ["samples", "max_abs_error", "rmse", "cosine", "top1_agreement", "cosine_undefined"]
    assert list(Fidelity(8, None, None, None, None, reference="pytorch").to_dict())[:2] == ["reference", "samples"]
    out = OutputFidelity(0.1, 0.05, None, None, None, cosine_undefined="all zero", output_steps=3.0, name="y")
    assert list(out.to_dict()) == ["name", "max_abs_error", "rmse", "cosine", "top1_agreement", "relative_error",
                                   "cosine_undefined", "output_steps"]
    doc = Fidelity(8, 0.1, 0.05, None, None, 0.2, output_steps=3.0, cosine_undefined="all zero", outputs=[out, out],
                   diagnosis=Diagnosis("conversion", 0.3)).to_dict()
    assert list(doc)[5:] == ["relative_error", "output_steps", "cosine_undefined", "outputs", "diagnosis"]
    assert doc["diagnosis"] == {"kind": "conversion", "float32_cosine": 0.3, "diverges_at": None}
    assert Diagnosis("quantization", 0.99, causes=["x"]).to_dict() == {"kind": "quantization", "float32_cosine": 0.99,
                                                                       "causes": ["x"]}
