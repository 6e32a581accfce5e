"""unroll_rnn: GRU, LSTM and RNN unrolled into builtins compute what onnxruntime computes for the
original node (tolerance 1e-5: the unrolled graph differs only by float rounding), cases it does not
handle stay as they are, and the KWS fixtures convert and run on TFLM (int8, cosine >= 0.98): the GRU
unrolled, the LSTM on TFLM's fused kernel (hub.graph.rules.fuse_lstm)."""
from __future__ import annotations

import contextlib
import io
import json
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import hub.adapters
from hub.artifacts import LoadOptions
from hub.graph.edit import remove_unused_initializers
from hub.graph.normalise import normalise, normalise_source
from hub.graph.rules import fuse_lstm, unroll_rnn
from hub.graph.shapes import infer_shapes
from tests.conftest import FIXTURES, run_hub
from tests.test_layout import cosine, header_axes, tflm_run

ATOL = 1e-5
SEQ, FEATURES, HIDDEN = 6, 5, 7


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _apply(model: onnx.ModelProto, reference: Callable[[dict], list[np.ndarray]] | None = None
           ) -> tuple[onnx.ModelProto, list]:
    """Unroll a copy of `model`; check it is valid ONNX and computes the same outputs within ATOL as
    onnxruntime on `model` (or as `reference`, for what onnxruntime cannot run)."""
    rng = np.random.default_rng(0)
    feeds = {i.name: (rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]) * 2).astype(np.float32)
             for i in model.graph.input}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after, rewrites = unroll_rnn.run(copy)
    remove_unused_initializers(after)
    after = infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    for expected, got in zip((reference or (lambda f: _run(model, f)))(feeds), _run(after, feeds)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    return after, rewrites


class _Torch(nn.Module):
    def __init__(self, cell: str, bidirectional: bool, batch_first: bool, use: str):
        super().__init__()
        self.use, self.batch_first = use, batch_first
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell](FEATURES, HIDDEN, batch_first=batch_first,
                                                                         bidirectional=bidirectional)

    def forward(self, x: torch.Tensor):
        y, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        if self.use == "last":  # y[:, -1]: the step the rule reads without building Y
            return y[:, -1] if self.batch_first else y[-1]
        if self.use == "state":
            return h
        return y.mean(1 if self.batch_first else 0), h  # the whole sequence output


def _torch_onnx(cell: str, bidirectional: bool = False, batch_first: bool = True, use: str = "last",
                batch: int = 1) -> onnx.ModelProto:
    torch.manual_seed(0)
    module = _Torch(cell, bidirectional, batch_first, use).eval()
    shape = (batch, SEQ, FEATURES) if batch_first else (SEQ, batch, FEATURES)
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(shape),), buffer, dynamo=False, opset_version=17, input_names=["x"])
    return normalise(onnx.load_from_string(buffer.getvalue()), {}).onnx_model


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("use", ["last", "state", "sequence"])
def test_torch_exports_unroll_exactly(cell, bidirectional, batch_first, use):
    # torch's LSTMs are plain cells fuse_lstm keeps for TFLM's fused kernel (except in int16x8): unroll_rnn
    # alone, as without fuse_lstm, holds their unrolled form exact
    model = _torch_onnx(cell, bidirectional, batch_first, use, batch=1 if use == "last" else 3)
    node = next(n for n in model.graph.node if n.op_type == cell.upper())
    after, rewrites = _apply(model)
    assert [(r.node, r.op, r.into) for r in rewrites] == [(node.name, cell.upper(), f"unrolled over {SEQ} steps")]
    assert not {"GRU", "LSTM", "RNN"} & set(_ops(after))
    if use == "last" and not bidirectional:  # torch's y[:, -1] reads the last step's state: no Y, no Gather
        assert not {"Concat", "Gather"} & set(_ops(after))


def test_sequence_output_concat_takes_at_most_ten_inputs():
    after, _ = _apply(_torch_onnx("gru", use="sequence"))
    concats = [n for n in after.graph.node if n.op_type == "Concat"]
    assert concats and all(len(n.input) <= unroll_rnn.CONCAT_MAX for n in concats)


