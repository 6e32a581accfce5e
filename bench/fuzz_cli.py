"""Fuzz the `hub` CLI with mutated model files and tally, per format, how every run ended.

    .venv/bin/python bench/fuzz_cli.py [--per-format 200] [--convert 12] [--report 6] [--confirm 0.05]
                                       [--seed-base 0] [--out bench/results/fuzz.md]

Cases come from tests/mutations.py (the same mutations as tests/test_fuzz.py): each fixture format
mutated byte-wise and structure-aware. `hub check` runs on every case; a CLI process costs 1-8 s of
imports, so check cases run through `hub.cli`'s own entry point inside a long-lived worker process
(stdout/stderr captured at the file-descriptor level, a fresh cwd and TMPDIR per case, the worker
restarted on a hang or a crash and every 80 cases). The tally stays the real CLI's: every case whose
in-process run broke the contract, hung or killed the worker is rerun as a real `python -m hub.cli`
subprocess and that run is what counts; a random share (--confirm) of the other cases is rerun the
same way and the agreement of exit codes is reported. `hub convert` and `hub report` run as real
subprocesses on a sample (--convert, --report cases).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.mutations import FORMATS, Case, Outcome, fixture_bytes, hub_args, judge, make_case, run_case, sha256  # noqa: E402

CASE_BOUND_S = 180.0  # an in-process check that takes longer counts as a hang and is rerun as a real CLI
WORKER_CASES = 80
CATCH_ALL = "could not process the model ("  # hub.cli._run's message for an unanticipated exception
ANSWER = "@@hub-fuzz@@"  # marks the worker's answers: stray C-level output on its stdout is skipped  # restart the worker this often: TensorFlow and torch keep caches alive


# --- the worker: hub.cli's entry point, one case at a time ------------------------------------------

def worker_main() -> None:
    """Read one JSON request per line on stdin; answer on the original stdout."""
    import tempfile as tf_mod

    from hub import cli

    answer = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        req = json.loads(line)
        work = Path(req["work"])
        os.chdir(work)
        tf_mod.tempdir = str(work / "tmp")
        os.environ["TMPDIR"] = str(work / "tmp")
        cli._state["debug"] = False
        code, err = _run_captured(cli, req["args"], work)
        answer.write(ANSWER + json.dumps({"code": code, "stderr": err}) + "\n")


def _run_captured(cli, args: list[str], work: Path) -> tuple[int, str]:
    """Run the CLI with fds 1 and 2 pointing at files, as a subprocess's pipes would."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(work / "stdout.txt", "wb") as out, open(work / "stderr.txt", "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            cli.app(args, prog_name="hub")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would do with an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    return code, (work / "stderr.txt").read_text(errors="replace")


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        self.cases = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def run(self, args: list[str], work: Path) -> dict | None:
        """The worker's answer, or None when it hung or died (it is then stopped)."""
        self.cases += 1
        try:
            self.proc.stdin.write(json.dumps({"work": str(work), "args": args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return None
        deadline = time.monotonic() + CASE_BOUND_S
        while self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(ANSWER):
                return json.loads(line[len(ANSWER):])
        self.stop()
        return None

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


# --- the parent -------------------------------------------------------------------------------------

def run_check_in_process(worker: Worker, case: Case, work: Path) -> Outcome | None:
    model = case.write(work)
    (work / "tmp").mkdir()
    digest = sha256(model)
    t0 = time.perf_counter()
    answer = worker.run(hub_args("check", model, work), work)
    if answer is None:
        return None
    for name in ("stdout.txt", "stderr.txt"):
        (work / name).unlink(missing_ok=True)
    outcome = judge("check", answer["code"], answer["stderr"], work, model, digest)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def fresh(base: Path, label: str) -> Path:
    work = base / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def build_tflite(base: Path) -> Path:
    from tests.conftest import convert_through_pipeline, small_cnn_onnx

    return convert_through_pipeline(small_cnn_onnx(), fresh(base, "tflite_fixture"))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--per-format", type=int, default=200, help="check cases per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--convert", type=int, default=12, help="hub convert cases (real CLI), spread over formats")
    parser.add_argument("--report", type=int, default=6, help="hub report cases (real CLI), spread over formats")
    parser.add_argument("--confirm", type=float, default=0.05, help="share of clean cases rerun as a real CLI")
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.md")
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return
    formats = args.formats.split(",")
    base = Path(tempfile.mkdtemp(prefix="hub-fuzz-"))
    started = time.time()
    try:
        tflite = build_tflite(base)
        originals = {fmt: fixture_bytes(fmt, tflite) for fmt in formats}
        rows = run_checks(formats, originals, args, base)
        rows += run_sample("convert", formats, originals, args.convert, args.seed_base + 100000, base)
        rows += run_sample("report", formats, originals, args.report, args.seed_base + 200000, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    write_results(rows, args, time.time() - started)


def run_checks(formats: list[str], originals: dict, args, base: Path) -> list[dict]:
    rows: list[dict] = []
    rng = random.Random(args.seed_base)
    worker = Worker()
    for fmt in formats:
        for seed in range(args.seed_base, args.seed_base + args.per_format):
            case = make_case(fmt, originals[fmt], seed)
            if not worker.alive or worker.cases >= WORKER_CASES:
                worker.stop()
                worker = Worker()
            outcome = run_check_in_process(worker, case, fresh(base, "case"))
            how = "in-process"
            rerun = outcome is None or not outcome.ok or rng.random() < args.confirm
            if rerun:
                real = run_case(case, fresh(base, "case"), "check")
                if outcome is not None and outcome.ok:
                    how = "confirmed" if real.returncode == outcome.returncode and real.ok else "disagreed"
                else:
                    how = "real CLI (in-process " + ("hung/died" if outcome is None else "broke contract") + ")"
                outcome = real
            rows.append(_row(case, outcome, how))
            _progress(rows)
    worker.stop()
    return rows


def run_sample(command: str, formats: list[str], originals: dict, count: int, seed0: int, base: Path) -> list[dict]:
    rows = []
    usable = [f for f in formats if not (command == "convert" and f == "tflite")]  # convert refuses .tflite
    for i in range(count):
        fmt = usable[i % len(usable)]
        case = make_case(fmt, originals[fmt], seed0 + i)
        rows.append(_row(case, run_case(case, fresh(base, "case"), command), "real CLI"))
        _progress(rows)
    return rows


def _row(case: Case, outcome: Outcome, how: str) -> dict:
    return {"format": case.fmt, "kind": case.kind, "seed": case.seed, "command": outcome.command,
            "code": outcome.returncode, "problems": outcome.problems, "line": outcome.stderr[:240],
            "seconds": round(outcome.seconds, 2), "how": how}


def _progress(rows: list[dict]) -> None:
    r = rows[-1]
    print(f"{len(rows):5d} {r['command']:8s} {r['format']:7s} {r['kind']:22s} seed {r['seed']:6d} exit {r['code']} "
          f"{r['seconds']:6.2f}s {'; '.join(r['problems']) or 'ok'}", file=sys.stderr, flush=True)


def write_results(rows: list[dict], args, wall: float) -> None:
    lines = ["# Fuzzing the hub CLI with mutated model files", "",
             "Command (from the repository root, 2 shared cores):", "",
             f"    .venv/bin/python bench/fuzz_cli.py --per-format {args.per_format} --convert {args.convert} "
             f"--report {args.report} --confirm {args.confirm} --seed-base {args.seed_base}"
             + (f" --formats {args.formats}" if args.formats != ",".join(FORMATS) else ""), "",
             f"{len(rows)} cases in {wall / 60:.1f} min. Mutations: tests/mutations.py. The contract per case: exit "
             "0, 1 or 2 within the time bound, no traceback, a failure is exactly one `hub: error:` line naming "
             "the file, no other stderr lines, no output folder / report file after exit 2, no partial or temp "
             "folder left, the input file unchanged.", "",
             "## Tally per format and command", "",
             "`catch-all`: exit-2 cases that reached the CLI's last-resort handler (an exception no stage "
             "anticipated; still one line, but a less precise message).", "",
             "| format | command | cases | exit 0 | exit 1 | exit 2 | of which catch-all | other / hang | broke the contract |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["format"], r["command"])].append(r)
    for (fmt, command), rs in sorted(groups.items(), key=lambda kv: (kv[0][1] != "check", kv[0])):
        codes = Counter(r["code"] for r in rs)
        catch_all = sum(CATCH_ALL in r["line"] for r in rs)
        lines.append(f"| {fmt} | {command} | {len(rs)} | {codes[0]} | {codes[1]} | {codes[2]} | {catch_all} | "
                     f"{len(rs) - codes[0] - codes[1] - codes[2]} | {sum(bool(r['problems']) for r in rs)} |")
    total_bad = sum(bool(r["problems"]) for r in rows)
    lines += ["", f"**{total_bad} of {len(rows)} cases broke the contract.**", ""]
    how = Counter(r["how"] for r in rows)
    lines += ["## How each check case was run", "",
              f"- in process only (hub.cli entry point, contract kept): {how['in-process']}",
              f"- rerun as a real CLI subprocess, same exit code and contract kept: {how['confirmed']}",
              f"- rerun as a real CLI subprocess and the outcome differed from in-process: {how['disagreed']}",
              *(f"- {k}: {v}" for k, v in sorted(how.items()) if k.startswith("real CLI (")), ""]
    lines += ["## Exit codes per mutation kind (all commands)", "", "| format | mutation | cases | exit 0 | exit 1 | exit 2 |",
              "|---|---|---|---|---|---|"]
    kinds: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        kinds[(r["format"], r["kind"])][r["code"]] += 1
    for (fmt, kind), c in sorted(kinds.items()):
        lines.append(f"| {fmt} | {kind} | {sum(c.values())} | {c[0]} | {c[1]} | {c[2]} |")
    bad = [r for r in rows if r["problems"]]
    lines += ["", "## Cases that broke the contract", ""]
    lines += [f"- {r['command']} {r['format']} seed {r['seed']} ({r['kind']}): {'; '.join(r['problems'])} — "
              f"`{r['line']}`" for r in bad] or ["None."]
    messages = Counter((r["format"], _shape(r["line"])) for r in rows if r["code"] == 2)
    lines += ["", "## Most frequent exit-2 messages (file name elided)", "", "| format | cases | message |", "|---|---|---|"]
    lines += [f"| {fmt} | {n} | `{msg}` |" for (fmt, msg), n in messages.most_common(25)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {total_bad} of {len(rows)} cases broke the contract", file=sys.stderr)


def _shape(line: str) -> str:
    """An error line with the file path and numbers elided, to group similar messages."""
    import re

    line = re.sub(r"hub: error: \S*case_\d+\.\w+: ", "", line)
    return re.sub(r"\d+", "N", line)[:140].replace("|", "/")


if __name__ == "__main__":
    main()
