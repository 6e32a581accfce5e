"""`hub check` on a .tflite file: its ops, read from the flatbuffer, against TFLM's kernels
(hub.knowledge.tflm_kernels, judged by hub.check.constraints as for an ONNX graph), and the whole-model
rules a converted file can break (dynamic shapes, float16, custom and Flex ops, int8 scales TFLM's Prepare
aborts on). scale_hazards, abort_causes and custom_op_findings serve hub.tflite.passes and hub.verify too.
"""
from __future__ import annotations

import math

from hub.artifacts import CheckResult, Finding
from hub.check.constraints import (SOFTMAX_ABORT_HINT, OpFacts, breaches, check_result, check_target, not_in_tflm,
                                   rule_hint, softmax_abort_message, softmax_aborts, verdict)
from hub.knowledge import tflm_kernels
from hub.knowledge.resolver import CUSTOM_OPS
from hub.knowledge.tflm_buffers import EXTERNAL_TOTAL_BYTES
from hub.knowledge.tflm_kernels import KERNELS
from hub.tflite.islands import float_islands
from hub.tflite.model import TFLiteModel, read_tflite
from hub.tflite.passes.raise_tiny_scales import activation_hazards, scale_hazards


def _op_label(model, op) -> str:
    outs = [model.tensors[i].name for i in op.outputs if i >= 0]
    return f"#{op.index} {outs[0]}" if outs else f"#{op.index}"


def check_softmax_scales(model) -> list[Finding]:
    """int8 SOFTMAX/LOG_SOFTMAX/LOGISTIC whose input scale makes TFLM abort (TFLiteModel from read_tflite)."""
    return [Finding(_op_label(model, op), op.name, [op.name], "error",
                    f"int8 {op.name} input scale {t.scales[0]:.3g} is below {limit:.3g}; TFLM "
                    "aborts the whole program in Prepare (QuantizeMultiplierGreaterThanOne).",
                    "convert it with hub convert (which raises the scale to the limit), or calibrate with real "
                    "data: the logits barely vary")
            for op, t, limit in scale_hazards(model)]


def check_activation_scales(model) -> list[Finding]:
    """int8/int16 ops whose output scale is too small for their fused RELU6 / RELU_N1_TO_1 bound: Prepare fails."""
    return [Finding(_op_label(model, op), op.name, [op.name], "error",
                    f"{t.dtype} {op.name} output scale {t.scales[0]:.3g} is too small for its fused "
                    f"{op.fused_activation}: TFLM's Prepare cannot quantize the bound into int32 "
                    "(no_integer_overflow_from_quantization).",
                    "convert it with hub convert (which raises the scale), or calibrate with real data: that "
                    "output barely varies")
            for op, t in activation_hazards(model)]


def check_rescale_scales(model) -> list[Finding]:
    """int8 ADD/SUB whose larger input scale is 2^19 or more times its output scale: TFLM aborts in Prepare
    (tflm_kernels.Kernel.int8_rescale_shift). Seen when a MaxPool input was padded with -3.4e38 (issue 12)."""
    findings = []
    for op in model.ops:
        k = KERNELS.get(op.name)
        if k is None or not k.int8_rescale_shift or len(op.inputs) < 2 or not op.outputs:
            continue
        tensors = [model.tensors[i] for i in (*op.inputs[:2], op.outputs[0]) if i >= 0]
        if len(tensors) != 3 or any(t.dtype != "int8" or not t.scales for t in tensors):
            continue
        top, out = max(tensors[0].scales[0], tensors[1].scales[0]), tensors[2].scales[0]
        multiplier = 2 * top / (2 ** k.int8_rescale_shift * out) if out > 0 else math.inf
        if multiplier >= 1:
            findings.append(Finding(_op_label(model, op), op.name, [op.name], "error",
                                    f"int8 {op.name} input scale {top:.3g} is {top / out if out else math.inf:.3g} "
                                    f"times its output scale {out:.3g}; TFLM aborts the whole program in {op.name}'s Prepare "
                                    "(QuantizeMultiplierSmallerThanOneExp).",
                                    "find what widened that input's range (a -3.4e38 PADV2 before a MaxPool, "
                                    "for one) and convert again with hub convert"))
    return findings


def abort_causes(model, at_invoke: bool) -> list[Finding]:
    """The check's findings that explain TFLM aborting the process: in Prepare (scales its kernels
    cannot take), and at invoke also the risks data can trigger (a flat int8 SOFTMAX)."""
    causes = check_softmax_scales(model) + check_rescale_scales(model)
    if at_invoke:
        causes += [Finding(_op_label(model, op), op.name, [op.name], "risk", softmax_abort_message(classes),
                           SOFTMAX_ABORT_HINT)
                   for op in model.ops if (classes := softmax_abort_classes(model, op))]
    return causes


