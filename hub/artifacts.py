"""The artifacts that pipeline stages pass to each other.

Each stage is a module in `hub/` with one public function that takes an
artifact and returns the next: adapters -> SourceModel, normalise ->
NormalisedModel, convert -> ConvertedModel, verify -> Verification,
export -> FirmwareBundle. Keeping them plain dataclasses keeps stages
independent and testable one by one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx


# The largest model input hub accepts, in elements (--input-shape, ONNX and TorchScript input shapes):
# beyond it calibration alone would exhaust memory. Not a TFLM limit; one bound for every adapter.
MAX_INPUT_ELEMENTS = 2**28


@dataclass
class LoadOptions:
    """What a user can tell an adapter beyond the file itself."""

    # {input name or None (= the only/first input): static shape}
    input_shapes: dict[str | None, tuple[int, ...]] = field(default_factory=dict)
    factory: str | None = None  # "module:function" or "path.py:Class" (PyTorch)
    trust_pickle: bool = False  # allow torch.load of whole pickled modules
    trust_code: bool = False  # allow Keras Lambda layers / custom objects (unsafe mode)
    batch: int = 1


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"


@dataclass
class SourceModel:
    """A model brought in by an adapter, as ONNX (or as TFLite, which is not converted back)."""

    path: Path
    framework: str  # "pytorch" | "keras" | "onnx" | "tflite"
    onnx_model: onnx.ModelProto | None = None
    tflite_bytes: bytes | None = None
    # Layout the user's own data is in, per input: "NCHW", "NHWC" or None (not 4-D).
    # Keras image models are exported NCHW for onnx2tf, but users hold NHWC samples.
    source_layouts: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PassResult:
    """What one normalisation pass changed, for report.json."""

    name: str
    changed: int  # nodes rewritten or removed
    detail: str = ""


@dataclass
class NormalisedModel:
    """The graph every later stage sees: static shapes, folded, cleaned."""

    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    passes: list[PassResult] = field(default_factory=list)


@dataclass
class ConvertedModel:
    tflite_bytes: bytes
    quantize: str  # "int8" | "int16x8" | "float32" | "float16"
    target: str  # "tflm" | "tflite"
    calibration: dict[str, Any]  # {"source", "samples", "synthetic", "layout", ...}
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Finding:
    """One thing a check or verification found, in the shape report.json uses."""

    node: str
    op: str
    tflite_ops: list[str]
    # "error" (will not run) | "risk" (may not run: decided only by data the check does not see)
    # | "warning" | "info"
    severity: str
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op": self.op,
            "tflite_ops": list(self.tflite_ops),
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }
