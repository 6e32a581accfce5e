"""The one small interface every framework adapter implements."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from hub.artifacts import LoadOptions, SourceModel


class Adapter(Protocol):
    """Brings one framework's files into ONNX.

    `sniff` must be cheap and must not import the framework (tensorflow, torch):
    it looks at the file's own bytes (magic numbers, zip members), not only its
    extension. `load` may import the framework.
    """

    framework: str  # "pytorch", "keras", "onnx", "tflite"

    def sniff(self, path: Path) -> bool: ...

    def load(self, path: Path, options: LoadOptions) -> SourceModel: ...
