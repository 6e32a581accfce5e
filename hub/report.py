"""Portability report: where a model can run, what blocks each target, whether it fits a board.

`hub report` analyses without converting (fast): per-target verdicts come from the
check pass (hub.analyse), parameter/MAC/activation figures from hub.layers, and the
flash and arena figures are *estimated* (weights as each target stores them; a
TFLM-style greedy plan of the activations plus modelled persistent data). When
`hub convert` calls `portability_sections` it passes its measured numbers, which
replace the estimates in that target's row.

Exit codes of `hub report`: 0 when at least one requested target can run the model
(and it fits the board or budget, when one is given); 1 otherwise; 2 for input errors.
"""
from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any, Sequence

import onnx

from hub import boards as board_data
from hub.artifacts import LoadOptions
from hub.errors import HubError, InputError, first_line
from hub.layers import LayerTable, live_bytes, onnx_layers, tflite_layers

ALL_TARGETS = ("tflm-int8", "tflm-float32", "tflite", "onnxruntime")
# The check pass models TFLM; LiteRT ("tflite") is judged from the float32 TFLM check, keeping only
# what blocks the conversion itself or needs an op outside TFLite's builtin set (see _litert_view).
CHECKED = {"tflm-int8": ("tflm", "int8"), "tflm-float32": ("tflm", "float32"), "tflite": ("tflm", "float32")}
STORAGE = {"tflm-int8": "int8", "tflm-float32": "float32", "tflite": "float32", "onnxruntime": "float32"}
FORMATS = ("text", "json", "md", "html")
ESTIMATE_NOTE = ("estimated without converting: flash = weights as the target stores them (int8: 1 byte per weight, "
                 "int32 biases; float32: 4 bytes), the flatbuffer adds metadata; arena = TFLM-style greedy plan of "
                 "the activations + modelled persistent data (within 10 % of the measured arenas of the MLPerf Tiny "
                 "reference models); `hub convert` measures both")


# ---------------------------------------------------------------- entry point


def run_report(path: Path, *, targets: str = ",".join(ALL_TARGETS), board: str | None = None,
               ram_kb: float | None = None, flash_kb: float | None = None, fmt: str = "text",
               output: Path | None = None, options: LoadOptions | None = None) -> int:
    """`hub report`: build the report, print it or write it to `output`; returns the exit code."""
    if board is not None and board.strip().lower() == "list":
        print(board_data.board_list())
        return 0
    wanted = parse_targets(targets)
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    chosen = resolve_board(board, ram_kb, flash_kb)
    report = build_report(Path(path), wanted, chosen, options or LoadOptions())
    text = render(report, fmt)
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        _write_atomic(Path(output), text)
    return exit_code(report)


def parse_targets(text: str | Sequence[str]) -> list[str]:
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in ALL_TARGETS]
    if unknown or not names:
        raise InputError(f"unknown --targets {', '.join(unknown) or '(none)'}: choose from {', '.join(ALL_TARGETS)}")
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
    import adapters

    source = adapters.load(path, options)
    head = {"source": {"path": str(path), "framework": source.framework}}
    if source.framework == "tflite":
        return {**head, **tflite_sections(source.tflite_bytes, targets=targets, board=board)}
    from hub.normalise import normalise_source

    normalised = normalise_source(source, options)
    return {**head, **portability_sections(normalised.onnx_model, measured=None, board=board, targets=targets)}


def exit_code(report: dict[str, Any]) -> int:
    runs = any(t["compatible"] for t in report["targets"])
    fits = (report.get("board") or {}).get("fits")
    return 0 if runs and fits is not False else 1


# ---------------------------------------------------------------- sections


