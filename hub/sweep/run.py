"""hub sweep: every (model, quantize mode) pair through `hub convert`, in parallel on Dask distributed.

A job is one `hub convert MODEL --target tflm --quantize MODE` in its own process, writing its own
output folder under `<out>/jobs/`; a sweep runs the jobs on a LocalCluster of one-thread worker
processes, or on an existing cluster (`--scheduler`, whose workers must see the models and the
output folder at the same paths). Boards are judged from each job's measured size, arena and ops
(hub.knowledge.boards.board_fit, TFLM's own code and RAM counted), never by converting again.

Per-model options come from a `sweep.toml` beside the models (SWEEP_TOML_HELP). A job's key hashes
the model's content, its options (and the files they name) and the mode; its row is kept in
`<out>/jobs/<slug>.json`, which is what `--resume` reads: a job hub convert gave a verdict on (ok,
fails, error) is not run again, a job that timed out or crashed is. Ctrl-C (or SIGTERM) asks every
running job to stop (its `hub convert` then removes its half-built folder), keeps every finished job
and writes the summary of what finished.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hub import __version__
from hub.errors import InputError, first_line
from hub.knowledge.boards import Board, board_fit
from hub.options import OPTIONS_BY_KEY, SWEEP_OPTIONS
from hub.output import to_json, write_text_atomic
from hub.targets import resolve

MODEL_SUFFIXES = (".pt", ".pt2", ".pth", ".keras", ".h5", ".onnx")
SWEEP_TOML = "sweep.toml"
DEFAULT_TIMEOUT_S = 3600.0
JOB_MEMORY_BYTES = 3 << 29  # a worker with its hub convert and converter child peaked at 1.44 GB (bench/sweep.py)
FINAL = ("ok", "fails", "error")  # hub convert's own verdicts: the same key gives the same verdict
POLL_S = 1.0
STOP_GRACE_S = 30.0  # hub convert removes its partial folder on SIGTERM within a second or two

# sweep.toml key -> (hub convert flag, value type): every option hub.options marks `sweep`, and the job's timeout;
# paths are read relative to the toml's folder.
OPTIONS: dict[str, tuple[str, type]] = {**{o.key: (o.flag, o.type) for o in SWEEP_OPTIONS}, "timeout": ("", float)}
SWEEP_TOML_HELP = (
    "sweep.toml, beside the models, gives per-model options: a table named after the model's file (or SavedModel "
    "folder), and [defaults] for every model in that folder. Keys: "
    + ", ".join(o.key + (" (a string or a list)" if o.type is list else "") for o in SWEEP_OPTIONS)
    + " (as the hub convert flags) and timeout (seconds for the job). Relative paths (calibration, a factory's .py "
    "file) are read from the toml's folder. Example:\n\n"
    '[defaults]\ninput_range = "0,1"\n\n'
    '["tiny_cnn_state.pth"]\nfactory = "torch_models.py:TinyCNN"\ninput_shape = "1,3,32,32"\ntimeout = 600\n')


@dataclass(frozen=True)
class Job:
    model: Path
    mode: str
    args: tuple[str, ...]  # hub convert flags from sweep.toml
    timeout_s: float
    key: str
    folder: Path  # hub convert's --out

    @property
    def row_file(self) -> Path:
        return self.folder.with_name(self.folder.name + ".json")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": str(self.model), "folder": str(self.folder), "cwd": os.getcwd()}


# ---- planning (client side) -------------------------------------------------------------------

def find_models(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Files as given, folders as every model inside (files by suffix, SavedModel folders), each with
    its sweep.toml options; InputError when nothing is found or a sweep.toml is wrong."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        if not path.exists():
            raise InputError("no such file or folder", path)
        if path.is_dir() and not _is_saved_model(path):
            tables = read_sweep_toml(path)
            models = sorted(p for p in path.iterdir() if _is_model(p))
            _check_tables_name_models(tables, models, path)
            found += [(m, _options_for(m, tables)) for m in models]
        else:
            found.append((path, _options_for(path, read_sweep_toml(path.parent))))
    if not found:
        raise InputError(f"no model files ({', '.join(MODEL_SUFFIXES)} or SavedModel folders) in "
                         f"{', '.join(map(str, paths))}")
    return found


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").exists()


def _is_model(path: Path) -> bool:
    return _is_saved_model(path) or (path.is_file() and path.suffix in MODEL_SUFFIXES)


def read_sweep_toml(folder: Path) -> dict[str, dict[str, Any]]:
    """{table name: options with paths made absolute}; {} without a sweep.toml."""
    file = folder / SWEEP_TOML
    if not file.exists():
        return {}
    try:
        doc = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML: {first_line(exc)}", file) from None
    tables = {}
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise InputError(f"{name!r} must be a table ([{name}] or [\"file name\"]) of options", file)
        tables[name] = {key: _option_value(key, value, folder, file) for key, value in table.items()}
    return tables


def _option_value(key: str, value: Any, folder: Path, file: Path) -> Any:
    if key not in OPTIONS:
        raise InputError(f"unknown option {key!r}: choose from {', '.join(OPTIONS)}", file)
    kind = OPTIONS[key][1]
    choices = OPTIONS_BY_KEY[key].choices if key in OPTIONS_BY_KEY else ()
    if choices and value not in choices:
        raise InputError(f"{key} must be one of {', '.join(choices)}, got {value!r}", file)
    if kind is list:
        value = [value] if isinstance(value, str) else value
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InputError(f"{key} must be a string or a list of strings", file)
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is Path and isinstance(value, str):
        return str(_beside(value, folder, ".npz:"))
    raise InputError(f"{key} must be a {kind.__name__ if kind is not Path else 'path'}, got {value!r}", file)


def _beside(value: str, folder: Path, split: str) -> str:
    """A relative path made absolute from `folder`, keeping a `:NAME` tail (PATH.npz:ARRAY)."""
    head, sep, tail = value.partition(split)
    path = head + split[:-1] if sep else value
    absolute = str(Path(path) if Path(path).is_absolute() else (folder / path).absolute())
    return absolute + (":" + tail if sep else "")


def _check_tables_name_models(tables: dict[str, dict], models: list[Path], folder: Path) -> None:
    unknown = sorted(set(tables) - {"defaults"} - {m.name for m in models})
    if unknown:
        raise InputError(f"{SWEEP_TOML} has options for {', '.join(unknown)}, which is not a model in this folder",
                         folder / SWEEP_TOML)


def _options_for(model: Path, tables: dict[str, dict]) -> dict[str, Any]:
    options = {**tables.get("defaults", {}), **tables.get(model.name, {})}
    if "factory" in options and ".py:" in options["factory"]:
        options["factory"] = _beside(options["factory"], model.parent, ".py:")
    return options


def convert_flags(options: dict[str, Any]) -> tuple[str, ...]:
    """sweep.toml options as hub convert flags (timeout is the sweep's own)."""
    flags: list[str] = []
    for key, value in sorted(options.items()):
        flag, kind = OPTIONS[key]
        if key == "timeout" or (kind is bool and not value):
            continue
        if kind is bool:
            flags.append(flag)
        else:
            flags += [f"{flag}={v}" for v in (value if isinstance(value, list) else [value])]
    return tuple(flags)


def job_key(model: Path, mode: str, flags: tuple[str, ...]) -> str:
    """What a job's result depends on: hub's version, the model's bytes, the mode, the flags and the
    content of the files they name (calibration data, a factory's .py)."""
    digest = hashlib.sha256(f"{__version__}\0tflm\0{mode}\0".encode())
    digest.update("\0".join(flags).encode())
    for path in [model, *_named_files(flags)]:
        digest.update(content_hash(path).encode())
    return digest.hexdigest()[:16]


def _named_files(flags: tuple[str, ...]) -> list[Path]:
    paths = []
    for flag in flags:
        value = flag.partition("=")[2]
        for candidate in (value, value.rpartition(":")[0]):
            if candidate and Path(candidate).is_absolute() and Path(candidate).exists():
                paths.append(Path(candidate))
                break
    return paths


def content_hash(path: Path) -> str:
    """sha256 of a file (an ONNX file with its external data named after it), or of every file in a folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else \
        [path, *sorted(path.parent.glob(glob_escape(path.name) + ".*"))]
    for file in files:
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def plan(models: list[Path], modes: list[str], out: Path, timeout_s: float | None = None) -> list[Job]:
    """One job per model and mode, in the order given."""
    for mode in modes:
        resolve("tflm", mode)
    jobs = []
    for model, options in find_models(models):
        flags = convert_flags(options)
        for mode in modes:
            key = job_key(model, mode, flags)
            slug = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
            jobs.append(Job(model.absolute(), mode, flags, options.get("timeout", timeout_s or DEFAULT_TIMEOUT_S), key,
                            (out / "jobs" / f"{slug}-{mode}-{key[:12]}").absolute()))
    return jobs


def default_workers(jobs: list[Job]) -> int:
    """One worker per core, as many as memory holds (a converter child's peak grows with the model)."""
    import psutil  # why here: 45 ms, and hub.cli imports this module at every start (SWEEP_TOML_HELP)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    largest = max(_size(job.model) for job in jobs)
    by_memory = psutil.virtual_memory().available // (JOB_MEMORY_BYTES + 4 * largest)
    return max(1, min(cores, by_memory, len(jobs)))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# ---- one job (worker side) ---------------------------------------------------------------------

def run_job(job: dict[str, Any], stop: str | None = None) -> dict[str, Any]:
    """`hub convert` for one job in its own process group; its figures from the report.json it wrote.
    Stops it (SIGTERM, so it cleans up) when the Dask Event named `stop` is set or on timeout."""
    started = time.perf_counter()
    folder, model = Path(job["folder"]), Path(job["model"])
    if _stop_requested(stop):
        return _row(started, "interrupted", None, "not started: the sweep was interrupted")
    if not model.exists():
        return _row(started, "error", None, f"{model}: not found on worker {_worker_name()} (with --scheduler the "
                                             "workers need the models and --out at the same paths)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "hub.cli", "convert", str(model), "--target", "tflm", "--quantize", job["mode"],
           "--out", str(folder), "--force", *job["args"]]
    with tempfile.TemporaryFile("w+", errors="replace") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                cwd=job["cwd"] if Path(job["cwd"]).is_dir() else None, start_new_session=True,
                                preexec_fn=_die_with_parent)
        ended = _wait(proc, job["timeout_s"], stop)
        stderr.seek(0)
        errors = [ln[len("hub: error: "):] for ln in stderr.read().splitlines() if ln.startswith("hub: error: ")]
    _remove_partial(folder)  # after a SIGKILL, hub convert could not remove its half-built folder
    if ended is not None:
        return _row(started, ended, None, "interrupted" if ended == "interrupted"
                    else f"timed out after {job['timeout_s']:g} s")
    status = {0: "ok", 1: "fails", 2: "error"}.get(proc.returncode, "crashed")
    error = errors[-1] if errors else None
    if status == "crashed":
        error = error or _crash_message(proc.returncode)
    return {**_row(started, status, proc.returncode, error), **_figures(folder / "report.json")}


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the worker dies (a cluster closed under it)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait(proc: subprocess.Popen, timeout_s: float, stop: str | None) -> str | None:
    """None when the process ended by itself; "timeout" or "interrupted" when it was stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        reason = "timeout" if time.monotonic() > deadline else "interrupted" if _stop_requested(stop) else None
        if reason:
            _terminate(proc)
            return reason


def _terminate(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _remove_partial(folder: Path) -> None:
    for partial in folder.parent.glob(f".{glob_escape(folder.name)}.partial-*"):  # hub.output.atomic_folder's
        shutil.rmtree(partial, ignore_errors=True)


def _stop_requested(stop: str | None) -> bool:
    if stop is None:
        return False
    from distributed import Event

    return Event(stop).is_set()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # run outside a worker (tests, a debugger)
        return "local"


def _crash_message(returncode: int) -> str:
    try:
        return f"hub convert was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"hub convert exited with code {returncode}"


def _row(started: float, status: str, exit_code: int | None, error: str | None) -> dict[str, Any]:
    return {"status": status, "exit": exit_code, "error": error, "seconds": round(time.perf_counter() - started, 1),
            "worker": _worker_name(), "tflite_bytes": None, "arena_bytes": None, "runs_on_tflm": False,
            "cosine": None, "ops": None}


def _figures(report_file: Path) -> dict[str, Any]:
    if not report_file.exists():  # a conversion that failed writes no folder
        return {}
    report = json.loads(report_file.read_text())
    return {"tflite_bytes": report["model"]["tflite_bytes"], "ops": report["model"]["op_count"],
            "op_names": sorted(report["model"]["ops"]),  # the kernels a board fit counts
            "arena_bytes": (report.get("memory") or {}).get("arena_bytes"),
            "runs_on_tflm": bool((report.get("tflm") or {}).get("invokes")),
            "cosine": (report.get("fidelity") or {}).get("cosine")}


# ---- the sweep (client side) -------------------------------------------------------------------

def sweep(jobs: list[Job], *, boards: list[Board], workers: int | None = None, scheduler: str | None = None,
          resume: bool = False, out: Path, on_update: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Run the jobs (each job's row beside its folder in `out`/jobs); returns the sweep.json document
    (`interrupted` true after Ctrl-C, with the jobs that finished). `on_update(done, failed, running)` hears of
    every job that finishes (hub.report.sweep's progress bar); hub.report.sweep.write_outputs writes the summary."""
    t0 = time.perf_counter()
    rows = {job.key: _resumed(job) for job in jobs} if resume else {}
    rows = {k: r for k, r in rows.items() if r is not None}
    todo = [job for job in jobs if job.key not in rows]
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    interrupted, where = False, "no cluster (every job resumed)"
    if todo:
        with _client(scheduler, workers or default_workers(todo)) as client:
            n = len(client.nthreads())
            where, slots = scheduler or f"LocalCluster of {n} worker{'s' * (n != 1)}", sum(client.nthreads().values())

            def update() -> None:
                if on_update is not None:
                    failed = sum(r["status"] != "ok" for r in rows.values())
                    on_update(len(rows), failed, min(len(jobs) - len(rows), slots))

            interrupted = _run_on(client, todo, rows, update)
    return summary(jobs, rows, boards, where=where, interrupted=interrupted, seconds=time.perf_counter() - t0)


def _resumed(job: Job) -> dict[str, Any] | None:
    """The row of a job hub convert already gave its verdict on, with its output folder in place."""
    try:
        row = json.loads(job.row_file.read_text())
    except (OSError, ValueError):
        return None
    if row.get("status") not in FINAL or (row.get("tflite_bytes") is not None and not (job.folder / "report.json").exists()):
        return None
    return {**row, "resumed": True}


@contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster  # why here (and below): dask is slow to import; `hub --help` needs none

    if scheduler is None:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout="15s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {first_line(exc)}") from None
    with client:
        yield client


