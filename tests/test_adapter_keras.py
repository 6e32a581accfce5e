"""Keras / TensorFlow adapter: every input case, each clear error, and ONNX == Keras/TF numerically.

Real components only: Keras 3, tf_keras, TensorFlow, tf2onnx and onnxruntime.
The ONNX side takes NCHW where the adapter says the user's data is NHWC.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import hub.adapters
from hub.adapters.keras import KerasAdapter, unsafe_parts
from hub.artifacts import LoadOptions
from hub.errors import InputError
from hub.graph.normalise import normalise_source

from .conftest import FIXTURES, MLPERF_FLOAT, ROOT, run_hub

TOLERANCE = 1e-4
CNN = FIXTURES / "keras_cnn.keras"
DENSE = FIXTURES / "keras_dense.h5"
SAVEDMODEL = FIXTURES / "keras_savedmodel"


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(1e-6, float(np.abs(expected).max())))


def run_onnx(source, feeds_nhwc: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the adapter's ONNX, transposing the user's NHWC arrays where the export is NCHW."""
    feeds = {k: (v.transpose(0, 3, 1, 2) if source.source_layouts.get(k) == "NHWC" else v)
             for k, v in feeds_nhwc.items()}
    session = ort.InferenceSession(source.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def onnx_input_shapes(source) -> dict[str, list[int]]:
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in source.onnx_model.graph.input}


