"""`--quantize auto`: start from int8 and promote the most sensitive layers to int16 activations (int16x8 kernels)
until a target is met, every step measured on the TFLM interpreter.

The flatbuffer mechanics are hub.tflite.mixed (the int16x8 twins of chosen ops spliced into the int8 model, QUANTIZE
at the boundaries). This module only decides which ops, in what order, and when to stop; what it minimises, once
the target holds, is the TFLM arena (int16 doubles every activation, and a boundary keeps an int8 and an int16
copy of its map alive), so whole int16x8 is chosen over any mix that does not need less:
- prefix: int8 from the input, int16x8 after one boundary in network order, the longest such prefix that holds
  (bisection). The early, high-resolution maps set the arena's peak and error accumulates downstream, so int8
  early and int16 late is the split that saves arena, with one boundary;
- grow (only when no prefix saves arena): rank each op's own contribution to the int8 error (`rank`, from the
  per-layer profile), promote the top 1, 2, 4, 8, ... ops (plus the data-movement ops between promoted ones)
  until the target holds, then the smallest such mix (bisection). Of every mix that holds, the least arena wins
  (among arenas within ARENA_TOLERANCE of it, the best score);
- the target: a cosine against the source (never above what whole-model int16x8 reaches), or an accuracy drop on
  --data. The caller's `measure` runs the model on TFLM and scores it.
Before promoting, int8 with percentile and mse ranges is measured (the better int8 is the base: calibration may be
all that is wrong); whole int16x8 is measured as calibrated and with 4x headroom (the twins come from the better);
a twin TFLM refuses is left int8; a mix below int8's score is never chosen. When whole int16x8 still misses the
target, the int8 filters may be what loses (int16 activations cannot help there): whole int16x8 with the filters
of its first k convolutions split into two int8 parts (hub.tflite.split_weights), k = 1, 2, 4, ... then bisected,
is measured before the mixes, and the best of those whole models is what the mixes must beat.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from hub.artifacts import (ConvertedModel, InputLayout, LayerProfile, MixedPrecision, NormalisedModel, PrecisionStep,
                           ReferenceOutputs, TensorSpec, Verification)
from hub.convert import converter
from hub.convert.calibration import CalibrationSet
from hub.convert.dataset import Dataset
from hub.errors import IncompatibleError
from hub.knowledge.int16_kernels import DATA_MOVEMENT
from hub.tflite import split_weights
from hub.tflite.mixed import TWIN_SUFFIX, Twin, splice, twins, widen
from hub.tflite.model import read_tflite
from hub.tflite.passes import run_passes
from hub.verify import accuracy as accuracy_stage
from hub.verify.layer_error import profile_layers
from hub.verify.tflm import verify

if TYPE_CHECKING:  # why: the annotation only; networkx is imported where the graph is built
    import networkx as nx

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

    def strictly_better(self, a: float | None, b: float | None) -> bool:
        """`a` is better than `b`, not merely equal."""
        return self.better(a, b) and a != b


@dataclass(frozen=True)
class AccuracyGoal:
    """--max-accuracy-drop on --data: the source's outputs, computed once, against each mix's on TFLM."""

    data: Dataset
    spec: TensorSpec  # the one input --data feeds
    outputs: list[TensorSpec]
    source: dict[str, np.ndarray] | None
    reference: str | None
    layouts: list[InputLayout]  # as the .tflite holds each input (hub.convert.layout)

    def drop(self, tflite_bytes: bytes) -> float | None:
        on_tflm = accuracy_stage.tflm_outputs(tflite_bytes, self.spec, self.data.x, self.outputs, self.layouts)
        return accuracy_stage.measure(self.data, on_tflm, self.source, self.reference).drop


# One mix measured on TFLM: (its score for the goal, its verification, the model TFLM ran: after the passes).
Measure = Callable[[bytes], tuple[float | None, Verification, bytes]]


def auto(graph: NormalisedModel, samples: CalibrationSet, int8: ConvertedModel, options: converter.ConvertOptions,
         expected: ReferenceOutputs | None, goal: Goal,
         accuracy: AccuracyGoal | None = None) -> tuple[ConvertedModel, MixedPrecision]:
    """`--quantize auto` from the int8 conversion `int8` (made from `graph` with `samples` and `options`): int8 when
    it meets `goal` (nothing more converted); else int8 with the other calibration methods' ranges, the better one
    the base; then the mix of that base with int16x8 twins that meets it in the least arena (or the best measured)."""
    measure = _measurer(graph, samples, expected, goal, accuracy, int8.input_layouts)
    first = _step("int8", 0, int8.tflite_bytes, *measure(int8.tflite_bytes)[:2])
    if goal.met(first.score):
        return replace(int8, quantize="auto"), _result(goal, goal.bound, 0, first, [first], "", None)
    int8, options, steps = _calibrated_base(graph, samples, int8, options, goal, measure, first)
    base = _best(goal, steps)
    if goal.met(base.score):
        return replace(int8, quantize="auto"), _result(goal, goal.bound, 0, base, steps, "", None)
    try:
        int16 = converter.convert(graph, samples, replace(options, quantize="int16x8", calibration_method="minmax",
                                                          float_fallback=True), int8.input_layouts, float32_twin=True)
    except IncompatibleError as exc:  # not even with float fallbacks: the base stays
        return replace(int8, quantize="auto"), _result(goal, goal.bound, 0, base, steps, "",
                                                         f"the int16x8 conversion failed: {exc.message}")
    candidates = twins(int8.tflite_bytes, int16.tflite_bytes)

    def ranked() -> tuple[list[Twin], str]:  # profiled only when the prefix search saves no arena
        try:
            return rank(profile_layers(graph, samples, int8, options), candidates), RANKING
        except IncompatibleError as exc:
            return rank(None, candidates), ORDER_RANKING.format(why=exc.message)

    data, mixed = search(int8.tflite_bytes, int16.tflite_bytes, candidates, ranked, goal, measure, base, earlier=steps,
                         float32_bytes=int16.float32_bytes)
    timings = {**int8.timings_s, **{f"int16x8.{k}": v for k, v in int16.timings_s.items()}}
    return replace(int8, tflite_bytes=data, quantize="auto", timings_s=timings), mixed


# int16x8's activation ranges as calibrated, and 4x wider: int16 has 256x int8's steps, so a promoted op can take
# headroom for values beyond the calibrated range (clipping, which finer steps alone do not fix) at a quarter of
# that resolution; the search takes the twins of whichever scores best whole (hub.tflite.mixed.widen)
HEADROOM = (1.0, 4.0)

# Tried in this order when int8 with min/max ranges misses the goal (measured on model-library models, synthetic
# held-out samples: LeViT 0.887 -> percentile 0.948, mse 0.905; DeiT percentile and MobileNetV2 mse, hub.options)
CALIBRATION_TRIES = ("percentile", "mse")


def _calibrated_base(graph: NormalisedModel, samples: CalibrationSet, int8: ConvertedModel,
                     options: converter.ConvertOptions, goal: Goal, measure: Measure,
                     first: PrecisionStep) -> tuple[ConvertedModel, converter.ConvertOptions, list[PrecisionStep]]:
    """int8 with each other calibration method's ranges (when the user left min/max), measured: the best model,
    its options, and the steps. Stops at the first that meets `goal`."""
    best, best_options, best_step, steps = int8, options, first, [first]
    for method in CALIBRATION_TRIES if options.calibration_method == "minmax" else ():
        tried = replace(options, calibration_method=method)
        try:
            # the same graph's float32 model does not depend on the ranges: the diagnosis keeps it
            other = replace(converter.convert(graph, samples, tried, int8.input_layouts),
                            float32_bytes=int8.float32_bytes)
        except IncompatibleError:  # the ranges could not be applied: min/max stays
            continue
        step = _step(f"int8 ({method} ranges)", 0, other.tflite_bytes, *measure(other.tflite_bytes)[:2])
        steps.append(step)
        if goal.strictly_better(step.score, best_step.score):
            best, best_options, best_step = other, tried, step
        if goal.met(step.score):
            break
    return best, best_options, steps


def _best(goal: Goal, steps: list[PrecisionStep]) -> PrecisionStep:
    best = steps[0]
    for step in steps[1:]:
        if goal.strictly_better(step.score, best.score):
            best = step
    return best


def _measurer(graph: NormalisedModel, samples: CalibrationSet, expected: ReferenceOutputs | None, goal: Goal,
              accuracy: AccuracyGoal | None, layouts: list[InputLayout]) -> Measure:
    """A mix after the flatbuffer passes, on TFLM: fidelity against the source, arena, invoke time; the score."""
    held_out = samples.held_out_samples()

    def measure(data: bytes) -> tuple[float | None, Verification]:
        passed, _ = run_passes(data)
        verification = verify(passed, graph.onnx_model, held_out, expected=expected, layouts=layouts)
        if not verification.tflm.invokes:
            return None, verification, passed
        if goal.metric == "accuracy_drop" and accuracy is not None:
            return accuracy.drop(passed), verification, passed
        return (verification.fidelity.cosine if verification.fidelity else None), verification, passed

    return measure


def search(int8_bytes: bytes, int16_bytes: bytes, candidates: list[Twin], ranked: Callable[[], tuple[list[Twin], str]],
           goal: Goal, measure: Measure, first: PrecisionStep, earlier: list[PrecisionStep] | None = None,
           float32_bytes: bytes | None = None) -> tuple[bytes, MixedPrecision]:
    """The mix that meets `goal` (capped at whole int16x8's score) with the least TFLM arena, every mix measured.

    When whole int16x8 misses `goal` and the same graph's float32 model (`float32_bytes`) gives the filters, what
    limits it may be the int8 weights: whole int16x8 with its first convolutions' filters split (`_Search.split`)
    is measured, and the best whole model is the one the mixes are judged against. Then the int8 prefix
    (`_Search.prefix`): int8 from the input, int16x8 after one boundary, the longest prefix that holds. When that
    costs no less arena than the whole model, the worst ops of `ranked()` are promoted as well (`_Search.grow`). Of
    every mix that holds, the least arena wins (`_least_arena`); the whole model where no mix needs less. A twin
    TFLM refuses (its int16 kernel rejects the tensors or options) is left int8 and the mix measured again. No mix
    holds: the better of int8 and the whole model."""
    job = _Search(int8_bytes, int16_bytes, candidates, measure)
    wholes = [job.whole(widen(int16_bytes, f) if f != 1 else int16_bytes, f) for f in HEADROOM]
    int16_bytes, whole16 = wholes[0]
    for data, step in wholes[1:]:
        if goal.strictly_better(step.score, whole16.score):
            int16_bytes, whole16 = data, step
    job.int16 = int16_bytes  # the twins come from the widening that scored best
    if whole16.score is not None and not goal.met(whole16.score) and float32_bytes is not None:
        int16_bytes, whole16 = job.split(float32_bytes, goal, (int16_bytes, whole16))
    compute = len(job.compute)
    if whole16.score is not None and goal.better(first.score, whole16.score):  # int16 activations buy nothing
        return int8_bytes, _result(goal, goal.bound, compute, first, [*(earlier or [first]), *job.steps], "",
                                   NO_GAIN, job.refused_names())
    reachable = _reachable(goal, first.score, whole16.score)
    target = Goal(goal.metric, reachable)
    prefix, ranking = job.prefix(target), PREFIX_RANKING
    if prefix is None or _arena(_least_arena(target, job.mixes)[1]) >= _arena(whole16):
        order, how = ranked()
        job.grow(order, target)
        ranking = f"{PREFIX_RANKING}; {NO_PREFIX if prefix is None else PREFIX_COSTS}, then {how}"
    best = _least_arena(target, job.mixes)
    if best is not None and target.met(whole16.score) and _arena(whole16) <= _arena(best[1]):
        best = (int16_bytes, whole16)  # the mix's boundaries keep int8 and int16 copies alive: no arena saved
    if best is None:
        best = (int16_bytes, whole16) if goal.better(whole16.score, first.score) else (int8_bytes, first)
    return best[0], _result(goal, reachable, compute, best[1], [*(earlier or [first]), *job.steps], ranking, None,
                            job.refused_names())


PREFIX_RANKING = ("int8 prefix: the ops from the input stay int8, every op after one boundary in network order "
                  "runs int16x8; the longest prefix that meets the target, bisected (int16 doubles each activation, "
                  "and the early high-resolution maps are what set the arena's peak)")
NO_PREFIX = "no int8 prefix met the target"
PREFIX_COSTS = "the prefix that met it saved no arena over whole int16x8"


# Mixes whose arenas differ by less than this share are equal for the choice, and the best score among them wins:
# the least arena often belongs to the mix that meets the target by a hair on the 8 held-out samples (PoolFormer:
# 0.99000 at 89,680 B, 0.9972 at 89,800 B), which the user's data is the least likely to confirm.
ARENA_TOLERANCE = 0.01


def _least_arena(target: Goal, mixes: list[tuple[bytes, PrecisionStep]]) -> tuple[bytes, PrecisionStep] | None:
    """The measured mix that meets `target` with the least arena, or the best-scoring one within ARENA_TOLERANCE of
    that arena."""
    held = [m for m in mixes if target.met(m[1].score)]
    if not held:
        return None
    least = min(_arena(step) for _, step in held) * (1 + ARENA_TOLERANCE)
    best = None
    for mix in (m for m in held if _arena(m[1]) <= least):
        if best is None or target.strictly_better(mix[1].score, best[1].score):
            best = mix
    return best


def _arena(step: PrecisionStep) -> float:
    return step.arena_bytes if step.arena_bytes is not None else float("inf")


class _Search:
    """The mixes of one search, every step measured, and the twins TFLM refused so far (left int8 in every later
    mix)."""

    def __init__(self, int8_bytes: bytes, int16_bytes: bytes, candidates: list[Twin], measure: Measure):
        self.int8, self.int16, self.candidates, self.measure = int8_bytes, int16_bytes, candidates, measure
        model = read_tflite(int8_bytes)
        self.by_output = {model.tensors[model.ops[t.op].outputs[0]].name: t for t in candidates}
        # why here: networkx (hub.tflite.schedule), 0.11 s of start-up hub check must not pay (hub.api imports this)
        from hub.tflite.schedule import precedence, tensor_graph

        self.dag = precedence(tensor_graph(model))  # op -> the ops reading what it writes
        self.compute = [t for t in candidates if t.name not in DATA_MOVEMENT]  # network order: the int8 model's
        self.refused: list[Twin] = []
        self.steps: list[PrecisionStep] = []
        self.mixes: list[tuple[bytes, PrecisionStep]] = []  # every mix measured (not the whole-model steps)

    def whole(self, int16_bytes: bytes, headroom: float) -> tuple[bytes, PrecisionStep]:
        """Whole-model int16x8 (its ranges `headroom` times wider); an op TFLM refuses there is a twin no mix may
        promote."""
        score, verification, ran = self.measure(int16_bytes)
        if not verification.tflm.invokes and (bad := self._refused_twin(verification, ran)) is not None \
                and bad not in self.refused:
            self.refused.append(bad)
        label = whole_label(int16_bytes) + (f", ranges x{headroom:g}" if headroom != 1 else "")
        self.steps.append(_step(label, -1, int16_bytes, score, verification))
        return int16_bytes, self.steps[-1]

    def split(self, float32_bytes: bytes, goal: Goal,
              whole: tuple[bytes, PrecisionStep]) -> tuple[bytes, PrecisionStep]:
        """Whole int16x8 with the filters of its first k convolutions (network order) split in two
        (hub.tflite.split_weights), k = 1, 2, 4, ... until `goal` holds, then bisected to within an eighth: the
        fewest splits that hold, else the best-scoring whole model (`whole` included). Early filters first: error
        made early is amplified by every layer after it (bench/filter_split.py: MobileNetV1-0.25 with 16 filters
        split scores 0.995 in network order, 0.967 in the order of each split's own gain). Each split adds a
        convolution and two int16 maps, so each is a mix the arena decides among."""
        convs = split_weights.candidates(self.int16, float32_bytes)
        tried: dict[int, tuple[bytes, PrecisionStep]] = {}

        def measured(k: int) -> bool:
            data = split_weights.split(self.int16, float32_bytes, convs[:k])
            score, verification, _ = self.measure(data)
            self.steps.append(_step(f"int16x8, first {k} of {len(convs)} conv filters split", -1, data, score,
                                    verification))
            tried[k] = (data, self.steps[-1])
            self.mixes.append(tried[k])
            return goal.met(score)

        fewest = _fewest(len(convs), measured)
        if fewest is not None:
            return tried[fewest]
        best = whole
        for data, step in tried.values():
            if goal.strictly_better(step.score, best[1].score):
                best = (data, step)
        return best

    def prefix(self, target: Goal) -> tuple[bytes, PrecisionStep] | None:
        """The longest int8 prefix that meets `target`: the first k compute ops (network order) int8, every twin
        from the k-th on promoted, k bisected between 0 (whole int16x8, which meets it) and all (int8, which does
        not) to within a 32nd of the compute ops. The more ops stay int8, the smaller the arena as a rule; a
        boundary on a large map can break that rule, which is why the caller compares arenas, not sizes."""
        best, low, high = None, 0, len(self.compute)
        while high - low > max(1, len(self.compute) // 32):
            mid = (low + high) // 2
            cut = self.compute[mid].op
            data, step = self.mix([t for t in self.candidates if t.op >= cut], f"int8 first {mid}")
            if target.met(step.score):
                best, low = (data, step), mid
            else:
                high = mid
        return best

    def grow(self, order: list[Twin], target: Goal) -> None:
        """Promote the top 1, 2, 4, ... of `order` until `target` holds, then bisect between the last miss and that
        hit to within an eighth of the least promotion that holds (the mixes land in `self.mixes`)."""
        _fewest(len(order), lambda k: target.met(self.mix(order[:k], f"top {k}")[1].score))

    def mix(self, top: list[Twin], label: str) -> tuple[bytes, PrecisionStep]:
        """`top` promoted (but the refused twins) with the data movement between, measured on TFLM; a twin TFLM
        refuses in it is dropped and the mix measured again."""
        while True:
            kept = [t for t in top if t not in self.refused]
            promoted = close_regions(self.dag, [t for t in self.candidates if t not in self.refused], kept)
            data = splice(self.int8, self.int16, promoted)
            score, verification, ran = self.measure(data)
            bad = None if verification.tflm.invokes else self._refused_twin(verification, ran)
            if bad is None or bad not in promoted:
                self.steps.append(_step(label, sum(t.name not in DATA_MOVEMENT for t in kept), data, score,
                                        verification, _op_names(self.int8, promoted)))
                self.mixes.append((data, self.steps[-1]))
                return self.mixes[-1]
            self.refused.append(bad)

    def _refused_twin(self, verification: Verification, ran: bytes) -> Twin | None:
        """The promoted twin whose op TFLM refused, when its failure names a node (hub.verify.tflm's findings name
        it "op #N NAME", N indexing the model it ran)."""
        for finding in verification.findings:
            if (m := _NODE.match(finding.node)) is not None:
                model = read_tflite(ran)
                index = int(m.group(1))
                if index < len(model.ops) and model.ops[index].outputs:
                    name = model.tensors[model.ops[index].outputs[0]].name
                    return self.by_output.get(name.removesuffix(TWIN_SUFFIX.decode()))
        return None

    def refused_names(self) -> list[str]:
        return _op_names(self.int8, self.refused)


def _fewest(n: int, holds: Callable[[int], bool]) -> int | None:
    """The fewest k of 1..n for which `holds(k)` (each call a measured mix): k = 1, 2, 4, ... until one holds, then
    bisected between the last miss and that hit to within an eighth of it; None when not even n holds."""
    if n == 0:
        return None
    low, k = 0, 1
    while not holds(k):
        if k == n:
            return None
        low, k = k, min(k * 2, n)
    while k - low > max(1, k // 8):
        mid = (low + k) // 2
        if holds(mid):
            k = mid
        else:
            low = mid
    return k


def whole_label(int16_bytes: bytes) -> str:
    """"int16x8 (every op)", or which ops stayed float32 (the converter has no 16x8 version of them)."""
    model = read_tflite(int16_bytes)
    floats = Counter(op.name for op in model.ops if op.name != "DEQUANTIZE" and op.outputs
                     and model.tensors[op.outputs[0]].dtype == "float32")
    if not floats:
        return "int16x8 (every op)"
    return "int16x8 (" + ", ".join(f"{name} x{n}" for name, n in sorted(floats.items())) + " float32: no 16x8 version)"


NO_GAIN = ("whole-model int16x8 scores no better than the int8 model: what int8 loses here is not the activations' "
           "precision (the int8 weights, or the calibrated ranges), so no op is promoted")
_NODE = re.compile(r"op #(\d+) ")


def _reachable(goal: Goal, int8_score: float | None, int16_score: float | None) -> float:
    """The bound itself, or, when whole int16x8 misses it too, int16x8's score less a twentieth of its gain over
    int8 (a mix rarely lands exactly on it: the QUANTIZE boundaries round once more); never worse than int8's own
    score, so a mix that loses fidelity is never chosen."""
    if int16_score is None or goal.better(int16_score, goal.bound):
        return goal.bound
    if int8_score is None:
        return int16_score
    slack = abs(int16_score - int8_score) / 20
    if goal.metric == "cosine":
        return max(int16_score - slack, np.nextafter(int8_score, np.inf))
    return min(int16_score + slack, np.nextafter(int8_score, -np.inf))


def _result(goal: Goal, reachable: float | None, candidates: int, chosen: PrecisionStep, steps: list[PrecisionStep],
            ranking: str, note: str | None, refused: list[str] | None = None) -> MixedPrecision:
    return MixedPrecision(metric=goal.metric, bound=goal.bound, reachable=reachable, candidates=candidates,
                          chosen=chosen, steps=steps, ranking=ranking, note=note, refused=refused or [])


def _step(label: str, promoted: int, data: bytes, score: float | None, verification: Verification,
          int16_ops: list[str] | None = None) -> PrecisionStep:
    return PrecisionStep(label=label, promoted_compute=promoted, score=score,
                         cosine=verification.fidelity.cosine if verification.fidelity else None,
                         top1_agreement=verification.fidelity.top1_agreement if verification.fidelity else None,
                         tflite_bytes=len(data), arena_bytes=verification.memory.arena_bytes,
                         invoke_us_host=verification.tflm.invoke_us_host, invokes=verification.tflm.invokes,
                         int16_ops=int16_ops or [], tflm_message=verification.tflm.message)


def _op_names(int8_bytes: bytes, promoted: list[Twin]) -> list[str]:
    model = read_tflite(int8_bytes)
    return [f"{t.name}{' (float32)' if t.float32 else ''} {model.tensors[model.ops[t.op].outputs[0]].name}"
            for t in promoted]


def close_regions(dag: nx.DiGraph, candidates: list[Twin], top: list[Twin]) -> list[Twin]:
    """`top` plus the data-movement ops (RESHAPE, PAD, ...) fed only by promoted ops and feeding only promoted ops
    or other data movement, so a region stays int16 through them instead of requantizing twice. `dag`: the int8
    model's ops, an edge to each reader (hub.tflite.schedule.precedence); in topological order a mover's producers
    are settled before it, so one pass closes the regions."""
    chosen = {t.op for t in top}
    movers = {t.op for t in candidates if t.name in DATA_MOVEMENT}
    import networkx as nx  # why here: as in _Search.__init__

    for op in nx.topological_sort(dag):
        if op in movers and op not in chosen:
            fed, outs = list(dag.predecessors(op)), list(dag.successors(op))
            if fed and all(p in chosen for p in fed) and outs and all(c in chosen or c in movers for c in outs):
                chosen.add(op)
    return [t for t in candidates if t.op in chosen]


RANKING = ("the per-layer error profile (hub.verify.layer_error): each op's output cosine against the float "
           "model with only that op quantized, lowest first")
ORDER_RANKING = "network order (the per-layer profile could not be measured: {why})"


def rank(profile: LayerProfile | None, candidates: list[Twin]) -> list[Twin]:
    """Compute ops by the error they add alone (the profile's isolated view), worst first; data-movement ops are
    left to close_regions, ops the profile does not measure alone go last in network order (their error as
    converted includes everything upstream)."""
    badness = {}
    for layer in profile.layers if profile is not None else ():
        if layer.isolated_cosine is not None:
            badness[layer.op_index] = (layer.isolated_cosine, -(layer.isolated_rmse_over_scale or 0.0))
    compute = [t for t in candidates if t.name not in DATA_MOVEMENT]
    return sorted(compute, key=lambda t: badness.get(t.op, (2.0, 0.0)))
