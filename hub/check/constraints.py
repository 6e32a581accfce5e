"""TFLM's kernel constraints, each written once and used by both checkers: hub.check.onnx (the TFLite ops
onnx2tf will make of an ONNX graph) and hub.check.tflite (the ops of a .tflite file).

In the spirit of Arm Vela's tflite_supported_operators: a constraint is a small function of one kernel row
(hub.knowledge.tflm_kernels.KERNELS) and the facts a checker knows about one TFLite op (OpFacts). Its
docstring is the rule as the user reads it, formatted with the op and the kernel row; it returns one
(what happens, hint) pair per breach, and `breaches` makes each the message "<what happens>; <docstring>.".
A fact a checker does not know is None, and the constraints reading it pass.

Beside them: the int8 softmax abort both checkers warn of, the hint naming the rewrite rules that
unblock an ONNX op (from hub.graph.rules: each rule's UNBLOCKS and DOES), and the CheckResult both return.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from hub.artifacts import CheckResult, Finding
from hub.graph.rules import RULES
from hub.knowledge import tflm_kernels
from hub.knowledge.tflm_kernels import KERNELS, Kernel
from hub.targets import Quantize, resolve

INT64_HINT = "no int64 arithmetic on TFLM: cast to int32 (or float) before this op"


@dataclass(frozen=True)
class OpFacts:
    """What a checker knows of one TFLite op as TFLM will get it; None: not known (its constraints pass)."""

    op: str  # the TFLite builtin
    subject: str  # how a message names what has the inputs (the ONNX node's op type, or the TFLite op)
    quantize: str = ""  # the model's mode (int8, int16x8, float32), for the hints
    dtype: str | None = None  # the type of the tensor that picks the kernel
    cast_to: str | None = None  # a CAST's output type
    index_dtype: str | None = None  # the type of input 1 when it is a run-time index
    output_dtype: str | None = None  # output 0's type, and why it is that (said after it)
    output_why: str = ""
    rank: int | None = None  # the rank the kernel is judged on
    broadcasts: bool | None = None  # the inputs' shapes differ
    runtime_inputs: tuple[tuple[int, str], ...] = ()  # (TFLite input index, its name) of inputs computed at run time
    inputs: int | None = None
    per_channel_input: bool | None = None
    hybrid: bool | None = None  # float32 activations with int8 weights


Constraint = Callable[[Kernel, OpFacts], list[tuple[str, str]]]


def _names(types) -> str:
    return ", ".join(sorted(types))


def data_type(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} kernel takes {types}"""
    found = []
    for dtype in (f.dtype, f.cast_to if f.op == "CAST" else None):
        if dtype is None or dtype == "unknown" or dtype in k.types:
            continue
        if dtype == "int64":
            hint = INT64_HINT
        elif f.quantize not in ("", "float32") and "float32" in k.types and dtype in ("int8", "int16"):
            hint = "replace this op, or convert with --quantize float32"
        else:
            hint = f"cast the input to one of {_names(k.types)} first"
        found.append((f"{f.op} gets {dtype} tensors", hint))
    return found


def index_type(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} takes {index_types} indices only"""
    if not k.index_types or f.index_dtype is None or f.index_dtype in k.index_types:
        return []
    return [(f"{f.op} gets {f.index_dtype} indices at run time", "cast the indices to int32 first")]


def output_type(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} writes {output_types} only and fails at invoke"""
    if not k.output_types or f.output_dtype is None or f.output_dtype in k.output_types:
        return []
    return [(f"{f.op} writes {f.output_dtype}{f.output_why}", "make the op write int32 (or do this step on the host)")]


def rank(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} takes at most {max_rank}-D"""
    limit = k.max_rank or k.rank
    if f.rank is None or limit is None or f.rank <= limit:
        return []
    return [(f"{f.op} gets a {f.rank}-D tensor", f"reshape to {limit}-D or fewer around this op")]


def broadcast_rank(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} broadcasts at most {broadcast_rank}-D"""
    if not k.broadcast_rank or not f.broadcasts or f.rank is None or f.rank <= k.broadcast_rank:
        return []
    return [(f"{f.op} broadcasts {f.rank}-D shapes", f"expand the smaller operand to the full shape, or reshape "
             f"to {k.broadcast_rank}-D")]


def constant_inputs(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} needs it constant"""
    return [(f"{name} is computed at run time", "make it a constant in the source model (export with fixed sizes, "
             "or let hub normalise fold it)") for i, name in f.runtime_inputs if i in k.const_inputs]


def input_count(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM's {op} allows {max_inputs}"""
    if k.max_inputs is None or f.inputs is None or f.inputs <= k.max_inputs:
        return []
    return [(f"{f.subject} has {f.inputs} inputs", f"split it into steps of at most {k.max_inputs} inputs")]


