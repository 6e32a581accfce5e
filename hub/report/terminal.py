"""Terminal output for humans (stderr is for logs; these print to stdout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hub.artifacts import REFERENCE_NAMES, ConvertReport, Fidelity, Verification
from hub.firmware.export import input_layout_text
from hub.graph.network import module_path_from_name
from hub.graph.rewrite import summary_line
from hub.report.render import island_text

# soft_wrap: plain lines are never hard-wrapped at the width (80 columns when piped into a log or
# a file, which cut "CONV_2D x9" in two); tables still fit the width.
out = Console(soft_wrap=True)


def _kb(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,} B ({n / 1024:.1f} KB)"


def print_convert_summary(report: ConvertReport) -> None:
    model = report.model
    exporter = f", {report.source['exporter']} exporter" if report.source.get("exporter") else ""
    out.print(f"[bold]{report.source['path']}[/] ({report.source['framework']}{exporter}) -> "
              f"{report.target} {report.quantize}: [bold]{report.output}[/]")
    ops = ", ".join(f"{k} x{v}" for k, v in model.ops.items())
    out.print(f"  model.tflite  {_kb(model.tflite_bytes)}, {sum(model.ops.values())} ops: {ops}")
    layouts = {layout.name: layout.to_dict() for layout in model.input_layouts}
    for io, tensors in (("input", model.inputs), ("output", model.outputs)):
        for t in tensors:
            q = f" scale={t['scale']:.6g} zero_point={t['zero_point']}" if isinstance(t.get("scale"), float) else ""
            out.print(f"  {io:<6} {t['name']}: {t['dtype']}{tuple(t['shape'])}{q}")
            if io == "input" and t["name"] in layouts:
                out.print(f"         axes {input_layout_text(layouts[t['name']])}", markup=False)
    rewrote = summary_line(report.passes)
    if rewrote:
        out.print(f"  rewrites     {rewrote}")
    _print_calibration(report.calibration)
    if report.mixed_precision is not None:
        for line in precision_lines(report.mixed_precision):
            out.print(f"  {line}", markup=False)
    if report.verification is not None:
        _print_verification(report.verification)
    if report.compression is not None:
        _print_compression(report.compression)
    for island in report.float_islands:
        out.print(f"  [yellow]float island[/] {island_text(island.to_dict())}")
    if report.firmware:
        out.print(f"  firmware     {', '.join(report.firmware)}")
    if report.ethos_u is not None:
        for line in ethos_u_lines(report.ethos_u):
            out.print(f"  {line}", markup=False)


def ethos_u_lines(result) -> list[str]:
    """What `hub convert --target ethos-u` prints about the Vela compilation (a hub.firmware.ethos_u.EthosUResult)."""
    d = result.to_dict()
    lines = [f"ethos-u      {result.npu} ({result.system_config}, {result.memory_mode}, "
             f"{result.clock_hz / 1e6:g} MHz): model_vela.tflite {d['tflite_size']:,} B",
             f"  NPU        {result.npu_ops}/{result.ops_total} ops, {d['npu_macs']:,}/{result.macs_total:,} MACs; "
             f"SRAM {result.sram_bytes:,} B, flash {result.flash_bytes:,} B, DRAM {result.dram_bytes:,} B, "
             f"{result.cycles:,} cycles = {d['inference_ms']:g} ms (Vela's estimate)"]
    lines += [f"  CPU        {op.op} {op.output}: {'; '.join(op.reasons) or 'no reason given'}" for op in result.cpu_ops]
    return lines + [f"  note       {d['note']}"]


def precision_lines(mixed) -> list[str]:
    """--quantize auto's choice and the mixes it measured (hub.artifacts.MixedPrecision)."""
    goal = (f"cosine >= {mixed.reachable:.4g}" if mixed.metric == "cosine"
            else f"accuracy drop <= {mixed.reachable:.4g} points")
    chosen = mixed.chosen
    what = (f"{chosen.label}, nothing promoted" if chosen.promoted_compute == 0 else chosen.label
            if chosen.promoted_compute == -1 else f"{len(chosen.int16_ops)} ops in int16 "
            f"({chosen.label}: {chosen.promoted_compute} of {mixed.candidates} compute ops promoted, plus the data "
            "movement between)")
    lines = [f"precision    auto: {what}; target {goal}"]
    for step in mixed.steps:
        lines.append(f"               {step.label:<20} score {_score(step.score)}  {_kb(step.tflite_bytes)}  arena "
                     f"{_kb(step.arena_bytes)}  invoke {_us(step.invoke_us_host)}")
    if mixed.note:
        lines.append(f"               {mixed.note}")
    return lines


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.5g}"


