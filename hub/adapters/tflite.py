"""TFLite adapter: `.tflite` files are taken as they are (check, verify, export), never converted back."""
from __future__ import annotations

from pathlib import Path

from hub.artifacts import LoadOptions, SourceModel
from hub.errors import InputError
from hub.tflite.model import read_tflite

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8


class TFLiteAdapter:
    framework = "tflite"

    def sniff(self, path: Path) -> bool:
        if path.is_dir():
            return False
        with open(path, "rb") as f:
            head = f.read(8)
        return head[4:8] == TFLITE_IDENTIFIER or path.suffix.lower() == ".tflite"

    def load(self, path: Path, options: LoadOptions) -> SourceModel:
        data = path.read_bytes()
        if data[4:8] != TFLITE_IDENTIFIER:
            raise InputError("not a TFLite flatbuffer (no TFL3 identifier): wrong format for the extension?", path)
        read_tflite(data, source=str(path))  # validates the structure; raises InputError when corrupt
        return SourceModel(path=path, framework="tflite", tflite_bytes=data)
