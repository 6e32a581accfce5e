"""Verify stage: prove a .tflite on the real TFLite Micro interpreter and measure it.

- TFLM runs only in a child process (hub.verify.worker through hub.child): it can
  abort() the process (an int8 SOFTMAX with a tiny input scale fails a CHECK in
  QuantizeMultiplierGreaterThanOne). A crash, a missing op or a prepare failure
  becomes a Finding carrying TFLM's own message and the op involved.
- Arena: the exact smallest `arena_size` (1-byte granularity) with which the
  interpreter allocates and invokes, found by bisection inside one child (a too-small
  arena raises RuntimeError, it does not abort). Measured with the host build of
  TFLM's reference kernels.
- Recommended arena: hub.knowledge.arena.recommended_arena (measured + headroom).
- Fidelity: the outputs of the held-out samples (mapped by hub.verify.samples) are
  compared by hub.verify.metrics with the expected ones (the source framework's, computed once by
  hub.verify.export_check), else with onnxruntime on the reference.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from hub.artifacts import (REFERENCE_NAMES, Fidelity, Finding, InputLayout, Memory, ReferenceOutputs, TFLMRun,
                           Verification)
from hub.check.tflite import abort_causes, custom_op_findings, offset_buffer_findings
from hub.child import ChildResult, run_python_module
from hub.convert.layout import decide_layouts
from hub.errors import IncompatibleError, InputError
from hub.knowledge.arena import recommended_arena
from hub.tflite.model import TFLiteModel, read_tflite
from hub.verify.metrics import compare
from hub.verify.samples import dequantise, from_tflite_layout, synthetic_samples, to_tflite_inputs
from hub.verify.worker import bisect_arena

ARENA_CAP = 256 * 1024 * 1024  # first load; the arena is virtual memory until TFLM touches it
CHILD_TIMEOUT_S = 600.0
CHILD_MEMORY_MB = 4096


def verify(tflite_bytes: bytes, reference: onnx.ModelProto | None, samples: list[dict[str, np.ndarray]] | None,
           *, min_cosine: float | None = None, measure_arena: bool = True,
           expected: ReferenceOutputs | None = None, layouts: list[InputLayout] | None = None) -> Verification:
    """Run `tflite_bytes` on TFLM in a child; measure its arena (unless told not to); compare with `expected`
    (the source's outputs on `samples`), else with onnxruntime on `reference`, on `samples`. The samples are
    laid out as `layouts` (the conversion's), else as hub.convert.layout decides on `reference`."""
    model = read_tflite(tflite_bytes)
    if reference is not None and not samples:
        samples = synthetic_samples(reference)
    use_samples = samples if reference is not None else None
    if layouts is None and reference is not None:
        layouts = reference_layouts(model, reference)
    try:
        inputs = [to_tflite_inputs(model, s, layouts) for s in use_samples] if use_samples else []
    except ValueError as exc:
        raise InputError(f"the reference's inputs do not fit the TFLite model: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="hub-verify-") as tmp:
        job = Path(tmp)
        child, result, outputs = _run_worker(job, tflite_bytes, model, inputs, measure_arena)
        findings = _tflm_findings(model, child, result, job)
    tflm = TFLMRun(loads=bool(result.get("loads")), invokes=bool(result.get("invokes")),
                   message=findings[0].message if findings and not result.get("invokes") else None,
                   invoke_us_host=result.get("invoke_us"))
    arena = result.get("arena_bytes")
    if tflm.invokes and arena is None and not child.timed_out and measure_arena:
        arena = arena_by_probes(tflite_bytes, result.get("arena_lower_bound"))
    memory = memory_section(arena, len(tflite_bytes), result.get("arena_tail"))  # the tail: for the schedule's bound
    if tflm.invokes and memory.arena_bytes is None and measure_arena:
        findings.append(Finding("model", "", [], "warning", "the smallest arena could not be measured: "
                                + (_child_failure(child) or "the arena search did not finish")))
    fidelity = None
    if tflm.invokes and use_samples and outputs is not None:
        fidelity = compare(model, reference, use_samples, outputs, expected)
    hazards = offset_buffer_findings(model)  # TFLM runs it, on garbage weights: no run can prove it
    findings += hazards
    ok = tflm.loads and tflm.invokes and not hazards
    if min_cosine is not None:
        ok = ok and _check_cosine(fidelity, min_cosine, findings)
    return Verification(tflm=tflm, memory=memory, fidelity=fidelity, findings=findings, ok=ok)


def reference_layouts(model: TFLiteModel, reference: onnx.ModelProto) -> list[InputLayout]:
    """hub convert's layout decision on `reference` (hub verify --reference), for the inputs the .tflite holds
    that way; the others (a file converted otherwise) are matched by shape (hub.verify.samples)."""
    shapes = {tuple(spec["shape"]) for spec in model.io_specs("inputs")}
    return [layout for layout in decide_layouts(reference) if layout.tflite_shape in shapes]


def tflm_outputs(tflite_bytes: bytes, samples: np.ndarray, input_name: str,
                 output_shape: tuple[int, ...] | None = None, layouts: list[InputLayout] | None = None) -> np.ndarray:
    """The first output of the model on TFLM for each of `samples` (one input, ONNX layout), dequantised and
    in the ONNX output's layout (`output_shape`): accuracy measured on the interpreter itself (hub optimize)."""
    outputs = tflm_raw_outputs(tflite_bytes, [{input_name: sample[None]} for sample in samples], layouts)
    spec = read_tflite(tflite_bytes).io_specs("outputs")[0]
    return np.concatenate([from_tflite_layout(dequantise(out[0], spec), output_shape) for out in outputs])


def tflm_raw_outputs(tflite_bytes: bytes, samples: list[dict[str, np.ndarray]],
                     layouts: list[InputLayout] | None = None) -> list[list[np.ndarray]]:
    """Every output of the model on TFLM for each sample ({input name: ONNX-layout array}, laid out as
    `layouts`), as the interpreter wrote it (int8 stays int8): for comparing two flatbuffers bit for bit
    (hub.tflite.compress)."""
    model = read_tflite(tflite_bytes)
    inputs = [to_tflite_inputs(model, s, layouts) for s in samples]
    with tempfile.TemporaryDirectory(prefix="hub-run-") as tmp:
        child, result, outputs = _run_worker(Path(tmp), tflite_bytes, model, inputs, measure_arena=False)
    if not outputs or len(outputs) != len(samples):
        raise IncompatibleError(f"TFLM did not run the {len(samples)} samples: "
                                f"{_child_failure(child) or result.get('message') or 'no outputs'}")
    return outputs


def memory_section(arena_bytes: int | None, flash_bytes: int, persistent_bytes: int | None = None) -> Memory:
    return Memory(arena_bytes=arena_bytes, arena_recommended_bytes=recommended_arena(arena_bytes),
                  flash_bytes=flash_bytes, arena_persistent_bytes=persistent_bytes)


def probe_arena(tflite_bytes: bytes, arena_size: int) -> bool:
    """Does the model allocate and invoke (zero inputs) with exactly `arena_size` bytes? (in a child)"""
    with tempfile.TemporaryDirectory(prefix="hub-probe-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        child = run_python_module("hub.verify.worker", ["probe", str(path), str(arena_size)],
                                  timeout_s=CHILD_TIMEOUT_S, memory_mb=CHILD_MEMORY_MB, cwd=tmp)
        return child.returncode == 0


def arena_by_probes(tflite_bytes: bytes, lower: int | None) -> int | None:
    """Smallest arena by the worker's bisection, but with one child per probe.

    The fallback when the in-child search dies: at some too-small sizes TFLM
    crashes instead of failing cleanly (seen on MLPerf AD with per-channel dense
    weights), and a crashed probe only costs its own child.
    """
    return bisect_arena(lambda size: probe_arena(tflite_bytes, size), lower, ARENA_CAP)


# --- child process ---------------------------------------------------------------------------

def _run_worker(job: Path, tflite_bytes: bytes, model: TFLiteModel, inputs: list[list[np.ndarray]],
                measure_arena: bool = True):
    (job / "model.tflite").write_bytes(tflite_bytes)
    spec = {"arena_cap": ARENA_CAP, "inputs": len(model.inputs), "outputs": len(model.outputs), "samples": len(inputs),
            "measure_arena": measure_arena}
    (job / "job.json").write_text(json.dumps(spec))
    if inputs:
        np.savez(job / "inputs.npz", **{f"s{s}_i{i}": a for s, arrays in enumerate(inputs) for i, a in enumerate(arrays)})
    child = run_python_module("hub.verify.worker", [str(job)], timeout_s=CHILD_TIMEOUT_S,
                              memory_mb=CHILD_MEMORY_MB, cwd=str(job))
    result_path = job / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    outputs = None
    if (job / "outputs.npz").exists():
        with np.load(job / "outputs.npz") as npz:
            outputs = [[npz[f"s{s}_o{o}"] for o in range(len(model.outputs))] for s in range(result.get("samples", 0))]
    return child, result, outputs


def _child_failure(child: ChildResult) -> str | None:
    if child.timed_out:
        return f"TFLM did not finish within {CHILD_TIMEOUT_S:.0f} s"
    if child.signal_name:
        return f"TFLM crashed the process ({child.signal_name})"
    if child.returncode != 0:
        return f"the TFLM worker failed: {child.last_error_line()}"
    return None


def _tflm_findings(model: TFLiteModel, child: ChildResult, result: dict, job: Path) -> list[Finding]:
    """Findings from what the child reported, with TFLM's messages and the op they name."""
    phase = (job / "phase").read_text().strip() if (job / "phase").exists() else "start"
    crash = _child_failure(child)
    if crash and phase in ("start", "load", "invoke", "samples"):
        return [_crash_finding(model, crash, phase, _read_log(job, phase))]
    if result.get("loads") and result.get("invokes"):
        return []
    phase = "invoke" if result.get("loads") else "load"
    return [_message_finding(model, _read_log(job, phase), result.get("message") or "TFLM failed", phase)]


def _read_log(job: Path, phase: str) -> list[str]:
    path = job / f"{phase}.log"
    if not path.exists():
        return []
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("[RecordingMicroAllocator]")]


_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_NODE_FAILED = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke)")
_NO_CUSTOM_REGISTRATION = "Failed to get registration from op code CUSTOM"  # micro_interpreter.cc:131: no code


def _unregistered_custom_op(model: TFLiteModel) -> tuple[str, Finding] | None:
    """(code, the check's finding) of the first custom op the host interpreter lacks: unknown to TFLM, or
    needing a special build (hub.check.tflite.custom_op_findings decides, from the custom-op table)."""
    for op in model.ops:
        if op.name == "CUSTOM":
            code = op.custom_code or "?"
            found = custom_op_findings(op.name, code)
            if found:
                return code, found[0]
    return None


def _message_finding(model: TFLiteModel, log: list[str], fallback: str, phase: str) -> Finding:
    text = "; ".join(log[-6:]) or fallback
    for line in log:
        if m := _MISSING_OP.search(line):
            op = m.group(1)
            return Finding(node=_first_node(model, op), op=op, tflite_ops=[op], severity="error",
                           message=f"TFLite Micro has no kernel for {op}: {line}",
                           hint="replace the layer with ops TFLM supports (hub check lists them)")
    if any(_NO_CUSTOM_REGISTRATION in line for line in log) and (custom := _unregistered_custom_op(model)):
        code, why = custom
        return Finding(node=_first_node(model, code), op="CUSTOM", tflite_ops=["CUSTOM"], severity="error",
                       message=f"this TFLite Micro build has no kernel for custom op {code}: {_NO_CUSTOM_REGISTRATION} "
                               f"({why.message})", hint=why.hint)
    for line in log:
        if m := _NODE_FAILED.search(line):
            index = int(m.group(2))
            op = model.ops[index].name if index < len(model.ops) else m.group(1)
            return Finding(node=f"op #{index} {op}", op=op, tflite_ops=[op], severity="error",
                           message=f"TFLM: {text}",
                           hint=f"the {op} kernel refused its tensors or options (during {m.group(3)})")
    where = "allocating" if phase == "load" else "invoking"
    return Finding(node="model", op="", tflite_ops=[], severity="error", message=f"TFLM failed while {where}: {text}")


def _crash_finding(model: TFLiteModel, crash: str, phase: str, log: list[str]) -> Finding:
    """An abort names no node; name the op when a known hazard explains it."""
    where = {"load": "preparing the model", "invoke": "invoking it", "samples": "invoking it on the samples"}
    message = f"{crash} while {where.get(phase, 'starting')}" + (f": {'; '.join(log[-4:])}" if log else "")
    known = abort_causes(model, at_invoke=phase in ("invoke", "samples"))
    if known:
        f = known[0]
        return Finding(node=f.node, op=f.op, tflite_ops=f.tflite_ops, severity="error",
                       message=f"{message} ({f.message})", hint=f.hint)
    return Finding(node="model", op="", tflite_ops=[], severity="error", message=message,
                   hint="TFLM gives no node for an abort; hub check may name the cause")


def _first_node(model: TFLiteModel, op_name: str) -> str:
    for op in model.ops:
        if op.name == op_name or op.custom_code == op_name:
            return f"op #{op.index} {op.name}"
    return "model"


def _check_cosine(fidelity: Fidelity | None, min_cosine: float, findings: list[Finding]) -> bool:
    if fidelity is None or fidelity.cosine is None:
        why = (fidelity.cosine_undefined if fidelity else None) or "no ONNX reference to compare with"
        findings.append(Finding("model", "", [], "warning", f"--min-cosine {min_cosine} was not checked: {why}"))
        return True
    if fidelity.cosine >= min_cosine:
        return True
    findings.append(Finding("model", "", [], "error",
                            f"cosine similarity to {REFERENCE_NAMES.get(fidelity.reference or 'onnxruntime')} is "
                            f"{fidelity.cosine:.4f}, below "
                            f"--min-cosine {min_cosine}", hint="calibrate with real samples (--calibration)"))
    return False
