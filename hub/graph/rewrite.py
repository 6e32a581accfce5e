"""Rewrite stage: the normalised graph -> the same graph with what TFLM has no kernel for
replaced by builtins it has (hub.graph.rules.RULES), each rule's error measured.

A rule may approximate (GELU's tanh form, erf by a polynomial): the error it adds is measured
here, on the samples given (the calibration data in `hub convert`), as the largest absolute
difference of the graph's outputs before and after that rule under onnxruntime. The stage
returns a new NormalisedModel; the one given stays the reference the converted model is
verified against, so the fidelity figures include every approximation.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import onnx

from hub.artifacts import NormalisedModel, PassResult, Rewrite
from hub.graph.edit import remove_unused_initializers
from hub.graph.evaluate import reference_outputs
from hub.graph.passes import name_of
from hub.graph.rules import RULES
from hub.graph.shapes import infer_shapes

MAX_ERROR_SAMPLES = 16  # enough to see an approximation's worst case; onnxruntime runs each rule twice


def rewrite(normalised: NormalisedModel, samples: dict[str, np.ndarray] | None = None,
            quantize: str | None = None) -> NormalisedModel:
    """Apply every rewrite rule in order; `samples` ({input: (N, ...)}) measure each rule's error. A rule that
    declares `MODES` runs only for those quantize modes (when `quantize` is given)."""
    model = normalised.onnx_model
    results = []
    for rule in RULES:
        if quantize is not None and quantize not in getattr(rule, "MODES", (quantize,)):
            continue
        before = model
        model, rewrites = rule.run(_copy(model))
        if not rewrites:
            model = before
            continue
        remove_unused_initializers(model)
        model = infer_shapes(model)
        error = _max_abs_error(before, model, samples) if samples else None
        results.append(PassResult(name_of(rule), len(rewrites), describe(rewrites), rewrites, error))
    if not results:
        return normalised
    return replace(normalised, onnx_model=model, passes=normalised.passes + results)


def describe(rewrites: list[Rewrite]) -> str:
    """"4 Gelu -> tanh form, 1 LayerNormalization -> builtins"."""
    counts = Counter((r.op, r.into) for r in rewrites)
    return ", ".join(f"{n} {op} -> {into}" for (op, into), n in counts.items())


def summary_line(passes: list[PassResult]) -> str | None:
    """"rewrote 8 nodes: 4 Gelu -> tanh form (max err 3e-4), 4 LayerNormalization -> builtins"."""
    rules = [p for p in passes if p.rewrites]
    if not rules:
        return None
    parts = [p.detail + (f" (max err {_short_float(p.max_abs_error)})" if p.max_abs_error else "") for p in rules]
    total = sum(len(p.rewrites) for p in rules)
    return f"rewrote {total} node{'s' * (total != 1)}: {', '.join(parts)}"


def _short_float(x: float) -> str:
    """3.1e-4 -> "3e-4": one significant digit, as an error bound reads."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _max_abs_error(before: onnx.ModelProto, after: onnx.ModelProto, samples: dict[str, np.ndarray]) -> float:
    feeds = [{k: v[i:i + 1] for k, v in samples.items()}
             for i in range(min(MAX_ERROR_SAMPLES, len(next(iter(samples.values())))))]
    worst = 0.0
    for a, b in zip(reference_outputs(before, feeds)[1], reference_outputs(after, feeds)[1]):
        for x, y in zip(a, b):
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst
