"""ONNX adapter: loads `.onnx` files safely, with their external data.

External data is the one way an ONNX file reaches for other files, so every
location is checked before anything is read: relative, inside the model's
folder, no `..`, no symbolic links.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from hub.artifacts import MAX_INPUT_ELEMENTS, LoadOptions, SourceModel
from hub.errors import InputError

# Element types the pipeline can feed (calibration and reference runs).
SUPPORTED_INPUT_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
    onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL,
}


MAX_DIM = 2**31 - 1


def _product(dims: list[int]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


class OnnxAdapter:
    framework = "onnx"

    def sniff(self, path: Path) -> bool:
        if path.is_dir() or path.name == "saved_model.pb":  # a SavedModel's graph, not ONNX
            return False
        if path.suffix.lower() == ".onnx":
            return True
        # A ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
        with open(path, "rb") as f:
            head = f.read(2)
        return len(head) == 2 and head[0] == 0x08 and 0 < head[1] < 20 and _parses(path)

    def load(self, path: Path, options: LoadOptions) -> SourceModel:
        model = _read(path)
        _load_external_data(model, path)
        _check_initializers(model, path)
        real_inputs = _real_inputs(model)
        if not real_inputs:
            raise InputError("the ONNX graph has no inputs", path)
        for value in real_inputs:
            elem = value.type.tensor_type.elem_type
            if not value.type.HasField("tensor_type") or elem not in SUPPORTED_INPUT_TYPES:
                kind = (_type_name(elem) if value.type.HasField("tensor_type") else "non-tensor")
                raise InputError(f"input {value.name!r} has unsupported type {kind}; inputs must be numeric tensors", path)
        for i, value in enumerate(real_inputs):
            if value.name in options.input_shapes or (i == 0 and None in options.input_shapes):
                continue  # --input-shape replaces the declared shape (checked in hub.api)
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
            if any(d > MAX_DIM for d in dims) or _product(dims) > MAX_INPUT_ELEMENTS:
                raise InputError(f"input {value.name!r} has an absurd shape {dims} (over {MAX_INPUT_ELEMENTS:,} "
                                 "elements); fix the model or pass --input-shape", path)
        layouts = {v.name: ("NCHW" if len(v.type.tensor_type.shape.dim) == 4 else None) for v in real_inputs}
        return SourceModel(path=path, framework="onnx", onnx_model=model, source_layouts=layouts)


def _type_name(elem: int) -> str:
    """TensorProto type name; a code no ONNX version defines (fuzz: 99) is shown as a number."""
    return onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else f"code {elem}"


def _parses(path: Path) -> bool:
    try:
        onnx.load(str(path), load_external_data=False)
        return True
    except Exception:
        return False


def _read(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"not a valid ONNX file (corrupt or truncated: {type(exc).__name__})", path) from None
    if not model.HasField("graph") or not model.graph.node:
        raise InputError("not a valid ONNX model: it has no graph nodes", path)
    return model


def _check_initializers(model: onnx.ModelProto, path: Path) -> None:
    """Every weight's data must fit its shape and type: analysis and conversion read them as arrays."""
    for tensor in model.graph.initializer:
        try:
            numpy_helper.to_array(tensor)
        except Exception as exc:  # onnx/numpy raise ValueError, TypeError, KeyError for broken tensors
            raise InputError(f"weight {tensor.name!r} is corrupt: its data does not fit its shape and type "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                             "export the model again", path) from None


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs minus initializers (IR < 4 files list weights as inputs too)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.resolve().parent
    tensors = [t for t in _all_tensors(model) if uses_external_data(t)]
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        _check_location(location, base, path, tensor.name)
    if tensors:
        try:
            load_external_data_for_model(model, str(base))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read external data: {exc}", path) from None


def _check_location(location: str, base: Path, path: Path, tensor: str) -> None:
    """Refuse external-data locations that could read files outside the model's folder."""
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise InputError(f"external data of {tensor!r} has an unsafe location {location!r}: it must be a relative "
                         "file name beside the model", path)
    if ".." in Path(location).parts:
        raise InputError(f"external data of {tensor!r} points outside the model's folder ({location!r})", path)
    target = base / location
    if any((base / Path(*Path(location).parts[: i + 1])).is_symlink() for i in range(len(Path(location).parts))):
        raise InputError(f"external data of {tensor!r} goes through a symbolic link ({location!r}); refused", path)
    if not target.is_file():
        raise InputError(f"external data file {location!r} for tensor {tensor!r} is missing; keep it beside the "
                         "model", path)
    if base not in target.resolve().parents:
        raise InputError(f"external data of {tensor!r} resolves outside the model's folder ({location!r})", path)


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