def nhwc_inputs(source, lo: float = 0.0, hi: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs in the user's (Keras) layout for every ONNX input."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in onnx_input_shapes(source).items():
        if source.source_layouts.get(name) == "NHWC":
            shape = [shape[0], shape[2], shape[3], shape[1]]
        out[name] = rng.uniform(lo, hi, shape).astype(np.float32)
    return out


def keras_call(model, x) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(model(x, training=False))


def assert_keras_source(source, image_inputs: set[str]) -> None:
    assert source.framework == "keras"
    opset = next(o.version for o in source.onnx_model.opset_import if o.domain in ("", "ai.onnx"))
    assert 13 <= opset <= 18
    for name, shape in onnx_input_shapes(source).items():
        assert all(d > 0 for d in shape), (name, shape)  # static everywhere
        assert source.source_layouts[name] == ("NHWC" if name in image_inputs else None)


# --- sniffing --------------------------------------------------------------------------------

def test_sniff_claims_keras_formats_only_and_never_imports_tensorflow(tmp_path, small_cnn_path):
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "folder").mkdir()
    code = f"""
import json, sys
from pathlib import Path
from hub.adapters.keras import KerasAdapter
a = KerasAdapter()
paths = {[str(p) for p in (CNN, DENSE, SAVEDMODEL, FIXTURES / "resnet_tiny.pt", FIXTURES / "tiny_cnn.pt2",
                           small_cnn_path, tmp_path / "noise.bin", tmp_path / "folder")]!r}
print(json.dumps({{"sniff": [a.sniff(Path(p)) for p in paths],
                  "heavy": [m for m in ("tensorflow", "keras", "tf_keras", "tf2onnx") if m in sys.modules]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["sniff"] == [True, True, True, False, False, False, False, False]
    assert result["heavy"] == []


@pytest.mark.parametrize("path", [CNN, DENSE, SAVEDMODEL])
def test_registry_routes_keras_files_to_the_keras_adapter(path):
    assert isinstance(hub.adapters.find_adapter(path), KerasAdapter)


# --- the three fixtures, each against its own framework ---------------------------------------

def test_keras3_archive_matches_keras():
    import keras

    source = hub.adapters.load(CNN, LoadOptions())
    assert_keras_source(source, {"image"})
    assert onnx_input_shapes(source) == {"image": [1, 3, 16, 16]}
    assert [o.name for o in source.onnx_model.graph.output] == ["probs"]
    feeds = nhwc_inputs(source)
    expected = keras_call(keras.saving.load_model(CNN, compile=False), feeds["image"])
    assert rel_err(run_onnx(source, feeds)[0], expected) < TOLERANCE


def test_legacy_keras2_h5_matches_tf_keras():
    import tf_keras

    source = hub.adapters.load(DENSE, LoadOptions())
    assert_keras_source(source, set())
    assert onnx_input_shapes(source) == {"features": [1, 20]}
    feeds = nhwc_inputs(source, -3, 3)
    expected = keras_call(tf_keras.models.load_model(DENSE, compile=False), feeds["features"])
    assert rel_err(run_onnx(source, feeds)[0], expected) < TOLERANCE


def test_savedmodel_folder_matches_its_serving_signature():
    import tensorflow as tf

    source = hub.adapters.load(SAVEDMODEL, LoadOptions())
    assert_keras_source(source, {"spectrogram"})
    assert onnx_input_shapes(source) == {"spectrogram": [1, 1, 12, 12]}  # dynamic batch -> 1, NCHW
    feeds = nhwc_inputs(source, -1, 2)
    signature = tf.saved_model.load(str(SAVEDMODEL)).signatures["serving_default"]
    expected = next(iter(signature(spectrogram=tf.constant(feeds["spectrogram"])).values())).numpy()
    assert rel_err(run_onnx(source, feeds)[0], expected) < TOLERANCE


@pytest.mark.parametrize("path, task, name", [(CNN, "patch_images", "image"), (DENSE, "clusters", "features"),
                                             (SAVEDMODEL, "stripes", "spectrogram")])
def test_fixtures_are_trained_classifiers(path, task, name):
    """Trained, not random: held-out samples (a seed unseen in training) are classified correctly."""
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_keras_fixtures
    finally:
        sys.path.remove(str(FIXTURES))
    x, y = getattr(make_keras_fixtures, task)(64, seed=123)
    source = hub.adapters.load(path, LoadOptions(batch=64))
    probs = run_onnx(source, {name: x})[0]
    assert (probs.argmax(1) == y).mean() > 0.9


def test_batch_option_and_nhwc_or_nchw_input_shape():
    import keras

    batched = hub.adapters.load(CNN, LoadOptions(batch=4))
    assert onnx_input_shapes(batched) == {"image": [4, 3, 16, 16]}
    model = keras.saving.load_model(CNN, compile=False)
    feeds = nhwc_inputs(batched, seed=1)
    assert rel_err(run_onnx(batched, feeds)[0], keras_call(model, feeds["image"])) < TOLERANCE
    for given in ((2, 16, 16, 3), (2, 3, 16, 16)):  # the Keras layout, or the exported NCHW one
        options = LoadOptions(input_shapes={None: given})
        source = hub.adapters.load(CNN, options)
        assert onnx_input_shapes(source) == {"image": [2, 3, 16, 16]}
        # normalise must not reapply a Keras-layout shape onto the NCHW graph
        assert normalise_source(source, options).inputs[0].shape == (2, 3, 16, 16)
    by_name = hub.adapters.load(SAVEDMODEL, LoadOptions(input_shapes={"spectrogram": (3, 12, 12, 1)}))
    assert onnx_input_shapes(by_name) == {"spectrogram": [3, 1, 12, 12]}


@pytest.mark.parametrize("shapes, match", [
    ({None: (1, 8, 8, 3)}, "does not fit"),
    ({"nope": (1, 16, 16, 3)}, "inputs are image"),
])
def test_input_shape_that_does_not_fit_is_an_input_error(shapes, match):
    with pytest.raises(InputError, match=match):
        hub.adapters.load(CNN, LoadOptions(input_shapes=shapes))


# --- models built here: dynamic dims, several inputs, Lambda, custom objects ---------------------

@pytest.fixture(scope="module")
def dynamic_cnn(tmp_path_factory) -> Path:
    """A fully convolutional Keras 3 model with dynamic height and width."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3), name="frame")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.GlobalAveragePooling2D()(h)
    path = tmp_path_factory.mktemp("keras") / "dynamic.keras"
    keras.Model(inp, out).save(path)
    return path


def test_dynamic_spatial_dims_need_input_shape(dynamic_cnn):
    import keras

    with pytest.raises(InputError, match=r"dynamic dimensions \(1,\?,\?,3\).*--input-shape frame="):
        hub.adapters.load(dynamic_cnn, LoadOptions())
    source = hub.adapters.load(dynamic_cnn, LoadOptions(input_shapes={"frame": (1, 20, 24, 3)}))
    assert onnx_input_shapes(source) == {"frame": [1, 3, 20, 24]}
    feeds = nhwc_inputs(source)
    expected = keras_call(keras.saving.load_model(dynamic_cnn, compile=False), feeds["frame"])
    assert rel_err(run_onnx(source, feeds)[0], expected) < TOLERANCE


def test_two_inputs_keep_their_names_and_layouts(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 2), name="image")
    meta = keras.Input((5,), name="meta")
    h = keras.layers.Flatten()(keras.layers.Conv2D(3, 3)(image))
    out = keras.layers.Dense(2, name="score")(keras.layers.Concatenate()([h, meta]))
    path = tmp_path / "two.keras"
    model = keras.Model([image, meta], out)
    model.save(path)
    with pytest.raises(InputError, match="has 2 inputs"):
        hub.adapters.load(path, LoadOptions(input_shapes={None: (1, 8, 8, 2)}))
    source = hub.adapters.load(path, LoadOptions())
    assert_keras_source(source, {"image"})
    assert onnx_input_shapes(source) == {"image": [1, 2, 8, 8], "meta": [1, 5]}
    feeds = nhwc_inputs(source)
    expected = keras_call(model, [feeds["image"], feeds["meta"]])
    assert rel_err(run_onnx(source, feeds)[0], expected) < TOLERANCE


@pytest.fixture(scope="module")
def lambda_models(tmp_path_factory) -> dict[str, Path]:
    """The same Lambda layer in a Keras 3 archive and in a legacy Keras 2 h5 (tf_keras)."""
    import keras
    import tf_keras

    folder = tmp_path_factory.mktemp("lambda")
    paths = {"keras": folder / "lambda.keras", "h5": folder / "lambda.h5"}
    inp = keras.Input((6,), name="x")
    out = keras.layers.Dense(3)(keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(inp))
    keras.Model(inp, out).save(paths["keras"])
    inp2 = tf_keras.Input((6,), name="x")
    out2 = tf_keras.layers.Dense(3)(tf_keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(inp2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf_keras.Model(inp2, out2).save(paths["h5"], save_format="h5")
    return paths


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_lambda_layer_needs_trust_code(lambda_models, kind):
    import keras
    import tf_keras

    path = lambda_models[kind]
    with pytest.raises(InputError) as info:
        hub.adapters.load(path, LoadOptions())
    message = info.value.one_line()
    assert "Lambda layer" in message and "--trust-code" in message and "\n" not in message
    source = hub.adapters.load(path, LoadOptions(trust_code=True))
    x = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    loader = keras.saving.load_model if kind == "keras" else tf_keras.models.load_model
    expected = keras_call(loader(path, compile=False, safe_mode=False), x)
    assert rel_err(run_onnx(source, {"x": x})[0], expected) < TOLERANCE


def test_tf_keras_alone_would_load_a_lambda_h5_in_safe_mode(lambda_models):
    """Why the adapter reads the config itself: tf_keras's safe_mode does not cover legacy h5."""
    import tf_keras

    assert tf_keras.models.load_model(lambda_models["h5"], compile=False, safe_mode=True) is not None


@pytest.fixture(scope="module")
def custom_layer_model(tmp_path_factory) -> Path:
    import keras

    @keras.saving.register_keras_serializable(package="hubtest")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4,), name="x")
    out = keras.layers.Dense(2)(Doubler()(inp))
    path = tmp_path_factory.mktemp("custom") / "custom.keras"
    keras.Model(inp, out).save(path)
    return path


def test_custom_object_needs_trust_code(custom_layer_model):
    import keras

    with pytest.raises(InputError, match=r"custom object 'hubtest>Doubler'.*--trust-code"):
        hub.adapters.load(custom_layer_model, LoadOptions())
    source = hub.adapters.load(custom_layer_model, LoadOptions(trust_code=True))
    x = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
    expected = keras_call(keras.saving.load_model(custom_layer_model, compile=False, safe_mode=False), x)
    assert rel_err(run_onnx(source, {"x": x})[0], expected) < TOLERANCE


