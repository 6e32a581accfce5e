"""Adapter registry: finds the adapter for a file from its content.

Adding a framework means adding one module with a class that follows
`hub.adapters.base.Adapter` and listing it in `REGISTRY`. The adapters import their
framework (torch, tensorflow) only inside `load`, so sniffing an ONNX file never does.
"""
from __future__ import annotations

from pathlib import Path

from hub.artifacts import LoadOptions, SourceModel
from hub.errors import InputError

from hub.adapters.base import Adapter
from hub.adapters.keras import KerasAdapter
from hub.adapters.onnx import OnnxAdapter
from hub.adapters.pytorch import PyTorchAdapter
from hub.adapters.tflite import TFLiteAdapter

# In sniffing order: cheap, unambiguous formats first.
REGISTRY: tuple[type[Adapter], ...] = (TFLiteAdapter, OnnxAdapter, KerasAdapter, PyTorchAdapter)


def find_adapter(path: Path, options: LoadOptions | None = None) -> Adapter:
    """The adapter whose sniff accepts `path`; InputError (exit 2) if none does."""
    for adapter_class in REGISTRY:
        adapter = adapter_class()
        if adapter.sniff(path):
            return adapter
    raise InputError(
        "unknown model format: expected ONNX, TFLite, TorchScript/.pt2/state_dict (PyTorch), "
        ".keras/.h5 or a SavedModel folder (Keras/TensorFlow)", path)


def load(path: str | Path, options: LoadOptions | None = None) -> SourceModel:
    """Load any supported model file into a SourceModel (ONNX, or TFLite kept as bytes)."""
    path = Path(path)
    options = options or LoadOptions()
    file, sep, name = str(path).rpartition(":")
    if sep and file.endswith(".py") and name.isidentifier() and Path(file).is_file():  # `net.py:TinyNet`: a factory
        return PyTorchAdapter().load(path, options)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if not path.is_file() and not path.is_dir():  # a FIFO would block the first read forever
        raise InputError("not a regular file (a pipe, socket or device): pass the model file itself", path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError("the file is empty", path)
    if path.is_dir() and not (path / "saved_model.pb").exists():
        raise InputError("this is a folder, not a model file (a SavedModel folder holds saved_model.pb)", path)
    try:
        return find_adapter(path, options).load(path, options)
    except OSError as exc:
        raise InputError(f"cannot read the model: {exc.strerror or exc}", path) from None
