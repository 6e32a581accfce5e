"""Accuracy on the user's data (`--data`): the source model and the model on the TFLM interpreter over the same
samples, as top-1 accuracy (with labels), agreement with the source (without), or errors per output (models
whose output is not scores over classes).

The TFLM figures are the interpreter's own outputs (hub.verify.tflm.tflm_raw_outputs: every sample in one
child), dequantised and put back in the source's layout; the source's are its framework's forward pass
(SourceModel.run) or onnxruntime on the normalised graph. `hub optimize` scores with the same top-1 functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from hub.artifacts import Finding, InputLayout, TensorSpec
from hub.convert.dataset import Dataset
from hub.errors import InputError
from hub.tflite.model import read_tflite
from hub.verify.metrics import is_classifier_shaped
from hub.verify.samples import dequantise, from_tflite_layout
from hub.verify.tflm import tflm_raw_outputs

CONFUSION_MAX_CLASSES = 64  # beyond it report.json keeps per-class accuracy but no K x K matrix

# One sample {input name: (1, ...)} -> {output name: array}: SourceModel.run, or onnxruntime on a graph.
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ClassAccuracy:
    label: int
    samples: int
    source: float | None  # None: no source model to run
    tflm: float

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.label, "samples": self.samples, "source": self.source, "tflm": self.tflm}


@dataclass(frozen=True)
class OutputError:
    """A non-classifier output: TFLM against the source over every sample."""

    name: str
    rmse: float
    max_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rmse": self.rmse, "max_abs_error": self.max_abs_error}


@dataclass(frozen=True)
class Accuracy:
    data: str  # the --data path
    samples: int
    task: str  # "classification" (one (1, K) output) | "regression" (anything else: errors per output)
    labelled: bool  # --data has y: accuracy against it; else agreement with the source
    reference: str | None  # what ran the source ("pytorch", "keras", "onnxruntime"); None: no source
    source_accuracy: float | None = None  # top-1 against y, a fraction
    tflm_accuracy: float | None = None
    agreement: float | None = None  # TFLM's top-1 equals the source's, a fraction
    per_class: list[ClassAccuracy] = field(default_factory=list)
    # TFLM's predictions (columns) against the true class (rows): y, else the source's top-1
    confusion: list[list[int]] | None = None
    outputs: list[OutputError] = field(default_factory=list)
    max_drop: float | None = None  # --max-accuracy-drop, in percentage points
    ok: bool = True

    @property
    def drop(self) -> float | None:
        """Percentage points lost on TFLM: source minus TFLM accuracy; without labels, the samples whose top-1
        moved (the source's predictions as the labels, which it scores 100 % on)."""
        if self.source_accuracy is not None and self.tflm_accuracy is not None:
            return round(100.0 * (self.source_accuracy - self.tflm_accuracy), 4)
        if not self.labelled and self.agreement is not None:
            return round(100.0 * (1.0 - self.agreement), 4)
        return None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"data": self.data, "samples": self.samples, "task": self.task,
                               "labelled": self.labelled, "reference": self.reference}
        if self.task == "classification":
            doc.update(source_accuracy=self.source_accuracy, tflm_accuracy=self.tflm_accuracy,
                       drop_percentage_points=self.drop, agreement=self.agreement,
                       per_class=[c.to_dict() for c in self.per_class], confusion=self.confusion,
                       confusion_rows="true class (y)" if self.labelled else "the source's top-1")
        else:
            doc["outputs"] = [o.to_dict() for o in self.outputs]
        if self.max_drop is not None:
            doc.update(max_drop_percentage_points=self.max_drop, ok=self.ok)
        return doc


# --- the figures -------------------------------------------------------------------------------

def top1(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(len(outputs), -1).argmax(1)


def top1_accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(top1(outputs) == y))


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(top1(outputs) == top1(reference)))


def measure(data: Dataset, tflm: dict[str, np.ndarray], source: dict[str, np.ndarray] | None,
            reference: str | None) -> Accuracy:
    """The figures from every sample's outputs ({output name: (N, ...)}, source layout; `source` None: none ran)."""
    names = list(tflm)
    base = Accuracy(data=data.source, samples=len(data.x), task="regression", labelled=data.y is not None,
                    reference=reference if source is not None else None)
    first = tflm[names[0]]
    if len(names) != 1 or not is_classifier_shaped((1, *first.shape[1:])):
        return replace(base, outputs=[_errors(n, tflm[n], source[n]) for n in names if source and n in source])
    classes = int(np.prod(first.shape[1:]))
    if data.y is not None and int(data.y.max()) >= classes:
        raise InputError(f"y holds class {int(data.y.max())}, but the model scores {classes} classes (0 to "
                         f"{classes - 1})", data.source)
    src = None if source is None else source[names[0]]
    truth = data.y if data.y is not None else (None if src is None else top1(src))
    got = top1(first)
    per_class, confusion = [], None
    if truth is not None:
        per_class = [ClassAccuracy(c, int(np.sum(truth == c)),
                                   None if src is None or data.y is None else _mean(top1(src)[truth == c] == c),
                                   _mean(got[truth == c] == c)) for c in range(classes) if np.any(truth == c)]
        if classes <= CONFUSION_MAX_CLASSES:
            matrix = np.zeros((classes, classes), np.int64)
            np.add.at(matrix, (truth, got), 1)
            confusion = matrix.tolist()
    return replace(base, task="classification",
                   source_accuracy=None if src is None or data.y is None else top1_accuracy(src, data.y),
                   tflm_accuracy=None if data.y is None else top1_accuracy(first, data.y),
                   agreement=None if src is None else top1_agreement(first, src),
                   per_class=per_class, confusion=confusion)


