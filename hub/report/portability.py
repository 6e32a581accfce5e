"""Portability report: where a model can run, what blocks each target, whether it fits a board.

`hub report` analyses without converting (fast): per-target verdicts come from the
check pass (hub.check.onnx, hub.check.tflite), parameter/MAC/activation figures from hub.check.layers, and the
flash and arena figures are *estimated* (weights as each target stores them; a
TFLM-style greedy plan of the activations plus modelled persistent data). When
`hub convert` calls `portability_sections` it passes its measured numbers, which
replace the estimates in that target's row.

Exit codes of `hub report` (`exit_code`): 0 when at least one requested target can run the model
(and it fits the board or budget, when one is given); 1 otherwise; 2 for input errors.
The renderers (text, md, html, json) are hub.report.render.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import onnx

import hub.adapters
from hub.artifacts import LoadOptions, Measured
from hub.check.onnx import analyse_onnx
from hub.check.tflite import analyse_tflite
from hub.check.layers import ACTIVATION_BYTES, LayerTable, live_bytes, onnx_layers, tflite_layers
from hub.errors import HubError, InputError, first_line
from hub.graph.normalise import normalise_source
from hub.graph.rewrite import rewrite
from hub.knowledge import boards as board_data
from hub.knowledge.kernel_flash import op_key
from hub.tflite.islands import float_islands
from hub.tflite.model import read_tflite
from hub.verify.tflm import verify

ALL_TARGETS = ("tflm-int8", "tflm-float32", "tflite", "onnxruntime")
# The check pass models TFLM; LiteRT ("tflite") is judged from the float32 TFLM check, keeping only
# what blocks the conversion itself or needs an op outside TFLite's builtin set (see _litert_view).
# tflm-auto (--quantize auto's mixed model) is checked and estimated as its int8 base; hub convert's measured
# figures replace the estimate.
CHECKED = {"tflm-int8": ("tflm", "int8"), "tflm-int16x8": ("tflm", "int16x8"), "tflm-auto": ("tflm", "int8"),
           "tflm-float32": ("tflm", "float32"), "tflite": ("tflm", "float32")}
STORAGE = {"tflm-int8": "int8", "tflm-int16x8": "int16x8", "tflm-auto": "int8", "tflm-float32": "float32",
           "tflite": "float32", "onnxruntime": "float32"}
ESTIMATE_NOTE = ("estimated without converting: flash = weights as the target stores them (int8: 1 byte per weight, "
                 "int32 biases; float32: 4 bytes), the flatbuffer adds metadata; arena = TFLM-style greedy plan of "
                 "the activations + modelled persistent data (within 10 % of the measured arenas of the MLPerf Tiny "
                 "reference models); `hub convert` measures both")


def parse_targets(text: str | Sequence[str]) -> list[str]:
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    known = (*CHECKED, "onnxruntime")
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise InputError(f"unknown --targets {', '.join(unknown) or '(none)'}: choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def resolve_board(board: str | None, ram_kb: float | None, flash_kb: float | None) -> board_data.Board | None:
    if board is not None and (ram_kb is not None or flash_kb is not None):
        raise InputError("give either --board or --ram/--flash, not both")
    if board is not None:
        return board_data.find_board(board)
    if ram_kb is not None or flash_kb is not None:
        return board_data.custom_board(ram_kb, flash_kb)
    return None


def build_report(path: Path, targets: Sequence[str], board: board_data.Board | None, options: LoadOptions) -> dict:
    source = hub.adapters.load(path, options)
    head = {"source": {"path": str(path), "framework": source.framework}}
    if source.framework == "tflite":
        return {**head, **tflite_sections(source.tflite_bytes, targets=targets, board=board)}
    normalised = rewrite(normalise_source(source, options))  # as hub convert --target tflm will convert it
    return {**head, **portability_sections(normalised.onnx_model, measured=None, board=board, targets=targets)}


def exit_code(report: dict[str, Any]) -> int:
    runs = any(t["compatible"] for t in report["targets"])
    fits = (report.get("board") or {}).get("fits")
    return 0 if runs and fits is not False else 1


# ---------------------------------------------------------------- sections


def portability_sections(onnx_model: onnx.ModelProto, *, measured: Measured | None = None,
                         board: str | board_data.Board | None = None,
                         targets: Sequence[str] = ALL_TARGETS) -> dict[str, Any]:
    """{"targets", "layers", "totals", "board", "activation_memory"} for a normalised ONNX model.

    `measured` holds `hub convert`'s figures: they replace the estimates of the converted target, whose
    row is added when not asked for (an int16x8 conversion) and which the totals and memory describe.
    """
    primary = measured.row_name if measured else None
    if primary and primary not in targets:
        targets = [primary, *targets]
    table = onnx_layers(onnx_model)
    cache: dict[tuple[str, str], Any] = {}
    checks = {}
    for name in targets:
        if name in CHECKED:
            key = CHECKED[name]
            cache[key] = cache[key] if key in cache else _check_onnx(onnx_model, *key)
            checks[name] = _litert_view(cache[key]) if name == "tflite" else cache[key]
    rows = []
    for name in targets:
        if name == "onnxruntime":
            rows.append(_onnxruntime_row(onnx_model, table))
        else:
            rows.append(_estimated_row(name, checks[name], table))
    if measured:
        _apply_measured(rows, measured)
    ops = {name: _predicted_ops(check) for name, check in checks.items()}
    return _assemble(rows, table, checks, _board(board), ops, primary=primary)


def tflite_sections(data: bytes, *, targets: Sequence[str] = ALL_TARGETS,
                    board: str | board_data.Board | None = None) -> dict[str, Any]:
    """The same sections for a .tflite file: the file is measured as it is, not converted."""
    model = read_tflite(data)
    table = tflite_layers(model)
    kind = _tflite_kind(model)
    checks: dict[str, Any] = {}
    rows = []
    for name in targets:
        if name.startswith("tflm-") and name != f"tflm-{kind}":
            rows.append(_row(name, False, [{"node": "", "op": "", "message": f"this .tflite holds {kind} tensors",
                                            "hint": f"convert the source model with --quantize {name[5:]}"}]))
        elif name.startswith("tflm-"):
            checks[name] = _check_tflite(data)
            rows.append(_row(name, _compatible(checks[name]), _blocking(checks[name])))
        elif name == "tflite":
            rows.append(_litert_row(data))
        else:
            rows.append(_row(name, None, [{"node": "", "op": "", "message": "not applicable to a .tflite file",
                                           "hint": "report on the ONNX or framework model instead"}]))
    arena, _ = table.arena(None)
    for row in rows:
        if row["name"] != "onnxruntime":
            row.update(flash_bytes=len(data), flash_basis="file size", arena_bytes=arena,
                       arena_basis="estimated")
    if f"tflm-{kind}" in checks and _compatible(checks[f"tflm-{kind}"]):
        _apply_measured(rows, _measure_on_tflm(data, kind))
    ops = [op_key(op.name, op.custom_code) for op in model.ops]
    sections = _assemble(rows, table, checks, _board(board), {r["name"]: ops for r in rows}, quantize=None)
    return {**sections, "float_islands": [island.to_dict() for island in float_islands(model)]}


def _measure_on_tflm(data: bytes, kind: str) -> Measured:
    """A .tflite is measured, not estimated: about a second on the TFLM interpreter (kernel scratch
    included, which the estimate leaves out: 9 % of MLPerf VWW's arena). Flash stays the file's size."""
    v = verify(data, None, None)
    return Measured("tflm", kind, None, v.memory.arena_bytes, v.tflm.invokes, v.tflm.message)


def _board(board: str | board_data.Board | None) -> board_data.Board | None:
    return board_data.find_board(board) if isinstance(board, str) else board


def _row(name: str, compatible: bool | None, blocking: list[dict], warnings: int = 0) -> dict[str, Any]:
    return {"name": name, "compatible": compatible, "blocking": blocking, "warnings": warnings,
            "flash_bytes": None, "arena_bytes": None, "flash_basis": None, "arena_basis": None}


def _estimated_row(name: str, check, table: LayerTable) -> dict[str, Any]:
    row = _row(name, _compatible(check), _blocking(check), _count(check, "warning"))
    storage = STORAGE[name]
    row.update(flash_bytes=table.param_bytes(storage), flash_basis="estimated",
               arena_bytes=table.arena(storage)[0], arena_basis="estimated")
    return row


def _onnxruntime_row(onnx_model: onnx.ModelProto, table: LayerTable) -> dict[str, Any]:
    """Compatible when onnxruntime builds an InferenceSession for the model (real, not predicted)."""
    import onnxruntime as ort

    data = onnx_model.SerializeToString()
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        row = _row("onnxruntime", True, [])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        message = first_line(exc)
        row = _row("onnxruntime", False, [{"node": "", "op": "", "message": message, "hint": ""}])
    row.update(flash_bytes=len(data), flash_basis="ONNX file size")
    return row


def _litert_row(data: bytes) -> dict[str, Any]:
    """A .tflite on LiteRT: compatible when the interpreter allocates its tensors."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Without default delegates: XNNPACK's "INFO: Created TensorFlow Lite XNNPACK delegate" goes to
        # stderr from C, into the report's output; the builtin kernels answer the question alone.
        Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                    ).allocate_tensors()
        return _row("tflite", True, [])
    except Exception as exc:  # LiteRT raises RuntimeError/ValueError with the kernel's message
        message = first_line(exc)
        return _row("tflite", False, [{"node": "", "op": "", "message": message, "hint": ""}])


def _check_onnx(onnx_model: onnx.ModelProto, target: str, quantize: str):
    try:
        return analyse_onnx(onnx_model, target=target, quantize=quantize)
    except HubError as exc:
        return exc


def _litert_view(check):
    """The TFLM float32 check seen from LiteRT: errors stay only where onnx2tf cannot convert the node
    (no TFLite op) or where it becomes an op outside TFLite's builtins; Flex ops become warnings."""
    if isinstance(check, HubError):
        return check
    from dataclasses import replace

    from ai_edge_litert import schema_py_generated as schema

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    findings = []
    for f in check.findings:
        if f.severity != "error":
            findings.append(f)
        elif any(op.startswith("FlexOp:") for op in f.tflite_ops):
            findings.append(replace(f, severity="warning", message=f"{f.message} LiteRT needs the Flex delegate."))
        elif not f.tflite_ops or any(op not in builtins for op in f.tflite_ops):
            findings.append(f)
    return replace(check, target="tflite", compatible=not any(f.severity == "error" for f in findings),
                   findings=findings)


def _check_tflite(data: bytes):
    try:
        return analyse_tflite(data, target="tflm")
    except HubError as exc:
        return exc


def _compatible(check) -> bool:
    return False if isinstance(check, HubError) else bool(check.compatible)


