"""Rewrite Neg(x) into Mul(x, -1), which the TFLite converter quantizes.

tf2onnx writes the -mean of Keras LayerNormalization (tf.nn.batch_normalization's offset - mean * inv) as Neg (23
in Keras ConvNeXtTiny). TFLM has an int8 NEG kernel, but the TFLite converter does not quantize NEG (measured with
onnx2tf 1.29.24 and TensorFlow 2.19: each stays float32 between DEQUANTIZE and QUANTIZE in an int8 model); MUL by
a constant it does. Exact: multiplying by -1 only flips the sign bit.
"""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import add_initializer, elem_type, emit, replace_node, rewrite_each

UNBLOCKS = ("Neg",)  # the ops hub check names this rule for (NEG stays float32 in an int8 model)
DOES = "replaces it by MUL with -1, which int8 conversion quantizes"


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    return model, rewrite_each(model, "Neg", "Mul by -1", _rewrite)


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx") or elem_type(model, node.input[0]) != onnx.TensorProto.FLOAT:
        return False  # integer Negs (index arithmetic) are not quantized anyway
    minus_one = add_initializer(model, np.array(-1.0, np.float32), f"{node.name or node.output[0]}_minus_one")
    replace_node(model, node, [emit("Mul", [node.input[0], minus_one], node.output[0])])
    return True
