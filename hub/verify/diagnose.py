"""When is a converted model's fidelity poor, and is it the converter's fault or quantization's?

The thresholds live here, in one place:
- FLOAT_MIN_COSINE, FLOAT_MAX_RELATIVE_ERROR: a float32 TFLite model computes what its ONNX
  source computes up to the order of float sums (relative error ~1e-6 measured on the
  fixtures). Below 0.999 cosine, or a worst error above 1 % of the largest reference output,
  the converter changed the model's meaning (a wrong layout gives cosine ~0.3): a failed
  conversion, never a quantization matter.
- QUANT_MIN_COSINE, QUANT_MIN_TOP1: int8 models of trained nets land at 0.99+ cosine and
  agree on the top class (README, MLPerf Tiny: 0.9968-1.0000). Below 0.95 cosine, or
  agreement under 0.9, something is wrong: a float32 conversion then says whose fault it is.
- QUANT_FAIL_COSINE: a quantization error is a warning (the user may accept the loss, or set --min-cosine),
  but below 0.5 cosine the quantized model has kept less of the output than it lost (an output rounded to zero
  scores 0.0): it computes something other than its source and fails, with the same diagnosis and remedies.
  Not when the reference outputs span less than one step of the output's scale (tied logits): then no int8
  output could keep their variation, and the nearest step is the best answer.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hub.artifacts import (ConvertedModel, Diagnosis, Fidelity, Finding, InputLayout, LayerProfile, NormalisedModel,
                           OutputFidelity, ReferenceOutputs, Verification)
from hub.child import run_python_module
from hub.convert.calibration import CalibrationSet
from hub.convert.converter import ConvertOptions, convert
from hub.convert.layout import decide_layouts
from hub.errors import HubError
from hub.tflite.model import TFLiteModel, read_tflite
from hub.verify.layer_error import profile_layers
from hub.verify.samples import synthetic_samples, to_tflite_inputs
from hub.verify.tflm import verify

FLOAT_MIN_COSINE = 0.999
FLOAT_MAX_RELATIVE_ERROR = 0.01
QUANT_MIN_COSINE = 0.95
QUANT_MIN_TOP1 = 0.9
QUANT_FAIL_COSINE = 0.5
LAYER_MIN_COSINE = 0.99  # an op that alone keeps less of its output's variation than this is worth naming
WORST_LAYERS = 3
WIDE_RANGE_RATIO = 100.0  # an int8 activation whose scale is this many times the output's drowns the signal
MIN_OUTPUT_STEPS = 16  # fewer quantization steps than this across the reference outputs: the output scale is too coarse
MANY_CLASSES = 100  # int8 softmax outputs step by 1/256: with this many classes most probabilities are 0 or 1 step
DIVERGE_TIMEOUT_S = 300.0
DIVERGE_MEMORY_MB = 4096
# The profile's isolated view quantizes the whole model once per op (MobileViT: 5 of its 6 minutes): a warning
# measures the ops adding the most error for this long; --quantize auto, which ranks every op, measures them all
ISOLATED_BUDGET_S = 30.0


def poor(fidelity: Fidelity | OutputFidelity | None, quantize: str) -> str | None:
    """Why `fidelity` falls short of what `quantize` should reach (None when it does not)."""
    if not fidelity:
        return None
    cosine, top1, rel = fidelity.cosine, fidelity.top1_agreement, fidelity.relative_error
    if any(v is not None and not math.isfinite(v) for v in (cosine, rel, fidelity.max_abs_error)):
        return "the outputs are not finite (NaN or infinity)"
    if quantize == "float32":
        if cosine is not None and cosine < FLOAT_MIN_COSINE:
            return f"cosine {cosine:.4f} < {FLOAT_MIN_COSINE}"
        if rel is not None and rel > FLOAT_MAX_RELATIVE_ERROR:
            return f"relative error {rel:.3g} > {FLOAT_MAX_RELATIVE_ERROR}"
        return None
    if cosine is not None and cosine < QUANT_MIN_COSINE:
        return f"cosine {cosine:.4f} < {QUANT_MIN_COSINE}"
    if top1 is not None and top1 < QUANT_MIN_TOP1:
        return f"top-1 agreement {top1:.3g} < {QUANT_MIN_TOP1}"
    return None


def quantization_causes(model: TFLiteModel, fidelity: Fidelity, profile: LayerProfile | None) -> list[str]:
    """The likely reasons a quantized model is poor while its float32 conversion is exact, each measured:
    the output's scale, a many-class softmax, the widest activation, and the per-layer profile's worst ops.
    Calibration data is never named as a cause: nothing here measures it (hub.verify.layer_error measures
    ops; an op quantized alone is off by many steps whether its range clipped or its inputs drowned)."""
    causes = []
    out = model.tensors[model.outputs[0]] if model.outputs else None
    out_scale = out.scales[0] if out is not None and len(out.scales) == 1 else None
    steps = fidelity.output_steps
    if steps is not None and steps < MIN_OUTPUT_STEPS:
        causes.append(f"output scale: the reference outputs span only {steps:.1f} steps of the output's "
                      f"scale {out_scale:.3g}" if out_scale else f"output scale: {steps:.1f} steps")
    last = model.ops[-1] if model.ops else None
    if last is not None and last.name == "SOFTMAX" and out is not None and out.shape[-1] >= MANY_CLASSES:
        causes.append(f"softmax over {out.shape[-1]} classes: quantized probabilities step by 1/256, so most are 0")
    wide = _widest_activation(model, out_scale)
    if wide is not None:
        causes.append(wide)
    if profile is not None:
        causes.extend(profile_causes(profile))
    return causes


def profile_causes(profile: LayerProfile) -> list[str]:
    worst = [x for x in profile.worst(WORST_LAYERS) if x.alone < LAYER_MIN_COSINE]
    if not worst:
        return []
    if profile.isolated == 0:  # nothing was measured alone (the budget, or no op matched): say what was
        named = ", ".join(f"op #{x.op_index} {x.op} (cosine {x.cosine:.3f})" for x in worst)
        return [f"the ops with the most error as converted (none could be measured alone), on {profile.samples} "
                f"held-out samples: {named}"]
    named = ", ".join(f"op #{x.op_index} {x.op} (cosine {x.alone:.3f} alone, {x.cosine:.3f} as converted)"
                      for x in worst)
    among = (f" (alone: the {profile.isolated} of {len(profile.layers)} ops whose error grows most as converted, "
             f"within {profile.isolated_budget_s:.0f} s)"
             if profile.isolated_budget_s is not None and profile.isolated < len(profile.layers) else "")
    return [f"the ops adding the most error, measured alone on {profile.samples} held-out samples{among}: {named}"]


def remedies(synthetic: bool, quantize: str) -> str:
    tries = (["--calibration with real samples"] if synthetic else []) + (["--quantize int16x8"] if quantize == "int8" else [])
    tries.append("--quantize float32")
    return "try " + ", ".join(tries)


def _widest_activation(model: TFLiteModel, out_scale: float | None) -> str | None:
    """The quantized activation whose range most exceeds the output's, when it dwarfs it."""
    if not out_scale:
        return None
    worst = None
    for op in model.ops:
        for index in op.outputs:
            t = model.tensors[index]
            if t.is_constant or len(t.scales) != 1 or t.dtype not in ("int8", "int16"):
                continue
            if worst is None or t.scales[0] > worst[0]:
                worst = (t.scales[0], op)
    if worst is None or worst[0] < WIDE_RANGE_RATIO * out_scale:
        return None
    scale, op = worst
    return (f"a wide dynamic range: op #{op.index} {op.name}'s output scale {scale:.3g} is "
            f"{scale / out_scale:.0f}x the output's, so small values there round to zero")


