"""Child-process side of hub.verify.tflm: runs a .tflite on the real TFLM interpreter.

Only ever run as `python -m hub.verify.worker JOB_DIR` (or `probe MODEL ARENA`) through
hub.child: TFLM can abort() the process it runs in. The job folder holds
model.tflite, job.json and optionally inputs.npz; this writes:
- phase: the step in progress ("load", "invoke", "samples", "arena"), so the parent
  can tell where an abort happened;
- <phase>.log: TFLM's own messages (it prints to fd 2 from C);
- result.json, rewritten after each step; outputs.npz with the raw output tensors.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

PROBE_OK, PROBE_FAILED = 0, 3


@contextlib.contextmanager
def stderr_to(path: str):
    """Send fd 2 (where TFLM's MicroPrintf writes) to a file, C level included."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class Job:
    def __init__(self, folder: Path):
        self.folder = folder
        self.spec = json.loads((folder / "job.json").read_text())
        self.model = (folder / "model.tflite").read_bytes()
        self.result: dict = {"loads": False, "invokes": False, "message": None}
        inputs = folder / "inputs.npz"
        self.samples = self._samples(np.load(inputs)) if inputs.exists() else []

    def _samples(self, npz) -> list[list[np.ndarray]]:
        count = self.spec["samples"]
        return [[npz[f"s{s}_i{i}"] for i in range(self.spec["inputs"])] for s in range(count)]

    def phase(self, name: str) -> str:
        (self.folder / "phase").write_text(name)
        return str(self.folder / f"{name}.log")

    def save(self) -> None:
        (self.folder / "result.json").write_text(json.dumps(self.result))


def interpreter(model: bytes, arena: int):
    from tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def default_inputs(interp, count: int) -> list[np.ndarray]:
    """Inputs at real value 0 (the zero point), when the caller gave no samples."""
    arrays = []
    for i in range(count):
        d = interp.get_input_details(i)
        zps = d.get("quantization_parameters", {}).get("zero_points")
        fill = int(zps[0]) if zps is not None and len(zps) and np.issubdtype(d["dtype"], np.integer) else 0
        arrays.append(np.full(d["shape"], fill, dtype=d["dtype"]))
    return arrays


def run_once(interp, inputs: list[np.ndarray], outputs: int) -> list[np.ndarray]:
    for i, array in enumerate(inputs):
        interp.set_input(array, i)
    interp.invoke()
    return [np.array(interp.get_output(o)) for o in range(outputs)]


def fits(model: bytes, arena: int, inputs: list[np.ndarray], outputs: int) -> bool:
    """Does the model allocate in `arena` bytes and invoke? (Allocation failure raises, not aborts.)"""
    try:
        run_once(interpreter(model, arena), inputs, outputs)
        return True
    except RuntimeError:
        return False


def allocated_total(interp, log: str) -> tuple[int | None, int | None]:
    """From print_allocations: 'Arena allocation total N bytes', a lower bound of the smallest arena, and the
    tail (persistent data: TFLM's structs and kernels' per-op data; the order of the ops does not change it)."""
    with stderr_to(log):
        interp.print_allocations()
    text = Path(log).read_text(errors="replace")
    total, tail = (re.search(rf"Arena allocation {part} (\d+) bytes", text) for part in ("total", "tail"))
    return (int(total.group(1)) if total else None), (int(tail.group(1)) if tail else None)


def smallest_arena(model: bytes, inputs: list[np.ndarray], outputs: int, lower: int | None, cap: int) -> int | None:
    """Exact smallest arena for this model, probing in this process (see bisect_arena)."""
    return bisect_arena(lambda size: fits(model, size, inputs, outputs), lower, cap)


NEAR_TOTAL = 256  # measured: the smallest arena lies a few bytes either side of the recorded total


def bisect_arena(fits_in: Callable[[int], bool], lower: int | None, cap: int) -> int | None:
    """Exact smallest arena (1-byte granularity) by bisection; None if even `cap` does not fit.

    `lower` is the recording allocator's final total, close to the answer but on either side of
    it (the planner needs temporary space while allocating; alignment slack can come off). The
    search first brackets it NEAR_TOTAL either side, else widens to a quarter above it and
    doubles until it fits. hub.verify.tflm runs this with one child per probe as its fallback.
    """
    near = max((lower or 0) - NEAR_TOTAL, 1)  # the smallest arena usually lies within NEAR_TOTAL of the total:
    lo = near if lower and not fits_in(near) else 0  # 2 + 9 probes then, instead of ~20 on a 10 MB arena
    hi = max(lo + 1, (lower or 0) + NEAR_TOTAL)
    if not fits_in(hi):
        lo, hi = hi, max(hi + 1, (lower or 0) + (lower or 0) // 4 + 1024)
    while not fits_in(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(hi * 2, cap)
    while hi - lo > 1:  # invariant: lo fails, hi fits
        mid = (lo + hi) // 2
        if fits_in(mid):
            hi = mid
        else:
            lo = mid
    return hi


def run_job(job: Job) -> None:
    cap, outputs = job.spec["arena_cap"], job.spec["outputs"]
    with stderr_to(job.phase("load")):
        try:
            interp = interpreter(job.model, cap)
        except RuntimeError as exc:
            job.result["message"] = str(exc)
            return job.save()
    job.result["loads"] = True
    inputs = job.samples[0] if job.samples else default_inputs(interp, job.spec["inputs"])
    with stderr_to(job.phase("invoke")):
        try:
            run_once(interp, inputs, outputs)
        except RuntimeError as exc:
            job.result["message"] = str(exc)
            return job.save()
    job.result["invokes"] = True
    job.save()
    lower, job.result["arena_tail"] = allocated_total(interp, job.phase("allocations"))
    if job.samples:
        with stderr_to(job.phase("samples")):
            results, invoking = [], 0.0
            for sample in job.samples:
                interp.reset()  # stateful models (variables) start each sample afresh
                start = time.perf_counter()
                results.append(run_once(interp, sample, outputs))
                invoking += time.perf_counter() - start
        np.savez(job.folder / "outputs.npz",
                 **{f"s{s}_o{o}": arr for s, outs in enumerate(results) for o, arr in enumerate(outs)})
        job.result["samples"] = len(results)
        job.result["invoke_us"] = round(invoking / len(results) * 1e6, 1)  # host CPU, mean per sample
        job.save()
    del interp
    if job.spec.get("measure_arena", True):
        job.result["arena_lower_bound"] = lower  # saved first: the parent falls back on it if we crash
        job.save()
        with stderr_to(job.phase("arena")):
            job.result["arena_bytes"] = smallest_arena(job.model, inputs, outputs, lower, cap)
        job.save()


def probe(model_path: str, arena: int) -> int:
    """`probe MODEL ARENA`: exit 0 if MODEL allocates and invokes (zero inputs) in ARENA bytes."""
    model = Path(model_path).read_bytes()
    try:
        interp = interpreter(model, arena)
        count = len(_io_count(model))
        run_once(interp, default_inputs(interp, count), 0)
        return PROBE_OK
    except RuntimeError:
        return PROBE_FAILED


def _io_count(model: bytes) -> list[int]:
    from hub.tflite.model import read_tflite  # why here: the child's usual run needs only numpy and TFLM

    return read_tflite(model).inputs


def main(argv: list[str]) -> int:
    if argv and argv[0] == "probe":
        return probe(argv[1], int(argv[2]))
    job = Job(Path(argv[0]))
    job.save()
    run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