def judge(accuracy: Accuracy, max_drop: float | None) -> tuple[Accuracy, Finding | None]:
    """--max-accuracy-drop: an error finding past it (the run then fails), a warning when it cannot be checked."""
    if max_drop is None:
        return accuracy, None
    drop = accuracy.drop
    if drop is None:
        why = "not a classifier" if accuracy.task != "classification" else "no source model ran to compare with"
        return replace(accuracy, max_drop=max_drop), Finding(
            "model", "", [], "warning", f"--max-accuracy-drop {max_drop:g} was not checked: {why}")
    if drop <= max_drop:
        return replace(accuracy, max_drop=max_drop), None
    what = "accuracy" if accuracy.labelled else "agreement with the source"
    return replace(accuracy, max_drop=max_drop, ok=False), Finding(
        "model", "", [], "error", f"{what} on TFLM drops {drop:.2f} percentage points on {accuracy.samples} samples "
        f"of {accuracy.data}, past --max-accuracy-drop {max_drop:g}",
        hint="calibrate with real samples (--calibration), or try --quantize int16x8")


def _mean(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if hits.size else 0.0


def _errors(name: str, got: np.ndarray, expected: np.ndarray) -> OutputError:
    diff = got.astype(np.float64) - np.asarray(expected, np.float64).reshape(got.shape)
    return OutputError(name, float(np.sqrt(np.mean(diff**2))), float(np.max(np.abs(diff))))


# --- running the samples -------------------------------------------------------------------------

def tflm_outputs(tflite_bytes: bytes, spec: TensorSpec, x: np.ndarray, onnx_outputs: list[TensorSpec] | None,
                 layouts: list[InputLayout] | None = None) -> dict[str, np.ndarray]:
    """Every output of the model on TFLM for every sample of `x` ({spec.name}: source layout, fed as `layouts`
    lays it out), in one child, dequantised and in the source's layout; keyed by the source's output names
    (matched by name, else by position), or the TFLite ones when there is no source."""
    raw = tflm_raw_outputs(tflite_bytes, [{spec.name: x[i:i + 1]} for i in range(len(x))], layouts)
    specs = read_tflite(tflite_bytes).io_specs("outputs")
    targets = onnx_outputs if onnx_outputs and len(onnx_outputs) == len(specs) else None
    out = {}
    for o, tspec in enumerate(specs):
        target = next((t for t in onnx_outputs or [] if t.name == tspec["name"]), None) or (targets[o] if targets else None)
        shape = target.shape if target is not None else None
        out[target.name if target else tspec["name"]] = np.concatenate(
            [from_tflite_layout(dequantise(sample[o], tspec), shape) for sample in raw])
    return out


def source_outputs(run: Runner, spec: TensorSpec, x: np.ndarray, step: Callable[[str], None],
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The source's outputs for every sample ({output name: (N, ...)}), one sample at a time (the batch it
    exported with); renamed by position to the graph's `names` when its own differ."""
    per_sample = []
    for i in range(len(x)):
        per_sample.append({k: np.asarray(v) for k, v in run({spec.name: x[i:i + 1]}).items()})
        step("")
    own = list(per_sample[0])
    keys = names if names and set(names) != set(own) and len(names) == len(own) else own
    return {key: np.concatenate([s[name] for s in per_sample]) for key, name in zip(keys, own)}


def tflite_input_spec(tflite_bytes: bytes) -> tuple[TensorSpec, str | None]:
    """A .tflite's one input as a source-layout spec (channels first, as hub's samples are) and the layout
    --data is most likely in (NHWC: what a TFLite model's users hold), for `hub verify` without --reference."""
    specs = read_tflite(tflite_bytes).io_specs("inputs")
    if len(specs) != 1:
        raise InputError(f"--data measures models with one input; this one has {len(specs)}")
    spec = specs[0]
    shape = tuple(spec["shape"])
    if len(shape) >= 3:  # undo channels-last: (N, H, W, C) -> (N, C, H, W)
        shape = (shape[0], shape[-1], *shape[1:-1])
    quantized = isinstance(spec.get("scale"), float)
    dtype = "float32" if quantized or spec["dtype"].startswith("float") else spec["dtype"]
    return TensorSpec(spec["name"], shape, dtype), "NHWC" if len(shape) >= 3 else None
