"""ONNX LSTM -> TFLM's fused UNIDIRECTIONAL_SEQUENCE_LSTM, inside the converter child.

onnx2tf 1.29 lowers an ONNX LSTM (onnx2tf/ops/LSTM.py `make_node`) to its `CustomLSTM`: a tf_keras
RNN over its own cell, which TensorFlow's converter can only turn into a WHILE loop (the KWS fixture
crashed it). `make_node` has already done the ONNX-specific work by then: X batch-major, the gates
reordered to Keras' i, f, c, o, input and recurrent biases summed, the reverse direction as
go_backwards with the output flipped back, the two directions of a bidirectional node joined by
CONCATENATION. So `install` swaps only the layer it builds: for a plain cell (sigmoid/tanh/tanh,
no peepholes, no clip, no input_forget, zero initial state) a `tf_keras.layers.LSTM` with the same
weights. That layer's step function carries `api_implements="lstm_<uuid>"`, which TensorFlow's
converter recognises and fuses into one UNIDIRECTIONAL_SEQUENCE_LSTM
(tensorflow/compiler/mlir/lite/transforms/prepare_composite_functions_tf.cc: kTFImplements /
"lstm_" prefix -> ConvertKerasLSTMLayer in tensorflow/compiler/mlir/lite/utils/lstm_utils.cc), the
same op and quantisation (int8 with an int16 cell) it gives a Keras LSTM model. Every other cell
keeps onnx2tf's layer; hub.graph.rules.fuse_lstm sends only plain cells here and unrolls the rest.

Why this route: it reuses onnx2tf's own weight and layout handling (batch_first transposes,
directions, layouts) and TensorFlow's own fusion and LSTM quantiser, which TFLM's kernel is
written against; building the flatbuffer op by hand would mean re-deriving its 24 operands and
the integer cell's scales.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

GATE_ORDER = "ifco"  # Keras' bias order, as onnx2tf splits bias_i, bias_f, bias_c, bias_o


def install(onnx2tf_lstm: ModuleType, tf_keras: ModuleType) -> None:
    """Make onnx2tf build plain LSTM cells as Keras LSTM layers (the fused kernel); others as before."""
    original = onnx2tf_lstm.CustomLSTM

    def build(**kwargs: Any):
        if not plain_cell(onnx2tf_lstm, kwargs):
            return original(**kwargs)
        return _KerasLSTM(tf_keras, kwargs, original)

    onnx2tf_lstm.CustomLSTM = build


def plain_cell(onnx2tf_lstm: ModuleType, kwargs: dict) -> bool:
    """What the fused kernel computes: default activations, no peepholes, clip or coupled input/forget gate."""
    offset = 3 if kwargs["is_bidirectional"] and kwargs["go_backwards"] else 0
    f, g, h = kwargs["activations"][offset:offset + 3]
    activations = (isinstance(f, onnx2tf_lstm.Sigmoid) and isinstance(g, onnx2tf_lstm.Tanh)
                   and isinstance(h, onnx2tf_lstm.Tanh))
    peepholes = any(kwargs[f"peephole_{gate}"] is not None for gate in "ifo")
    return activations and not peepholes and not kwargs["clip"] and not kwargs["input_forget"]


class _KerasLSTM:
    """Called like onnx2tf's CustomLSTM: `(x, initial_state) -> (sequence, h, c)`."""

    def __init__(self, tf_keras: ModuleType, kwargs: dict, original: type):
        self.tf_keras, self.kwargs, self.original = tf_keras, kwargs, original

    def __call__(self, x, initial_state=None):
        if initial_state and not all(_is_zero(s) for s in initial_state):
            return self.original(**self.kwargs)(x, initial_state=initial_state)
        kw, constant = self.kwargs, self.tf_keras.initializers.Constant
        bias = np.concatenate([np.asarray(kw[f"bias_{gate}"]).reshape(-1) for gate in GATE_ORDER])
        layer = self.tf_keras.layers.LSTM(
            kw["hidden_size"], return_sequences=True, return_state=True, go_backwards=kw["go_backwards"],
            unit_forget_bias=False,  # the bias is given whole
            kernel_initializer=constant(np.asarray(kw["kernel"])),
            recurrent_initializer=constant(np.asarray(kw["recurrent_kernel"])),
            bias_initializer=constant(bias))
        return layer(x)


def _is_zero(state) -> bool:
    """A constant all-zero initial state (torch's export writes one): Keras' default. Anything computed is not."""
    try:
        return not np.any(np.asarray(state))
    except (TypeError, ValueError, NotImplementedError):  # a symbolic tensor has no value
        return False