def custom_op_findings(label: str, code: str) -> list[Finding]:
    """Flex ops and custom codes TFLM's resolver does not know block; so do known ones that need a build
    (and hardware) the host interpreter does not have: the check cannot vouch for them."""
    def err(message: str, hint: str) -> Finding:
        return Finding(label, "CUSTOM", ["CUSTOM"], "error", message, hint)

    if code.startswith("Flex"):
        return [err(f"Flex op {code[4:]} needs TensorFlow's kernels; TFLM has no Flex ops.",
                    "convert with builtin ops only (hub convert does)")]
    custom = CUSTOM_OPS.get(code)
    if custom is None:
        return [err(f"custom op {code} is not one TFLM registers.", "register your own kernel for it "
                    "(MicroMutableOpResolver::AddCustom), or rewrite the layer with builtin ops")]
    if custom.needs:
        return [err(f"custom op {code} needs {custom.needs}.", custom.hint)]
    return []


def _data_tensor(model, op):
    """The tensor whose type picks the kernel: by the operand-role table (TRANSPOSE_CONV's is input 2),
    else the first computed, non-bool input, else input 0."""
    typed = tflm_kernels.typed_inputs(op.name)
    if typed is not None:
        picked = [op.inputs[i] for i in typed if i < len(op.inputs) and op.inputs[i] >= 0]
        return model.tensors[picked[0]] if picked else None
    ins = [model.tensors[i] for i in op.inputs if i >= 0]
    return next((t for t in ins if not t.is_constant and t.dtype != "bool"), ins[0] if ins else None)


def _tflite_op_findings(model: TFLiteModel, op, quantize: str) -> list[Finding]:
    label, ops = _op_label(model, op), [op.name]
    if op.name == "CUSTOM":
        return custom_op_findings(label, op.custom_code or "?")
    k = KERNELS.get(op.name)
    if k is None:
        return [Finding(label, op.name, ops, "error", not_in_tflm(op.name), missing_hint(op.name))]
    ins = [model.tensors[i] for i in op.inputs if i >= 0]
    outs = [model.tensors[i] for i in op.outputs if i >= 0]
    data = _data_tensor(model, op)
    weights = [model.tensors[i] for pos, i in enumerate(op.inputs)
               if i >= 0 and tflm_kernels.role(op.name, pos) == tflm_kernels.WEIGHTS]
    facts = OpFacts(
        op.name, op.name, quantize,
        dtype=data.dtype if data is not None else None,
        output_dtype=outs[0].dtype if outs else None,
        rank=len(data.shape) if data is not None else None,
        runtime_inputs=tuple((i, f"{op.name} input {i}") for i, t in enumerate(op.inputs)
                             if t >= 0 and not model.tensors[t].is_constant),
        inputs=len(ins),
        per_channel_input=any(t.per_channel for t in ins),
        hybrid=data is not None and data.dtype == "float32"
        and any(t.is_constant and t.dtype in ("int8", "uint8") for t in weights))
    out = [Finding(label, op.name, ops, "error", message, hint) for _, message, hint in breaches(facts, k)]
    if softmax_aborts(classes := softmax_abort_classes(model, op)):
        out.append(Finding(label, op.name, ops, "risk", softmax_abort_message(classes), SOFTMAX_ABORT_HINT))
    return out


def missing_hint(op: str) -> str:
    """What to do about a builtin TFLM lacks; for a layer ONNX has too, the rewrite rules that unblock it there."""
    hint, onnx_op = tflm_kernels.missing_hint(op), tflm_kernels.ONNX_LAYER.get(op)
    rules = rule_hint(onnx_op) if onnx_op else ""
    return f"{hint}; converting from PyTorch/ONNX, {rules}" if rules else hint


def softmax_abort_classes(model: TFLiteModel, op) -> int | None:
    """The class count of an int8-to-int8 SOFTMAX that TFLM aborts on when its logits are flat, else None."""
    if op.name != "SOFTMAX" or not op.inputs or not op.outputs or op.inputs[0] < 0:
        return None
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    classes = x.shape[-1] if x.shape else 0
    if x.dtype == y.dtype == "int8" and softmax_aborts(classes):
        return classes
    return None


def analyse_tflite(tflite_bytes: bytes, target: str = "tflm") -> CheckResult:
    """Check a .tflite flatbuffer against TFLM's kernels: op codes, tensor types, quantization, shapes."""
    check_target(target)
    model = read_tflite(tflite_bytes)
    quantize = _tflite_quantize(model)
    findings = _tflite_model_findings(model)
    nodes = []
    for op in model.ops:
        op_findings = _tflite_op_findings(model, op, quantize)
        findings += op_findings
        nodes.append({"name": _op_label(model, op), "op": op.name if op.name != "CUSTOM" else f"CUSTOM:{op.custom_code}",
                      "tflite_ops": [op.name], "verdict": verdict(op_findings), "module": None})
    scale_findings = (check_softmax_scales(model) + check_rescale_scales(model)
                      + check_activation_scales(model))
    findings += scale_findings
    for f in scale_findings:
        for n in nodes:
            if n["name"] == f.node:
                n["verdict"] = "error"
    return check_result(target, quantize, findings, nodes)


