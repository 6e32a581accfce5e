"""What TFLM's look-up-table weight compression accepts, as data (hub.tflite.compress reads it).

TFLM stores a compressed constant tensor as 1-7-bit indices into a value table and inserts a DECODE
custom op (resolver.CUSTOM_OPS["TFLM_DECODE"]) before its consumers; DECODE writes the decoded tensor into
the arena, so compression trades flash for RAM. Sources, in the pinned wheel (tflite_micro, see
tflm_kernels.TFLM_VERSION): tensorflow/lite/micro/compression/lut.py (bit widths, channel axes, table
stride), decode_insert.py (the DECODE op), and tensorflow/lite/micro/docs/compression.md (the kernels that
read compressed tensors: FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV, TRANSPOSE_CONV, CONCATENATION,
ASSIGN_VARIABLE; per-channel tables for the first four).
"""
from __future__ import annotations

DECODE_CODE = "TFLM_DECODE"  # decode_insert.DECODE_CUSTOM_OP_NAME
MAX_INDEX_BITS = 7  # lut.LutAncillaryData.MAX_BITWIDTH
MAX_TABLE_STRIDE = 128  # lut.LutAncillaryData: value_table_stride is one byte, at most 128 values per table
DCM_BYTES = 16  # decode.DecodeCommonMetadata: the header in front of each tensor's value tables

# Consumer op -> the input hub compresses: the filter. Biases stay: an int32 per-channel bias has as many
# values as channels, so a table cannot shrink it.
WEIGHT_INPUT: dict[str, int] = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}


# The value tables must follow the tensor's quantization: one table per channel (along its
# quantized_dimension) for a per-channel quantized tensor, one table for a per-tensor quantized one. The
# compressor accepts either mode, but the pinned interpreter decodes the other pairing wrongly. Measured on the
# digits CNN (fixtures/digits_cnn_state.pth, int8) with its weights clustered to 16 values: one table on a
# per-channel CONV_2D filter changed the int8 outputs by up to 218; per-channel tables on the per-tensor
# FULLY_CONNECTED filter, by up to 29; the matching pairing gave bit-identical outputs. hub.tflite.compress follows
# the quantization, and hub.api checks every compressed model bit for bit against the uncompressed one.


def channel_axis_ok(axis: int, rank: int) -> bool:
    """lut.check_channel_axis: per-channel tables run along axis 0 or the last axis only (4-bit DCM field)."""
    return axis in (0, rank - 1) and axis <= 14
