"""The portability report (hub.report.portability's sections, or a converted model's report.json) as text,
Markdown, self-contained HTML or JSON."""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from hub.firmware.export import input_layout_text
from hub.output import to_json, write_text_atomic
from hub.report import charts

FORMATS = ("text", "json", "md", "html")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return to_json(report)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    return render_text(report)


def write_html(report: dict[str, Any], path: Path) -> None:
    """The whole report (hub report's or report.json's, fidelity included) as one self-contained page."""
    write_text_atomic(Path(path), render_html(report))


def _bytes(n: int | None, basis: str | None = None) -> str:
    if n is None:
        return "n/a"
    text = f"{n / 1024:,.1f} KB" if n >= 1024 else f"{n} B"
    return f"{text} ({basis})" if basis else text


def _verdict(row: dict) -> str:
    if row["compatible"] and row["blocking"]:  # only risks the check cannot decide stand in the way
        return "may not run"
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
    lines = [f"{b['name']}: RAM {_bytes(b['ram_bytes'])}, flash {_bytes(b['flash_bytes'])} ({b['source']})",
             f"{b['target']}: RAM {b['ram']['verdict']}; flash {b['flash']['verdict']}"]
    if b.get("counted"):
        lines.append(f"counted: {counted_text(b['counted'])}")
    return lines + [f"assumes {b['assumption']}"]


def counted_text(c: dict) -> str:
    """What a board fit (hub.knowledge.boards.BoardFit.counted) adds up, in one line."""
    estimated = f", {len(c['estimated_ops'])} of them unmeasured" if c.get("estimated_ops") else ""
    return (f"RAM = arena {_bytes(c['arena_bytes'])} + TFLM runtime {_bytes(c['runtime_ram_bytes'])}; "
            f"flash = model {_bytes(c['model_bytes'])} + TFLM code {_bytes(c['kernel_code_bytes'])} "
            f"(interpreter core + kernels of {len(c['ops'])} ops{estimated})")


def island_text(island: dict) -> str:
    """One float island (hub.tflite.islands.FloatIsland.to_dict) in one line."""
    ops = ", ".join(f"#{o['index']} {o['op']}" for o in island["ops"])
    def at(ops: list[int]) -> str:
        return ", ".join(f"#{i}" for i in ops) or "-"
    return (f"ops {ops}: {island['activation_bytes']:,} B of float activations ({island['peak_live_bytes']:,} B live at "
            f"once, arena), {island['constant_bytes']:,} B of float constants (flash); from DEQUANTIZE "
            f"{at(island['entry_dequantize'])} to QUANTIZE {at(island['exit_quantize'])}")


ISLANDS_NOTE = "ops computing in float32 inside the quantized model, between DEQUANTIZE and QUANTIZE: slow without an FPU"


