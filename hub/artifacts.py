"""The artifacts that pipeline stages pass to each other.

Each stage is a folder of `hub/` whose entry point takes an artifact and returns the next:
hub.adapters -> SourceModel, hub.graph -> NormalisedModel, hub.check -> CheckResult, hub.convert ->
ConvertedModel, hub.verify -> Verification; `hub convert` gathers them in a ConvertReport (report.json).
They are plain dataclasses, each written by its own stage only (a later stage returns a new value), so
stages stay independent and testable one by one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import onnx

# The largest model input hub accepts, in elements (--input-shape, ONNX and TorchScript input shapes):
# beyond it calibration alone would exhaust memory. Not a TFLM limit; one bound for every adapter.
MAX_INPUT_ELEMENTS = 2**28


@dataclass
class LoadOptions:
    """What a user can tell an adapter beyond the file itself."""

    # {input name or None (= the only/first input): static shape}
    input_shapes: dict[str | None, tuple[int, ...]] = field(default_factory=dict)
    factory: str | None = None  # "module:function" or "path.py:Class" (PyTorch)
    trust_pickle: bool = False  # allow torch.load of whole pickled modules
    trust_code: bool = False  # allow Keras Lambda layers / custom objects (unsafe mode)
    batch: int = 1


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"


@dataclass(frozen=True)
class InputLayout:
    """How one input's axes are ordered in the .tflite, decided once from the graph (hub.convert.layout):
    calibration, verification, the firmware header and the report all read it."""

    name: str
    source_shape: tuple[int, ...]  # the source model's (the ONNX graph's) order
    perm: tuple[int, ...]  # .tflite axis i holds source axis perm[i]; identity: the source's order kept
    axes: tuple[str, ...]  # the .tflite axes' names, e.g. ("batch", "time", "features")
    source_axes: tuple[str, ...]  # the same names in the source's order
    reason: str  # why, e.g. "feeds Conv conv1"
    # The layout the user's framework holds the input in when it is not the ONNX graph's: "NHWC" for a Keras
    # image, which hub exports NCHW (SourceModel.source_layouts): moved channels-last, it is back in Keras' order.
    framework_layout: str | None = None

    @property
    def moved(self) -> bool:
        return tuple(self.perm) != tuple(range(len(self.perm)))

    @property
    def tflite_shape(self) -> tuple[int, ...]:
        return tuple(self.source_shape[p] for p in self.perm)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "axes": list(self.axes), "shape": list(self.tflite_shape),
                "source_axes": list(self.source_axes), "source_shape": list(self.source_shape),
                "perm": list(self.perm), "channels_moved_last": self.moved, "reason": self.reason,
                "framework_layout": self.framework_layout}


@dataclass
class SourceModel:
    """A model brought in by an adapter, as ONNX (or as TFLite, which is not converted back)."""

    path: Path
    framework: str  # "pytorch" | "keras" | "onnx" | "tflite"
    onnx_model: onnx.ModelProto | None = None
    tflite_bytes: bytes | None = None
    # Layout the user's own data is in, per input: "NCHW", "NHWC" or None (not 4-D).
    # Keras image models are exported NCHW for onnx2tf, but users hold NHWC samples.
    source_layouts: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    exporter: str | None = None  # PyTorch: the ONNX exporter that wrote onnx_model, "torchscript" or "dynamo"
    # The source framework's own forward pass (PyTorch, Keras): one sample in the ONNX graph's layout
    # ({input: (1, ...)}) -> {output name: array}, outputs named as the exported ONNX names them.
    # The reference every fidelity figure is measured against; None for ONNX sources (onnxruntime is).
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    # One submodule by its module path (PyTorch, the `pytorch.module` of exported nodes) on given inputs ->
    # its first output; None when the path is no leaf module or it fails. Where an export first diverges.
    run_module: Callable[[str, list[np.ndarray]], np.ndarray | None] | None = None


# ReferenceOutputs.source as a sentence names it (report text, error messages).
REFERENCE_NAMES = {"pytorch": "the PyTorch module", "keras": "the Keras model",
                   "onnxruntime": "onnxruntime on the ONNX graph"}


@dataclass(frozen=True)
class ReferenceOutputs:
    """What fidelity is measured against: the source's outputs on the held-out samples (hub.verify.export_check)."""

    source: str  # "pytorch" | "keras" (the source framework itself) | "onnxruntime" (on the normalised graph)
    names: list[str]  # the ONNX graph's output names
    outputs: list[list[np.ndarray]]  # per sample, in `names` order


