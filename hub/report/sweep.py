"""hub sweep's outputs: the progress bar, the terminal table, sweep.json, sweep.csv and the self-contained sweep.html."""
from __future__ import annotations

import csv
import io
from html import escape
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.output import to_json, write_text_atomic
from hub.progress import console
from hub.report import charts
from hub.report.render import CSS

COLUMNS = ("model", "mode", "status", "runs_on_tflm", "tflite_bytes", "arena_bytes", "cosine", "ops", "seconds",
           "resumed", "worker", "error", "output", "key")


class SweepBar:
    """Jobs done, failed and running, on a terminal only (stderr); shown from the first update on (a sweep whose
    every job was resumed shows none)."""

    def __init__(self, total: int, enabled: bool):
        self.progress = Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=console,
                                 disable=not enabled)
        self.task = self.progress.add_task("sweep", total=total, counts="")
        self.started = False

    def __enter__(self) -> SweepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def update(self, done: int, failed: int, running: int) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.progress.update(self.task, completed=done,
                             counts=f"[green]{done - failed} ok[/] [red]{failed} failed[/] {running} running")


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    """sweep.json (the document), sweep.csv and sweep.html in `out`."""
    write_text_atomic(out / "sweep.json", to_json(doc))
    write_text_atomic(out / "sweep.csv", render_csv(doc))
    write_text_atomic(out / "sweep.html", render_html(doc))


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key == "cosine" and isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and key.endswith("_bytes"):
        return f"{value:,}"
    return "" if value is None else str(value)


def _fit(value: bool | None) -> str:
    return {True: "fits", False: "no", None: "-"}[value]


def render_csv(doc: dict[str, Any]) -> str:
    """One line per job; a `fits_<board>` column per board (fits, no, - when not measured)."""
    boards = [b["key"] for b in doc["boards"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"fits_{b}" for b in boards)])
    for row in doc["rows"]:
        writer.writerow([("yes" if v else "no") if isinstance(v := row.get(c), bool) else v for c in COLUMNS]
                        + [_fit(row["fits"][b]) for b in boards])
    return buffer.getvalue()


def print_summary(doc: dict[str, Any]) -> None:
    """The table on stdout (how many of the boards each job fits; sweep.html names them), then the totals."""
    from hub.report.terminal import out  # why here: hub.report.terminal imports numpy and onnx; hub.cli imports this

    table = Table(show_lines=False)
    for col in ("model", "mode", "status", "TFLM", "size (B)", "arena (B)", "cosine", "boards", "error"):
        table.add_column(col, overflow="fold", no_wrap=col not in ("model", "error"),
                         min_width=min(max((len(r["name"]) for r in doc["rows"]), default=5), 24) if col == "model" else 5)
    for row in doc["rows"]:
        style = "green" if row["status"] == "ok" else "red"
        fits = sum(f is True for f in row["fits"].values())
        table.add_row(row["name"], row["mode"], f"[{style}]{row['status']}[/]" + ("*" * row["resumed"]),
                      _cell(row, "runs_on_tflm"), _cell(row, "tflite_bytes"), _cell(row, "arena_bytes"),
                      _cell(row, "cosine"), f"{fits}/{len(row['fits'])}", row.get("error") or "")
    out.print(table)
    resumed = sum(r["resumed"] for r in doc["rows"])
    out.print(f"{doc['ok']} of {doc['jobs']} jobs ok on {doc['where']} in {doc['seconds']:.0f} s"
              + (f"; * {resumed} resumed from an earlier sweep" if resumed else "")
              + (" (interrupted)" if doc["interrupted"] else ""))


def render_html(doc: dict[str, Any]) -> str:
    """sweep.html: the table (model x mode, board fits, links to each job's report.html) and the
    size-vs-arena chart; no scripts, no network."""
    boards = doc["boards"]
    head = "".join(f"<th>{escape(h)}</th>" for h in ("model", "mode", "status", "runs on TFLM", "size (B)",
                                                      "arena (B)", "cosine", "seconds")) \
        + "".join(f"<th title=\"{escape(b['name'])}: RAM {b['ram_bytes'] // 1024} KB, flash "
                  f"{b['flash_bytes'] // 1024} KB\">{escape(b['key'])}</th>" for b in boards) + "<th>error</th>"
    body = "".join(_html_row(row, boards) for row in doc["rows"])
    title = f"hub sweep: {doc['ok']} of {doc['jobs']} jobs ok"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
            f"<p class=\"note\">hub {escape(doc['hub'])}, target {escape(doc['target'])}, on {escape(doc['where'])}, "
            f"{doc['seconds']:.0f} s" + ("; <b>interrupted</b>: jobs not run are marked so" if doc["interrupted"] else "")
            + ". A board fits when the measured arena fits its RAM and the model its flash (whole budgets offered "
            "to the model, as in hub report).</p>"
            f"<table id=\"sweep\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<h2>Model size against arena</h2>" + charts.size_arena_chart(doc["rows"]) + "</body></html>\n")


def _html_row(row: dict, boards: list[dict]) -> str:
    css = "runs" if row["status"] == "ok" else "blocked"
    name = escape(row["name"])
    if row.get("output"):
        name = f"<a href=\"jobs/{escape(row['output'].rsplit('/', 1)[-1])}/report.html\">{name}</a>"
    cells = [name, escape(row["mode"]), f"<span class=\"{css}\">{escape(row['status'])}</span>"
             + (" <span class=\"note\">(resumed)</span>" if row["resumed"] else "")]
    cells += [escape(_cell(row, k)) for k in ("runs_on_tflm", "tflite_bytes", "arena_bytes", "cosine", "seconds")]
    fits = [{True: "<span class=\"fits\">fits</span>", False: "<span class=\"nofit\">no</span>", None: "-"}[
        row["fits"][b["key"]]] for b in boards]
    tds = "".join(f"<td class=\"num\">{c}</td>" if 3 <= i <= 7 else f"<td>{c}</td>" for i, c in enumerate(cells))
    return f"<tr>{tds}{''.join(f'<td>{f}</td>' for f in fits)}<td>{escape(row.get('error') or '')}</td></tr>"