def _blocking(check) -> list[dict[str, str]]:
    if isinstance(check, HubError):
        return [{"node": "", "op": "", "message": check.message, "hint": check.hint or ""}]
    return [{"node": f.node, "op": f.op, "message": f.message, "hint": f.hint, "severity": f.severity}
            for f in check.findings if f.severity in ("error", "risk")]  # risks: what may stop a compatible model


def _predicted_ops(check) -> list[str]:
    """The TFLite ops the check predicts the converted model holds (none known when it failed)."""
    return [] if isinstance(check, HubError) else [op for node in check.nodes for op in node["tflite_ops"]]


def _count(check, severity: str) -> int:
    return 0 if isinstance(check, HubError) else sum(f.severity == severity for f in check.findings)


def _apply_measured(rows: list[dict], measured: Measured) -> None:
    row = next((r for r in rows if r["name"] == measured.row_name), None)
    if row is None:
        return
    if measured.tflite_bytes is not None:
        row.update(flash_bytes=measured.tflite_bytes, flash_basis="measured")
    if measured.arena_bytes is not None:
        row.update(arena_bytes=measured.arena_bytes, arena_basis="measured")
    if measured.invokes is not None:
        row["compatible"] = measured.invokes
        if not measured.invokes and measured.tflm_message:
            row["blocking"].append({"node": "", "op": "", "message": f"TFLM: {measured.tflm_message}", "hint": ""})