def locate_divergence(tflite_bytes: bytes, reference: onnx.ModelProto, onnx_sample: dict[str, np.ndarray],
                      tflite_inputs: list[np.ndarray]) -> dict[str, Any] | None:
    """The first ONNX node whose output the float32 TFLite model no longer computes (in a child:
    it runs a native interpreter). None when the search fails; {"node": None, ...} when no node is found."""
    with tempfile.TemporaryDirectory(prefix="hub-diverge-") as tmp:
        job = Path(tmp)
        onnx.save(reference, str(job / "model.onnx"))
        (job / "model.tflite").write_bytes(tflite_bytes)
        np.savez(job / "onnx_inputs.npz", **{k: np.asarray(v, np.float32) for k, v in onnx_sample.items()})
        np.savez(job / "tflite_inputs.npz", **{f"i{i}": a for i, a in enumerate(tflite_inputs)})
        child = run_python_module("hub.verify.diverge_worker", [str(job)], timeout_s=DIVERGE_TIMEOUT_S,
                                  memory_mb=DIVERGE_MEMORY_MB, cwd=tmp)
        result = job / "result.json"
        return json.loads(result.read_text()) if child.returncode == 0 and result.exists() else None


def judge_fidelity(options: ConvertOptions, normalised: NormalisedModel, calibration: CalibrationSet,
                   tflite_bytes: bytes, verification: Verification, expected: ReferenceOutputs | None = None,
                   layouts: list[InputLayout] | None = None,
                   float32_bytes: bytes | None = None) -> tuple[Verification, list[str]]:
    """Poor fidelity (`poor`) is the converter's fault when float32 is poor too: an error finding
    naming the node where outputs diverge, and verification fails. When float32 matches, it is
    quantization's: a warning naming the likely cause. When the float32 model cannot be made or run,
    nothing proves the conversion exact: an error finding, and verification fails (unproven). The float32
    model is measured against `expected` (the source's outputs, as the verification was), else onnxruntime.
    Costs one float32 conversion (none when the conversion made `float32_bytes`, the same graph unquantized)
    and, for a quantization error, the per-layer profile (hub.verify.layer_error), only when a quantized model
    is poor. Returns `verification` with the
    diagnosis and findings joined (a new value; the one given is
    left as it is), and the warnings to show the user (they are findings too)."""
    why = poor(verification.fidelity, options.quantize)
    if why is None:
        return verification, []
    float_bytes, float_fidelity = tflite_bytes, verification.fidelity
    if options.quantize != "float32":
        reason = "the float32 model that would tell why did not run on TFLM"
        try:
            float_bytes = float32_bytes or convert(normalised, calibration, replace(options, quantize="float32"),
                                                   layouts).tflite_bytes
            float_fidelity = verify(float_bytes, normalised.onnx_model, calibration.held_out_samples(),
                                    measure_arena=False, expected=expected, layouts=layouts).fidelity
        except HubError as exc:
            float_fidelity, reason = None, f"the float32 conversion that would tell why failed: {exc.message}"
        if float_fidelity is None:  # unproven: poor fidelity nobody can pin on quantization does not pass
            message = f"{options.quantize} fidelity is poor ({why}); {reason}, so the conversion is not proven exact"
            return _joined(verification, None, _finding("error", message, remedies(calibration.synthetic,
                                                                                   options.quantize)), fails=True), []
    float_why = poor(float_fidelity, "float32")
    if float_why is not None:
        diagnosis, finding = _conversion_error(normalised.onnx_model, calibration, float_bytes, float_fidelity,
                                               float_why, options.quantize, why, layouts)
        return _joined(verification, diagnosis, finding, fails=True), []
    profile, unmeasured = _profile(normalised, calibration, tflite_bytes, options, layouts)
    causes = quantization_causes(read_tflite(tflite_bytes), verification.fidelity, profile)
    diagnosis = Diagnosis("quantization", float_fidelity.cosine, causes=causes, layer_profile=profile)
    message = (f"{options.quantize} fidelity is poor ({why}) while float32 matches the source (cosine "
               f"{float_fidelity.cosine:.6f}): a quantization error; likely cause: "
               + ("; ".join(causes) or "none of the known ones (output scale, softmax, wide ranges, per-layer error)")
               + unmeasured)
    hint = remedies(calibration.synthetic, options.quantize)
    cosine, steps = verification.fidelity.cosine, verification.fidelity.output_steps
    # reference outputs spanning under one output step (1,000 tied logits) have no variation int8 could keep
    if cosine is not None and cosine < QUANT_FAIL_COSINE and (steps is None or steps >= 1):
        message += f"; below cosine {QUANT_FAIL_COSINE} the model computes something other than its source"
        return _joined(verification, diagnosis, _finding("error", message, hint), fails=True), []
    return _joined(verification, diagnosis, _finding("warning", message, hint)), [f"{message} ({hint})"]


