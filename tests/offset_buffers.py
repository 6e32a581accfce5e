"""Test helper: rewrite a .tflite the way Google's ai-edge-quantizer 0.10 serialises models whose weights pass
256 KiB (ai_edge_quantizer/model_modifier.py, _PackedBufferData and _serialize_model): every buffer of 1 KiB or
more leaves Buffer.data for the end of the file, 16-aligned, found by Buffer.offset (absolute) and Buffer.size.
Ported from the research session's make_offset_buffers.py."""
from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.knowledge.tflm_buffers import BUFFER_MIN_BYTES


def _round16(n: int) -> int:
    return (n + 15) & ~15


def _pack(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def to_offset_buffers(data: bytes, min_bytes: int = BUFFER_MIN_BYTES) -> bytes:
    """`data` with its big buffers stored after the flatbuffer (the 256 KiB total rule is not applied)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    moved = {i: np.asarray(buf.data, dtype=np.uint8).tobytes() for i, buf in enumerate(model.buffers)
             if buf.data is not None and len(buf.data) >= min_bytes}
    for i in moved:  # placeholders first (offset 1 = "not valid" per schema.fbs), so the uint64 fields are written
        model.buffers[i].data, model.buffers[i].offset, model.buffers[i].size = None, 1, 1
    pos = _round16(len(_pack(model)))  # changing the values alone does not change the packed length
    for i, blob in moved.items():
        model.buffers[i].offset, model.buffers[i].size = pos, len(blob)
        pos = _round16(pos + len(blob))
    out = bytearray(_pack(model))
    for i, blob in moved.items():
        out += b"\0" * (_round16(len(out)) - len(out))
        assert len(out) == model.buffers[i].offset, "offset moved after packing"
        out += blob
    return bytes(out)