def portability_sections(onnx_model: onnx.ModelProto, *, measured: dict | None = None,
                         board: str | board_data.Board | None = None,
                         targets: Sequence[str] = ALL_TARGETS) -> dict[str, Any]:
    """{"targets", "layers", "totals", "board", "activation_memory"} for a normalised ONNX model.

    `measured` is `hub convert`'s report (keys "target", "quantize", "model"{"tflite_bytes"},
    "memory"{"arena_bytes"}, "tflm"): its numbers replace the estimates of the converted target.
    """
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
    return _assemble(rows, table, checks, _board(board))


def tflite_sections(data: bytes, *, targets: Sequence[str] = ALL_TARGETS,
                    board: str | board_data.Board | None = None) -> dict[str, Any]:
    """The same sections for a .tflite file: the file is measured as it is, not converted."""
    from hub.tflite_model import read_tflite

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
    return _assemble(rows, table, checks, _board(board), quantize=None)


def _measure_on_tflm(data: bytes, kind: str) -> dict[str, Any]:
    """A .tflite is measured, not estimated: about a second on the TFLM interpreter (kernel scratch
    included, which the estimate leaves out: 9 % of MLPerf VWW's arena)."""
    from hub.verify import verify

    verification = verify(data, None, None)
    return {"target": "tflm", "quantize": kind, **verification.to_dict()}  # flash stays the file's size


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
    from hub.analyse import analyse_onnx

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
    from hub.analyse import analyse_tflite

    try:
        return analyse_tflite(data, target="tflm")
    except HubError as exc:
        return exc


def _compatible(check) -> bool:
    return False if isinstance(check, HubError) else bool(check.compatible)


def _blocking(check) -> list[dict[str, str]]:
    if isinstance(check, HubError):
        return [{"node": "", "op": "", "message": check.message, "hint": check.hint or ""}]
    return [{"node": f.node, "op": f.op, "message": f.message, "hint": f.hint}
            for f in check.findings if f.severity == "error"]


def _count(check, severity: str) -> int:
    return 0 if isinstance(check, HubError) else sum(f.severity == severity for f in check.findings)


def _apply_measured(rows: list[dict], measured: dict) -> None:
    target, quantize = measured.get("target", "tflm"), measured.get("quantize", "int8")
    name = f"tflm-{quantize}" if target == "tflm" else "tflite"
    row = next((r for r in rows if r["name"] == name), None)
    if row is None:
        return
    size = (measured.get("model") or {}).get("tflite_bytes")
    arena = (measured.get("memory") or {}).get("arena_bytes")
    if size is not None:
        row.update(flash_bytes=size, flash_basis="measured")
    if arena is not None:
        row.update(arena_bytes=arena, arena_basis="measured")
    tflm = measured.get("tflm") or {}
    if "invokes" in tflm:
        row["compatible"] = bool(tflm["invokes"])
        if not tflm["invokes"] and tflm.get("message"):
            row["blocking"].append({"node": "", "op": "", "message": f"TFLM: {tflm['message']}", "hint": ""})


