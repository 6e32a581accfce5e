"""Which TFLM kernels take int16 activations (int16x8: int16 activations, int8 weights), and how int8 and
int16 tensors meet: what `--quantize auto` may promote and how it joins the regions.

One source: the kernel rows of hub.knowledge.tflm_kernels (each read from its kernel under
tensorflow/lite/micro/kernels/ at tflm_kernels.TFLM_VERSION); an op runs int16 when its row lists int16.
`INT16_OPS` below is that derived table, listed so the README and report can quote it. Ops outside it stay
int8 in an auto model (their int16x8 twin would not run on TFLM); hub never falls back to float32 for them:
they are int8 kernels already, which is what a target without an FPU wants.
"""
from __future__ import annotations

from hub.knowledge.tflm_kernels import I16, KERNELS

# kernels/quantize_common.cc (tflite-micro, PrepareQuantizeReference and EvalQuantizeReference): QUANTIZE
# requantizes int8 -> int16 and int16 -> int8 (reference_ops::Requantize with the input/output scale ratio),
# per-tensor output scale only (`affine_quantization->scale->size == 1`).
REQUANTIZE = (("int8", "int16"), ("int16", "int8"))

# Ops that only move or select values carry no quantization error of their own: promoting one alone buys nothing,
# so auto promotes them only inside a region whose neighbours are promoted.
DATA_MOVEMENT = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "PAD", "PADV2", "STRIDED_SLICE",
                           "SLICE", "CONCATENATION", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "MAX_POOL_2D", "QUANTIZE",
                           "DEQUANTIZE", "GATHER", "BROADCAST_TO"})

INT16_OPS: tuple[str, ...] = tuple(sorted(op for op, row in KERNELS.items() if I16 in row.types))

# kernels/conv.cc and depthwise_conv.cc, Eval's case kTfLiteInt16: the filter of an int16-activation convolution is
# read as int8_t (GetTensorData<int8_t>), per channel; there is no int16 filter. A filter int8 rounds too coarsely
# is carried as two int8 filters whose int16 outputs an ADD sums (kernels/add.cc: int16 inputs rescaled from their
# own scales), hub.tflite.split_weights.
SPLITTABLE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})


def runs_int16(op: str) -> bool:
    """TFLM has an int16-activation kernel for this builtin (hub.knowledge.tflm_kernels' row lists int16)."""
    return op in INT16_OPS
