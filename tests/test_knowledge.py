"""The TFLM knowledge tables hold together, and `hub check` agrees with TFLM on small equivalents of the
three cases tflite-micro's own files showed (bench/tflm_corpus.py): an int16x8 TRANSPOSE_CONV whose
output shape is a run-time input, a Vela `ethos-u` op and an unknown custom op, and a signal-library op."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers
from onnx import TensorProto, helper, numpy_helper

from hub.check.layers import tflite_layers
from hub.check.tflite import analyse_tflite
from hub.firmware.export import export_firmware
from hub.knowledge import int16_kernels, kernel_flash, tflm_kernels
from hub.knowledge.resolver import BUILTIN_ADDERS, CUSTOM_OPS
from hub.knowledge.tflm_kernels import KERNELS, OPERAND_ROLES, WEIGHTS
from hub.tflite.model import read_tflite
from hub.verify.tflm import verify
from tests.conftest import convert_model

# Kernels whose TFLM source reads a trained constant (kFilterTensor, kWeightsTensor, the LSTM/SVDF weight
# tensors, PRELU's alpha, EMBEDDING_LOOKUP's value table, BATCH_MATMUL's constant rhs).
WEIGHTED_KERNELS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "SVDF",
                    "UNIDIRECTIONAL_SEQUENCE_LSTM", "EMBEDDING_LOOKUP", "PRELU"}
# How the custom op codes the interpreter registers are spelled (micro_mutable_op_resolver.h AddCustom calls).
CUSTOM_CODE = re.compile(rb"^(Signal[A-Z][A-Za-z]+|TFLM_[A-Z_]+|TFLite_[A-Za-z_]+|CIRCULAR_BUFFER|ethos-u)$")


def test_every_kernel_has_a_resolver_method_and_every_method_a_kernel():
    assert set(KERNELS) == set(BUILTIN_ADDERS)
    assert all(m.startswith("Add") for m in BUILTIN_ADDERS.values())
    assert len(set(BUILTIN_ADDERS.values())) == len(BUILTIN_ADDERS)


def _wheel_strings() -> set[bytes]:
    spec = importlib.util.find_spec("tflite_micro")
    package = Path(next(iter(spec.submodule_search_locations)))
    libraries = list(package.rglob("_runtime*.so"))
    assert libraries, f"no _runtime*.so under {package}"
    return {s for lib in libraries for s in re.findall(rb"[\x20-\x7e]{4,}", lib.read_bytes())}


def test_custom_ops_table_matches_what_the_interpreter_wheel_registers():
    """Custom codes are literal strings in the interpreter library: every one it has is in the table, and
    the table's entries that need nothing special are all in it (ethos-u, needing the NPU build, is not)."""
    in_wheel = {s.decode() for s in _wheel_strings() if CUSTOM_CODE.match(s)}
    assert in_wheel, "no custom op code found in the interpreter library"
    assert in_wheel <= set(CUSTOM_OPS), f"custom ops the interpreter has, missing from the table: {in_wheel - set(CUSTOM_OPS)}"
    plain = {code for code, op in CUSTOM_OPS.items() if op.needs is None}
    assert plain == in_wheel
    assert all(op.adder.startswith("Add") for op in CUSTOM_OPS.values())
    assert not {op.adder for op in CUSTOM_OPS.values()} & set(BUILTIN_ADDERS.values())


def test_operand_roles_cover_every_kernel_with_weights():
    assert WEIGHTED_KERNELS <= set(OPERAND_ROLES)
    assert {op for op, k in KERNELS.items() if k.per_channel} <= WEIGHTED_KERNELS
    for op in WEIGHTED_KERNELS:
        assert WEIGHTS in OPERAND_ROLES[op], op
        assert tflm_kernels.typed_inputs(op), op
    assert len(OPERAND_ROLES["UNIDIRECTIONAL_SEQUENCE_LSTM"]) == 24  # kernels/lstm_shared.h: inputs 0-23
    assert tflm_kernels.typed_inputs("TRANSPOSE_CONV") == (2,)


def test_splittable_convolutions_take_int16_activations_and_per_channel_filters():
    for op in int16_kernels.SPLITTABLE:  # hub.tflite.split_weights' two halves: int16 in, int8 filters per channel
        assert op in int16_kernels.INT16_OPS and KERNELS[op].per_channel and OPERAND_ROLES[op][1] == WEIGHTS
    assert "ADD" in int16_kernels.INT16_OPS  # what sums the halves