@dataclass
class Rewrite:
    """One node TFLM cannot run, replaced by builtins it can (a rewrite rule in hub.graph.rules.RULES)."""

    node: str  # the node's name in the normalised graph
    op: str  # what was rewritten: an ONNX op ("LayerNormalization") or a pattern ("Gelu" for Erf's GELU form)
    into: str  # what it became, e.g. "tanh form" or "builtins"
    # recurrent nodes: "fused" (TFLM's sequence kernel, hub.graph.rules.fuse_lstm), "unrolled" (per-step builtins)
    # or "rolled" (unrolled, then its repeated steps rolled into a WHILE loop by hub.tflite.roll)
    path: Literal["fused", "unrolled", "rolled"] | None = None


@dataclass
class PassResult:
    """What one normalisation pass or rewrite rule changed, for report.json."""

    name: str
    changed: int  # nodes rewritten or removed
    detail: str = ""
    rewrites: list[Rewrite] = field(default_factory=list)  # rewrite rules only
    max_abs_error: float | None = None  # measured: the graph's outputs before vs after this rule (onnxruntime)


@dataclass
class NormalisedModel:
    """The graph every later stage sees: static shapes, folded, cleaned."""

    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    passes: list[PassResult] = field(default_factory=list)


@dataclass
class ConvertedModel:
    tflite_bytes: bytes
    quantize: str  # "int8" | "int16x8" | "float32" | "float16"
    target: str  # "tflm" | "tflite"
    calibration: dict[str, Any]  # {"source", "samples", "synthetic", "layout", ...}
    timings_s: dict[str, float] = field(default_factory=dict)
    input_layouts: list[InputLayout] = field(default_factory=list)  # as the .tflite holds each input
    float32_bytes: bytes | None = None  # the same graph unquantized, when asked (hub.convert.converter.convert)


@dataclass
class Finding:
    """One thing a check or verification found, in the shape report.json uses."""

    node: str
    op: str
    tflite_ops: list[str]
    # "error" (will not run) | "risk" (may not run: decided only by data the check does not see)
    # | "warning" | "info" | "rewrite" (TFLM cannot run it as it is; a rule in hub.graph.rules.RULES replaces it)
    severity: str
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op": self.op,
            "tflite_ops": list(self.tflite_ops),
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class CheckResult:
    compatible: bool
    target: str
    quantize: str
    findings: list[Finding] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """"will run", "will not run", or "unknown" when only a risk the check cannot decide stands in the way."""
        if not self.compatible:
            return "will not run"
        return "unknown" if any(f.severity == "risk" for f in self.findings) else "will run"

    def to_dict(self) -> dict[str, Any]:
        return {
            "compatible": self.compatible,
            "verdict": self.verdict,
            "target": self.target,
            "quantize": self.quantize,
            "findings": [f.to_dict() for f in self.findings],
            "nodes": [dict(n) for n in self.nodes],
        }


@dataclass(frozen=True)
class TFLMRun:
    """What the TFLM interpreter did with the model (hub.verify.tflm): report.json `tflm`."""

    loads: bool
    invokes: bool
    message: str | None = None  # TFLM's failure, when it did not invoke
    invoke_us_host: float | None = None  # host CPU time per invoke: relative costs, not an MCU's

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"loads": self.loads, "invokes": self.invokes, "message": self.message}
        if self.invoke_us_host is not None:
            doc["invoke_us_host"] = self.invoke_us_host
        return doc


@dataclass(frozen=True)
class ScheduleArena:
    """hub.tflite.schedule's figures beside the measured arena."""

    arena_lower_bound_bytes: int | None  # no operator order needs less (None: TFLM's persistent tail not measured)
    arena_default_order_bytes: int | None  # the converter's own order


