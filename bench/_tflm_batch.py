"""Benchmark helper: run .tflite files on the real TFLM interpreter, one job per stdin line.

Each line: JSON {"tflite": path, "inputs": npz path (in TFLite input order, already laid out),
"out": npz path}. Prints "OK" or "FAIL <message>" per job. TFLM can abort() the process
(int8 softmax scale check): the parent then records the failure and starts a new child.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from tflite_micro import runtime

ARENA = 16 * 1024 * 1024


def _quantize(x: np.ndarray, d: dict) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    q = d.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64)
    if dtype.kind == "i" and x.dtype.kind == "f" and scales.size:
        zp = np.asarray(q.get("zero_points", [0]))
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scales[0] + zp[0]), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, d: dict) -> np.ndarray:
    q = d.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64)
    if y.dtype.kind in "iu" and scales.size and scales[0] != 0:
        zp = np.asarray(q.get("zero_points", [0]))
        return ((y.astype(np.float64) - zp[0]) * scales[0]).astype(np.float32)
    return y


def run(job: dict) -> str:
    interp = runtime.Interpreter.from_bytes(open(job["tflite"], "rb").read(), arena_size=ARENA)
    inputs = np.load(job["inputs"])
    for i in range(len(inputs.files)):
        x = inputs[f"i{i}"]
        interp.set_input(_quantize(x, interp.get_input_details(i)), i)
    interp.invoke()
    outs, scales = {}, {}
    i = 0
    while True:
        try:
            d = interp.get_output_details(i)
        except Exception:
            break
        outs[f"o{i}"] = _dequantize(np.array(interp.get_output(i)), d)
        q = d.get("quantization_parameters") or {}
        scale = np.asarray(q.get("scales", []), np.float64).reshape(-1)
        scales[f"s{i}"] = scale[:1] if scale.size else np.zeros(1)
        i += 1
    np.savez(job["out"], **outs, **scales)
    return "OK"


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            status = run(json.loads(line))
        except Exception as exc:
            status = "FAIL " + " ".join(str(exc).split())[:300]
        print(status, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