def test_every_kernel_row_cites_a_source_and_types():
    for op, k in KERNELS.items():
        assert k.source.startswith("kernels/") and k.source.endswith(".cc"), op
        assert k.types, op
        assert all(i < len(OPERAND_ROLES.get(op, range(99))) for i in k.const_inputs), op



def test_kernel_flash_keys_are_tflm_ops_the_resolver_knows():
    table = set(kernel_flash.KERNEL_FLASH)
    assert table <= set(BUILTIN_ADDERS) | set(CUSTOM_OPS)
    assert set(BUILTIN_ADDERS) <= table  # every builtin was measured: none falls back to the estimate
    assert "TFLM_DECODE" in table
    assert all(n > 0 for n in kernel_flash.KERNEL_FLASH.values())
    for n, ops in kernel_flash.SHARED_FLASH:
        assert n > 0 and len(ops.split()) > 1 and set(ops.split()) <= table, ops
    assert kernel_flash.RUNTIME_RAM_BYTES >= kernel_flash.INTERPRETER_OBJECT_BYTES + kernel_flash.RESOLVER_OBJECT_BYTES


def test_firmware_flash_is_the_core_plus_each_distinct_kernel_once():
    core, conv = kernel_flash.CORE_FLASH_BYTES, kernel_flash.KERNEL_FLASH["CONV_2D"]
    assert kernel_flash.firmware_flash_bytes([]) == (core, [])
    # One op: exactly what the single-op program measured; repeats count once.
    assert kernel_flash.firmware_flash_bytes(["CONV_2D", "CONV_2D"]) == (core + conv, [])
    # Shared code counts once: two kernels cost less than their two programs' deltas.
    both, _ = kernel_flash.firmware_flash_bytes(["CONV_2D", "DEPTHWISE_CONV_2D"])
    assert core + conv < both < core + conv + kernel_flash.KERNEL_FLASH["DEPTHWISE_CONV_2D"]
    # Custom ops by code, as report.json/analyse spell them; an unknown one is estimated and flagged.
    assert kernel_flash.op_key("CUSTOM", "TFLM_DECODE") == "TFLM_DECODE"
    decode, estimated = kernel_flash.firmware_flash_bytes(["CUSTOM:TFLM_DECODE"])
    assert decode == core + kernel_flash.KERNEL_FLASH["TFLM_DECODE"] and estimated == []
    total, estimated = kernel_flash.firmware_flash_bytes(["CONV_2D", "CUSTOM", "MyOp"])
    assert estimated == ["CUSTOM", "MyOp"] and total == core + conv + 2 * kernel_flash.FALLBACK_KERNEL_BYTES


@pytest.mark.parametrize("name", sorted(kernel_flash.MEASURED_TOGETHER))
def test_firmware_flash_estimate_matches_kernels_linked_together(name):
    """Per-op programs plus shared code predict a program that links many kernels at once within 5%."""
    ops, measured = kernel_flash.MEASURED_TOGETHER[name]
    estimate, _ = kernel_flash.firmware_flash_bytes(ops.split())
    actual = kernel_flash.CORE_FLASH_BYTES + measured
    assert abs(estimate - actual) / actual < 0.05, (estimate, actual)

# --- small models built with TFLite's flatbuffer object API --------------------------------------------

def _pack(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def custom_op_model(code: str, options: bytes = b"", channels: int = 4) -> bytes:
    """One custom op: uint32[channels] in, two uint32[channels] out (the shape of a signal op)."""
    model = schema.ModelT()
    model.version, model.buffers = 3, [schema.BufferT()]
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = opcode.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    opcode.customCode, opcode.version = code, 1
    model.operatorCodes = [opcode]
    graph = schema.SubGraphT()
    graph.tensors = []
    for name in ("input", "output", "state"):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [channels], schema.TensorType.UINT32, 0
        graph.tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1, 2]
    op.customOptions, op.customOptionsFormat = list(options), schema.CustomOptionsFormat.FLEXBUFFERS
    graph.operators, graph.inputs, graph.outputs = [op], [0], [1, 2]
    model.subgraphs = [graph]
    return _pack(model)


