"""Convert stage: NormalisedModel -> ConvertedModel (one TFLite variant) via onnx2tf.

The work happens in `hub.convert_worker`, in a child process with time and
memory limits; this module checks the request against the target's limits
before any work is spent, and turns the child's failures into HubErrors.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hub.artifacts import ConvertedModel, NormalisedModel
from hub.calibration import CalibrationSet
from hub.child import run_python_module
from hub.errors import IncompatibleError, InputError

# target -> quantize modes it can run, and why the others are refused.
QUANTIZE_MODES: dict[str, tuple[str, ...]] = {
    "tflm": ("int8", "int16x8", "float32"),
    "tflite": ("int8", "int16x8", "float32", "float16"),
}
REFUSALS = {
    ("tflm", "float16"): "TFLite Micro has no float16 kernels: use int8 (default) or float32",
    ("tflm", "dynamic"): "TFLite Micro rejects hybrid (dynamic-range) models: use int8 (default) or float32",
    ("tflite", "dynamic"): "dynamic-range output is not offered: use int8, float16 or float32",
}


@dataclass
class ConvertOptions:
    target: str = "tflm"
    quantize: str = "int8"
    timeout_s: float = 900.0
    memory_mb: int = 8192
    use_onnxsim: bool = False  # normalise already folds what onnxsim would
    per_channel_dense: bool = False  # per-channel FULLY_CONNECTED weights (conv weights are always per-channel)


def check_request(target: str, quantize: str) -> None:
    """Refuse target/quantize pairs the target cannot run, before any work is spent."""
    if target not in QUANTIZE_MODES:
        raise InputError(f"unknown target {target!r}: choose one of {', '.join(QUANTIZE_MODES)}")
    if (target, quantize) in REFUSALS:
        raise InputError(f"--quantize {quantize} is refused for --target {target}: {REFUSALS[(target, quantize)]}")
    if quantize not in QUANTIZE_MODES[target]:
        raise InputError(f"unknown --quantize {quantize!r} for --target {target}: choose one of {', '.join(QUANTIZE_MODES[target])}")


def convert(model: NormalisedModel, calibration: CalibrationSet, options: ConvertOptions) -> ConvertedModel:
    check_request(options.target, options.quantize)
    with tempfile.TemporaryDirectory(prefix="hub-convert-") as tmp:
        job = Path(tmp)
        onnx.save(model.onnx_model, str(job / "model.onnx"))
        np.savez(job / "calibration.npz", **calibration.samples)
        (job / "job.json").write_text(json.dumps({"quantize": options.quantize, "skip_onnxsim": not options.use_onnxsim,
                                                   "per_channel_dense": options.per_channel_dense}))
        t0 = time.perf_counter()
        result = run_python_module("hub.convert_worker", [str(job)], timeout_s=options.timeout_s,
                                   memory_mb=options.memory_mb, cwd=str(job))
        wall = time.perf_counter() - t0
        tflite = job / "model.tflite"
        if result.returncode != 0 or not tflite.exists():
            raise IncompatibleError(_failure_message(result, options))
        timings = json.loads((job / "result.json").read_text())["timings_s"]
        return ConvertedModel(
            tflite_bytes=tflite.read_bytes(),
            quantize=options.quantize,
            target=options.target,
            calibration=calibration.summary(),
            timings_s={"convert": wall, **{f"convert.{k}": v for k, v in timings.items()}},
        )


def _failure_message(result, options: ConvertOptions) -> str:
    if result.timed_out:
        return f"conversion did not finish within {options.timeout_s:.0f} s and was stopped"
    if result.signal_name:
        return f"the converter process died ({result.signal_name}); it may have run out of its {options.memory_mb} MB memory limit"
    node, detail = converter_error(result.stderr)
    line = detail or result.last_error_line() or f"exit code {result.returncode}"
    return "onnx2tf/TFLite conversion failed" + (f" at ONNX node {node}" if node else "") + f": {line}"


ANSI = re.compile(r"\x1b\[[0-9;]*m")
KERAS_WRAPPER = "Exception encountered when calling layer"


def converter_error(stderr: str) -> tuple[str | None, str | None]:
    """The ONNX node onnx2tf names when it fails (its `onnx_op_name:` line) and the error's cause:
    for TensorFlow's Keras-layer wrapper ("Exception encountered when calling layer ...") the line
    after it, cut before the TF graph dump; a UnicodeDecodeError (onnx2tf reading a non-text
    attribute of an op it does not know) is said in words."""
    lines = [ANSI.sub("", ln).strip() for ln in stderr.splitlines()]
    nodes = [ln.split("onnx_op_name:", 1)[1].strip() for ln in lines if "onnx_op_name:" in ln]
    node = nodes[-1] if nodes and nodes[-1] else None
    detail = None
    for i, ln in enumerate(lines):
        if KERAS_WRAPPER in ln:
            detail = next((nxt for nxt in lines[i + 1:] if nxt), detail)
        elif ln.startswith("UnicodeDecodeError"):
            detail = "onnx2tf could not read one of the node's attributes as text (an op it does not know?)"
    if detail:
        detail = detail.split(" for '{{node")[0][:300]
    return node, detail
