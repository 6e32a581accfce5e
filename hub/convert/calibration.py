"""Calibration samples for int8 quantization, and held-out samples for verification.

Samples are kept in the normalised ONNX graph's own layout (NCHW for images),
keyed by ONNX input name; the convert worker moves them to onnx2tf's NHWC.
User data may come in either layout; the layout found is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hub.artifacts import TensorSpec
from hub.convert.layout import SOURCE_ORDER_ONLY, channels_last
from hub.errors import InputError

SYNTHETIC_CALIBRATION_SAMPLES = 32
SYNTHETIC_HELD_OUT_SAMPLES = 8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class CalibrationSet:
    samples: dict[str, np.ndarray]  # name -> (N, *shape[1:]) in ONNX layout, float32
    held_out: dict[str, np.ndarray]  # never the same samples as `samples`
    source: str  # "synthetic" or the path given
    synthetic: bool
    layout: str | None = None  # layout the user's data was found in
    notes: list[str] = field(default_factory=list)

    def held_out_samples(self) -> list[dict[str, np.ndarray]]:
        """The held-out set one sample at a time, {name: (1, ...)}, as verification takes it."""
        count = len(next(iter(self.held_out.values()))) if self.held_out else 0
        return [{k: v[i : i + 1] for k, v in self.held_out.items()} for i in range(count)]

    def summary(self) -> dict:
        n = len(next(iter(self.samples.values()))) if self.samples else 0
        out = {"source": self.source, "samples": n, "synthetic": self.synthetic,
               "held_out_samples": len(next(iter(self.held_out.values()))) if self.held_out else 0}
        if self.layout:
            out["layout"] = self.layout
        if self.notes and not self.synthetic:
            out["notes"] = list(self.notes)
        if self.synthetic:
            out["note"] = ("quantization was calibrated on synthetic uniform data, not real samples: "
                           "pass --calibration with real inputs for production accuracy")
        return out


def parse_input_range(text: str | None) -> tuple[float, float]:
    if not text:
        return (0.0, 1.0)
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--input-range must be LO,HI (e.g. 0,1 or -1,1), got {text!r}") from None
    if not np.isfinite([lo, hi]).all() or lo >= hi:
        raise InputError(f"--input-range needs finite LO < HI, got {text!r}")
    return (lo, hi)


def build_calibration(
    inputs: list[TensorSpec],
    path: str | Path | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    source_layouts: dict[str, str | None] | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Calibration + held-out samples from a .npy/.npz/image folder, or synthetic over input_range."""
    if path is None:
        return _synthetic(inputs, input_range, seed)
    path, array_name = split_array_name(path)
    notes: list[str] = []
    if path.is_dir():
        arrays, layout = _from_images(path, inputs, input_range), "images"
    elif path.suffix == ".npz":
        arrays, layout = _from_npz(path, inputs, source_layouts or {}, array_name, notes)
    elif path.suffix == ".npy":
        arrays, layout = _from_npy(path, inputs, source_layouts or {})
    else:
        raise InputError("calibration data must be a .npy, a .npz or a folder of images", path)
    n = len(next(iter(arrays.values())))
    hold = max(1, n // 5)  # a fifth held out for verification, so it never sees calibration samples
    return CalibrationSet(
        samples={k: v[: n - hold] for k, v in arrays.items()},
        held_out={k: v[n - hold :] for k, v in arrays.items()},
        source=str(path) + (f":{array_name}" if array_name else ""),
        synthetic=False,
        layout=layout,
        notes=notes,
    )


def split_array_name(path: str | Path) -> tuple[Path, str | None]:
    """`data.npz:specs` -> (data.npz, "specs"): which array of a .npz calibrates a one-input model."""
    text = str(path)
    head, sep, name = text.rpartition(":")
    if sep and head.endswith(".npz") and name and not Path(text).exists():
        return Path(head), name
    return Path(text), None


def _synthetic(inputs: list[TensorSpec], input_range: tuple[float, float], seed: int) -> CalibrationSet:
    lo, hi = input_range

    def draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        out = {}
        for spec in inputs:
            shape = (n, *spec.shape[1:])
            if np.issubdtype(np.dtype(spec.dtype), np.floating):
                out[spec.name] = rng.uniform(lo, hi, shape).astype(np.float32)
            else:
                out[spec.name] = rng.integers(int(lo), int(hi) + 1, shape).astype(spec.dtype)
        return out

    # Different seeds: held-out samples are drawn like, but never equal to, calibration samples.
    return CalibrationSet(
        samples=draw(np.random.default_rng(seed), SYNTHETIC_CALIBRATION_SAMPLES),
        held_out=draw(np.random.default_rng(seed + 1), SYNTHETIC_HELD_OUT_SAMPLES),
        source="synthetic",
        synthetic=True,
        notes=[f"synthetic uniform samples over [{lo}, {hi}]"],
    )


def _load_array(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read calibration data ({exc.__class__.__name__}: {exc})".split("\n")[0], path) from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return {k: data[k] for k in data.files}
    return data


def _from_npy(path: Path, inputs: list[TensorSpec], layouts: dict) -> tuple[dict[str, np.ndarray], str]:
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise InputError(f"the model has {len(inputs)} inputs ({names}): give a .npz with one array per input name", path)
    array = _load_array(path)
    sample, layout = _fit(array, inputs[0], layouts.get(inputs[0].name), path)
    return {inputs[0].name: sample}, layout


def _from_npz(path: Path, inputs: list[TensorSpec], layouts: dict, array_name: str | None,
              notes: list[str]) -> tuple[dict[str, np.ndarray], str]:
    arrays = _load_array(path)
    if len(inputs) == 1 and (array_name is not None or inputs[0].name not in arrays):
        arrays = {inputs[0].name: _pick_array(arrays, inputs[0], layouts, path, array_name, notes)}
    elif array_name is not None:
        raise InputError(f"`:{array_name}` picks the array for a one-input model; this model has {len(inputs)} "
                         "inputs: name the .npz arrays after them", path)
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        raise InputError(f"calibration .npz lacks arrays for input(s) {', '.join(missing)}; it has {', '.join(arrays) or 'none'}", path)
    out, found = {}, set()
    for spec in inputs:
        out[spec.name], layout = _fit(arrays[spec.name], spec, layouts.get(spec.name), path)
        found.add(layout)
    counts = {len(v) for v in out.values()}
    if len(counts) != 1:
        raise InputError(f"calibration arrays hold different sample counts {sorted(counts)}; give the same number per input", path)
    return out, "/".join(sorted(found))


def _pick_array(arrays: dict[str, np.ndarray], spec: TensorSpec, layouts: dict, path: Path, array_name: str | None,
                notes: list[str]) -> np.ndarray:
    """The array that calibrates a one-input model: the one named, else the only one whose shape fits
    (files such as MLPerf Tiny's calibration_samples.npz hold labels beside the samples)."""
    if array_name is not None:
        if array_name not in arrays:
            raise InputError(f"calibration .npz has no array {array_name!r}; it has {', '.join(arrays) or 'none'}", path)
        return arrays[array_name]
    fitting = [name for name, array in arrays.items() if _fits(array, spec, layouts.get(spec.name), path)]
    if len(fitting) == 1:
        if len(arrays) > 1:
            notes.append(f"array {fitting[0]!r} of {', '.join(arrays)} calibrates input {spec.name!r} (its shape fits)")
        return arrays[fitting[0]]
    which = "several arrays fit" if fitting else "no array fits"
    raise InputError(f"calibration .npz holds {', '.join(f'{k} {tuple(v.shape)}' for k, v in arrays.items()) or 'nothing'}"
                     f" and {which} input {spec.name!r} (N, {', '.join(map(str, spec.shape[1:]))}); choose one with "
                     f"--calibration {path.name}:ARRAY", path)


def _fits(array: np.ndarray, spec: TensorSpec, layout: str | None, path: Path) -> bool:
    try:
        _fit(array, spec, layout, path)
        return True
    except InputError:
        return False


def _fit(array: np.ndarray, spec: TensorSpec, source_layout: str | None, path: Path) -> tuple[np.ndarray, str]:
    """Check one input's samples and bring them to the ONNX layout; returns (samples, layout found)."""
    want = tuple(spec.shape[1:])
    expected = f"(N, {', '.join(map(str, want))})"
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
        raise InputError(f"calibration data for {spec.name!r} must be a numeric array", path)
    is_float_input = np.issubdtype(np.dtype(spec.dtype), np.floating)
    if is_float_input and array.dtype.kind not in "fiu":
        raise InputError(f"calibration data for {spec.name!r} has dtype {array.dtype}; the input is {spec.dtype}", path)
    if not is_float_input and array.dtype.kind == "f":
        raise InputError(f"calibration data for {spec.name!r} has dtype {array.dtype}; the input is {spec.dtype}", path)
    if array.ndim == len(want):
        raise InputError(f"calibration data for {spec.name!r} is a single sample of shape {array.shape}; "
                         f"stack at least 2 samples as {expected}", path)
    if array.ndim != len(want) + 1:
        raise InputError(f"calibration data for {spec.name!r} has shape {array.shape}; expected {expected}", path)
    if array.shape[0] < 2:
        raise InputError(f"calibration data for {spec.name!r} holds a single sample; give at least 2 as {expected}", path)
    # An input hub.convert.layout keeps in the source's order takes samples in that order only: a transposed
    # sequence is refused, not guessed (its channels-last form is no layout the .tflite or firmware uses).
    candidates = _layouts(want) if source_layout != SOURCE_ORDER_ONLY else _layouts(want)[:1]
    matches = [name for name, perm in candidates if tuple(array.shape[1:]) == tuple(want[p] for p in perm)]
    if not matches:
        raise InputError(f"calibration data for {spec.name!r} has shape {array.shape}; expected {expected}"
                         + (" or its channels-last form" if len(candidates) > 1 else ""), path)
    # Ambiguous shapes (C == H == W) follow the layout the source framework uses.
    layout = source_layout if source_layout in matches else matches[0]
    perm = dict(candidates)[layout]
    inverse = np.argsort(perm)
    data = array.transpose(0, *(1 + i for i in inverse)) if layout != "NCHW" else array
    if not np.isfinite(data.astype(np.float64)).all():
        raise InputError(f"calibration data for {spec.name!r} contains NaN or infinity", path)
    return np.ascontiguousarray(data.astype(spec.dtype if not is_float_input else np.float32)), layout


def _layouts(shape: tuple[int, ...]) -> list[tuple[str, list[int]]]:
    """Layouts a sample (without batch axis) may come in, as permutations of the ONNX shape."""
    rank = len(shape)
    if rank < 2:
        return [("NCHW", list(range(rank)))]
    return [("NCHW", list(range(rank))), ("NHWC", [p - 1 for p in channels_last(rank + 1)[1:]])]


def _from_images(folder: Path, inputs: list[TensorSpec], input_range: tuple[float, float]) -> dict[str, np.ndarray]:
    import cv2  # opencv comes with onnx2tf; imported only for image folders

    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (1, 3):
        raise InputError("an image folder calibrates only a model with one image input (N, 1 or 3, H, W)", folder)
    _, channels, height, width = inputs[0].shape
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise InputError(f"the image folder holds {len(files)} readable image(s); give at least 2", folder)
    lo, hi = input_range
    images = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
        if image is None:
            raise InputError("cannot decode this image", file)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image = image[..., None] if image.ndim == 2 else image[..., ::-1]  # BGR -> RGB
        images.append(image.transpose(2, 0, 1).astype(np.float32) / 255.0 * (hi - lo) + lo)
    return {inputs[0].name: np.stack(images)}


# --calibration-method: how each activation's int8 range is set from the calibration samples' float values.
# minmax is the TF converter's own (the range seen); percentile clips the outermost PERCENTILE_TAIL of values on
# each side; mse takes the range, the seen one shrunk by one factor, whose 256-step rounding has the least squared
# error (on at most MSE_VALUES of them, drawn evenly).
PERCENTILE_TAIL = 0.01  # percent of values beyond each end of the range (99.99th percentile)
MSE_GRID = 33  # fractions of the seen range tried, from MSE_LOWEST to 1
MSE_LOWEST = 0.2
MSE_VALUES = 100_000
INT8_LEVELS = 256


def activation_range(values: np.ndarray, method: str) -> tuple[float, float]:
    """The (lo, hi) an activation is quantized over, from its float values on the calibration samples; it always
    contains 0 (the quantizer needs an exact zero)."""
    values = np.asarray(values, np.float64).reshape(-1)
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if method == "percentile":
        lo, hi = (min(float(np.percentile(values, PERCENTILE_TAIL)), 0.0),
                  max(float(np.percentile(values, 100 - PERCENTILE_TAIL)), 0.0))
    elif method == "mse":
        sample = values[:: max(1, len(values) // MSE_VALUES)]
        lo, hi = min(((lo * f, hi * f) for f in np.linspace(MSE_LOWEST, 1.0, MSE_GRID)),
                     key=lambda r: _rounding_mse(sample, *r))
    elif method != "minmax":
        raise ValueError(f"unknown calibration method {method}")
    return lo, hi


def _rounding_mse(values: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / (INT8_LEVELS - 1) or 1.0
    return float(np.mean((np.clip(np.round((values - lo) / scale), 0, INT8_LEVELS - 1) * scale + lo - values) ** 2))