def _assemble(rows: list[dict], table: LayerTable, checks: dict, board: board_data.Board | None,
              ops: dict[str, list[str]], quantize: str | None = "int8", primary: str | None = None) -> dict[str, Any]:
    """The sections, with totals and memory for the `primary` row (the converted target), else the first
    TFLM row. `ops`: per row, the TFLite ops whose kernels the board fit counts."""
    primary = next((r for r in rows if r["name"] == primary), None) \
        or next((r for r in rows if r["name"].startswith("tflm-")), rows[0])
    storage = None if quantize is None else STORAGE.get(primary["name"], "int8")
    _, plan = table.arena(storage)
    head = max((p["offset"] + p["bytes"] for p in plan), default=0)
    live = live_bytes(table.buffers, len(table.layers), ACTIVATION_BYTES.get(storage or ""))
    peak = max(range(len(live)), key=lambda s: live[s]) if live else 0
    layers = []
    for layer in table.layers:
        entry = layer.to_dict()
        entry["support"] = {name: _support(check, layer.name, layer.index) for name, check in checks.items()}
        layers.append(entry)
    totals = {"params": table.params, "macs": table.macs, "flash_bytes": primary["flash_bytes"],
              "arena_bytes": primary["arena_bytes"], "target": primary["name"],
              "activation_peak_bytes": live[peak] if live else 0, "layers": len(table.layers)}
    board_section = None
    if board is not None:
        def fit(row: dict) -> dict[str, Any]:
            return board_data.board_fit(board, row["arena_bytes"], row["flash_bytes"], ops.get(row["name"], [])).to_dict()

        per_target = {r["name"]: fit(r) for r in rows if r["name"].startswith("tflm-")}
        board_section = {**board.to_dict(), "target": primary["name"], **fit(primary), "per_target": per_target,
                         "assumption": board_data.ASSUMPTION}
    return {
        "targets": rows,
        "layers": layers,
        "totals": totals,
        "board": board_section,
        "op_histogram": table.op_histogram(),
        "activation_memory": {"target": primary["name"], "live_bytes": live, "peak_step": peak,
                              "peak_bytes": live[peak] if live else 0, "planned_bytes": head, "plan": plan},
        "notes": [ESTIMATE_NOTE],
    }


def _support(check, name: str, index: int) -> str:
    if isinstance(check, HubError):
        return "error"
    severities = {f.severity for f in check.findings if f.node in (name, str(index))}
    return next((s for s in ("error", "risk", "warning") if s in severities), "ok")


def _tflite_kind(model) -> str:
    """"int8" for integer models, "float32" for float ones, "hybrid" otherwise (float activations into int8
    weights). A float interface or float islands (hub.tflite.islands) keep an integer model "int8": TFLM runs them."""
    acts = {model.tensors[i].dtype for op in model.ops for i in op.outputs if i >= 0}
    if acts & {"int8", "int16"} and not any(_hybrid_op(model, op) for op in model.ops):
        return "int8"
    return "float32" if "int8" not in acts and not _has_int8_weights(model) else "hybrid"


def _hybrid_op(model, op) -> bool:
    ins = [model.tensors[i] for i in op.inputs if i >= 0]
    return any(t.dtype == "float32" and not t.is_constant for t in ins) and any(
        t.dtype == "int8" and t.is_constant for t in ins)


def _has_int8_weights(model) -> bool:
    return any(t.is_constant and t.dtype == "int8" for t in model.tensors)


def ethos_u_row(result) -> dict[str, Any]:
    """The row of one Vela compilation (hub.firmware.ethos_u.EthosUResult), beside the TFLM rows: it runs wherever
    TFLM runs the int8 model (Vela leaves what it cannot map to TFLM's CPU kernels)."""
    blocking = [{"node": op.output, "op": op.op, "severity": "info", "hint": "",
                 "message": f"stays on the CPU (TFLM kernel): Vela: {'; '.join(op.reasons) or 'no reason given'}"}
                for op in result.cpu_ops]
    row = _row(result.npu, True, blocking)
    row.update(flash_bytes=len(result.tflite_bytes), flash_basis="Vela .tflite size",
               arena_bytes=result.arena_bytes, arena_basis="estimated (Vela scratch + CPU tensors)",
               npu=result.to_dict())
    return row