def _run_on(client: Any, todo: list[Job], rows: dict[str, dict], update) -> bool:
    """Submit every job, record rows as they finish; on Ctrl-C stop the running jobs, keep the finished
    ones, and return True."""
    from distributed import Event, as_completed, wait

    stop = Event(f"hub-sweep-stop-{uuid.uuid4().hex}", client=client)
    futures = {client.submit(run_job, job.to_dict(), stop.name, key=f"hub-sweep-{job.key}-{uuid.uuid4().hex[:8]}",
                             pure=False): job for job in todo}
    update()
    try:
        for future in as_completed(futures):
            _record(futures[future], future, rows)
            update()
        return False
    except KeyboardInterrupt:
        stop.set()  # jobs not started return at once; running ones stop their hub convert and wait for it
        wait(list(futures), timeout=STOP_GRACE_S + 15)
        for future, job in futures.items():
            if future.done() and job.key not in rows:
                _record(job, future, rows)
        return True


def _record(job: Job, future: Any, rows: dict[str, dict]) -> None:
    try:
        row = future.result()
    except Exception as exc:  # the worker died (KilledWorker) or run_job failed: still one row
        row = {**_row(time.perf_counter(), "crashed", None, f"{type(exc).__name__}: {first_line(exc)}"), "seconds": None}
    if row["status"] == "interrupted":
        return  # neither run nor kept: a resumed sweep runs it
    rows[job.key] = row
    if row["status"] in FINAL or row["status"] == "timeout":
        write_text_atomic(job.row_file, to_json(row))