@dataclass(frozen=True)
class Memory:
    """The model's memory on TFLM, measured (hub.verify.tflm), with the schedule's figures once that stage
    joins them (`schedule`): report.json `memory`."""

    arena_bytes: int | None  # the smallest arena TFLM allocates and invokes with (None: not measured)
    arena_recommended_bytes: int | None
    flash_bytes: int
    arena_persistent_bytes: int | None = None  # TFLM's persistent tail, when the child recorded it
    schedule: ScheduleArena | None = None  # only `hub convert` orders operators

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"arena_bytes": self.arena_bytes, "arena_recommended_bytes": self.arena_recommended_bytes,
                               "flash_bytes": self.flash_bytes}
        if self.arena_persistent_bytes is not None:
            doc["arena_persistent_bytes"] = self.arena_persistent_bytes
        if self.schedule is not None:
            doc["arena_lower_bound_bytes"] = self.schedule.arena_lower_bound_bytes
            doc["arena_default_order_bytes"] = self.schedule.arena_default_order_bytes
        return doc


@dataclass(frozen=True)
class OutputFidelity:
    """One output's agreement with the reference over the samples (hub.verify.metrics.output_metrics)."""

    max_abs_error: float
    rmse: float
    cosine: float | None  # None: the reference is all zero on every sample (`cosine_undefined` says so)
    top1_agreement: float | None  # None: not classifier-shaped, or no sample has a top class
    relative_error: float | None  # max_abs_error / the reference's peak (None: the reference is all zero)
    cosine_undefined: str | None = None
    output_steps: float | None = None  # quantized outputs: the reference's span in steps of the output's scale
    name: str | None = None  # the TFLite output's name, once matched to one

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {} if self.name is None else {"name": self.name}
        doc.update(max_abs_error=self.max_abs_error, rmse=self.rmse, cosine=self.cosine,
                   top1_agreement=self.top1_agreement, relative_error=self.relative_error)
        if self.cosine_undefined is not None:
            doc["cosine_undefined"] = self.cosine_undefined
        if self.output_steps is not None:
            doc["output_steps"] = self.output_steps
        return doc


WORST_STEP = 0.01  # LayerProfile.worst: isolated cosines this close rank in graph order


@dataclass(frozen=True)
class LayerError:
    """One quantized op's output against the float model's tensor on the held-out samples (hub.verify.layer_error),
    dequantized: `rmse_over_scale` (RMSE in steps of the tensor's scale: ~0.29 is pure rounding, more is
    clipping) and `cosine` (the mean over channels, the last axis, of the cosine of each channel's values around
    their mean: robust to an outlier channel and to offsets) as converted (the error accumulated up to this op);
    `isolated_*` with only this op quantized (its inputs the float model's, quantized: the error it alone adds,
    hub.verify.layer_error_worker)."""

    op_index: int  # in the converted model; -1 when no op of it writes `tensor`
    op: str  # builtin name, e.g. "CONV_2D"
    tensor: str
    rmse_over_scale: float
    cosine: float
    isolated_cosine: float | None
    isolated_rmse_over_scale: float | None = None
    scale: float | None = None

    @property
    def alone(self) -> float:
        """The error this op adds: its isolated cosine, else (not measured alone) as converted."""
        return self.isolated_cosine if self.isolated_cosine is not None else self.cosine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerProfile:
    """The per-layer error profile of a quantized model, in the converted model's op order."""

    layers: tuple[LayerError, ...]
    samples: int = 0  # held-out samples measured
    quantize: str = "int8"
    isolated_budget_s: float | None = None  # the isolated view's time budget; None: every op measured alone

    @property
    def isolated(self) -> int:
        """How many ops the isolated view measured."""
        return sum(layer.isolated_cosine is not None for layer in self.layers)

    def worst(self, n: int = 3) -> tuple[LayerError, ...]:
        """The n ops that add the most error themselves: lowest isolated cosine among the ops measured alone (as
        converted when none was), in steps of WORST_STEP, then in graph order. An op quantized alone has its
        inputs quantized too, so a tensor whose range drowns its values hurts its producer and its consumers
        alike: the producer, where the range was set, comes first."""
        def badness(layer: LayerError) -> tuple[float, int]:
            return (round(layer.alone / WORST_STEP), layer.op_index)
        # an op's error as converted includes everything upstream: beside ops measured alone it would look worse
        measured = [x for x in self.layers if x.isolated_cosine is not None] or list(self.layers)
        return tuple(sorted(measured, key=badness)[:n])

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "quantize": self.quantize, "isolated": self.isolated,
                "isolated_budget_s": self.isolated_budget_s, "worst": [x.op_index for x in self.worst()],
                "layers": [x.to_dict() for x in self.layers]}


