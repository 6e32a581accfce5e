"""Passes on the converted .tflite flatbuffer, after the TFLite converter and before verification.

Like hub.graph.passes on the ONNX graph, each pass is a small module whose `run` follows `FlatbufferPass`,
listed by reference in PASSES in the order they run; what each changed goes to report.json's `passes`.
"""
from __future__ import annotations

from types import ModuleType
from typing import Protocol

from hub.artifacts import PassResult
from hub.tflite.passes import argmax_int32, raise_tiny_scales, softmax_int16


class FlatbufferPass(Protocol):
    """A pass module: `run(tflite_bytes) -> (tflite_bytes, ops or tensors changed, what it did in words)`."""

    @staticmethod
    def run(tflite_bytes: bytes) -> tuple[bytes, int, str]: ...


PASSES: tuple[ModuleType, ...] = (
    raise_tiny_scales,
    softmax_int16,  # after raise_tiny_scales, which must still see the int8 SOFTMAX input it raises
    argmax_int32,
)


def run_passes(tflite_bytes: bytes) -> tuple[bytes, list[PassResult]]:
    results = []
    for module in PASSES:
        tflite_bytes, changed, detail = module.run(tflite_bytes)
        results.append(PassResult(name=module.__name__.rpartition(".")[2], changed=changed, detail=detail))
    return tflite_bytes, results
