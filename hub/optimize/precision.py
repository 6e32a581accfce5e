"""`--quantize auto`: start from int8 and promote the most sensitive layers to int16 activations (int16x8 kernels)
until a target is met, every step measured on the TFLM interpreter.

The flatbuffer mechanics are hub.tflite.mixed (the int16x8 twins of chosen ops spliced into the int8 model, QUANTIZE
at the boundaries). This module only decides which ops, in what order, and when to stop:
- rank: each op's own contribution to the int8 error (`rank`, the one function a per-layer profile replaces);
- grow: promote the top 1, 2, 4, 8, ... ops (plus the data-movement ops between promoted ones), measuring each mix
  on TFLM, until the target holds; then the smallest mix between the last miss and the hit that holds (bisection);
- the target: a cosine against the source (never above what whole-model int16x8 reaches), or an accuracy drop on
  --data. The caller's `measure` runs the model on TFLM and scores it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hub.artifacts import MixedPrecision, PrecisionStep, Verification
from hub.knowledge.int16_kernels import DATA_MOVEMENT
from hub.tflite.mixed import Twin, splice, twins
from hub.tflite.model import read_tflite
from hub.verify.samples import to_tflite_inputs

DEFAULT_MIN_COSINE = 0.99  # --quantize auto's target when neither --min-cosine nor --max-accuracy-drop is given


@dataclass(frozen=True)
class Goal:
    """What auto must reach: a cosine against the source (higher is better), or an accuracy drop (lower)."""

    metric: str  # "cosine" | "accuracy_drop"
    bound: float

    def met(self, score: float | None) -> bool:
        if score is None:
            return False
        return score >= self.bound if self.metric == "cosine" else score <= self.bound

    def better(self, a: float | None, b: float | None) -> bool:
        """`a` is at least as good as `b`."""
        if a is None:
            return False
        return b is None or (a >= b if self.metric == "cosine" else a <= b)


# A measurement on TFLM: (score for the goal, the verification of that model).
Measure = Callable[[bytes], tuple[float | None, Verification]]


def needs_int16(int8_score: float | None, goal: Goal) -> bool:
    """Whether int8 alone misses the goal (then auto converts int16x8 too)."""
    return not goal.met(int8_score)


def search(int8_bytes: bytes, int16_bytes: bytes, samples: list[dict[str, np.ndarray]], goal: Goal,
           measure: Measure, first: PrecisionStep) -> tuple[bytes, MixedPrecision]:
    """The least-promoted mix that meets `goal` (capped at whole-int16x8's score), with every step measured."""
    steps = [first]
    whole16 = _step("int16x8 (every op)", -1, int16_bytes, *measure(int16_bytes))
    steps.append(whole16)
    cap = goal.bound if goal.better(whole16.score, goal.bound) else whole16.score  # int16x8 may not reach it
    reachable = Goal(goal.metric, cap) if cap is not None else goal
    candidates = twins(int8_bytes, int16_bytes)
    order = rank(int8_bytes, int16_bytes, candidates, samples)
    best: tuple[bytes, PrecisionStep] | None = None
    low, k = 0, 1
    while k <= len(order) and best is None:
        data, step = _try(int8_bytes, int16_bytes, candidates, order[:k], measure)
        steps.append(step)
        if reachable.met(step.score):
            best = (data, step)
        else:
            low, k = k, (k * 2 if k * 2 < len(order) or k == len(order) else len(order))
    if best is not None:  # bisect between the last miss and the hit
        high = best[1].promoted_compute
        while high - low > max(1, high // 8):
            mid = (low + high) // 2
            data, step = _try(int8_bytes, int16_bytes, candidates, order[:mid], measure)
            steps.append(step)
            if reachable.met(step.score):
                best, high = (data, step), mid
            else:
                low = mid
    chosen_bytes, chosen = best if best is not None else _fallback(int8_bytes, int16_bytes, first, whole16, goal)
    return chosen_bytes, MixedPrecision(metric=goal.metric, bound=goal.bound, reachable=cap, candidates=len(order),
                                        chosen=chosen, steps=steps, ranking=RANKING)


def first_step(int8_bytes: bytes, score: float | None, verification: Verification) -> PrecisionStep:
    return _step("int8", 0, int8_bytes, score, verification)


def int8_only(first: PrecisionStep, goal: Goal) -> MixedPrecision:
    """int8 met the goal: nothing promoted, nothing more converted."""
    return MixedPrecision(metric=goal.metric, bound=goal.bound, reachable=goal.bound, candidates=0, chosen=first,
                          steps=[first], ranking=RANKING)


def _fallback(int8_bytes: bytes, int16_bytes: bytes, first: PrecisionStep, whole16: PrecisionStep,
              goal: Goal) -> tuple[bytes, PrecisionStep]:
    """No mix met the goal: the better of int8 and whole int16x8."""
    return (int16_bytes, whole16) if goal.better(whole16.score, first.score) else (int8_bytes, first)


def _try(int8_bytes: bytes, int16_bytes: bytes, candidates: list[Twin], top: list[Twin],
         measure: Measure) -> tuple[bytes, PrecisionStep]:
    promoted = close_regions(int8_bytes, candidates, top)
    data = splice(int8_bytes, int16_bytes, promoted)
    return data, _step(f"top {len(top)}", len(top), data, *measure(data), _op_names(int8_bytes, promoted))


def _step(label: str, promoted: int, data: bytes, score: float | None, verification: Verification,
          int16_ops: list[str] | None = None) -> PrecisionStep:
    return PrecisionStep(label=label, promoted_compute=promoted, score=score,
                         cosine=verification.fidelity.cosine if verification.fidelity else None,
                         tflite_bytes=len(data), arena_bytes=verification.memory.arena_bytes,
                         invoke_us_host=verification.tflm.invoke_us_host, invokes=verification.tflm.invokes,
                         int16_ops=int16_ops or [])


def _op_names(int8_bytes: bytes, promoted: list[Twin]) -> list[str]:
    model = read_tflite(int8_bytes)
    return [f"{t.name} {model.tensors[model.ops[t.op].outputs[0]].name}" for t in promoted]


def close_regions(int8_bytes: bytes, candidates: list[Twin], top: list[Twin]) -> list[Twin]:
    """`top` plus the data-movement ops (RESHAPE, PAD, ...) whose producer and every consumer are promoted, so a
    region stays int16 through them instead of requantizing twice."""
    model = read_tflite(int8_bytes)
    chosen = {t.op for t in top}
    movers = {t.op: t for t in candidates if t.name in DATA_MOVEMENT}
    producer = {o: op.index for op in model.ops for o in op.outputs}
    consumers: dict[int, list[int]] = {}
    for op in model.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op.index)
    changed = True
    while changed:
        changed = False
        for index, twin in movers.items():
            op = model.ops[index]
            if index in chosen:
                continue
            fed = [producer.get(i) for i in op.inputs if i in producer]
            outs = [c for o in op.outputs for c in consumers.get(o, [])]
            if fed and all(p in chosen for p in fed) and outs and all(c in chosen for c in outs):
                chosen.add(index)
                changed = True
    return [t for t in candidates if t.op in chosen]


RANKING = ("each op's own error: its int8 output against the int16x8 model's (dequantized, RMSE over the "
           "reference's spread) minus the worst of its inputs', on the held-out samples (LiteRT interpreter, "
           "all tensors kept)")


def rank(int8_bytes: bytes, int16_bytes: bytes, candidates: list[Twin],
         samples: list[dict[str, np.ndarray]]) -> list[Twin]:
    """Compute ops by the error they add themselves, worst first (data-movement ops left to close_regions)."""
    errors8 = _tensor_errors(int8_bytes, int16_bytes, samples)
    model = read_tflite(int8_bytes)
    scored = []
    for twin in candidates:
        if twin.name in DATA_MOVEMENT:
            continue
        op = model.ops[twin.op]
        out = max((errors8.get(model.tensors[o].name, 0.0) for o in op.outputs), default=0.0)
        inp = max((errors8.get(model.tensors[i].name, 0.0) for i in op.inputs if i >= 0), default=0.0)
        scored.append((out - inp, twin))
    scored.sort(key=lambda s: -s[0])
    return [t for _, t in scored]


def _tensor_errors(int8_bytes: bytes, int16_bytes: bytes, samples: list[dict[str, np.ndarray]]) -> dict[bytes, float]:
    """{tensor name: RMSE of the int8 model's dequantized tensor against the int16x8 one's, over its spread}."""
    from ai_edge_litert.interpreter import Interpreter  # why here: the TFLite runtime, only when auto ranks

    values = []
    for data in (int8_bytes, int16_bytes):
        model = read_tflite(data)
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        per_name: dict[str, list[np.ndarray]] = {}
        for sample in samples:
            for detail, x in zip(interpreter.get_input_details(), to_tflite_inputs(model, sample)):
                interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
            interpreter.invoke()
            for t in model.tensors:
                if t.is_constant or not t.scales or t.per_channel:
                    continue
                raw = interpreter.get_tensor(t.index).astype(np.float64)
                per_name.setdefault(t.name, []).append((raw - t.zero_points[0]) * t.scales[0])
        values.append(per_name)
    errors = {}
    for name, got in values[0].items():
        want = values[1].get(name)
        if want is None:
            continue
        a, b = np.concatenate([g.ravel() for g in got]), np.concatenate([w.ravel() for w in want])
        if a.shape != b.shape:
            continue
        spread = float(np.std(b)) or 1.0
        errors[name] = math.sqrt(float(np.mean((a - b) ** 2))) / spread
    return errors
