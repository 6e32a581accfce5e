"""hub.convert.prefix_values: onnx2tf's per-op checks computed once per Keras tensor, with the values the prefix
Model's own call gives (the real onnx2tf dummy_tf_inference and tf_keras graphs built the way onnx2tf builds them:
TensorFlow ops on Keras inputs)."""
from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
common_functions = pytest.importorskip("onnx2tf.utils.common_functions")

from hub.convert import prefix_values  # noqa: E402


def _graph():
    """A branching graph with a two-output op and a constant operand: the shapes onnx2tf's checks meet."""
    x = tf_keras.Input(shape=(6, 4), batch_size=1, name="x")
    a = tf.math.multiply(x, 1.5)
    b = tf.nn.relu(a - 0.25)
    left, right = tf.split(b, 2, axis=-1)
    c = tf.concat([right, left], axis=-1) + a
    d = tf.reduce_mean(tf.reshape(c, (1, 24)), axis=-1, keepdims=True)
    return x, [a, b, left, right, c, d]


def test_every_prefix_has_the_models_own_values_and_each_layer_runs_once():
    x, tensors = _graph()
    values = prefix_values.PrefixValues(tf)
    feed = {"x": np.random.default_rng(0).normal(size=(1, 6, 4)).astype(np.float32)}
    for tensor in tensors:
        model = tf_keras.Model(inputs=[x], outputs=[tensor])
        (got,) = values.outputs(model, feed)
        np.testing.assert_array_equal(np.asarray(got), model(feed, training=False).numpy())
    nodes = len(values._nodes)
    model = tf_keras.Model(inputs=[x], outputs=tensors)
    for got, want in zip(values.outputs(model, feed), model(feed, training=False)):
        np.testing.assert_array_equal(np.asarray(got), want.numpy())
    assert len(values._nodes) == nodes  # every tensor was computed by an earlier call: nothing ran again
    other = {"x": feed["x"] + 1.0}  # another sample is computed afresh, not read from the first one's values
    np.testing.assert_array_equal(np.asarray(values.outputs(model, other)[-1]), model(other, training=False)[-1].numpy())


@pytest.fixture
def restored():
    """install rebinds functions in onnx2tf's modules: each gets its own back after the test."""
    names = ("dummy_tf_inference", "acquisition_of_validation_data")
    saved = [(m, n, getattr(m, n)) for m in list(sys.modules.values()) if m.__name__.startswith("onnx2tf")
             for n in names if hasattr(m, n)]
    yield
    for module, name, value in saved:
        setattr(module, name, value)


def test_installed_dummy_tf_inference_returns_what_onnx2tf_s_own_returns(restored):
    x, tensors = _graph()
    original = common_functions.dummy_tf_inference
    prefix_values.install(common_functions, tf, tf_keras.src.engine.keras_tensor.KerasTensor)
    patched = common_functions.dummy_tf_inference
    assert patched is not original
    import onnx2tf.onnx2tf as core  # imported it by name before install: rebound too

    assert core.dummy_tf_inference is patched
    for tensor in tensors:
        model = tf_keras.Model(inputs=[x], outputs=[tensor])
        want = original(model=model, inputs=[x])  # all-ones sample, onnx2tf's default
        got = patched(model=model, inputs=[x])
        assert list(got) == list(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_a_tensor_read_twice_is_not_deep_copied_with_its_history_and_the_copy_rule_is_scoped(restored):
    """`x * x`: onnx2tf deep-copies the second operand, a Keras tensor, with every layer before it."""
    _, tensors = _graph()
    operand = tensors[-2]
    seen = {}

    def acquisition_of_validation_data(**kwargs):  # stands in for onnx2tf's, which copies where this looks
        seen["copy is itself"] = copy.deepcopy(kwargs["input_tensor_2"]) is kwargs["input_tensor_2"]

    common_functions.acquisition_of_validation_data = acquisition_of_validation_data
    prefix_values.install(common_functions, tf, tf_keras.src.engine.keras_tensor.KerasTensor)
    common_functions.acquisition_of_validation_data(input_tensor_1=operand, input_tensor_2=operand)
    assert seen["copy is itself"]
    assert copy.deepcopy(operand) is not operand  # outside the check, Keras' own deepcopy again
