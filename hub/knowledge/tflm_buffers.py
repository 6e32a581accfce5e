"""Where TFLM looks for a tensor's bytes, and the file layout it does not read.

TFLM: tensorflow/lite/micro/micro_allocator.cc, internal::GetFlatbufferTensorBuffer (tflite-micro@190593be):
a tensor's data is `buffer->data()` when that vector is non-empty, else nullptr, and
InitializeTfLiteTensorFromFlatbuffer then makes it kTfLiteArenaRw: planned into the arena like an
activation, uninitialised. `Buffer.offset`/`Buffer.size` are never read, so weights stored after the
flatbuffer are garbage at invoke, with no error at load or invoke (measured on MLPerf Tiny AD: the arena
grows from 4,632 B to 270,728 B and the outputs no longer depend on the input).

The layout: schema.fbs `table Buffer { data:[ubyte] (force_align: 16); offset: ulong; size: ulong; }`,
"the offset is calculated relative to the beginning of the file and is only valid if > 1"
(tensorflow/compiler/mlir/lite/schema/schema.fbs). LiteRT reads both (tensorflow/lite/core/
interpreter_builder.cc, ParseTensors: `offset > 1`, bounds-checked against the file). Google's
ai-edge-quantizer 0.10 (ai_edge_quantizer/model_modifier.py, _PackedBufferData) writes it: every buffer of BUFFER_MIN_BYTES or more moves after the flatbuffer once
those buffers total EXTERNAL_TOTAL_BYTES or more.
"""
from __future__ import annotations

OFFSET_VALID_ABOVE = 1  # schema.fbs: "only valid if > 1" (writers put 1 as a placeholder before patching)
BUFFER_MIN_BYTES = 1024  # ai-edge-quantizer 0.10 _PackedBufferData(min_size_bytes=1024)
EXTERNAL_TOTAL_BYTES = 256 * 1024  # ai-edge-quantizer 0.10: below this total, everything stays in Buffer.data
