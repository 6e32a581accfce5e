"""Wall time and peak memory (RSS summed over the whole process tree) of a command."""
from __future__ import annotations

import subprocess
import threading
import time

import psutil


def run_measured(cmd: list[str], cwd: str | None = None, timeout: float = 1800) -> dict:
    """Run `cmd`; sample the RSS of it and all its descendants every 20 ms. `child_peaks_mb`: the peak
    of each direct child's own process tree (a Dask worker and the converters it runs), by pid."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    child_peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss(root))
                for child in root.children():
                    child_peaks[child.pid] = max(child_peaks.get(child.pid, 0), _tree_rss(child))
            except psutil.Error:
                pass
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20, "returncode": proc.returncode, "stdout": out, "stderr": err,
            "child_peaks_mb": {pid: rss / 2**20 for pid, rss in child_peaks.items()}}


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
