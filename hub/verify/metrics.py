"""Fidelity maths: the TFLite model's outputs (from the TFLM run, hub.verify.tflm) against the reference's on the
same samples: the source framework's own outputs when given (ReferenceOutputs), else onnxruntime on the ONNX graph.

Outputs are matched by name (by position when the counts agree), dequantised and put back in the ONNX
layout (hub.verify.samples). For several outputs, the top-level figures are the worst over outputs (max
error, min cosine, min agreement) and `outputs` lists each.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from hub.artifacts import Fidelity, OutputFidelity, ReferenceOutputs
from hub.graph.evaluate import reference_outputs
from hub.tflite.model import TFLiteModel
from hub.verify.samples import dequantise, from_tflite_layout

CLASSIFIER_MAX_CLASSES = 1000  # (batch, K) outputs with 2 <= K <= this count as classifier-shaped


def compare(model: TFLiteModel, reference: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
            tflite_outputs: list[list[np.ndarray]], expected: ReferenceOutputs | None = None) -> Fidelity:
    """Fidelity figures against `expected` (the source's outputs on `samples`; onnxruntime on `reference` when
    None): per output, then the worst over outputs at the top level."""
    if expected is None:
        expected = ReferenceOutputs("onnxruntime", *reference_outputs(reference, samples))
    return replace(_compare(model, expected.names, expected.outputs, samples, tflite_outputs),
                   reference=expected.source)


def _compare(model: TFLiteModel, names: list[str], ref: list[list[np.ndarray]], samples: list[dict[str, np.ndarray]],
             tflite_outputs: list[list[np.ndarray]]) -> Fidelity:
    specs = model.io_specs("outputs")
    per_output = []
    for o, spec in enumerate(specs):
        r = names.index(spec["name"]) if spec["name"] in names else (o if len(names) == len(specs) else None)
        if r is None:
            continue
        expected = [np.asarray(out[r], dtype=np.float64) for out in ref]
        got = [from_tflite_layout(dequantise(outs[o], spec), expected[0].shape) for outs in tflite_outputs]
        step = spec["scale"] if isinstance(spec.get("scale"), float) else 0.0
        steps = None
        if isinstance(spec.get("scale"), float) and spec["scale"] > 0:  # quantized: how finely can it show the reference?
            span = max(float(np.max(e)) for e in expected) - min(float(np.min(e)) for e in expected)
            steps = span / spec["scale"]
        per_output.append(replace(output_metrics(expected, got, step), output_steps=steps, name=spec["name"]))
    if not per_output:
        return Fidelity(samples=len(samples), max_abs_error=None, rmse=None, cosine=None, top1_agreement=None,
                        cosine_undefined="no TFLite output matches a reference output")
    return _worst(len(samples), per_output)


def output_metrics(expected: list[np.ndarray], got: list[np.ndarray], step: float = 0.0) -> OutputFidelity:
    """Errors over all samples; cosine is the mean over samples whose reference is not all zero
    (None, with the reason, when every one is: no direction to compare with). Top-1 agreement
    counts the samples whose reference has a top class: its lead over the runner-up exceeds the
    output's quantization `step` (a tie, as from flat logits, has no top class to agree on)."""
    exp = np.concatenate([e.ravel() for e in expected])
    act = np.concatenate([g.ravel() for g in got])
    diff = act - exp
    cosines = [c for c in (_cosine(e.ravel(), g.ravel()) for e, g in zip(expected, got)) if c is not None]
    top1 = None
    if is_classifier_shaped(expected[0].shape):
        decided = [(e, g) for e, g in zip(expected, got) if _lead(e) > max(step, 1e-6 * float(np.max(np.abs(e))))]
        top1 = float(np.mean([int(np.argmax(e)) == int(np.argmax(g)) for e, g in decided])) if decided else None
    peak = float(np.max(np.abs(exp))) if exp.size else 0.0
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    return OutputFidelity(max_abs_error=max_abs, rmse=float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0,
                          cosine=float(np.mean(cosines)) if cosines else None, top1_agreement=top1,
                          relative_error=max_abs / peak if peak > 0 else None,
                          cosine_undefined=None if cosines else "the reference output is all zero on every sample")


def _lead(scores: np.ndarray) -> float:
    """How far the top score stands above the runner-up."""
    top2 = np.sort(scores.ravel())[-2:]
    return float(top2[1] - top2[0])


def is_classifier_shaped(shape: tuple[int, ...]) -> bool:
    """(batch, K) with 2 <= K <= 1000: scores over classes, where top-1 means something."""
    return len(shape) == 2 and 2 <= shape[1] <= CLASSIFIER_MAX_CLASSES


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine similarity; None when the reference `a` is all zero (undefined), 0.0 when only `b` is."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0:
        return None
    if nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _worst(samples: int, per_output: list[OutputFidelity]) -> Fidelity:
    tops = [p.top1_agreement for p in per_output if p.top1_agreement is not None]
    cosines = [p.cosine for p in per_output if p.cosine is not None]
    rels = [p.relative_error for p in per_output if p.relative_error is not None]
    steps = [p.output_steps for p in per_output if p.output_steps is not None]
    return Fidelity(samples=samples, max_abs_error=max(p.max_abs_error for p in per_output),
                    rmse=max(p.rmse for p in per_output),
                    cosine=min(cosines) if cosines else None,
                    top1_agreement=min(tops) if tops else None,
                    relative_error=max(rels) if rels else None,
                    output_steps=min(steps) if steps else None,
                    cosine_undefined=None if cosines else per_output[0].cosine_undefined,
                    outputs=per_output if len(per_output) > 1 else None)
