"""Architectures from model libraries through `hub check` and `hub convert`, as a new user would run them.

    .venv/bin/python bench/model_hub.py [--only NAME ...] [--timeout 180] [--work DIR] [--out bench/results/model_hub.md]
    .venv/bin/python bench/model_hub.py --reuse bench/results/model_hub.json   # checks again, conversions as saved
    .venv/bin/python bench/model_hub.py --only swin pvtv2 --merge   # re-run these rows in the saved table

Every model of tests/hub_models.py (transformers' model classes and keras.applications from small configs, random
weights shaped like trained ones) is saved in the formats users hand over (TorchScript, .pt2, ONNX from both torch
exporters, Keras) and run through the real CLI in a child process: `hub check --json`, then `hub convert --target
tflm --json` (int8) stopped after --timeout seconds (a failure must not take 11 minutes to arrive). For each: the
check's verdict, the conversion's exit code, int8 cosine vs the source as hub reports it, .tflite size, the arena
TFLM measured, convert wall time, or the one-line cause; and whether the check agreed (will run <=> exit 0).
--reuse takes the conversions from an earlier run's JSON and redoes only the checks (seconds each, not minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.hub_models import BY_NAME, MODELS, HubModel, hub_args, save, saved_file  # noqa: E402

CONVERT_TIMEOUT_S = 180.0  # the bound: no conversion of this bench may take more than 3 minutes
CHECK_TIMEOUT_S = 300.0
CONVERT_FIELDS = ("convert_exit", "cosine", "tflite_bytes", "arena_bytes", "convert_s", "cause")


@dataclass
class Row:
    model: str
    family: str
    library: str
    format: str
    check_exit: int | None = None
    check_verdict: str = ""
    check_blockers: str = ""  # the error findings' ops, when the check says "will not run"
    check_s: float | None = None
    convert_exit: int | None = None  # None: stopped at the time limit
    cosine: float | None = None
    tflite_bytes: int | None = None
    arena_bytes: int | None = None
    convert_s: float | None = None
    cause: str = ""
    agrees: bool | None = None


def run_hub(args: list[str], timeout_s: float) -> tuple[int | None, dict | None, str, float]:
    """`python -m hub.cli ARGS --json` in its own process group (killed whole at the time limit)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, None, f"stopped after {timeout_s:.0f} s", time.perf_counter() - started
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        doc = None
    tail = (err.strip().splitlines() or [""])[-1]
    return proc.returncode, doc, tail, time.perf_counter() - started


def check(row: Row, path: Path, model: HubModel) -> None:
    code, doc, tail, seconds = run_hub(["check", str(path), *hub_args(model, row.format, "check")], CHECK_TIMEOUT_S)
    row.check_exit, row.check_s = code, round(seconds, 1)
    if doc is None:
        row.check_verdict = "no answer"
        return
    row.check_verdict = doc.get("verdict") or ("error: " + doc.get("error", tail))
    ops = sorted({f["op"] for f in doc.get("findings", []) if f["severity"] == "error"})
    row.check_blockers = ", ".join(ops)


def convert(row: Row, path: Path, model: HubModel, out: Path, timeout_s: float) -> None:
    code, doc, tail, seconds = run_hub(["convert", str(path), "--target", "tflm", "--out", str(out), "--force",
                                        *hub_args(model, row.format)], timeout_s)
    row.convert_exit, row.convert_s = code, round(seconds, 1)
    if doc is None:
        row.cause = tail
        return
    fidelity = doc.get("fidelity") or {}
    row.cosine = fidelity.get("cosine")
    row.tflite_bytes = (doc.get("model") or {}).get("tflite_bytes")
    row.arena_bytes = (doc.get("memory") or {}).get("arena_bytes")
    if code != 0:
        row.cause = doc.get("error") or tail


def agrees(row: Row) -> bool | None:
    """The check is right when "will run" (exit 0) meets a conversion that ran (exit 0), "will not" one that did not."""
    if row.check_exit not in (0, 1) or row.convert_exit is None:
        return None  # no verdict, or a conversion stopped at the time limit: its outcome is unknown
    return (row.check_exit == 0) == (row.convert_exit == 0)