@dataclass(frozen=True)
class Diagnosis:
    """Why fidelity is poor (hub.verify.diagnose): "conversion" (float32 is poor too: `diverges_at`, the
    divergence search's document) or "quantization" (float32 matches: the likely `causes`)."""

    kind: str  # "conversion" | "quantization"
    float32_cosine: float | None
    causes: list[str] = field(default_factory=list)  # quantization
    diverges_at: dict[str, Any] | None = None  # conversion; None when the search failed
    layer_profile: LayerProfile | None = None  # quantization; None when it could not be measured

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "float32_cosine": self.float32_cosine}
        if self.kind == "conversion":
            doc["diverges_at"] = self.diverges_at
        else:
            doc["causes"] = list(self.causes)
            if self.layer_profile is not None:
                doc["layer_profile"] = self.layer_profile.to_dict()
        return doc


@dataclass(frozen=True)
class Fidelity:
    """The TFLite model against its reference (`reference`: the source framework itself, else onnxruntime on the
    ONNX graph) on held-out samples (hub.verify.metrics.compare): the worst figure over outputs at the top level,
    each output in `outputs` when there are several. report.json `fidelity`."""

    samples: int
    max_abs_error: float | None  # None (as rmse): no TFLite output matched a reference output
    rmse: float | None
    cosine: float | None
    top1_agreement: float | None
    relative_error: float | None = None
    output_steps: float | None = None
    cosine_undefined: str | None = None
    outputs: list[OutputFidelity] | None = None  # several outputs only
    diagnosis: Diagnosis | None = None  # hub.verify.diagnose's, when fidelity is poor
    reference: str | None = None  # what it is measured against: ReferenceOutputs.source

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {} if self.reference is None else {"reference": self.reference}
        doc.update({"samples": self.samples, "max_abs_error": self.max_abs_error, "rmse": self.rmse,
                    "cosine": self.cosine, "top1_agreement": self.top1_agreement})
        if self.max_abs_error is not None:  # outputs were compared (no relative error when none matched)
            doc["relative_error"] = self.relative_error
        if self.output_steps is not None:
            doc["output_steps"] = self.output_steps
        if self.cosine_undefined is not None:
            doc["cosine_undefined"] = self.cosine_undefined
        if self.outputs is not None:
            doc["outputs"] = [o.to_dict() for o in self.outputs]
        if self.diagnosis is not None:
            doc["diagnosis"] = self.diagnosis.to_dict()
        return doc


@dataclass(frozen=True)
class Verification:
    """The verify stage's result; later stages (schedule figures, diagnosis) join theirs with
    dataclasses.replace, never by changing this one."""

    tflm: TFLMRun
    memory: Memory
    fidelity: Fidelity | None
    findings: list[Finding] = field(default_factory=list)
    ok: bool = False
    accuracy: Any = None  # hub.verify.accuracy.Accuracy on --data

    def to_dict(self) -> dict[str, Any]:
        doc = {"tflm": self.tflm.to_dict(), "memory": self.memory.to_dict(),
               "fidelity": self.fidelity.to_dict() if self.fidelity is not None else None}
        if self.accuracy is not None:
            doc["accuracy"] = self.accuracy.to_dict()
        return doc


@dataclass
class ModelSummary:
    """The converted flatbuffer at a glance: size, ops, input and output tensors."""

    tflite_bytes: int
    ops: dict[str, int]  # {"CONV_2D": 9, ...} sorted by name
    inputs: list[dict[str, Any]]  # name, tensor, shape, dtype, scale, zero_point
    outputs: list[dict[str, Any]]
    input_layouts: list[InputLayout] = field(default_factory=list)  # the inputs' axes (hub.convert.layout)

    def to_dict(self) -> dict[str, Any]:
        return {"tflite_bytes": self.tflite_bytes, "ops": dict(self.ops), "op_count": sum(self.ops.values()),
                "inputs": self.inputs, "outputs": self.outputs,
                "input_layouts": [layout.to_dict() for layout in self.input_layouts]}


