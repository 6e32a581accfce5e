"""Samples between ONNX and TFLite: held-out samples (ONNX layout, e.g. NCHW float32) are mapped to TFLite
inputs by signature name (onnx2tf keys the SignatureDef by the ONNX names), laid out as the conversion's
InputLayout says (hub.convert.layout: exactly what firmware fills; only a .tflite hub did not convert, with no
reference graph, falls back to guessing channels-last from the shapes), quantised with the input's scale/zero
point; outputs are dequantised and transposed back to the ONNX output's layout. Shared by the TFLM run
(hub.verify.tflm) and the fidelity maths (hub.verify.metrics)."""
from __future__ import annotations

import numpy as np
import onnx

from hub.artifacts import InputLayout
from hub.convert.layout import channels_last, moved_channels_last, to_tflite
from hub.tflite.model import TFLiteModel, numpy_dtype


def to_tflite_layout(array: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """NCHW-like array -> the TFLite tensor's shape (channels-last when that is what matches)."""
    if moved_channels_last(array.shape, target):
        return np.transpose(array, channels_last(array.ndim))
    if tuple(array.shape) == tuple(target):
        return array
    if array.size == int(np.prod(target)):
        return array.reshape(target)
    raise ValueError(f"sample shape {array.shape} does not fit the TFLite input {tuple(target)}")


def from_tflite_layout(array: np.ndarray, onnx_shape: tuple[int, ...] | None) -> np.ndarray:
    """TFLite output -> the ONNX output's layout (undo channels-last) for comparison."""
    if not onnx_shape or any(not isinstance(d, int) or d <= 0 for d in onnx_shape):
        return array
    onnx_shape = tuple(onnx_shape)
    if moved_channels_last(onnx_shape, array.shape):
        return np.transpose(array, np.argsort(channels_last(array.ndim)))
    if array.size == int(np.prod(onnx_shape)):
        return array.reshape(onnx_shape)
    return array


def quantise(array: np.ndarray, spec: dict) -> np.ndarray:
    dtype = numpy_dtype(spec["dtype"])
    if not np.issubdtype(dtype, np.integer) or not isinstance(spec.get("scale"), float):
        return array.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(array.astype(np.float64) / spec["scale"]) + spec["zero_point"]
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantise(array: np.ndarray, spec: dict) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) and isinstance(spec.get("scale"), float):
        return (array.astype(np.float64) - spec["zero_point"]) * spec["scale"]
    return array.astype(np.float64)


def to_tflite_inputs(model: TFLiteModel, sample: dict[str, np.ndarray],
                     layouts: list[InputLayout] | None = None) -> list[np.ndarray]:
    """One sample {onnx_input_name: array} -> arrays in TFLite input order, layout and dtype."""
    specs = model.io_specs("inputs")
    names = list(sample)
    by_name = {layout.name: layout for layout in layouts or []}
    arrays = []
    for i, spec in enumerate(specs):
        key = spec["name"] if spec["name"] in sample else (names[i] if len(names) == len(specs) else None)
        if key is None:
            raise ValueError(f"no sample for TFLite input {spec['name']!r} (sample has {names})")
        array = np.asarray(sample[key], dtype=np.float32)
        if key not in by_name:
            data = to_tflite_layout(array, tuple(spec["shape"]))
        elif tuple((data := to_tflite(by_name[key], array)).shape) != tuple(spec["shape"]):
            raise ValueError(f"input {key!r} laid out as {tuple(data.shape)} does not fit the TFLite input "
                             f"{tuple(spec['shape'])}")
        arrays.append(quantise(data, spec))
    return arrays


def synthetic_samples(reference: onnx.ModelProto, count: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Uniform [0, 1) inputs for the reference's static shapes, when the caller gave none."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in reference.graph.initializer}
    shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim)
              for i in reference.graph.input if i.name not in initializers}
    return [{n: rng.random(s, dtype=np.float32) for n, s in shapes.items()} for _ in range(count)]