def markdown(rows: list[Row], timeout_s: float, seconds: float) -> str:
    ran = sum(r.convert_exit == 0 for r in rows)
    judged = [r for r in rows if r.agrees is not None]
    unsafe = sum(r.check_exit == 0 and r.convert_exit not in (0, None) for r in rows)
    alarms = sum(r.check_exit == 1 and r.convert_exit == 0 for r in rows)
    lines = [
        "# Model-library architectures through hub check and hub convert",
        "",
        f"`bench/model_hub.py`: {len({r.model for r in rows})} architectures, {len(rows)} files; "
        f"`hub convert --target tflm` (int8, synthetic calibration) stopped after {timeout_s:.0f} s. "
        f"Whole run {seconds / 60:.0f} min on this machine.",
        "",
        f"- converted and ran on TFLM: **{ran} of {len(rows)}**; stopped at the time limit (outcome unknown, not "
        f"judged): {sum(r.convert_exit is None for r in rows)}",
        f"- check agreed with the outcome: **{sum(r.agrees for r in judged)} of {len(judged)}** "
        f"(said will run, conversion failed: {unsafe}; said will not run, conversion ran: {alarms})",
        "",
        "| model | family | format | check | convert | cosine | .tflite | arena | time | agrees | cause |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = r.check_verdict + (f" ({r.check_blockers})" if r.check_blockers else "")
        exit_ = "timeout" if r.convert_exit is None else str(r.convert_exit)
        cosine = "" if r.cosine is None else f"{r.cosine:.4f}"
        size = "" if r.tflite_bytes is None else f"{r.tflite_bytes / 1024:.0f} KB"
        arena = "" if r.arena_bytes is None else f"{r.arena_bytes / 1024:.0f} KB"
        agree = {True: "yes", False: "**no**", None: "-"}[r.agrees]
        cause = r.cause.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {r.model} | {r.family} | {r.format} | {verdict} | {exit_} | {cosine} | {size} | {arena} | "
                     f"{r.convert_s or 0:.0f} s | {agree} | {cause} |")
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[Row], timeout_s: float, seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, timeout_s, seconds))
    out.with_suffix(".json").write_text(json.dumps({"timeout_s": timeout_s, "seconds": round(seconds),
                                                    "rows": [asdict(r) for r in rows]}, indent=1) + "\n")


def merged(out: Path, rows: list[Row]) -> list[Row]:
    """--out's saved rows in their order, each replaced by this run's row for the same file; new files last."""
    path = out.with_suffix(".json")
    old = [Row(**r) for r in json.loads(path.read_text())["rows"]] if path.exists() else []
    new = {(r.model, r.format): r for r in rows}
    kept = [new.pop((r.model, r.format), r) for r in old]
    return kept + list(new.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(BY_NAME), help="these models only")
    parser.add_argument("--timeout", type=float, default=CONVERT_TIMEOUT_S, help="seconds per conversion")
    parser.add_argument("--work", type=Path, help="keep the model files here (default: a temporary folder)")
    parser.add_argument("--reuse", type=Path, nargs="+", help="earlier runs' JSON: their conversions, checks redone "
                        "(only the files they hold)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model_hub.md")
    parser.add_argument("--merge", action="store_true", help="keep --out's other rows: replace only the files run now")
    args = parser.parse_args()
    # --merge: the table's time is that of the runs that made it (the saved one's plus this one's)
    started = time.perf_counter() - (json.loads(args.out.with_suffix(".json").read_text())["seconds"]
                                     if args.merge and args.out.with_suffix(".json").exists() else 0)
    rows: list[Row] = []
    saved = {}
    for doc in [json.loads(path.read_text()) for path in args.reuse or []]:
        saved.update({(r["model"], r["format"]): r for r in doc["rows"] if r["convert_s"] is not None})
        args.timeout = doc["timeout_s"]
    with tempfile.TemporaryDirectory(prefix="hub-model-hub-") as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for model in [BY_NAME[name] for name in args.only] if args.only else MODELS:
            built = None
            for fmt in model.formats:
                if args.reuse and (model.name, fmt) not in saved:
                    continue
                row = Row(model.name, model.family, model.library, fmt)
                rows.append(row)
                try:
                    path = saved_file(model, fmt, folder)
                    if not path.exists():
                        built = built if built is not None else model.build()
                        path = save(model, fmt, folder, built)
                except Exception as error:  # the export itself failed: a user could not hand this file over
                    row.cause = f"export failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    continue
                check(row, path, model)
                if (model.name, fmt) in saved:
                    for name in CONVERT_FIELDS:
                        setattr(row, name, saved[model.name, fmt][name])
                else:
                    convert(row, path, model, folder / f"{path.stem}_{fmt}_tflm", args.timeout)
                row.agrees = agrees(row)
                write(args.out, merged(args.out, rows) if args.merge else rows, args.timeout,
                      time.perf_counter() - started)  # a partial run keeps its rows
                print(f"{row.model:24} {fmt:12} check={row.check_verdict:12} convert={row.convert_exit} "
                      f"cosine={row.cosine} {row.convert_s}s agrees={row.agrees} {row.cause[:120]}", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