def _print_calibration(cal: dict[str, Any]) -> None:
    if cal.get("synthetic"):
        out.print(f"  calibration  {cal.get('samples')} synthetic samples "
                  "[yellow](not real data: pass --calibration for production accuracy)[/]")
        return
    out.print(f"  calibration  {cal.get('samples')} samples from {cal.get('source')}")
    for note in cal.get("notes", []):
        out.print(f"               {note}")


def _print_verification(v: Verification) -> None:
    state = "[green]loads and invokes[/]" if v.tflm.invokes else f"[red]fails[/]: {v.tflm.message}"
    out.print(f"  TFLM         {state}")
    out.print(f"  arena        {_kb(v.memory.arena_bytes)} measured, {_kb(v.memory.arena_recommended_bytes)} recommended")
    order = v.memory.schedule
    if order is not None and order.arena_lower_bound_bytes:  # hub.tflite.schedule's bound: no order needs less
        out.print(f"               lower bound {_kb(order.arena_lower_bound_bytes)}; "
                  f"{_kb(order.arena_default_order_bytes)} with --schedule default")
    if v.fidelity is not None:
        against = REFERENCE_NAMES.get(v.fidelity.reference or "onnxruntime", v.fidelity.reference)
        out.print(f"  fidelity     vs {against} on {v.fidelity.samples} held-out samples: {_fidelity_parts(v.fidelity)}")
    for line in accuracy_lines(v.accuracy):
        out.print(f"  {line}", markup=False)


def _print_compression(c) -> None:
    bits = sorted({t.bits for t in c.tensors})
    out.print(f"  compressed   {len(c.tensors)} filters as {'/'.join(map(str, bits))}-bit look-up tables "
              f"({len(c.skipped)} left as they are): weights {_kb(c.weight_bytes_before)} -> "
              f"{_kb(c.weight_bytes_after)} ({c.weight_ratio:.2f}x smaller)")
    out.print(f"               arena {_kb(c.before.arena_bytes)} -> {_kb(c.after.arena_bytes)} "
              f"(DECODE rebuilds weights there); invoke {_us(c.before.invoke_us_host)} -> "
              f"{_us(c.after.invoke_us_host)} on this host")


def _us(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f} us"


def print_check(result, model: Path) -> None:
    verdict = {"will run": "[green]will run[/]", "will not run": "[red]will not run[/]",
               "unknown": "[yellow]may not run[/]"}[result.verdict]
    shown = list(result.findings)
    risks = sum(f.severity == "risk" for f in shown)
    rewrites = sum(f.severity == "rewrite" for f in shown)
    out.print(f"[bold]{model}[/]: {verdict} on {result.target} ({result.quantize}); "
              f"{len(result.nodes)} nodes, {sum(f.severity == 'error' for f in shown)} blocking, "
              + (f"{rewrites} rewritten for TFLM, " if rewrites else "")
              + (f"{risks} risk{'s' * (risks != 1)} the check cannot decide, " if risks else "")
              + f"{sum(f.severity == 'warning' for f in shown)} warnings")
    if not shown:
        return
    modules = {n["name"]: n.get("module") for n in result.nodes}
    table = Table(show_lines=False)
    for col in ("node", "ONNX op", "TFLite ops", "verdict", "reason", "hint"):
        table.add_column(col, overflow="fold")
    for f in shown:
        module = modules.get(f.node) or module_path_from_name(f.node)  # a rewritten node is gone from the graph
        node = f.node + (f"\n[dim]{module}[/]" if module else "")
        style = {"error": "red", "info": "cyan", "rewrite": "green"}.get(f.severity, "yellow")
        table.add_row(node, f.op, ", ".join(f.tflite_ops) or "-", f"[{style}]{f.severity}[/]", f.message, f.hint)
    out.print(table)


def print_verification(result: Verification, model: Path) -> None:
    state = "[green]loads and invokes[/]" if result.tflm.invokes else f"[red]fails[/]: {result.tflm.message}"
    out.print(f"[bold]{model}[/] on TFLM: {state}")
    memory = result.memory
    if memory.arena_bytes:
        out.print(f"  arena {_kb(memory.arena_bytes)} measured, {_kb(memory.arena_recommended_bytes)} recommended")
    if result.fidelity is not None:
        out.print(f"  fidelity {_fidelity_parts(result.fidelity)}")
    for line in accuracy_lines(result.accuracy):
        out.print(f"  {line}", markup=False)
    for f in result.findings:
        style = "red" if f.severity == "error" else "yellow"
        if f.message != result.tflm.message:  # the headline already shows TFLM's message
            out.print(f"  [{style}]{f.severity}[/] {f.node}: {f.message}")
        if f.hint:
            out.print(f"  [dim]hint: {f.hint}[/]")


FIDELITY_SHOWN = ("max_abs_error", "rmse", "cosine", "top1_agreement")  # report.json has more


