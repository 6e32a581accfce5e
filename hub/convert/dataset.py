"""Labelled data: samples (x) and, if given, integer class labels (y) for the figures measured on the user's
data: `hub convert/verify --data` (hub.verify.accuracy) and `hub optimize --data/--val` read it here alike.

A .npz with x (or the array `file.npz:ARRAY` names) and optionally y, or a folder with one subfolder of images
per class (labels: the sorted subfolder indices). Samples are read and checked by hub.convert.calibration,
so they come out in the normalised ONNX graph's layout (NCHW for images) whatever layout the file holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hub.artifacts import TensorSpec
from hub.convert.calibration import build_calibration, split_array_name
from hub.errors import InputError


@dataclass
class Dataset:
    """Samples in the normalised ONNX graph's layout (NCHW for images), labels if any."""

    x: np.ndarray
    y: np.ndarray | None
    source: str


def load_data(path: str | Path, spec: TensorSpec, layout: str | None, input_range: tuple[float, float]) -> Dataset:
    """`path` (see the module docstring) for the one input `spec`; `layout` is the source framework's."""
    file, array_name = split_array_name(path)
    if not file.exists():
        raise InputError("no such file or folder", file)
    if file.is_dir():
        return _image_classes(file, spec, input_range)
    if file.suffix != ".npz":
        raise InputError("--data must be a .npz (x, optionally y) or a folder of class subfolders", file)
    x = _samples(f"{file}:{array_name or 'x'}", spec, layout, input_range)
    with np.load(file, allow_pickle=False) as npz:
        y = npz["y"] if "y" in npz.files else None
    if y is not None:
        if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x) or y.min() < 0:
            raise InputError(f"y must hold one non-negative integer class label per sample ({len(x)}); it is "
                             f"{y.dtype} {tuple(y.shape)}", file)
        y = y.astype(np.int64)
    return Dataset(x, y, str(path))


def _samples(path: str | Path, spec: TensorSpec, layout: str | None, input_range: tuple[float, float]) -> np.ndarray:
    data = build_calibration([spec], path, input_range, {spec.name: layout})
    return np.concatenate([data.samples[spec.name], data.held_out[spec.name]])  # calibration's held-out split undone


def _image_classes(folder: Path, spec: TensorSpec, input_range: tuple[float, float]) -> Dataset:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise InputError("an image folder for --data needs one subfolder per class (at least 2)", folder)
    xs = [_samples(c, spec, None, input_range) for c in classes]
    y = np.concatenate([np.full(len(x), i, np.int64) for i, x in enumerate(xs)])
    return Dataset(np.concatenate(xs), y, str(folder))