def _profile(normalised: NormalisedModel, calibration: CalibrationSet, tflite_bytes: bytes,
             options: ConvertOptions, layouts: list[InputLayout] | None) -> tuple[LayerProfile | None, str]:
    """The per-layer profile, or None and the sentence saying why it is missing."""
    converted = ConvertedModel(tflite_bytes, options.quantize, options.target, calibration.summary(), {},
                               layouts or [])
    try:
        return profile_layers(normalised, calibration, converted, options, isolated_budget_s=ISOLATED_BUDGET_S), ""
    except HubError as exc:
        return None, f" ({exc.message})"


def _conversion_error(reference: onnx.ModelProto, calibration: CalibrationSet, float_bytes: bytes,
                      float_fidelity: Fidelity, float_why: str, quantize: str, why: str,
                      layouts: list[InputLayout] | None) -> tuple[Diagnosis, Finding]:
    sample = (calibration.held_out_samples() or synthetic_samples(reference))[0]
    where = locate_divergence(float_bytes, reference, sample,
                              to_tflite_inputs(read_tflite(float_bytes), sample, layouts or decide_layouts(reference)))
    diagnosis = Diagnosis("conversion", float_fidelity.cosine, diverges_at=where)
    place = (f"outputs first diverge at node {where['node']} ({where['op']})" if where and where.get("node")
             else "the node where outputs first diverge was not found")
    if where and where.get("channels_first_from"):
        place += (f", whose input is computed right but left in channels-first order from node "
                  f"{where['channels_first_from']} on (a layout error in onnx2tf's lowering there)")
    not_quant = "" if quantize == "float32" else f"; the poor {quantize} fidelity ({why}) is not quantization's doing"
    return diagnosis, _finding("error", f"the converter changed the model's meaning: the float32 TFLite model's "
                               f"outputs differ from the source's ({float_why}){not_quant}; {place}",
                               "an onnx2tf lowering error: rewrite that layer with other ops, or report it to hub")


def _finding(severity: str, message: str, hint: str = "") -> Finding:
    return Finding("model", "", [], severity, message, hint=hint)


def _joined(verification: Verification, diagnosis: Diagnosis | None, finding: Finding,
            fails: bool = False) -> Verification:
    """`verification` with this stage's diagnosis and finding added (and failed, for a conversion error)."""
    fidelity = verification.fidelity
    if diagnosis is not None:
        fidelity = replace(fidelity, diagnosis=diagnosis)
    return replace(verification, fidelity=fidelity, findings=[*verification.findings, finding],
                   ok=verification.ok and not fails)
