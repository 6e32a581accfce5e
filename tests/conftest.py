"""Session fixtures shared across test files: expensive artefacts are built once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def _mlperf_dir() -> Path:
    """The MLPerf Tiny models: $HUB_MLPERF_TINY, else ../shared/mlperf_tiny beside the checkout, else the
    workspace's /work/shared/mlperf_tiny (CI runs from a clone elsewhere on the same machine)."""
    candidates = [os.environ.get("HUB_MLPERF_TINY"), ROOT.parent / "shared" / "mlperf_tiny", "/work/shared/mlperf_tiny"]
    return next((Path(c) for c in candidates if c and Path(c, "README.md").exists()), ROOT.parent / "shared" / "mlperf_tiny")


MLPERF = _mlperf_dir()
HUB = [sys.executable, "-m", "hub.cli"]


def run_hub(*args: str, cwd: Path | None = None, timeout: float = 600, prefix: list[str] | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as a user would."""
    return subprocess.run([*(prefix or []), *HUB, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def small_cnn_onnx(seed: int = 0, classes: int = 4) -> onnx.ModelProto:
    """Conv(3->8) -> Relu -> depthwise Conv -> Relu -> GlobalAveragePool -> Gemm, NCHW 1x3x16x16.

    Built with onnx.helper so stage tests need no framework; weights are
    scaled so the logits spread like a trained model's (no softmax here).
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32)
    w3 = (rng.standard_normal((classes, 8)) * 0.5).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (np.zeros(8, np.float32), "b1"), (w2, "w2"), (np.zeros(8, np.float32) + 0.1, "b2"),
              (w3, "w3"), (np.zeros(classes, np.float32), "b3"))]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dwconv"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def one_node_onnx(path: Path, op: str, domain: str = "", name: str = "") -> Path:
    """A (1, 8) -> (1, 8) graph of one node, saved at `path`: an op TFLM or the converter lacks."""
    node = helper.make_node(op, ["x"], ["y"], name=name or op, domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def small_cnn_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small_cnn") / "small_cnn.onnx"
    onnx.save(small_cnn_onnx(), str(path))
    return path


@pytest.fixture(scope="session")
def resnet_fixture() -> Path:
    """The README's default example: a trained ResNet-style TorchScript model."""
    path = FIXTURES / "resnet_tiny.pt"
    assert path.exists(), "fixtures/resnet_tiny.pt is missing: run fixtures/make_torch_fixtures.py"
    return path


@pytest.fixture(scope="session")
def converted_resnet(tmp_path_factory, resnet_fixture) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """`hub convert fixtures/resnet_tiny.pt --target tflm --json`, run once for the whole session."""
    out = tmp_path_factory.mktemp("resnet") / "resnet_tiny_tflm"
    proc = run_hub("convert", resnet_fixture, "--target", "tflm", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(proc.stdout), proc


# --- Keras / TensorFlow: the MLPerf Tiny float models (tests/test_adapter_keras.py) -------------

MLPERF_FLOAT = {
    "ic": MLPERF / "ic" / "resnet8.h5",  # Keras h5
    "vww": MLPERF / "vww" / "mobilenet_v1_025.h5",  # legacy Keras 2 h5: Keras 3 refuses, tf_keras loads
    "kws": MLPERF / "kws" / "ds_cnn_savedmodel",  # SavedModel, serving_default
    "ad": MLPERF / "ad" / "autoencoder.h5",  # Keras h5, dense
}


@pytest.fixture(scope="session")
def mlperf_source():
    """name -> hub.adapters.load(...) SourceModel of an MLPerf Tiny float model; each loaded once per session."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            import hub.adapters
            from hub.artifacts import LoadOptions

            cache[name] = hub.adapters.load(MLPERF_FLOAT[name], LoadOptions())
        return cache[name]

    return get


@pytest.fixture(scope="session")
def mlperf_tf_reference():
    """name -> function(NHWC float32 batch) -> output of the model run by Keras/TensorFlow itself; cached."""
    cache: dict = {}

    def load(name: str):
        import warnings

        path = MLPERF_FLOAT[name]
        if path.is_dir():
            import tensorflow as tf

            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
            key = next(iter(signature.structured_input_signature[1]))

            def run(x: np.ndarray, _keep=loaded) -> np.ndarray:
                return next(iter(signature(**{key: tf.constant(x)}).values())).numpy()

            return run
        try:
            import keras

            model = keras.saving.load_model(path, compile=False)
        except Exception:  # legacy Keras 2 configs (vww's DepthwiseConv2D)
            import tf_keras

            model = tf_keras.models.load_model(path, compile=False)

        def run(x: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(model(x, training=False))

        return run

    def get(name: str):
        if name not in cache:
            cache[name] = load(name)
        return cache[name]

    return get


# --- hub check (tests/test_analyse.py) -------------------------------------------------------------

def sign_onnx() -> onnx.ModelProto:
    """One Sign node: onnx2tf emits TFLite SIGN, which TFLM does not have."""
    graph = helper.make_graph([helper.make_node("Sign", ["x"], ["y"], name="sign")], "sign",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="session")
def converted_check_models() -> dict[tuple[str, str], bytes]:
    """.tflite bytes from the real converter: {(name, quantize): bytes} for hub check's TFLite tests."""
    jobs = {("cnn", "int8"): small_cnn_onnx, ("cnn", "float32"): small_cnn_onnx,
            ("tiny_softmax", "int8"): tiny_softmax_onnx, ("sign", "float32"): sign_onnx}
    return {(name, quantize): convert_model(make(), quantize)[0] for (name, quantize), make in jobs.items()}


# --- verify/export fixtures: .tflite files made by hub's own pipeline (normalise -> calibration -> convert) ---

def convert_model(model: onnx.ModelProto, quantize: str = "int8"):
    """Run the real stages on `model` (synthetic calibration over 0..1); returns (.tflite bytes, NormalisedModel)."""
    from hub.convert.calibration import build_calibration
    from hub.convert.converter import ConvertOptions, convert
    from hub.graph.normalise import normalise

    normalised = normalise(model, {})
    calibration = build_calibration(normalised.inputs, None, (0.0, 1.0), {})
    return convert(normalised, calibration, ConvertOptions("tflm", quantize)).tflite_bytes, normalised


def convert_through_pipeline(model: onnx.ModelProto, folder: Path, quantize: str = "int8") -> tuple[Path, Path]:
    """convert_model, written to folder; returns (model.tflite, normalised model.onnx)."""
    tflite_bytes, normalised = convert_model(model, quantize)
    tflite, reference = folder / "model.tflite", folder / "model.onnx"
    tflite.write_bytes(tflite_bytes)
    onnx.save(normalised.onnx_model, str(reference))
    return tflite, reference


def _single_node_onnx(op: str, inits: list | None = None, inputs: list[str] | None = None, width: int = 16) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x", *(inputs or [])], ["y"], name=op.lower())], op.lower(),
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def tiny_softmax_onnx(weight_scale: float = 1e-8) -> onnx.ModelProto:
    """x(1,16) -> Gemm with weights ~1e-8 -> Softmax: int8 logits get a scale < 2^-26, which
    makes TFLM's int8 SOFTMAX abort() in Prepare (QuantizeMultiplierGreaterThanOne)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 16)) * weight_scale).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1, name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax")]
    graph = helper.make_graph(nodes, "tiny_softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture(scope="session")
def small_cnn_int8_tflite(tmp_path_factory) -> tuple[Path, Path]:
    """small_cnn_onnx() through the real pipeline, int8: (model.tflite, normalised model.onnx)."""
    return convert_through_pipeline(small_cnn_onnx(), tmp_path_factory.mktemp("small_cnn_int8"))


@pytest.fixture(scope="session")
def tiny_softmax_int8_tflite(tmp_path_factory) -> Path:
    """An int8 classifier whose SOFTMAX input scale is tiny: TFLM aborts the process loading it."""
    return convert_through_pipeline(tiny_softmax_onnx(), tmp_path_factory.mktemp("tiny_softmax"))[0]


@pytest.fixture(scope="session")
def tile_float_tflite(tmp_path_factory) -> Path:
    """A float32 single Tile node: TFLite TILE, for which TFLM has no kernel."""
    model = _single_node_onnx("Tile", [numpy_helper.from_array(np.array([1, 2], np.int64), "repeats")], ["repeats"])
    return convert_through_pipeline(model, tmp_path_factory.mktemp("tile_f32"), "float32")[0]


@pytest.fixture(scope="session")
def exp_int8_tflite(tmp_path_factory) -> Path:
    """An int8 EXP: TFLM has the op but its kernel is float-only, so Prepare fails."""
    return convert_through_pipeline(_single_node_onnx("Exp"), tmp_path_factory.mktemp("exp_int8"))[0]