def _tflite_model_findings(model) -> list[Finding]:
    findings = []
    # TFLM reads only `shape`, never `shape_signature`: a -1 there (typically the batch of
    # TensorFlow's own converter output) runs with the stored size, so it is a warning, not a block.
    dynamic = [t for t in model.tensors if any(d < 0 for d in t.shape_signature)]
    if dynamic:
        t = dynamic[0]
        batch_only = all(d >= 0 for x in dynamic for d in x.shape_signature[1:])
        findings.append(Finding(t.name, "Tensor", [], "warning",
                                f"{len(dynamic)} tensor(s) have {'a dynamic batch' if batch_only else 'dynamic dimensions'}"
                                f" (e.g. {t.name} {list(t.shape_signature)}); TFLM ignores that and runs the stored "
                                f"shape {list(t.shape)}.",
                                "" if batch_only else "convert with fixed input shapes (hub convert --input-shape)"))
    f16 = [t for t in model.tensors if t.dtype == "float16"]
    if f16:
        findings.append(Finding(f16[0].name, "Tensor", [], "error",
                                f"{len(f16)} float16 tensor(s) (e.g. {f16[0].name}); TFLM has no float16 kernels.",
                                "convert to int8 or float32"))
    return findings + offset_buffer_findings(model) + island_findings(model)


OFFSET_BUFFERS_MESSAGE = ("TFLM ignores buffers stored outside the flatbuffer: this model will run on uninitialised "
                          "weights")
OFFSET_BUFFERS_HINT = ("save the model again with every buffer inside the flatbuffer (Buffer.data = the file's bytes at "
                       "offset..offset+size, offset = size = 0); ai-edge-quantizer moves them out once weights pass "
                       f"{EXTERNAL_TOTAL_BYTES // 1024} KiB")


def offset_buffer_findings(model: TFLiteModel) -> list[Finding]:
    """Weights stored after the flatbuffer (Buffer.offset): TFLM loads and invokes such a model on uninitialised
    arena memory, with no error (hub.knowledge.tflm_buffers). hub verify fails on it too."""
    moved = model.offset_buffers()
    if not moved:
        return []
    names = [name for _, tensors, _ in moved for name in tensors]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    total = sum(size for _, _, size in moved)
    return [Finding(names[0], "Buffer", [], "error",
                    f"{OFFSET_BUFFERS_MESSAGE} ({total:,} B in {len(names)} tensor(s) at Buffer.offset: {shown}); "
                    "TFLM loads and invokes it without an error.",
                    OFFSET_BUFFERS_HINT)]


def island_findings(model: TFLiteModel) -> list[Finding]:
    """A warning per float island (hub.tflite.islands): it runs, in float, between DEQUANTIZE and QUANTIZE."""
    findings = []
    for island in float_islands(model):
        ops = ", ".join(f"#{o.index} {o.name}" for o in island.ops)
        consts = f" and {island.constant_bytes:,} B of float constants" if island.constants else ""
        first = model.ops[island.ops[0].index]
        findings.append(Finding(_op_label(model, first), first.name, [o.name for o in island.ops], "warning",
                                f"computes in float32 between DEQUANTIZE and QUANTIZE: ops {ops}, "
                                f"{island.activation_bytes:,} B of float activations ({island.peak_live_bytes:,} B "
                                f"live at once){consts}: slow on an MCU without an FPU.",
                                "quantize these ops: give them int8 kernels or rewrite the layer with ops that have "
                                "them (hub convert rewrites some)"))
    return findings


def _tflite_quantize(model) -> str:
    """int8 / int16x8 / float32, from the model's input/output and activation types."""
    kinds = {model.tensors[i].dtype for i in (*model.inputs, *model.outputs)}
    activations = {t.dtype for t in model.tensors if not t.is_constant}
    if "int16" in activations and "int8" not in kinds:
        return "int16x8"
    if "int8" in kinds or ("int8" in activations and "float32" not in activations):
        return "int8"
    if "float16" in activations or any(t.dtype == "float16" for t in model.tensors):
        return "float16"
    return "float32" if "float32" in activations else "int8"


__all__ = ["CheckResult", "analyse_tflite", "check_activation_scales", "check_rescale_scales", "check_softmax_scales",
           "scale_hazards",
           "abort_causes", "custom_op_findings", "island_findings", "offset_buffer_findings", "softmax_abort_classes"]
