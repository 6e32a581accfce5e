"""The per-layer error profile (hub.verify.layer_error) on a model with one deliberately bad layer (an outlier
channel), and its report table, chart and warning text. The default run checks the profile through
tests/test_fidelity.py's wide-range model (hub convert's poor-fidelity path: one conversion that run pays
anyway); the outlier model's own conversion and profile is `heavy` (about 16 s of CPU)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.artifacts import Diagnosis, LayerError, LayerProfile
from hub.convert.calibration import build_calibration
from hub.convert.converter import ConvertOptions, convert
from hub.graph.normalise import normalise
from hub.output import to_json
from hub.report.charts import layer_error_chart
from hub.verify.diagnose import profile_causes
from hub.verify.layer_error import profile_layers
from hub.verify.layer_error_worker import by_error_added

OUTLIER = 300.0  # one channel of the middle conv's output this far above the others (which are ~1)


def outlier_cnn() -> onnx.ModelProto:
    """conv1+Relu -> `outlier` (1x1 conv whose channel 0 carries a bias of OUTLIER) -> `mix` (1x1 conv that
    ignores channel 0) -> GlobalAveragePool -> Gemm. Per-tensor int8 gives `outlier`'s output a scale of
    ~OUTLIER/255, in which channels 1..7 round to a step or two: that layer is the one to blame."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32)
    b2 = np.zeros(8, np.float32)
    b2[0] = OUTLIER
    w3 = (rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32)
    w3[:, 0] = 0.0
    w4 = (rng.standard_normal((4, 8)) * 0.5).astype(np.float32)
    arrays = {"w1": w1, "b1": np.zeros(8, np.float32), "w2": w2, "b2": b2, "w3": w3, "b3": np.zeros(8, np.float32),
              "w4": w4, "b4": np.zeros(4, np.float32)}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="outlier"),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], name="mix"),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "outlier_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture(scope="module")
def outlier_profile() -> LayerProfile:
    normalised = normalise(outlier_cnn(), {})
    calibration = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    options = ConvertOptions("tflm", "int8")
    converted = convert(normalised, calibration, options)
    return profile_layers(normalised, calibration, converted, options)


@pytest.mark.heavy
def test_profile_names_the_outlier_layer(outlier_profile):
    layers = outlier_profile.layers
    assert [x.op_index for x in layers] == list(range(len(layers))) and outlier_profile.samples == 8
    worst = outlier_profile.worst(1)[0]
    assert (worst.op_index, worst.op) == (1, "CONV_2D"), layers
    # its own rounding is ordinary (~0.29 steps): the range, set by the outlier channel, drowns the others
    assert worst.isolated_cosine < 0.8 and worst.isolated_rmse_over_scale < 0.5
    assert layers[0].cosine > 0.999 and layers[0].isolated_cosine > 0.999  # the first conv is fine
    assert layers[-1].cosine < 0.8 and layers[-1].isolated_cosine > layers[-1].cosine  # the damage shows downstream


def measured_like_the_outlier_model() -> LayerProfile:
    """The figures test_profile_names_the_outlier_layer measured (rounded), as a profile."""
    rows = [(0, "CONV_2D", 0.9999, 0.9999), (1, "CONV_2D", 0.6247, 0.6243), (2, "CONV_2D", 0.6202, 0.6213),
            (3, "AVERAGE_POOL_2D", 0.4979, 0.8616), (4, "FULLY_CONNECTED", 0.3955, 0.9052)]
    return LayerProfile(tuple(LayerError(i, op, f"t{i}", 0.3, cos, alone, 0.3, 0.01) for i, op, cos, alone in rows),
                        samples=8)


def test_report_carries_the_table_the_chart_and_the_warning_text():
    profile = measured_like_the_outlier_model()
    assert [x.op_index for x in profile.worst(2)] == [1, 2]  # within 0.01: the producer of the drowned tensor first
    doc = Diagnosis("quantization", 1.0, causes=[], layer_profile=profile).to_dict()
    assert doc["layer_profile"]["worst"] == [1, 2, 3] and len(doc["layer_profile"]["layers"]) == 5
    svg = layer_error_chart(json.loads(to_json(doc["layer_profile"])))
    assert svg.startswith("<svg") and "#1 CONV_2D" in svg and "this op alone quantized" in svg
    causes = profile_causes(profile)
    assert causes == ["the ops adding the most error, measured alone on 8 held-out samples: op #1 CONV_2D (cosine "
                      "0.624 alone, 0.625 as converted), op #2 CONV_2D (cosine 0.621 alone, 0.620 as converted), op #3 "
                      "AVERAGE_POOL_2D (cosine 0.862 alone, 0.498 as converted)"]


def sums(quantized: np.ndarray, real: np.ndarray) -> dict:
    """The worker's sums for one tensor of one channel."""
    q, f = quantized.reshape(-1, 1), real.reshape(-1, 1)
    return {"q": q.sum(0).tolist(), "f": f.sum(0).tolist(), "qq": (q * q).sum(0).tolist(),
            "ff": (f * f).sum(0).tolist(), "qf": (q * f).sum(0).tolist(), "scale": 0.01, "n": len(q)}


def test_a_budgeted_isolated_view_measures_the_op_that_adds_most_error_first():
    """Under the warning's time budget, the isolated view starts with the op whose cosine as converted falls most
    below its inputs': outlier_cnn's middle conv, not the ops downstream that only carry its error."""
    rng = np.random.default_rng(0)
    real = rng.standard_normal(64)
    converted = {name: sums(real + rng.standard_normal(64) * noise, real)
                 for name, noise in (("c1", 0.01), ("c2", 1.0), ("c3", 1.1), ("p", 1.2))}
    inputs = {"c1": ["image"], "c2": ["c1", "w2"], "c3": ["c2"], "p": ["c3"]}
    assert by_error_added(converted, inputs)[0] == "c2"
    partial = measured_like_the_outlier_model()
    partial = replace(partial, isolated_budget_s=30.0,
                      layers=tuple(replace(x, isolated_cosine=None) if x.op_index != 1 else x for x in partial.layers))
    assert [x.op_index for x in partial.worst(2)] == [1]  # an unmeasured op's error as converted is not its own
    assert "(alone: the 1 of 5 ops whose error grows most as converted, within 30 s)" in profile_causes(partial)[0]