def spectral_subtraction_model() -> bytes:
    """SignalFilterBankSpectralSubtraction, options as signal/micro/kernels/filter_bank_spectral_subtraction.cc
    reads them (a flexbuffer map, by key order)."""
    options = flexbuffers.Dumps({"alternate_one_minus_smoothing": 15729, "alternate_smoothing": 655,
                                 "clamping": False, "min_signal_remaining": 3276, "num_channels": 4,
                                 "one_minus_smoothing": 15729, "smoothing": 655, "smoothing_bits": 10,
                                 "spectral_subtraction_bits": 14})
    return custom_op_model("SignalFilterBankSpectralSubtraction", options)


def _agrees_with_tflm(data: bytes) -> tuple[str, bool, list]:
    check = analyse_tflite(data)
    result = verify(data, None, None)
    assert (check.verdict == "will run") == result.ok, (check.verdict, [f.message for f in check.findings],
                                                         result.tflm)
    return check.verdict, result.ok, check.findings


def test_signal_op_will_run_and_does_and_export_registers_it(tmp_path):
    data = spectral_subtraction_model()
    verdict, ok, _ = _agrees_with_tflm(data)
    assert verdict == "will run" and ok
    export_firmware(data, "frontend", tmp_path, 4096)
    assert "resolver.AddFilterBankSpectralSubtraction()" in (tmp_path / "frontend_model_ops.h").read_text()


def test_unknown_custom_op_will_not_run_and_does_not():
    verdict, ok, findings = _agrees_with_tflm(custom_op_model("MyVendorOp"))
    assert verdict == "will not run" and not ok
    assert "MyVendorOp" in findings[0].message and "AddCustom" in findings[0].hint


def test_ethos_u_op_is_not_will_run_and_says_what_it_needs():
    """Vela's output: the resolver has AddEthosU, but only an Ethos-U build registers anything with it."""
    data = custom_op_model("ethos-u")
    verdict, ok, findings = _agrees_with_tflm(data)
    assert verdict == "will not run" and not ok
    assert "Ethos-U driver" in findings[0].message and "NPU" in findings[0].message
    assert "--target ethos-u" in findings[0].hint
    tflm = verify(data, None, None).findings[0]  # TFLM's own message names no op: verify names it
    assert "custom op ethos-u" in tflm.message and "--target ethos-u" in tflm.hint


@pytest.fixture(scope="module")
def transpose_conv_int16x8() -> bytes:
    """ConvTranspose through hub's pipeline in int16x8, then with TRANSPOSE_CONV's output_shape (input 0)
    turned into a model input, as in tflite-micro's integration_tests/seanet/transpose_conv/*.tflite."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], kernel_shape=[3, 3], name="up")
    graph = helper.make_graph([node], "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    data, _ = convert_model(onnx.shape_inference.infer_shapes(model), "int16x8")
    packed = schema.ModelT.InitFromPackedBuf(data, 0)
    graph_t = packed.subgraphs[0]
    op = next(o for o in graph_t.operators
              if packed.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.TRANSPOSE_CONV)
    shape_tensor = graph_t.tensors[op.inputs[0]]
    empty = schema.BufferT()
    packed.buffers.append(empty)
    shape_tensor.buffer = len(packed.buffers) - 1
    graph_t.inputs = [*graph_t.inputs, op.inputs[0]]
    packed.signatureDefs = None  # the signature would not list the new input
    return _pack(packed)


def test_int16x8_transpose_conv_with_run_time_output_shape_will_run_and_does(transpose_conv_int16x8):
    model = read_tflite(transpose_conv_int16x8)
    op = next(o for o in model.ops if o.name == "TRANSPOSE_CONV")
    shape, _, data = (model.tensors[i] for i in op.inputs[:3])
    assert (shape.dtype, shape.is_constant, data.dtype) == ("int32", False, "int16")
    verdict, ok, _ = _agrees_with_tflm(transpose_conv_int16x8)
    assert verdict == "will run" and ok


def test_layer_table_reads_transpose_conv_weights_by_role(transpose_conv_int16x8):
    model = read_tflite(transpose_conv_int16x8)
    layer = next(layer for layer in tflite_layers(model).layers if layer.op == "TRANSPOSE_CONV")
    assert layer.params == 4 * 3 * 3 * 3  # the weights; not output_shape
