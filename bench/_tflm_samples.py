"""Benchmark helper: one .tflite on the real TFLM interpreter over a batch of samples, in a child process.

`run(tflite, x, work)` saves `x` (samples on axis 0, one input), runs this file as a child (TFLM can abort() the
process) and returns the dequantised outputs, the mean host invoke time (us) and the child's printed text (TFLM's
recording allocator, with `allocations=True`). Each sample starts from a fresh state (Reset(): a fused LSTM keeps
its state in variable tensors). A sample whose shape differs from the .tflite's input is transposed to match:
by `axes` (batch axis first) where given, else its last two axes are swapped (what hub's settings header states
for a sequence input).

    python bench/_tflm_samples.py TFLITE INPUTS.npy OUT.npy [--allocations] [--axes 0,3,1,2]
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARENA = 64 * 1024 * 1024
TIMEOUT_S = 1800


def run(tflite: Path, x: np.ndarray, work: Path, allocations: bool = False,
        axes: tuple[int, ...] | None = None) -> tuple[np.ndarray, float, str]:
    inputs, outputs = work / "tflm_in.npy", work / "tflm_out.npy"
    np.save(inputs, x)
    proc = subprocess.run([sys.executable, __file__, str(tflite), str(inputs), str(outputs)]
                          + (["--allocations"] if allocations else [])
                          + (["--axes", ",".join(map(str, axes))] if axes else []),
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Didn't find op" in ln or "failed to prepare" in ln),  # TFLM's own reason
                   lines[-1] if lines else "")
        raise RuntimeError(f"TFLM cannot run it: {why[:300]}")
    return np.load(outputs), float(outputs.with_suffix(".us").read_text()), proc.stdout + proc.stderr


def _child(tflite: str, inputs: str, out: str, allocations: bool, axes: tuple[int, ...] | None) -> None:
    from tflite_micro import runtime  # why here: the interpreter only in the child

    interp = runtime.Interpreter.from_bytes(Path(tflite).read_bytes(), arena_size=ARENA)
    src, dst = interp.get_input_details(0), interp.get_output_details(0)
    (s_in, z_in), (s_out, z_out) = [(float(d["quantization_parameters"]["scales"][0]),
                                     int(d["quantization_parameters"]["zero_points"][0])) for d in (src, dst)]
    info = np.iinfo(src["dtype"])  # int8, or int16 (--quantize int16x8)
    results, seconds = [], 0.0
    for sample in np.load(inputs):
        x = sample[None]
        if tuple(src["shape"]) != x.shape:
            x = x.transpose(axes) if axes else x.swapaxes(-1, -2)
        interp.reset()
        interp.set_input(np.clip(np.round(x / s_in + z_in), info.min, info.max).astype(src["dtype"]), 0)
        t0 = time.perf_counter()
        interp.invoke()
        seconds += time.perf_counter() - t0
        results.append((np.array(interp.get_output(0)).astype(np.float64) - z_out) * s_out)
    np.save(out, np.stack(results)[:, 0])
    Path(out).with_suffix(".us").write_text(str(seconds / len(results) * 1e6))
    if allocations:
        sys.stdout.flush()
        interp.print_allocations()  # TFLM's recording allocator (MicroPrintf: stdout or stderr)


if __name__ == "__main__":
    flags = sys.argv[4:]
    _child(*sys.argv[1:4], allocations="--allocations" in flags,
           axes=tuple(map(int, flags[flags.index("--axes") + 1].split(","))) if "--axes" in flags else None)