@dataclass
class Measured:
    """Figures measured on a real model, which replace a portability report's estimates for its target."""

    target: str  # "tflm" | "tflite"
    quantize: str
    tflite_bytes: int | None = None
    arena_bytes: int | None = None
    invokes: bool | None = None  # None: not run on TFLM
    tflm_message: str | None = None

    @property
    def row_name(self) -> str:
        """The portability report's row for this target and mode ("tflm-int8", "tflite", ...)."""
        return f"tflm-{self.quantize}" if self.target in ("tflm", "ethos-u") else "tflite"  # ethos-u: its TFLM int8


@dataclass(frozen=True)
class PrecisionStep:
    """One mix `--quantize auto` measured on TFLM (hub.optimize.precision)."""

    label: str  # "int8", "int16x8 (every op)", "top 4" (the 4 worst-ranked compute ops promoted)
    promoted_compute: int  # compute ops promoted to int16 (0: int8; -1: the whole int16x8 model)
    score: float | None  # what the goal judges: cosine against the source, or the accuracy drop in points
    cosine: float | None
    top1_agreement: float | None
    tflite_bytes: int
    arena_bytes: int | None
    invoke_us_host: float | None
    invokes: bool
    int16_ops: list[str] = field(default_factory=list)  # "CONV_2D <output tensor>" of every op run in int16
    tflm_message: str | None = None  # TFLM's failure, when the mix did not invoke

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MixedPrecision:
    """What `--quantize auto` chose and every step it measured: report.json `mixed_precision`."""

    metric: str  # "cosine" | "accuracy_drop"
    bound: float  # --min-cosine (default 0.99) or --max-accuracy-drop
    reachable: float | None  # the bound auto aimed at: near whole int16x8's score when that misses `bound`
    candidates: int  # compute ops with an int16 twin TFLM runs
    chosen: PrecisionStep
    steps: list[PrecisionStep]
    ranking: str  # how the mixes were chosen, in words ("" when int8 met the goal: nothing tried)
    note: str | None = None  # why nothing was promoted although int8 misses (the int16x8 conversion failed)
    refused: list[str] = field(default_factory=list)  # "OP <output tensor>" of twins TFLM refused: left int8

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "bound": self.bound, "reachable": self.reachable,
                "candidates": self.candidates, "chosen": self.chosen.to_dict(),
                "steps": [s.to_dict() for s in self.steps], "ranking": self.ranking, "note": self.note,
                "refused": self.refused}


@dataclass
class ConvertReport:
    """What `hub convert` did and found; `to_dict()` is report.json and the --json document."""

    target: str
    quantize: str
    source: dict[str, str]  # path, framework, exporter (PyTorch: which ONNX exporter wrote the graph)
    model: ModelSummary
    calibration: dict[str, Any]
    passes: list[PassResult]
    check: CheckResult | None
    verification: Verification | None
    output: Path
    firmware: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    portability: dict[str, Any] = field(default_factory=dict)  # hub.report.portability's sections, measured figures in
    ethos_u: Any = None  # hub.firmware.ethos_u.EthosUResult of --target ethos-u
    compression: Any = None  # hub.tflite.compress.Compression of --compress
    float_islands: list[Any] = field(default_factory=list)  # hub.tflite.islands.FloatIsland of the produced model
    mixed_precision: MixedPrecision | None = None  # --quantize auto's mix and steps

    @property
    def measured(self) -> Measured:
        v = self.verification
        return Measured(self.target, self.quantize, self.model.tflite_bytes,
                        v.memory.arena_bytes if v else None, v.tflm.invokes if v else None,
                        v.tflm.message if v else None)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "target": self.target, "quantize": str(self.quantize), "source": dict(self.source),
            "model": self.model.to_dict(), "calibration": self.calibration,
            "passes": [asdict(p) for p in self.passes], "check": self.check.to_dict() if self.check else None,
        }
        if self.verification is not None:
            doc.update(self.verification.to_dict())
            doc["findings"] = [f.to_dict() for f in self.verification.findings]
        if self.firmware:
            doc["firmware"] = list(self.firmware)
        if self.ethos_u is not None:
            doc["ethos_u"] = self.ethos_u.to_dict()
        if self.compression is not None:
            doc["compression"] = self.compression.to_dict()
        doc["float_islands"] = [island.to_dict() for island in self.float_islands]
        if self.mixed_precision is not None:
            doc["mixed_precision"] = self.mixed_precision.to_dict()
        doc["timings_s"] = dict(self.timings_s)
        doc.update(self.portability)
        return doc  # without `output`: report.json sits in that folder, wherever it is moved