def test_custom_object_whose_code_is_missing_is_a_clear_error(custom_layer_model, tmp_path):
    path = tmp_path / "missing.keras"
    with zipfile.ZipFile(custom_layer_model) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, data.replace(b"hubtest>Doubler", b"hubtest>Missing") if item == "config.json" else data)
    with pytest.raises(InputError, match="custom class") as info:
        hub.adapters.load(path, LoadOptions(trust_code=True))
    assert "\n" not in info.value.one_line()


def test_unsafe_parts_ignores_builtin_layers():
    config = json.loads(zipfile.ZipFile(CNN).read("config.json"))
    assert unsafe_parts(config) == []
    assert unsafe_parts({"class_name": "Sequential", "config": {"layers": [{"class_name": "hub>Custom"}]}}) == \
        ["custom object 'hub>Custom'"]


# --- broken inputs: one-line InputError, never a traceback --------------------------------------

def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_and_corrupt_files_are_input_errors(tmp_path):
    cases = {
        "truncated .keras": _truncated(CNN, tmp_path / "cut.keras"),
        "truncated .h5": _truncated(DENSE, tmp_path / "cut.h5"),
    }
    bad_config = tmp_path / "badconfig.keras"
    with zipfile.ZipFile(CNN) as src, zipfile.ZipFile(bad_config, "w") as dst:
        for item in src.namelist():
            dst.writestr(item, b"{not json" if item == "config.json" else src.read(item))
    cases["bad config.json"] = bad_config
    bad_weights = tmp_path / "badweights.keras"
    with zipfile.ZipFile(CNN) as src, zipfile.ZipFile(bad_weights, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, data[: len(data) // 3] if item == "model.weights.h5" else data)
    cases["truncated weights"] = bad_weights
    for label, path in cases.items():
        with pytest.raises(InputError) as info:
            hub.adapters.load(path, LoadOptions())
        assert "\n" not in info.value.one_line() and str(path) in info.value.one_line(), label


def test_weights_only_h5_says_so(tmp_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
    path = tmp_path / "weights.h5"
    model.save_weights(path)
    with pytest.raises(InputError, match="weights only"):
        hub.adapters.load(path, LoadOptions())


def test_broken_savedmodel_folders(tmp_path):
    import tensorflow as tf

    cut = tmp_path / "cut"
    cut.mkdir()
    _truncated(SAVEDMODEL / "saved_model.pb", cut / "saved_model.pb")
    with pytest.raises(InputError, match="corrupt or incomplete"):
        hub.adapters.load(cut, LoadOptions())
    bare = tmp_path / "bare"
    tf.saved_model.save(tf.Module(), str(bare))  # no signatures at all
    with pytest.raises(InputError, match="no serving_default signature"):
        hub.adapters.load(bare, LoadOptions())


def test_cli_errors_are_one_line_without_traceback(tmp_path, lambda_models):
    cut = _truncated(DENSE, tmp_path / "cut.h5")
    for args, needle in (((cut,), "corrupt or truncated"), ((lambda_models["keras"],), "--trust-code")):
        proc = run_hub("convert", *args, "--target", "tflm", "--out", tmp_path / "out")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("hub: error:")]
        assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]


# --- the four MLPerf Tiny float models (README input ranges) ---------------------------------------

MLPERF_RANGES = {"ic": (0.0, 255.0), "vww": (0.0, 1.0), "kws": (-123.0, 26.0), "ad": (-85.0, 15.0)}


@pytest.mark.parametrize("name", sorted(MLPERF_FLOAT))
def test_mlperf_tiny_float_models_match_tensorflow(name, mlperf_source, mlperf_tf_reference):
    source = mlperf_source(name)
    assert_keras_source(source, set() if name == "ad" else {"input_1"})
    feeds = nhwc_inputs(source, *MLPERF_RANGES[name], seed=7)
    (x,) = feeds.values()
    assert rel_err(run_onnx(source, feeds)[0], mlperf_tf_reference(name)(x)) < TOLERANCE


def test_vww_needs_the_tf_keras_fallback():
    """Keras 3 refuses vww's legacy DepthwiseConv2D config; the adapter still loaded it (test above)."""
    import keras

    with pytest.raises(Exception, match="DepthwiseConv2D"):
        keras.saving.load_model(MLPERF_FLOAT["vww"], compile=False)


def test_load_writes_nothing_to_stdout_or_stderr(capfd):
    """`--json` owns stdout; TF's C++ chatter (CUDA factories, grappler) must not leak to either fd."""
    capfd.readouterr()
    hub.adapters.load(SAVEDMODEL, LoadOptions())
    hub.adapters.load(CNN, LoadOptions())
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --- keras.applications building blocks (issue 12) ------------------------------------------------

def test_normalization_constants_stay_in_the_model(tmp_path):
    """Keras 3 Normalization (EfficientNet's and ConvNeXt's first layer) keeps mean and variance as
    tensors the traced function captures; tf2onnx made them graph inputs the caller had to feed."""
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Normalization(mean=[10.0, 20.0, 30.0], variance=[4.0, 9.0, 16.0])(inp)
    model = keras.Model(inp, keras.layers.Conv2D(4, 3)(x))
    model.save(tmp_path / "norm.keras")
    source = hub.adapters.load(tmp_path / "norm.keras", LoadOptions())
    assert [v.name for v in source.onnx_model.graph.input] == ["image"]
    x = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    (got,) = run_onnx(source, {"image": x})
    assert rel_err(got, keras_call(model, x)) < TOLERANCE


@pytest.fixture(scope="module")
def convnext_block(tmp_path_factory) -> Path:
    """ConvNeXt's two layers tf2onnx could not translate: a grouped Conv2D (Keras 3 runs it as an XLA call) and
    exact GELU (tf.nn.gelu(approximate=False): Erfc); and its LayerNormalization, whose export left float islands."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 8), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4)(inp)
    x = keras.layers.Activation("gelu")(x)  # exact: Keras 3's gelu defaults to approximate=False
    x = keras.layers.Conv2D(16, 3, padding="same", groups=16)(x)  # groups == channels, as depthwise
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)  # tf2onnx: Neg, Sqrt -> Reciprocal
    x = keras.layers.Activation("gelu")(keras.layers.Dense(16)(x))
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path_factory.mktemp("convnext_block") / "block.keras"
    keras.Model(inp, out).save(path)
    return path


def test_grouped_conv_and_exact_gelu_export_as_onnx_ops(convnext_block):
    """Exported as Conv with `group` and the Erf form of GELU (not Erfc, nor an XLA call), matching Keras."""
    import keras

    source = hub.adapters.load(convnext_block, LoadOptions())
    groups = sorted(int(a.i) for n in source.onnx_model.graph.node if n.op_type == "Conv" for a in n.attribute
                    if a.name == "group")
    assert groups == [4, 16] and {n.op_type for n in source.onnx_model.graph.node} >= {"Erf"}
    x = nhwc_inputs(source, -2.0, 2.0)
    (got,) = run_onnx(source, x)
    model = keras.models.load_model(convnext_block)
    assert rel_err(got, keras_call(model, x["image"])) < TOLERANCE


def test_erfc_in_a_savedmodel_exports_as_one_minus_erf(tmp_path):
    """A SavedModel's tf.nn.gelu(approximate=False) keeps TensorFlow's Erfc (no Keras layer to trace anew)."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32))
    module.serve = tf.function(lambda x: {"y": tf.nn.gelu(tf.matmul(x, module.w), approximate=False)},
                               input_signature=[tf.TensorSpec((1, 6), tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "gelu_sm"), signatures={"serving_default": module.serve})
    source = hub.adapters.load(tmp_path / "gelu_sm", LoadOptions())
    assert "Erf" in {n.op_type for n in source.onnx_model.graph.node}
    x = np.random.default_rng(1).uniform(-3, 3, (1, 6)).astype(np.float32)
    (got,) = run_onnx(source, {"x": x})
    assert rel_err(got, module.serve(tf.constant(x))["y"].numpy()) < TOLERANCE


def test_grouped_conv_and_exact_gelu_convert_to_int8_and_match_keras(convnext_block, tmp_path):
    """End to end on TFLM: every op int8 (the GELUs become the tanh form, LayerNorm's 1/sqrt an RSQRT and its -mean
    a MUL), no float island, close to Keras."""
    from hub import api

    report = api.convert(convnext_block, input_range="-2,2", out=tmp_path / "out")
    assert {p.name: len(p.rewrites) for p in report.passes if p.rewrites} == {"gelu_tanh": 2, "reciprocal_sqrt": 1, "neg_to_mul": 1}
    assert report.float_islands == [] and "DEQUANTIZE" not in report.model.ops
    assert report.verification.fidelity.cosine >= 0.99, report.verification.fidelity


@pytest.mark.heavy
def test_keras_convnext_tiny_converts_and_runs_on_tflm(tmp_path):
    """keras.applications.ConvNeXtTiny (28.6M parameters, 64x64 input) was refused at load for 36 ops tf2onnx left
    as TensorFlow ops. Its LayerScale gammas are set to 0.1: Keras starts them at 1e-6, which would make every
    block nearly the identity and the fidelity check blind to the blocks (trained ConvNeXts have 0.1-1)."""
    import keras

    from hub import api

    keras.utils.set_random_seed(0)
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3))
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":
            layer.gamma.assign(np.full(layer.gamma.shape, 0.1, np.float32))
    model.save(tmp_path / "convnext_tiny.keras")
    report = api.convert(tmp_path / "convnext_tiny.keras", input_range="0,255", out=tmp_path / "out")
    assert report.verification.tflm.invokes and report.float_islands == []
    assert report.verification.fidelity.cosine >= 0.95, report.verification.fidelity