def summary(jobs: list[Job], rows: dict[str, dict], boards: list[Board], *, where: str, interrupted: bool,
            seconds: float) -> dict[str, Any]:
    """The sweep.json document: one row per job (jobs an interrupt left unrun say so), boards judged
    by hub.knowledge.boards.board_fit from each row's measured arena and flatbuffer size and its ops
    (`board_fit` in each row says what was counted)."""
    table = []
    for job in jobs:
        row = rows.get(job.key) or {**_row(time.perf_counter(), "not run", None, "interrupted"),
                                    "seconds": None, "worker": None}
        ops = row.get("op_names")
        if ops is None and row.get("runs_on_tflm"):  # a row kept by an older hub: its report.json names the ops
            ops = _figures(job.folder / "report.json").get("op_names")
        judged = {b.key: board_fit(b, row.get("arena_bytes"), row.get("tflite_bytes"), ops or ())
                  for b in boards} if row.get("runs_on_tflm") else {}
        fits = {b.key: judged[b.key].fits if b.key in judged else None for b in boards}
        board_fits = {key: fit.to_dict() for key, fit in judged.items()}  # what each verdict counted
        table.append({"model": str(job.model), "name": job.model.name, "mode": job.mode, "key": job.key,
                      "options": list(job.args), **row, "resumed": bool(row.get("resumed")), "fits": fits,
                      "board_fit": board_fits,
                      "output": str(job.folder) if (job.folder / "report.json").exists() else None})
    ok = sum(r["status"] == "ok" for r in table)
    return {"hub": __version__, "target": "tflm", "where": where, "interrupted": interrupted,
            "seconds": round(seconds, 1), "jobs": len(table), "ok": ok, "failed": len(table) - ok,
            "boards": [b.to_dict() for b in boards], "rows": table}
