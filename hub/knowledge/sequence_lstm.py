"""TFLM's UNIDIRECTIONAL_SEQUENCE_LSTM: the type combinations it runs and the LSTM variants it refuses.

Read at hub.knowledge.tflm_kernels.TFLM_VERSION from tensorflow/lite/micro/kernels/ (tflite-micro):
- unidirectional_sequence_lstm.cc UnidirectionalSequenceLstmEval (lines 108-156): activations float32
  (float weights, cell, bias), int8 with int8 weights (`EvalLstm<int8_t, int8_t, int16_t, int32_t>`: an
  int16 cell state and int32 biases) and int16 with int8 weights (`EvalLstm<int16_t, int8_t, int16_t,
  int64_t>`: int16 cell, int64 biases); any other input or weight type fails at invoke.
- unidirectional_sequence_lstm.cc UnidirectionalSequenceLstmPrepare (lines 65-86): the cell state is
  float32 or int16, else Prepare fails ("only support int16 cell state").
- lstm_eval.cc LstmTensors::ValidateTensorStatus (lines 55-102): the hidden and cell states are variable
  tensors; all eight gate weight matrices present (no CIFG), and no peephole (operands 9-11), projection
  (16-17) or layer-norm (20-23) operands.
- TFLM has no BIDIRECTIONAL_SEQUENCE_LSTM kernel (micro_mutable_op_resolver.h): a bidirectional layer
  runs as two of these ops joined by REVERSE_V2 and CONCATENATION (both in the resolver).

What the ONNX side may fuse is this list read the other way: hub.graph.rules.fuse_lstm.
"""
from __future__ import annotations

# hub quantize mode -> (activation, weight, cell state, bias) types the kernel evaluates
TYPES: dict[str, tuple[str, str, str, str]] = {
    "float32": ("float32", "float32", "float32", "float32"),
    "int8": ("int8", "int8", "int16", "int32"),
    "int16x8": ("int16", "int8", "int16", "int64"),
}

# The quantize modes in which TensorFlow's converter (2.19) writes the fused op from a Keras LSTM. int16x8 stops
# with "Quantization to 16x8-bit not yet supported for op: 'UNIDIRECTIONAL_SEQUENCE_LSTM'" (measured on the KWS
# LSTM fixture), although TFLM's kernel runs int16 activations: that mode takes the unrolled form.
CONVERTER_MODES = ("int8", "float32")

# LSTM variants whose operands ValidateTensorStatus requires to be absent
UNSUPPORTED_VARIANTS = ("peephole", "projection", "layer norm", "coupled input/forget gate (CIFG)")