class _ConvFront(nn.Module):
    """Conv1d + ReLU over the frames, then the recurrent layer (bench/sequence.py's conv_gru, smaller)."""

    def __init__(self, cell: str):
        super().__init__()
        self.conv = nn.Conv1d(FEATURES, 8, 3, padding=1)
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](8, HIDDEN, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))
        return y[:, -1]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unrolled_conv_front_runs_in_onnxruntime_as_the_source(cell):
    # 20 steps: the step Split's sizes would be 160 bytes, which onnxruntime 1.23 keeps as in-memory external
    # data and then cannot read when its default (level-2) optimisers fuse the Conv + ReLU and re-infer the
    # Split ("Cannot parse data from external tensors"); equal parts now take no sizes tensor
    torch.manual_seed(0)
    module, steps = _ConvFront(cell).eval(), 20
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, steps, FEATURES),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"])
    after, rewrites = unroll_rnn.run(normalise(onnx.load_from_string(buffer.getvalue()), {}).onnx_model)
    remove_unused_initializers(after)
    assert rewrites and not {"GRU", "LSTM"} & set(_ops(infer_shapes(after)))
    session = ort.InferenceSession(after.SerializeToString(), providers=["CPUExecutionProvider"])  # default level
    x = np.random.default_rng(0).standard_normal((1, steps, FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=0, atol=ATOL)


def test_keras_traces_a_two_d_add_as_add_while_exporting():
    # the default-run part of the heavy test below: TensorFlow's import is paid by tests/test_adapter_keras.py
    import keras  # why here: Keras (TensorFlow) only for these tests
    import tensorflow as tf

    from hub.adapters.keras import _exportable_keras_ops

    spec = tf.TensorSpec((1, 8), tf.float32)
    for patched in (False, True):
        with _exportable_keras_ops() if patched else contextlib.nullcontext():
            graph = tf.function(lambda a, b: keras.ops.add(a, b)).get_concrete_function(spec, spec).graph
        ops = {op.type for op in graph.get_operations()}
        assert ("AddV2" in ops and "BiasAdd" not in ops) if patched else "BiasAdd" in ops


@pytest.mark.heavy  # 90 s on the loaded 2-core machine: TensorFlow, Keras and tf2onnx in the test process
def test_a_keras_lstm_exports_as_one_onnx_lstm_the_fused_kernel_takes(tmp_path):
    # Keras 3 at batch 1 traced its recurrent add as Squeeze + BiasAdd, which tf2onnx's Keras LSTM pattern
    # misses: the export was a Loop onnxruntime refuses (hub.adapters.keras._exportable_keras_ops)
    import keras  # why here: Keras (TensorFlow) only for this test

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, FEATURES), batch_size=1, name="x")
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LSTM(HIDDEN)(inputs))).save(tmp_path / "lstm.keras")
    source = hub.adapters.load(tmp_path / "lstm.keras")
    assert "LSTM" in _ops(source.onnx_model) and "Loop" not in _ops(source.onnx_model)
    _, kept = fuse_lstm.run(normalise_source(source, LoadOptions()).onnx_model)
    assert [r.path for r in kept] == ["fused"]
    x = np.random.default_rng(0).standard_normal((1, 12, FEATURES)).astype(np.float32)
    (expected,) = source.run({"x": x}).values()  # Keras itself
    np.testing.assert_allclose(_run(source.onnx_model, {"x": x})[0], expected, rtol=0, atol=ATOL)


# --- ONNX forms torch does not write -------------------------------------------------------------

