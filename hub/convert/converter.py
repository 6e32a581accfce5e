"""Convert stage: NormalisedModel -> ConvertedModel (one TFLite variant) via onnx2tf.

The work happens in `hub.convert.worker`, in a child process with time and
memory limits; this module checks the request against the target's limits
before any work is spent, and turns the child's failures into HubErrors.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import field, make_dataclass
from pathlib import Path

import numpy as np
import onnx

from hub.artifacts import ConvertedModel, InputLayout, NormalisedModel
from hub.child import run_python_module
from hub.convert.calibration import CalibrationSet
from hub.convert.layout import decide_layouts, kept_names
from hub.convert.worker import FLOAT32_TWIN
from hub.errors import IncompatibleError
from hub.options import CONVERTER_OPTIONS, converter_fields
from hub.targets import resolve

# The converter child's address-space limit: a base that TensorFlow's import and a small model need, plus
# room per MB of weights (AlexNet's 244 MB of float weights needed about 20 GB of address space), capped
# at three quarters of the machine's memory but never below the base (address space, not resident memory).
# A runaway conversion still ends in a clear error, not a frozen machine: VGG-19's 548 MB of weights took
# a converter past 20 GB resident on a 24 GB machine.
BASE_MEMORY_MB = 8192
MEMORY_MB_PER_WEIGHT_MB = 48


# One conversion's settings: the target and mode, the child's limits, and every hub convert option marked
# `converter` in hub.options (per_channel_dense, per_tensor_weights, ...), which job.json hands to
# hub.convert.worker under the same names.
ConvertOptions = make_dataclass("ConvertOptions", [
    ("target", str, field(default="tflm")),
    ("quantize", str, field(default="int8")),
    ("timeout_s", float, field(default=900.0)),
    ("memory_mb", "int | None", field(default=None)),  # None: from the model's weights (memory_limit_mb)
    ("use_onnxsim", bool, field(default=False)),  # normalise already folds what onnxsim would
    # int16x8 only: ops the converter has no 16x8 version of stay float instead of failing the conversion (what
    # --quantize auto's int16 twins come from: it takes only the ops that came out int16)
    ("float_fallback", bool, field(default=False)),
    *[(o.name, o.type, field(default=o.field_default)) for o in CONVERTER_OPTIONS],
])
ConvertOptions.__module__ = __name__


def convert(model: NormalisedModel, calibration: CalibrationSet, options: ConvertOptions,
            layouts: list[InputLayout] | None = None, float32_twin: bool = False) -> ConvertedModel:
    """`layouts`: the inputs' layouts decided on the graph before any rewrite (hub.convert.layout: its axis
    names come from the recurrent ops a rewrite may unroll); by default decided on `model` itself. `float32_twin`:
    a quantized model comes with the same graph's float32 flatbuffer (seconds in the same child, against a second
    onnx2tf run when a poor fidelity needs it)."""
    resolve(options.target, options.quantize)
    layouts = layouts if layouts is not None else decide_layouts(model.onnx_model)
    with tempfile.TemporaryDirectory(prefix="hub-convert-") as tmp:
        job = Path(tmp)
        write_job(job, model, calibration, options, layouts, float32_twin=float32_twin)
        t0 = time.perf_counter()
        memory_mb = options.memory_mb or memory_limit_mb(model.onnx_model)
        result = run_python_module("hub.convert.worker", [str(job)], timeout_s=options.timeout_s,
                                   memory_mb=memory_mb, cwd=str(job))
        wall = time.perf_counter() - t0
        tflite = job / "model.tflite"
        if result.returncode != 0 or not tflite.exists():
            raise IncompatibleError(_failure_message(result, options, memory_mb), child_traceback=result.traceback())
        timings = json.loads((job / "result.json").read_text())["timings_s"]
        twin = job / FLOAT32_TWIN
        return ConvertedModel(
            tflite_bytes=tflite.read_bytes(),
            quantize=options.quantize,
            target=options.target,
            calibration=calibration.summary(),
            timings_s={"convert": wall, **{f"convert.{k}": v for k, v in timings.items()}},
            input_layouts=layouts,
            float32_bytes=twin.read_bytes() if twin.exists() else None,
        )


def write_job(job: Path, model: NormalisedModel, calibration: CalibrationSet, options: ConvertOptions,
              layouts: list[InputLayout], float32_twin: bool = False, isolated_budget_s: float | None = None) -> None:
    """JOB_DIR as hub.convert.worker reads it (`float32_twin`: convert()'s) and hub.verify.layer_error_worker,
    which builds the same graph (`isolated_budget_s`: profile_layers')."""
    onnx.save(model.onnx_model, str(job / "model.onnx"))
    np.savez(job / "calibration.npz", **calibration.samples)
    (job / "job.json").write_text(json.dumps({"quantize": options.quantize, "skip_onnxsim": not options.use_onnxsim,
                                              "float_fallback": options.float_fallback,
                                              "input_perms": {i.name: list(i.perm) for i in layouts},
                                              "keep_inputs": kept_names(layouts), **converter_fields(options),
                                              "float32_twin": float32_twin, "isolated_budget_s": isolated_budget_s}))


# How an allocation failure surfaces from the converter child: C++ (the MLIR converter), Python, TensorFlow.
OUT_OF_MEMORY = ("std::bad_alloc", "MemoryError", "ResourceExhaustedError")


def memory_limit_mb(model: onnx.ModelProto) -> int:
    weights_mb = sum(t.ByteSize() for t in model.graph.initializer) / 2**20
    physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return int(min(BASE_MEMORY_MB + MEMORY_MB_PER_WEIGHT_MB * weights_mb, max(physical_mb * 3 // 4, BASE_MEMORY_MB)))


def _failure_message(result, options: ConvertOptions, memory_mb: int) -> str:
    if result.timed_out:
        return f"conversion did not finish within {options.timeout_s:.0f} s and was stopped"
    if result.signal_name:
        return f"the converter process died ({result.signal_name}); it may have run out of its {memory_mb} MB memory limit"
    if any(sign in result.stderr for sign in OUT_OF_MEMORY):
        return f"the converter ran out of its {memory_mb} MB memory limit: the model is too large to convert"
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