@pytest.mark.heavy  # 54 s: the default run keeps the grouped-conv, SE and GELU conversions of this file
def test_nasnet_reduction_cell_converts(tmp_path):
    """NASNetMobile's stem and first reduction cell, up to the adjust block's crop (Pad -> Slice over axes
    [0, 2, 3, 1] -> strided AveragePool -> Conv): onnx2tf stopped there with "Depth of input (25) is not a
    multiple of input depth of filter (44)" until canonical_slice; now it converts and matches the graph."""
    import keras
    import onnx.utils

    from hub.verify.tflm import verify
    from tests.conftest import convert_model

    keras.utils.set_random_seed(0)
    keras.applications.NASNetMobile(weights=None, input_shape=(96, 96, 3)).save(tmp_path / "nasnet.keras")
    full = tmp_path / "nasnet.onnx"
    onnx.save(hub.adapters.load(tmp_path / "nasnet.keras", LoadOptions()).onnx_model, str(full))
    model = onnx.load(str(full))
    conv = next(n for n in model.graph.node if n.name.endswith("adjust_conv_2_0_1/convolution"))
    onnx.utils.extract_model(str(full), str(tmp_path / "cell.onnx"), [model.graph.input[0].name], [conv.output[0]])
    tflite_bytes, normalised = convert_model(onnx.load(str(tmp_path / "cell.onnx")), quantize="float32")
    check = verify(tflite_bytes, normalised.onnx_model, None)
    assert check.tflm.invokes and check.fidelity.cosine > 0.9999, check.to_dict()


def test_efficientnet_style_se_block_converts_with_its_squeeze_as_mean(tmp_path):
    """Normalization -> Conv -> SiLU -> DepthwiseConv -> SiLU -> squeeze-and-excitation -> head, as in
    EfficientNet: the squeeze is an int8 MEAN with its own scale (not AVERAGE_POOL_2D at its input's),
    the head's pool stays AVERAGE_POOL_2D, and the int8 model tracks the float one."""
    import keras

    from hub import api

    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 3), name="image")
    x = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 3500.0, 3400.0])(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="swish")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="swish")(x)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(4, 1, activation="swish")(se)
    se = keras.layers.Conv2D(16, 1, activation="sigmoid")(se)
    x = keras.layers.Multiply()([x, se])
    x = keras.layers.Conv2D(24, 1)(x)
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "se.keras")
    report = api.convert(tmp_path / "se.keras", input_range="0,255", out=tmp_path / "out")
    assert report.model.ops.get("MEAN") == 1 and report.model.ops.get("AVERAGE_POOL_2D") == 1
    assert report.verification.fidelity.cosine >= 0.99, report.verification.fidelity
