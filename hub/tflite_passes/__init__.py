"""Passes on the converted .tflite flatbuffer, after the TFLite converter and before verification.

Like hub.passes on the ONNX graph, each pass is a small module with `NAME` and
`run(tflite_bytes) -> (tflite_bytes, changed, detail)`, listed in PASSES in the order
they run; what each changed goes to report.json's `passes`.
"""
from __future__ import annotations

import importlib

from hub.artifacts import PassResult

PASSES: list[str] = [
    "raise_tiny_scales",
    "argmax_int32",
]


def run_passes(tflite_bytes: bytes) -> tuple[bytes, list[PassResult]]:
    results = []
    for name in PASSES:
        module = importlib.import_module(f"hub.tflite_passes.{name}")
        tflite_bytes, changed, detail = module.run(tflite_bytes)
        results.append(PassResult(name=name, changed=changed, detail=detail))
    return tflite_bytes, results