def per_channel(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM takes per-channel scales only in {per_channel_ops}"""
    if k.per_channel or not f.per_channel_input:
        return []
    return [(f"{f.op} has a per-channel quantized input", "requantize that tensor per-tensor")]


def hybrid(k: Kernel, f: OpFacts) -> list[tuple[str, str]]:
    """TFLM rejects hybrid models"""
    if not f.hybrid:
        return []
    return [(f"{f.op} takes float32 activations with int8 weights (a hybrid, dynamic-range model)",
             "convert with full-integer int8 (hub convert --quantize int8) or float32")]


# In the order a checker reports them for one op.
KERNEL_CONSTRAINTS: tuple[Constraint, ...] = (data_type, index_type, output_type, rank, broadcast_rank,
                                              constant_inputs, input_count, per_channel, hybrid)


def reason(constraint: Constraint, op: str, k: Kernel | None = None) -> str:
    """A constraint's docstring for one op: the rule as the user reads it."""
    k = k or KERNELS.get(op)
    per_channel_ops = sorted(name for name, kernel in KERNELS.items() if kernel.per_channel)
    fields = {"op": op, "per_channel_ops": f"{', '.join(per_channel_ops[:-1])} and {per_channel_ops[-1]}"}
    if k is not None:
        fields.update(types=_names(k.types), index_types=_names(k.index_types), output_types=_names(k.output_types),
                      max_rank=k.max_rank or k.rank, broadcast_rank=k.broadcast_rank, max_inputs=k.max_inputs)
    return constraint.__doc__.format(**fields)


def breaches(f: OpFacts, k: Kernel) -> list[tuple[Constraint, str, str]]:
    """(constraint, message, hint) for each constraint of TFLM's kernel `k` the op breaks."""
    return [(c, f"{what}; {reason(c, f.op, k)}.", hint) for c in KERNEL_CONSTRAINTS for what, hint in c(k, f)]


def not_in_tflm(op: str, subject: str | None = None) -> str:
    """The message for a TFLite builtin TFLM has no kernel for (KERNELS has no row)."""
    return f"{subject} becomes TFLite {op}, which is not in TFLM." if subject else f"TFLite {op} is not in TFLM."


# ---------------------------------------------------------------- the int8 softmax abort

# On a .tflite file hub cannot change (hub check, hub verify): what to do about it.
SOFTMAX_ABORT_HINT = ("convert the source model with hub convert, whose softmax_int16 pass has the SOFTMAX write int16 "
                      "and QUANTIZE back to int8 (no abort); or end the int8 model before the softmax (argmax needs "
                      "none), or convert with --quantize int16x8")


def softmax_aborts(classes: int | None) -> bool:
    """An int8-to-int8 SOFTMAX over this many classes aborts when its logits are flat."""
    return classes is not None and classes >= tflm_kernels.SOFTMAX_INT8_ABORT_CLASSES


def softmax_abort_message(classes: int) -> str:
    return (f"int8 SOFTMAX over {classes:,} classes: TFLM aborts the program at invoke whenever "
            f"{tflm_kernels.SOFTMAX_INT8_ABORT_CLASSES} or more of them score level with the top one "
            "(reference/softmax.h exponent check); flat logits, as from placeholder weights, hit it.")


def softmax_int16_finding(node: str, op: str, tflite_ops: list[str], classes: int) -> Finding:
    """What hub convert does about the abort on a graph it converts (hub.tflite.passes.softmax_int16): a rewrite,
    not a risk."""
    return Finding(node, op, tflite_ops, "rewrite",
                   f"{softmax_abort_message(classes)} hub convert has the SOFTMAX write int16 (float32 past "
                   f"{tflm_kernels.SOFTMAX_INT8_MAX_CLASSES:,} classes) and QUANTIZE it back to the int8 output (the "
                   "softmax_int16 flatbuffer pass): same outputs, no abort.",
                   "costs ~200 B of flatbuffer and an int16 row (2 B a class) of arena; end the model before the "
                   "softmax to save both (argmax needs none)")


# ---------------------------------------------------------------- the rewrite rules that unblock an op

@lru_cache(maxsize=None)
def rule_hint(onnx_op: str) -> str:
    """'the <rule> rule <DOES> (on unless --no-rewrite)' for each rule whose UNBLOCKS has `onnx_op`; "" if none."""
    said = [f"the {rule.__name__.rsplit('.', 1)[-1]} rule {rule.DOES}" for rule in RULES if onnx_op in rule.UNBLOCKS]
    return f"{'; '.join(said)} (on unless --no-rewrite)" if said else ""


def with_rule(hint: str, onnx_op: str, before: bool = True) -> str:
    """`hint` with the rules that unblock `onnx_op` named (first, or after it)."""
    rule = rule_hint(onnx_op)
    if not rule:
        return hint
    return "; ".join(part for part in ((rule, hint) if before else (hint, rule)) if part)


# ---------------------------------------------------------------- what both checkers return

def check_target(target: str, quantize: str = "int8") -> Quantize:
    return resolve(target, quantize, command="check")[1]


def verdict(findings: list[Finding]) -> str:
    """One node's verdict: its worst finding's severity, else "ok"."""
    severities = {f.severity for f in findings}
    return next((s for s in ("error", "risk", "warning") if s in severities), "ok")


def check_result(target: str, quantize: str, findings: list[Finding], nodes: list[dict]) -> CheckResult:
    return CheckResult(not any(f.severity == "error" for f in findings), target, quantize, findings, nodes)
