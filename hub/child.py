"""Run a pipeline step in a child process with time and memory limits.

TensorFlow, onnx2tf and the TFLM interpreter can exit, abort or hang the
process they run in; in a child, that becomes a reported failure of `hub`.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TAIL_LINES = 60  # of a child's stderr that `hub --debug` shows when it printed no Python traceback


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def signal_name(self) -> str | None:
        if self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None

    def last_error_line(self) -> str:
        """The most telling line of stderr: the last that looks like an error."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        for line in reversed(lines):
            if any(word in line for word in ("Error", "error", "ERROR", "failed", "Didn't find")):
                return line[:400]
        return lines[-1][:400] if lines else ""

    def traceback(self) -> str:
        """What `hub --debug` shows of a failed child: its last Python traceback, to the end of stderr
        (onnx2tf's own report of the failing op comes before it, so that is kept too when short), else the
        last TAIL_LINES lines of stderr."""
        lines = self.stderr.rstrip().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
        first = starts[-1] - TAIL_LINES // 2 if starts else len(lines) - TAIL_LINES
        return "\n".join(lines[max(first, 0):])


def run_python_module(module: str, args: list[str], *, timeout_s: float, memory_mb: int | None = None,
                      cwd: str | None = None) -> ChildResult:
    """`python -m module args...` with an address-space limit and a wall-clock timeout."""

    parent = os.getpid()

    def limit() -> None:
        os.setsid()  # its own process group, so a timeout kills grandchildren too
        _die_with_parent(parent)
        if memory_mb:
            bytes_ = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (bytes_, bytes_))

    # TensorFlow leaves its autograph sources in TMPDIR (two files per conversion): the child gets
    # its own temporary folder, removed when it ends, however it ends.
    with tempfile.TemporaryDirectory(prefix="hub-child-") as tmp:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="-1", TMPDIR=tmp)
        return _run(module, args, timeout_s, limit, cwd, env)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
# looked up here, not between fork and exec, where loading a library is not safe
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> None:
    """The child gets SIGKILL when hub dies (a SIGKILL hub cannot catch: a timeout around `hub convert`), instead
    of converting on alone for minutes in its own session; if hub died before this ran, it exits now. The signal
    follows the thread that forked, which waits in _run until the child ends. Linux only; elsewhere the setsid
    child outlives hub."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)


def _run(module: str, args: list[str], timeout_s: float, limit, cwd: str | None, env: dict) -> ChildResult:
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", cwd=cwd, env=env, preexec_fn=limit)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return ChildResult(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return ChildResult(proc.returncode, out, err, timed_out=True)
    except BaseException:
        # Interrupted (Ctrl-C / SIGTERM): never leave a converter running behind us.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
