"""The softmax_int16 flatbuffer pass on hand-built one-SOFTMAX int8 models (no converter): a row of 1,000
level logits aborts TFLM's int8 SOFTMAX, and runs once the pass has it write int16 and QUANTIZE back."""
from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from hub.firmware.export import resolver_adders
from hub.tflite import offline_plan
from hub.tflite.model import read_tflite
from hub.tflite.passes import PASSES, softmax_int16
from hub.verify.tflm import tflm_raw_outputs, verify

STEP = 1 / 256  # the int8 SOFTMAX output's scale


def softmax_tflite(classes: int, scale: float = 0.1) -> bytes:
    """input int8 [1, classes] (scale, zp 0) -> SOFTMAX -> output int8 (1/256, zp -128), as TFLM requires."""
    model, sg = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers = 3, [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SOFTMAX
    code.version = 1
    model.operatorCodes = [code]
    sg.tensors = [_tensor(b"logits", classes, 1, scale, 0), _tensor(b"probs", classes, 2, STEP, -128)]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array([0], np.int32), np.array([1], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = schema.SoftmaxOptionsT()
    op.builtinOptions.beta = 1.0
    sg.operators, sg.inputs, sg.outputs = [op], np.array([0], np.int32), np.array([1], np.int32)
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(name: bytes, classes: int, buffer: int, scale: float, zero_point: int) -> schema.TensorT:
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name, np.array([1, classes], np.int32), schema.TensorType.INT8, buffer
    t.quantization = schema.QuantizationParametersT()
    t.quantization.scale, t.quantization.zeroPoint = [scale], [zero_point]
    return t


def run(data: bytes, rows: np.ndarray) -> np.ndarray:
    """The dequantised TFLM outputs for int8 input rows (fed as the already-quantised values: scale 1, zp 0
    round-trips them through hub's quantise)."""
    spec = read_tflite(data).io_specs("inputs")[0]
    samples = [{spec["name"]: (row.astype(np.float32) - spec["zero_point"]) * spec["scale"]} for row in rows]
    outputs = tflm_raw_outputs(data, [{k: v[None] for k, v in s.items()} for s in samples])
    return np.array([(out[0].astype(np.float32).ravel() + 128) * STEP for out in outputs])


def softmax(rows: np.ndarray, scale: float) -> np.ndarray:
    e = np.exp(scale * (rows - rows.max(axis=1, keepdims=True)))
    return e / e.sum(axis=1, keepdims=True)


def test_the_pass_runs_after_raise_tiny_scales():
    names = [p.__name__.rpartition(".")[2] for p in PASSES]
    assert names.index("raise_tiny_scales") < names.index("softmax_int16")


def test_1000_tied_classes_abort_int8_softmax_and_run_with_an_int16_output():
    raw = softmax_tflite(1000)
    assert "SIGABRT" in (verify(raw, None, None, measure_arena=False).tflm.message or "")
    fixed, changed, detail = softmax_int16.run(raw)
    assert changed == 1 and detail == ("SOFTMAX over 1000 classes: int16 output + QUANTIZE (TFLM's int8 SOFTMAX "
                                       "aborts once a row's exponentials sum to 512)")
    model = read_tflite(fixed)
    assert [op.name for op in model.ops] == ["SOFTMAX", "QUANTIZE"]
    assert model.tensors[model.ops[0].outputs[0]].dtype == "int16" and model.outputs == [1]
    assert {"AddSoftmax", "AddQuantize"} <= set(resolver_adders(model))  # the firmware resolver follows
    rng = np.random.default_rng(0)
    rows = np.vstack([np.zeros((1, 1000)), np.full((1, 1000), 37), rng.integers(-128, 128, (6, 1000))])
    got = run(fixed, rows)
    assert np.abs(got[:2] - 1 / 1000).max() <= STEP / 2  # uniform 0.001 rounds to the int8 step's 0
    assert np.abs(got - softmax(rows, 0.1)).max() <= STEP
    # where the int8 SOFTMAX runs (random rows: exps sum to ~40), the int16 one + QUANTIZE is bit-identical
    np.testing.assert_array_equal(got[2:], run(raw, rows[2:]))


def test_the_pass_leaves_a_10_class_softmax_alone():
    raw = softmax_tflite(10)
    assert softmax_int16.run(raw) == (raw, 0, "")


def test_past_4095_classes_the_softmax_runs_in_float32():
    fixed, changed, detail = softmax_int16.run(softmax_tflite(5000))
    assert changed == 1 and "float32 between DEQUANTIZE and QUANTIZE" in detail
    assert [op.name for op in read_tflite(fixed).ops] == ["DEQUANTIZE", "SOFTMAX", "QUANTIZE"]
    rows = np.vstack([np.zeros((1, 5000)), np.random.default_rng(1).integers(-128, 128, (2, 5000))])
    assert np.abs(run(fixed, rows) - softmax(rows, 0.1)).max() <= STEP


def test_an_offline_plan_stays_valid_and_plans_the_new_tensor_at_run_time():
    planned = offline_plan.attach(softmax_tflite(1000), {0: 0, 1: 1024}, 2)
    fixed, changed, _ = softmax_int16.run(planned)
    model = schema.ModelT.InitFromPackedBuf(fixed, 0)
    [entry] = [m for m in model.metadata if m.name == offline_plan.METADATA_NAME.encode()]
    plan = np.frombuffer(np.asarray(model.buffers[entry.buffer].data, np.uint8).tobytes(), "<i4").tolist()
    assert changed == 1 and plan == [1, 1, 3, 0, 1024, -1]
    assert np.abs(run(fixed, np.zeros((1, 1000))) - 1 / 1000).max() <= STEP / 2


@pytest.mark.parametrize("classes", [512, 4095])
def test_the_int16_output_holds_to_4095_tied_classes(classes):
    fixed, _, detail = softmax_int16.run(softmax_tflite(classes))
    assert "int16 output" in detail
    assert np.abs(run(fixed, np.zeros((1, classes))) - 1 / classes).max() <= STEP / 2