def _island_lines(report: dict) -> list[str]:
    return [island_text(island) for island in report.get("float_islands") or []]


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
    if _island_lines(report):
        out += ["", f"Float islands ({ISLANDS_NOTE}):", *(f"  {line}" for line in _island_lines(report))]
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
    if _island_lines(report):
        out += ["", "## Float islands", "", f"{ISLANDS_NOTE}.", "", *(f"- {line}" for line in _island_lines(report))]
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
.ok{color:#17803d}.error{color:#b3261e}.warning{color:#a15c00}tr.chosen td{background:#fdecea;font-weight:bold}
"""

SPECIAL = {"source", "targets", "layers", "totals", "board", "op_histogram", "activation_memory", "notes", "output",
           "optimize", "accuracy", "float_islands", "mixed_precision"}


def render_html(report: dict[str, Any]) -> str:
    src = report.get("source", {})
    title = f"Portability report: {Path(str(src.get('path', 'model'))).name}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1><p class=\"note\">{escape(str(src.get('path', '')))} "
             f"({escape(str(src.get('framework', '?')))})"
             + (f"; converted for {escape(str(report['target']))} {escape(str(report.get('quantize', '')))}"
                if isinstance(report.get("target"), str) else "") + "</p>",
             _html_cards(report)]
    if report.get("optimize", {}).get("search"):
        parts += ["<h2>Board-fit search</h2>", _html_search(report["optimize"]["search"])]
    elif report.get("optimize"):
        parts += ["<h2>Optimized: teacher and student</h2>", _html_optimize(report["optimize"])]
    if report.get("accuracy"):
        parts += ["<h2>Accuracy on your data</h2>", _html_accuracy(report["accuracy"])]
    layouts = (report.get("model") or {}).get("input_layouts") or []
    if layouts:
        parts += ["<h2>Inputs, as firmware fills them</h2>", "<ul id=\"inputs\">" + "".join(
            f"<li><code>{escape(layout['name'])}</code>: {escape(input_layout_text(layout))}</li>" for layout in layouts)
            + "</ul>"]
    if report.get("mixed_precision"):
        parts += ["<h2>Mixed precision (--quantize auto)</h2>", _html_precision(report["mixed_precision"])]
    parts += ["<h2>Where it runs</h2>", _html_matrix(report)]
    if report.get("board"):
        parts += ["<h2>Board fit</h2>", _html_board(report["board"])]
    if report.get("float_islands"):
        parts += ["<h2>Float islands</h2>", _html_islands(report["float_islands"])]
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
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<p class=\"note\">{escape(b['target'])}: {escape(counted_text(b['counted']))}.</p>" if b.get("counted") else "")
            + f"<p class=\"note\">Assumes {escape(b['assumption'])}.</p>")


def _html_islands(islands: list[dict]) -> str:
    """hub.tflite.islands' regions: their ops, float tensors and bytes."""
    rows = []
    for island in islands:
        ops = ", ".join(f"#{o['index']} {o['op']}" for o in island["ops"])
        tensors = "".join(f"<li>{escape(t['name'])} {escape('x'.join(map(str, t['shape'])))} {escape(t['dtype'])}: "
                          f"{t['bytes']:,} B{' (constant)' if kind == 'constants' else ''}</li>"
                          for kind in ("activations", "constants") for t in island[kind])
        rows.append(f"<tr><td>{escape(ops)}</td><td class=\"num\">{island['activation_bytes']:,}</td>"
                    f"<td class=\"num\">{island['peak_live_bytes']:,}</td><td class=\"num\">{island['constant_bytes']:,}</td>"
                    f"<td><ul>{tensors}</ul></td></tr>")
    return (f"<p class=\"note\">{escape(ISLANDS_NOTE)}.</p><table id=\"float-islands\"><thead><tr><th>ops</th>"
            "<th>float activations (B, arena)</th><th>live at once (B)</th><th>float constants (B, flash)</th>"
            f"<th>float tensors</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _html_precision(mixed: dict) -> str:
    """--quantize auto's steps, each a mix measured on TFLM; the chosen one highlighted, its int16 ops listed."""
    chosen = mixed["chosen"]
    marks = ['<tr class="chosen">' if step == chosen else "<tr>" for step in mixed["steps"]]
    rows = "".join(
        f"{mark}<td>{escape(step['label'])}</td>"
        f"<td class=\"num\">{len(step['int16_ops'])}</td><td class=\"num\">{_num(step['score'])}</td>"
        f"<td class=\"num\">{_num(step['cosine'])}</td><td class=\"num\">{_num(step['top1_agreement'])}</td>"
        f"<td class=\"num\">{_bytes(step['tflite_bytes'])}</td><td class=\"num\">{_bytes(step['arena_bytes'])}</td>"
        f"<td class=\"num\">{_num(step['invoke_us_host'])}</td></tr>" for mark, step in zip(marks, mixed["steps"]))
    ops = "".join(f"<li>{escape(op)}</li>" for op in chosen["int16_ops"])
    note = f"<p class=\"note\">{escape(mixed['note'])}</p>" if mixed.get("note") else ""
    return (f"<p class=\"note\">Target: {escape(mixed['metric'])} {escape(str(mixed['reachable']))} (asked "
            f"{escape(str(mixed['bound']))}). Ranking: {escape(mixed['ranking'] or 'none: int8 met the target')}.</p>"
            f"{note}<table id=\"mixed-precision\"><thead><tr><th>mix</th><th>int16 ops</th><th>score</th><th>cosine"
            "</th><th>top-1 agreement</th><th>file</th><th>arena</th><th>invoke (us, host)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>" + (f"<h3>int16 ops of the chosen mix</h3><ul>{ops}</ul>" if ops else ""))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.5g}"


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
        if key == "memory" and value.get("arena_lower_bound_bytes"):  # hub.tflite.schedule's bound beside the arena
            out.append(charts.arena_bars(value))
        profile = (value.get("diagnosis") or {}).get("layer_profile") if key == "fidelity" else None
        if profile:  # hub.verify.layer_error's profile, beside its table
            out += ["<h3>Per-layer error</h3>", charts.layer_error_chart(profile)]
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


OPTIMIZE_ROWS = [("params", "parameters"), ("macs", "MACs"), ("flash_bytes", "flash, measured on TFLM (B)"),
                 ("weight_bytes", "of which weights (B)"), ("arena_bytes", "arena, measured on TFLM (B)"),
                 ("invoke_us_host", "invoke time on this host (us)"), ("float_accuracy", "float accuracy"),
                 ("int8_accuracy_tflm", "int8 accuracy on TFLM"), ("int8_agreement_tflm", "int8 agreement with the teacher")]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _html_accuracy(a: dict) -> str:
    """--data (hub.verify.accuracy): source and TFLM top-1, the drop, per class, and TFLM's confusion matrix."""
    note = (f"{a['samples']} samples of {escape(str(a['data']))}, every one run by the source "
            f"({escape(str(a.get('reference') or 'none given'))}) and by the model on the TFLM interpreter.")
    if a["task"] != "classification":
        rows = "".join(f"<tr><td>{escape(o['name'])}</td><td class=\"num\">{o['rmse']:.4g}</td>"
                       f"<td class=\"num\">{o['max_abs_error']:.4g}</td></tr>" for o in a.get("outputs", []))
        return (f"<p class=\"note\">{note} Not a classifier: TFLM's outputs against the source's.</p>"
                f"<table id=\"accuracy\"><thead><tr><th>output</th><th>RMSE</th><th>max error</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>")
    drop = a.get("drop_percentage_points")
    limit = a.get("max_drop_percentage_points")
    judged = "" if limit is None else f" ({'within' if a.get('ok') else 'past'} --max-accuracy-drop {limit:g})"
    cards = [("source top-1", _pct(a.get("source_accuracy"))), ("TFLM top-1", _pct(a.get("tflm_accuracy"))),
             ("drop", "n/a" if drop is None else f"{drop:.2f} points{judged}"),
             ("agreement with the source", _pct(a.get("agreement")))]
    if not a["labelled"]:
        cards = cards[2:]
    summary = "<table id=\"accuracy\"><tbody>" + "".join(
        f"<tr><th>{escape(k)}</th><td class=\"num\">{escape(v)}</td></tr>" for k, v in cards) + "</tbody></table>"
    per_class = "".join(f"<tr><td>{c['class']}</td><td class=\"num\">{c['samples']}</td>"
                        f"<td class=\"num\">{_pct(c['source'])}</td><td class=\"num\">{_pct(c['tflm'])}</td></tr>"
                        for c in a.get("per_class", []))
    rows_are = "true class" if a["labelled"] else "the source's top-1"
    return (f"<p class=\"note\">{note}</p>{summary}<h3>Per class</h3><table id=\"per-class\"><thead><tr><th>class</th>"
            f"<th>samples</th><th>source</th><th>TFLM</th></tr></thead><tbody>{per_class}</tbody></table>"
            + (f"<h3>Confusion matrix on TFLM</h3><p class=\"note\">Rows: {rows_are}; columns: TFLM's top-1.</p>"
               + _confusion_table(a["confusion"]) if a.get("confusion") else ""))


def _confusion_table(matrix: list[list[int]]) -> str:
    """A K x K table, cells shaded by their share of the row (the diagonal green, the rest red)."""
    head = "".join(f"<th>{j}</th>" for j in range(len(matrix)))
    rows = []
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        cells = []
        for j, n in enumerate(row):
            alpha = n / total
            colour = f"rgba(46,160,67,{alpha:.2f})" if i == j else f"rgba(220,50,47,{alpha:.2f})"
            cells.append(f"<td class=\"num\" style=\"background:{colour}\">{n or ''}</td>")
        rows.append(f"<tr><th>{i}</th>{''.join(cells)}</tr>")
    return (f"<table id=\"confusion\"><thead><tr><th>true \\ TFLM</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _html_search(search: dict) -> str:
    """hub optimize --board: the Pareto charts (accuracy against flash and against RAM) and every candidate."""
    board = search["board"]
    points = [{**c, "chosen": c["label"] == search["chosen"]} for c in search["candidates"]]
    rows = []
    for c in points:
        cells = [escape(c["label"]), _bytes(c.get("flash_need")), _bytes(c.get("ram_need")),
                 "n/a" if c.get("accuracy") is None else f"{c['accuracy']:.4f}",
                 "fits" if c.get("fits") else "n/a" if c.get("fits") is None else "does not fit",
                 escape(c.get("error") or ""), f"{c.get('seconds', 0):.0f}"]
        mark = ' class="chosen"' if c["chosen"] else ""
        rows.append(f"<tr{mark}>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    note = (f"{len(points)} candidates measured on TFLM for {escape(board['name'])} ({_bytes(board['ram_bytes'])} RAM, "
            f"{_bytes(board['flash_bytes'])} flash). Flash: the flatbuffer and the kernels it registers; RAM: the "
            f"measured arena and the runtime's own. Chosen: {escape(search['chosen'] or 'none')}; the source "
            f"model (no pruning, int8) {'fits' if search['unoptimised_fits'] else 'does not fit'}. Green: fits the "
            "board; grey: does not; ringed: chosen; the line joins the Pareto front (no other candidate is both "
            "smaller and more accurate).")
    return (f"<p class=\"note\">{note}</p>"
            + charts.pareto_chart(points, "flash_need", "flash (model + kernels)", board.get("flash_bytes"))
            + charts.pareto_chart(points, "ram_need", "RAM (arena + runtime)", board.get("ram_bytes"))
            + "<table id=\"search\"><thead><tr><th>candidate</th><th>flash</th><th>RAM</th><th>accuracy</th>"
              "<th>board</th><th>error</th><th>s</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _html_optimize(section: dict) -> str:
    """`hub optimize`: the teacher (source model) and the pruned student side by side, with the change."""
    rows = []
    for key, label in OPTIMIZE_ROWS:
        before, after = section["teacher"].get(key), section["student"].get(key)
        change = section["change"].get(key)
        cells = [f"{v:,}" if isinstance(v, int) or key == "invoke_us_host" and v is not None else "n/a" if v is None
                 else f"{v:.4f}" for v in (before, after)]
        rows.append(f"<tr><th>{escape(label)}</th><td class=\"num\">{cells[0]}</td><td class=\"num\">{cells[1]}</td>"
                    f"<td class=\"num\">{'' if change is None else f'{change:+.1%}'}</td></tr>")
    how = "distilled from the teacher" if section["distill"] else "trained on the labels alone"
    clustered = (f"each filter clustered to {section['cluster']} values and stored as TFLM look-up tables, "
                 if section.get("cluster") else "")
    clustered += "trained quantization-aware (TFLite's int8 rounding simulated), " if section.get("qat") else ""
    note = (f"{section['prune_ratio']:.0%} of the channels pruned ({escape(section['route'])}), {clustered}{how} for "
            f"{section['epochs']} epochs; figures over {section['validation']['samples']} validation samples; "
            f"agreement is {escape(section['agreement'])}.")
    return (f"<p class=\"note\">{note}</p><table id=\"optimize\"><thead><tr><th></th><th>teacher</th><th>student</th>"
            f"<th>change</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
