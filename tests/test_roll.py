"""hub.tflite.roll: an unrolled int8 GRU's repeated steps rolled into a TFLM WHILE loop.

A small PyTorch GRU (8 steps) goes through hub's own stages (normalise, the unroll_rnn rewrite, the real converter),
then the roll pass; the rolled flatbuffer is checked op by op and run on the TFLM interpreter against the PyTorch
module and the unrolled model (heavy: ~40 s of conversion). In the default run, the 49-step KWS GRU end to end
(hub convert, TFLM fidelity, report path "rolled") is tests/test_rewrite_rnn.py's, at no extra conversion.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from ai_edge_litert import schema_py_generated as schema
from torch import nn

from hub.convert.calibration import build_calibration
from hub.convert.converter import ConvertOptions, convert
from hub.graph.normalise import normalise
from hub.graph.rewrite import rewrite
from hub.tflite import roll
from hub.tflite.model import OP_NAMES, read_tflite
from hub.verify.tflm import tflm_raw_outputs

STEPS, FEATURES, HIDDEN = 8, 4, 8


class _Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.GRU(FEATURES, HIDDEN, batch_first=True), nn.Linear(HIDDEN, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.fixture(scope="module")
def gru():
    torch.manual_seed(0)
    module = _Gru().eval()
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, STEPS, FEATURES),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"])
    normalised = normalise(onnx.load_from_string(buffer.getvalue()), {})
    calibration = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    unrolled = rewrite(normalised, calibration.samples, "int8")
    tflite_bytes = convert(unrolled, calibration, ConvertOptions("tflm", "int8")).tflite_bytes
    rolled, result = roll.roll(tflite_bytes)
    return {"module": module, "unrolled": tflite_bytes, "rolled": rolled, "result": result,
            "samples": calibration.held_out_samples()}


@pytest.mark.heavy  # the conversion: ~40 s (tests/test_rewrite_rnn.py's KWS GRU covers the rolled path by default)
def test_rolled_flatbuffer_is_a_while_over_one_step(gru):
    result = gru["result"]
    # step 0 (h0 = 0 folded) and the last step (with the head) stay unrolled
    assert (result.steps, result.total_steps) == (STEPS - 2, STEPS)
    model = schema.ModelT.InitFromPackedBuf(gru["rolled"], 0)
    assert [sg.name for sg in model.subgraphs[1:]] == [b"while_body", b"while_cond"]
    ops = [[OP_NAMES[model.operatorCodes[op.opcodeIndex].builtinCode] for op in sg.operators] for sg in model.subgraphs]
    assert ops[0].count("WHILE") == 1 and ops[2] == ["LESS"]
    assert ops[1][:3] == ["GATHER", "FULLY_CONNECTED", "GATHER"] and ops[1][-1] == "ADD"
    assert sorted(ops[1][4:-1]) == sorted(["FULLY_CONNECTED", "ADD", "LOGISTIC", "SPLIT", "FULLY_CONNECTED", "MUL",
                                            "ADD", "TANH", "SUB", "MUL", "ADD"])
    parsed = read_tflite(gru["rolled"])
    assert parsed.subgraphs == 3 and parsed.op_histogram()["WHILE"] == 1
    assert sum(parsed.op_histogram().values()) == result.ops_after < result.ops_before


@pytest.mark.heavy
def test_rolled_model_runs_on_tflm_like_the_source(gru):
    samples = gru["samples"]
    with torch.no_grad():
        source = np.concatenate([gru["module"](torch.from_numpy(s["x"])).numpy() for s in samples])
    got = {}
    for kind in ("unrolled", "rolled"):
        spec = read_tflite(gru[kind]).io_specs("outputs")[0]
        raw = np.concatenate([outputs[0] for outputs in tflm_raw_outputs(gru[kind], samples)]).astype(np.float32)
        got[kind] = (raw - spec["zero_point"]) * spec["scale"]
        cosine = float(np.dot(got[kind].ravel(), source.ravel()) / np.linalg.norm(got[kind]) / np.linalg.norm(source))
        assert cosine >= 0.999, (kind, cosine)
    # the body's union ranges cost at most a few output steps against the unrolled model's own
    assert np.abs(got["rolled"] - got["unrolled"]).max() <= 4 * spec["scale"]


def test_roll_leaves_other_models_alone(small_cnn_int8_tflite):
    cnn = small_cnn_int8_tflite[0].read_bytes()
    assert roll.run(cnn) == (cnn, 0, "")


@pytest.mark.heavy
def test_a_rolled_model_is_not_rolled_again(gru):
    assert roll.run(gru["rolled"])[1] == 0  # a model with subgraphs is left as it is