def _onnx_rnn(op: str, direction: str = "forward", layout: int = 0, batch: int = 2, state_input: bool = False,
              **attrs) -> onnx.ModelProto:
    """One GRU/LSTM/RNN node with every output a graph output; initial state(s) as graph inputs if asked."""
    rng = np.random.default_rng(1)
    dirs, gates = (2 if direction == "bidirectional" else 1), unroll_rnn.GATES[op]
    weights = {"W": (dirs, gates * HIDDEN, FEATURES), "R": (dirs, gates * HIDDEN, HIDDEN), "B": (dirs, 2 * gates * HIDDEN)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n) for n, s in weights.items()]
    x_shape = [SEQ, batch, FEATURES] if layout == 0 else [batch, SEQ, FEATURES]
    state_shape = [dirs, batch, HIDDEN] if layout == 0 else [batch, dirs, HIDDEN]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if state_input:
        inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape) for s in states]
    else:
        values = [(rng.standard_normal((dirs, batch, HIDDEN)) * 0.5).astype(np.float32) for _ in states]
        inits += [numpy_helper.from_array(v if layout == 0 else v.transpose(1, 0, 2), s) for v, s in zip(values, states)]
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, ["x", "W", "R", "B", "", *states], outputs, name="rnn", hidden_size=HIDDEN,
                            direction=direction, layout=layout, **attrs)
    graph = helper.make_graph([node], "rnn", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                      for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return infer_shapes(model)


@pytest.mark.parametrize("op", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("state_input", [False, True])
def test_directions_layouts_and_initial_states(op, direction, layout, state_input):
    model = _onnx_rnn(op, direction, layout, state_input=state_input)
    _, rewrites = _apply(model, None if layout == 0 else _time_major_reference(op, direction, state_input))
    assert [r.op for r in rewrites] == [op]


def _time_major_reference(op: str, direction: str, state_input: bool) -> Callable[[dict], list[np.ndarray]]:
    """onnxruntime has no layout=1 kernels: run the layout-0 node on transposed inputs and transpose back."""
    time_major = _onnx_rnn(op, direction, 0, state_input=state_input)

    def run(feeds: dict) -> list[np.ndarray]:
        moved = {k: v.transpose(1, 0, 2) for k, v in feeds.items()}
        y, *states = _run(time_major, moved)
        return [y.transpose(2, 0, 1, 3), *(s.transpose(1, 0, 2) for s in states)]

    return run


@pytest.mark.parametrize("zero_state", [False, True])
def test_gru_reset_after_the_recurrent_product(zero_state):
    model = _onnx_rnn("GRU", linear_before_reset=0)
    if zero_state:  # the first step then leaves the state's terms out
        h0 = next(t for t in model.graph.initializer if t.name == "h0")
        h0.CopyFrom(numpy_helper.from_array(np.zeros(tuple(h0.dims), np.float32), "h0"))
    _, rewrites = _apply(model)
    assert len(rewrites) == 1


@pytest.mark.parametrize("attrs", [{"clip": 1.0}, {"activations": ["Tanh"] * 2}, {"input_forget": 1}])
def test_unhandled_forms_stay(attrs):
    model = _onnx_rnn("LSTM" if "input_forget" in attrs else "GRU", **attrs)
    after, rewrites = unroll_rnn.run(model)
    assert rewrites == [] and _ops(after) in (["GRU"], ["LSTM"])


# --- end to end: the KWS fixtures through hub convert and TFLM ----------------------------------

@pytest.fixture(scope="module", params=["gru", "lstm"])
def converted_kws(request, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp(f"kws_{request.param}") / "out"
    proc = run_hub("convert", FIXTURES / f"kws_{request.param}.onnx", "--target", "tflm", "--calibration",
                   f"{FIXTURES / 'kws_mfcc.npz'}:mfcc", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"cell": request.param, "out": out, **json.loads(proc.stdout)}


@pytest.mark.slow
def test_kws_converts_and_runs_on_tflm_int8(converted_kws):
    report = converted_kws
    assert report["tflm"]["invokes"]
    assert report["fidelity"]["cosine"] >= 0.98 and report["fidelity"]["top1_agreement"] == 1.0
    lstm = converted_kws["cell"] == "lstm"  # the LSTM runs as TFLM's fused kernel (tests/test_sequence_lstm.py)
    assert not lstm or (report["fidelity"]["cosine"] >= 0.999 and report["model"]["op_count"] < 10)
    rule = next(p for p in report["passes"] if p["name"] == ("fuse_lstm" if lstm else "unroll_rnn"))
    assert rule["rewrites"][0]["op"] == converted_kws["cell"].upper() and rule["max_abs_error"] < ATOL
    assert ({"UNIDIRECTIONAL_SEQUENCE_LSTM"} if lstm else {"FULLY_CONNECTED", "LOGISTIC", "TANH", "WHILE"}) \
        <= set(report["model"]["ops"])
    # the GRU's repeated steps run as a WHILE loop over one step (hub.tflite.roll, tests/test_roll.py)
    assert rule["rewrites"][0]["path"] == ("fused" if lstm else "rolled")
    assert lstm or (report["model"]["op_count"] < 60 and "AddWhile" in
                    (converted_kws["out"] / "kws_gru_model_ops.h").read_text())
    # the fused LSTM keeps its state in variable tensors between invokes: firmware must Reset() per input
    header = (converted_kws["out"] / f"kws_{converted_kws['cell']}_model_settings.h").read_text()
    assert ("interpreter.Reset()" in header) == lstm


def test_kws_tflm_fed_time_major_as_the_header_says_matches_pytorch(converted_kws):
    # the conversion's own settings header and .tflite only: each MFCC sample (1, 49, 10) laid out as the
    # header's words say (time-major: frame after frame), quantized with its constants, on TFLM (Reset() before
    # each, as the header asks), against the TorchScript source of the same trained weights
    cell, out = converted_kws["cell"], converted_kws["out"]
    header = (out / f"kws_{cell}_model_settings.h").read_text()
    assert header_axes(header, "mfcc") == (["batch", "time", "features"], None)
    tflite, source = (out / "model.tflite").read_bytes(), torch.jit.load(str(FIXTURES / f"kws_{cell}.pt"))
    x = np.load(FIXTURES / "kws_mfcc.npz")["mfcc"][-8:].astype(np.float32)
    got = tflm_run(tflite, [{"mfcc": x[i:i + 1]} for i in range(len(x))], header)[:, 0]
    with torch.no_grad():
        want = source(torch.from_numpy(x)).numpy()
    assert np.mean([cosine(g, w) for g, w in zip(got, want)]) >= 0.99
    assert (got.argmax(1) == want.argmax(1)).all()