def _assemble(rows: list[dict], table: LayerTable, checks: dict, board: board_data.Board | None,
              quantize: str | None = "int8") -> dict[str, Any]:
    primary = next((r for r in rows if r["name"].startswith("tflm-")), rows[0])
    storage = None if quantize is None else STORAGE.get(primary["name"], "int8")
    _, plan = table.arena(storage)
    head = max((p["offset"] + p["bytes"] for p in plan), default=0)
    live = live_bytes(table.buffers, len(table.layers), {"int8": 1, "float32": 4}.get(storage or ""))
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
        fit = board_data.board_fit(board, primary["arena_bytes"], primary["flash_bytes"])
        per_target = {r["name"]: board_data.board_fit(board, r["arena_bytes"], r["flash_bytes"])
                      for r in rows if r["name"].startswith("tflm-")}
        board_section = {**board.to_dict(), "target": primary["name"], **fit, "per_target": per_target,
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
    return "error" if "error" in severities else "warning" if "warning" in severities else "ok"


def _tflite_kind(model) -> str:
    """"int8" for fully integer models, "float32" for float ones, "hybrid" otherwise."""
    acts = {model.tensors[i].dtype for op in model.ops for i in op.outputs if i >= 0}
    if acts & {"int8", "int16"} and "float32" not in acts:
        return "int8"
    return "float32" if "int8" not in acts and not _has_int8_weights(model) else "hybrid"


def _has_int8_weights(model) -> bool:
    return any(t.is_constant and t.dtype == "int8" for t in model.tensors)


# ---------------------------------------------------------------- rendering


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        from hub.api import _json_default

        return json.dumps(report, indent=2, default=_json_default) + "\n"
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    return render_text(report)


def write_html(report: dict[str, Any], path: Path) -> None:
    """The whole report (hub report's or report.json's, fidelity included) as one self-contained page."""
    _write_atomic(Path(path), render_html(report))


def _write_atomic(path: Path, text: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("the output file's folder does not exist", parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bytes(n: int | None, basis: str | None = None) -> str:
    if n is None:
        return "n/a"
    text = f"{n / 1024:,.1f} KB" if n >= 1024 else f"{n} B"
    return f"{text} ({basis})" if basis else text


def _verdict(row: dict) -> str:
    return {True: "runs", False: "blocked", None: "n/a"}[row["compatible"]]


def _reasons(row: dict, limit: int = 3) -> str:
    parts = [f"{b['node']} ({b['op']}): {b['message']}" if b.get("node") else b["message"] for b in row["blocking"]]
    more = f"; +{len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more if parts else "-"


def _matrix_rows(report: dict) -> list[list[str]]:
    return [[r["name"], _verdict(r), _reasons(r), _bytes(r["flash_bytes"], r.get("flash_basis")),
             _bytes(r["arena_bytes"], r.get("arena_basis"))] for r in report["targets"]]


MATRIX_HEAD = ["target", "verdict", "blocking ops and reasons", "model size (flash)", "arena (RAM)"]
LAYER_HEAD = ["#", "name", "op", "output shape", "params", "MACs", "activation bytes"]


def _layer_cells(layer: dict) -> list[str]:
    shape = "x".join(map(str, layer["output_shape"])) if layer.get("output_shape") is not None else "?"
    return [str(layer["index"]), layer["name"], layer["op"], shape, f"{layer['params']:,}", f"{layer['macs']:,}",
            f"{layer['activation_bytes']:,}"]


def _totals_lines(report: dict) -> list[str]:
    t = report["totals"]
    lines = [f"parameters {t['params']:,}", f"MACs {t['macs']:,}",
             f"flash {_bytes(t['flash_bytes'])} and arena {_bytes(t['arena_bytes'])} for {t['target']}",
             f"activation peak {_bytes(t['activation_peak_bytes'])}"]
    fidelity = report.get("fidelity") or {}
    nums = [f"{k} {v:.4g}" for k, v in fidelity.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if nums:
        lines.append("fidelity (int8 vs float): " + ", ".join(nums))
    return lines


def _board_lines(report: dict) -> list[str]:
    b = report.get("board")
    if not b:
        return []
    return [f"{b['name']}: RAM {_bytes(b['ram_bytes'])}, flash {_bytes(b['flash_bytes'])} ({b['source']})",
            f"{b['target']}: RAM {b['ram']['verdict']}; flash {b['flash']['verdict']}",
            f"assumes {b['assumption']}"]


def _table_text(head: list[str], rows: list[list[str]]) -> str:
    widths = [min(max(len(c) for c in col), 70) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def render_text(report: dict[str, Any]) -> str:
    src = report.get("source", {})
    out = [f"Portability report: {src.get('path', 'model')} ({src.get('framework', '?')})", "",
           _table_text(MATRIX_HEAD, _matrix_rows(report)), "", "Totals: " + "; ".join(_totals_lines(report))]
    if report.get("board"):
        out += ["", "Board: " + "\n       ".join(_board_lines(report))]
    out += ["", _table_text(LAYER_HEAD, [_layer_cells(la) for la in report["layers"]]), ""]
    out += [f"Note: {n}" for n in report.get("notes", [])]
    return "\n".join(out) + "\n"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)])


def render_markdown(report: dict[str, Any]) -> str:
    src = report.get("source", {})
    out = [f"# Portability report: `{src.get('path', 'model')}` ({src.get('framework', '?')})", "",
           "## Targets", "", _md_table(MATRIX_HEAD, _matrix_rows(report)), "", "## Totals", "",
           *(f"- {line}" for line in _totals_lines(report))]
    if report.get("board"):
        out += ["", "## Board", "", *(f"- {line}" for line in _board_lines(report))]
    out += ["", "## Layers", "", _md_table(LAYER_HEAD, [_layer_cells(la) for la in report["layers"]]), ""]
    out += [f"> {n}" for n in report.get("notes", [])]
    return "\n".join(out) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.runs{color:#17803d;font-weight:bold}.blocked{color:#b3261e;font-weight:bold}.na{color:#777}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}.note{color:#555;font-size:12px}.fits{color:#17803d}.nofit{color:#b3261e}
.layers{max-height:none}svg.chart{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.ok{color:#17803d}.error{color:#b3261e}.warning{color:#a15c00}
"""

SPECIAL = {"source", "targets", "layers", "totals", "board", "op_histogram", "activation_memory", "notes", "output"}


def render_html(report: dict[str, Any]) -> str:
    from hub import charts

    src = report.get("source", {})
    title = f"Portability report: {Path(str(src.get('path', 'model'))).name}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1><p class=\"note\">{escape(str(src.get('path', '')))} "
             f"({escape(str(src.get('framework', '?')))})"
             + (f"; converted for {escape(str(report['target']))} {escape(str(report.get('quantize', '')))}"
                if isinstance(report.get("target"), str) else "") + "</p>",
             _html_cards(report), "<h2>Where it runs</h2>", _html_matrix(report)]
    if report.get("board"):
        parts += ["<h2>Board fit</h2>", _html_board(report["board"])]
    names = [la["name"] for la in report["layers"]]
    mem = report.get("activation_memory") or {}
    parts += ["<h2>Activation memory</h2>",
              f"<p class=\"note\">Tensors alive at each step for {escape(str(mem.get('target', '')))}: boxes are "
              "buffers at their planned arena offsets, the black line the bytes alive, the dashed line the planned "
              "activation area.</p>", charts.memory_chart(mem, names),
              "<h2>MACs and parameters per layer</h2>", charts.layer_bars(report["layers"]),
              "<h2>Op histogram</h2>", charts.op_histogram(report.get("op_histogram") or {})]
    parts += _html_extras(report)
    parts += ["<h2>Layers</h2>", _html_layers(report)]
    parts += [f"<p class=\"note\">{escape(n)}</p>" for n in report.get("notes", [])]
    parts.append("</body></html>\n")
    return "".join(parts)


def _html_cards(report: dict) -> str:
    t = report["totals"]
    cards = [("parameters", f"{t['params']:,}"), ("MACs", f"{t['macs']:,}"),
             (f"flash ({t['target']})", _bytes(t["flash_bytes"])), (f"arena ({t['target']})", _bytes(t["arena_bytes"]))]
    fidelity = report.get("fidelity") or {}
    for key in ("cosine", "cosine_min", "top1_agreement", "max_abs_error"):
        if isinstance(fidelity.get(key), (int, float)):
            cards.append((f"fidelity {key}", f"{fidelity[key]:.4g}"))
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\">{escape(k)}<b>{escape(v)}</b></div>" for k, v in cards) + "</div>"


def _html_matrix(report: dict) -> str:
    rows = []
    for r in report["targets"]:
        verdict = _verdict(r)
        css = {"runs": "runs", "blocked": "blocked"}.get(verdict, "na")
        reasons = "".join(f"<li><b>{escape(b['node'])}</b> {escape(b['op'])}: {escape(b['message'])}"
                          + (f" <i>({escape(b['hint'])})</i>" if b.get("hint") else "") + "</li>"
                          for b in r["blocking"])
        rows.append(f"<tr><td>{escape(r['name'])}</td><td class=\"{css}\">{verdict}</td>"
                    f"<td>{'<ul>' + reasons + '</ul>' if reasons else '-'}</td>"
                    f"<td class=\"num\">{escape(_bytes(r['flash_bytes'], r.get('flash_basis')))}</td>"
                    f"<td class=\"num\">{escape(_bytes(r['arena_bytes'], r.get('arena_basis')))}</td></tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in MATRIX_HEAD)
    return f"<table id=\"matrix\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_board(b: dict) -> str:
    rows = []
    for name, fit in (b.get("per_target") or {b["target"]: b}).items():
        for what in ("ram", "flash"):
            f = fit[what]
            css = "fits" if f["fits"] else "nofit" if f["fits"] is False else "na"
            rows.append(f"<tr><td>{escape(name)}</td><td>{what.upper()}</td><td class=\"num\">{_bytes(f['need_bytes'])}</td>"
                        f"<td class=\"num\">{_bytes(f['budget_bytes'])}</td><td class=\"{css}\">{escape(f['verdict'])}</td></tr>")
    source = escape(b["source"])
    link = f"<a href=\"{source}\">{source}</a>" if b["source"].startswith("http") else source
    return (f"<p><b>{escape(b['name'])}</b> {escape(b.get('mcu') or '')}: RAM {_bytes(b['ram_bytes'])}, "
            f"flash {_bytes(b['flash_bytes'])}. Source: {link}. {escape(b.get('note') or '')}</p>"
            "<table id=\"board\"><thead><tr><th>target</th><th>memory</th><th>needs</th><th>budget</th><th>verdict</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table><p class=\"note\">Assumes {escape(b['assumption'])}.</p>")


def _html_layers(report: dict) -> str:
    targets = list(report["layers"][0]["support"]) if report["layers"] else []
    head = "".join(f"<th>{escape(h)}</th>" for h in LAYER_HEAD + targets)
    rows = []
    for layer in report["layers"]:
        cells = _layer_cells(layer)
        tds = "".join(f"<td class=\"num\">{escape(c)}</td>" if i in (0, 4, 5, 6) else f"<td>{escape(c)}</td>"
                      for i, c in enumerate(cells))
        tds += "".join(f"<td class=\"{escape(layer['support'][t])}\">{escape(layer['support'][t])}</td>" for t in targets)
        rows.append(f"<tr title=\"{escape(layer.get('note') or '')}\">{tds}</tr>")
    return f"<table id=\"layers\" class=\"layers\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_extras(report: dict) -> list[str]:
    """Sections `hub convert` adds to report.json (fidelity, memory, calibration, ...), rendered generically."""
    order = ["fidelity", "memory", "tflm", "model", "calibration", "passes", "findings", "check", "firmware", "timings_s"]
    keys = [k for k in order if k in report] + [k for k in report if k not in order and k not in SPECIAL]
    out = []
    for key in keys:
        value = report[key]
        if value in (None, {}, []) or key in ("target", "quantize"):
            continue
        out += [f"<h2>{escape(key.replace('_', ' '))}</h2>", _html_value(value)]
    return out


def _html_value(value: Any, depth: int = 0) -> str:
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{_html_value(v, depth + 1)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{escape(str(k))}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{_html_value(v.get(k), depth + 1)}</td>" for k in keys) + "</tr>"
                       for v in value[:500])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(value, list):
        return escape(", ".join(map(str, value)))
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    return escape("" if value is None else str(value))