def _fidelity_parts(fidelity: Fidelity) -> str:
    """Cosine needs six decimals: 0.99998 is not 1. An undefined cosine says why."""
    shown = ((k, getattr(fidelity, k)) for k in FIDELITY_SHOWN)
    parts = [f"{k}={v:.6f}" if k == "cosine" else f"{k}={v:.4g}" for k, v in shown
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if fidelity.cosine is None and fidelity.cosine_undefined:
        parts.append(f"cosine undefined ({fidelity.cosine_undefined})")
    return ", ".join(parts)


def accuracy_lines(a) -> list[str]:
    """Accuracy on --data (a hub.verify.accuracy.Accuracy): source and TFLM top-1 and the drop, or agreement,
    or errors per output."""
    if a is None:
        return []
    head = f"accuracy     on {a.samples} samples of {a.data}"
    if a.task != "classification":
        if not a.outputs:
            return [f"{head}: not a classifier, and no source model ran to compare outputs with"]
        return [f"{head}, TFLM vs the source ({a.reference}):"] + [
            f"  {o.name}: rmse={o.rmse:.4g}, max_abs_error={o.max_abs_error:.4g}" for o in a.outputs]
    drop = a.drop
    verdict = "" if a.max_drop is None else (f" (within --max-accuracy-drop {a.max_drop:g})" if a.ok
                                             else f" (PAST --max-accuracy-drop {a.max_drop:g})")
    if a.labelled:
        source = f"source ({a.reference}) {_percent(a.source_accuracy)}, " if a.source_accuracy is not None else ""
        lost = f", drop {drop:.2f} percentage points" if drop is not None else ""
        agree = f"; TFLM agrees with the source on {_percent(a.agreement)}" if a.agreement is not None else ""
        return [f"{head}: top-1 {source}TFLM {_percent(a.tflm_accuracy)}{lost}{verdict}{agree}"]
    if a.agreement is None:
        return [f"{head}: no labels (y) and no source model to compare with: nothing to score"]
    return [f"{head} (no labels): TFLM's top-1 agrees with the source ({a.reference}) on {_percent(a.agreement)}, "
            f"drop {drop:.2f} percentage points{verdict}"]


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def print_optimize(report: ConvertReport, section: dict[str, Any]) -> None:
    """`hub optimize`: the student's conversion, then teacher and student side by side (TFLM figures)."""
    print_convert_summary(report)
    if "search" in section:
        return _print_search(section["search"])
    how = "distilled" if section["distill"] else "trained on labels"
    clustered = f"clustered to {section['cluster']} values, " if section.get("cluster") else ""
    clustered += "quantization-aware, " if section.get("qat") else ""
    table = Table(title=f"pruned {section['prune_ratio']:.0%}, {clustered}{how} for {section['epochs']} epochs "
                        f"({section['validation']['samples']} validation samples)")
    for head in ("", "teacher", "student", "change"):
        table.add_column(head, justify="left" if not head else "right")
    teacher, student, change = section["teacher"], section["student"], section["change"]
    for key, label in (("params", "parameters"), ("macs", "MACs"), ("flash_bytes", "flash (TFLM)"),
                       ("weight_bytes", "  of which weights"), ("arena_bytes", "arena (TFLM)"),
                       ("invoke_us_host", "invoke, this host (us)")):
        table.add_row(label, _count(teacher.get(key)), _count(student.get(key)),
                      "" if change[key] is None else f"{change[key]:+.1%}")
    for key, label in (("float_accuracy", "float accuracy"), ("int8_accuracy_tflm", "int8 accuracy on TFLM"),
                       ("int8_agreement_tflm", f"int8 agreement with the teacher ({section['agreement']})")):
        table.add_row(label, _fraction(teacher[key]), _fraction(student[key]), "")
    out.print(table)


def _print_search(search: dict[str, Any]) -> None:
    board = search["board"]
    table = Table(title=f"{len(search['candidates'])} candidates measured on TFLM for {board['name']} "
                        f"(RAM {_count(board['ram_bytes'])} B, flash {_count(board['flash_bytes'])} B)")
    for head in ("candidate", "flash need", "RAM need", "accuracy", "board"):
        table.add_column(head, justify="left" if head in ("candidate", "board") else "right", no_wrap=head == "candidate")
    for c in search["candidates"]:
        fits = c.get("error") or ("fits" if c.get("fits") else "does not fit")
        label = f"[bold]{c['label']}[/] (chosen)" if c["label"] == search["chosen"] else c["label"]
        table.add_row(label, _count(c.get("flash_need")), _count(c.get("ram_need")), _fraction(c.get("accuracy")), fits)
    out.print(table)
    source = "fits" if search["unoptimised_fits"] else "does not fit"
    out.print(f"chosen: {search['chosen']}; the source model (no pruning, int8) {source} {board['name']}")


def _count(n: float | None) -> str:
    return "n/a" if n is None else f"{n:,.0f}"


def _fraction(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
