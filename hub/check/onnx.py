"""`hub check` on an ONNX graph: predict, node by node and before any conversion, what TFLite Micro will
refuse in the model onnx2tf makes of it.

It judges the graph conversion sees: hub convert's stages (normalise, rewrites) run before it, and
`as_converted` folds what onnx2tf computes while converting (shape chains, constant subgraphs), so a rule
fires only on what reaches the TFLite model. Each node goes through two tables: what onnx2tf turns it into (hub.knowledge.onnx2tf_ops, with the
conditions its variants name in CONDITIONS here) and what TFLM's kernels accept (hub.knowledge.tflm_kernels,
judged by hub.check.constraints, as for a .tflite file). Whole-model rules (dynamic shapes, input types,
float16, the int8 softmax abort hub convert's softmax_int16 pass removes) run beside them. Nothing here imports tensorflow or torch.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import onnx

from hub.artifacts import CheckResult, Finding, PassResult
from hub.check.constraints import (OpFacts, breaches, check_result, check_target, hybrid, input_count, not_in_tflm,
                                   output_type, reason, softmax_aborts, softmax_int16_finding, verdict, with_rule)
from hub.errors import InputError
from hub.graph.network import TensorMeta, host_split, module_path_from_name, ordered_nodes, tensor_table
from hub.graph.passes import fold_constants
from hub.graph.shapes import infer_shapes, with_shapes
from hub.knowledge import onnx2tf_ops, tflm_kernels
from hub.knowledge.tflm_kernels import KERNELS, Kernel
from hub.targets import Quantize

FLOAT_TYPES = {"float32", "float64", "float16", "bfloat16"}
ONNX_STD_DOMAINS = {"", "ai.onnx"}
# Seen in the node tests: these model input types stop onnx2tf or the TFLite converter (add_uint8, min_int8,
# sub_uint16, ...), except int8 inputs read only by ops onnx2tf casts first (CASTS_INTEGER_INPUTS) and int16
# inputs read only by ops seen converting them (CONVERTS_INT16_INPUTS; TFLM's kernels then decide).
CONVERTER_REFUSED_INPUT_TYPES = {"int8", "uint8", "int16", "uint16", "uint32", "uint64"}
DYNAMIC_QUANT_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
ACTIVATION_OPS = {"Relu": "RELU"}  # ONNX activations onnx2tf/TFLite fuse into the producing op


@dataclass
class NodeView:
    """One ONNX node with what the graph knows about its tensors."""

    name: str
    node: onnx.NodeProto
    tensors: dict[str, TensorMeta]
    consumers: int = 1  # how many nodes read its first output
    graph_inputs: frozenset[str] = frozenset()  # the model's run-time inputs
    reshaped_inputs: frozenset[str] = frozenset()  # model inputs some Reshape/Flatten reads directly
    graph_outputs: frozenset[str] = frozenset()
    unweighted: frozenset[str] = frozenset()  # tensors computed from model inputs with no learned weight between
    int32_indices: frozenset[str] = frozenset()  # ArgMax/ArgMin outputs hub.tflite.passes.argmax_int32 retypes

    @property
    def op(self) -> str:
        return self.node.op_type

    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def input(self, i: int) -> TensorMeta | None:
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        return self.tensors.get(self.node.input[i], TensorMeta(self.node.input[i], None, "unknown"))

    def inputs(self) -> list[TensorMeta]:
        return [m for m in (self.input(i) for i in range(len(self.node.input))) if m is not None]

    def output(self, i: int = 0) -> TensorMeta | None:
        if i >= len(self.node.output) or not self.node.output[i]:
            return None
        return self.tensors.get(self.node.output[i], TensorMeta(self.node.output[i], None, "unknown"))

    def const_value(self, i: int) -> np.ndarray | None:
        meta = self.input(i)
        return meta.value if meta is not None and meta.const else None

    def data_input(self) -> TensorMeta | None:
        """The tensor whose type picks the kernel: the first non-bool input (Where's x, not its condition)."""
        metas = self.inputs()
        return next((m for m in metas if m.dtype != "bool"), metas[0] if metas else self.output())


# Conditions the onnx2tf table's variants name; each reads attributes or shapes of one node.
def _rank(meta: TensorMeta | None) -> int | None:
    return meta.rank if meta is not None else None


def _const_scalar(view: NodeView, i: int) -> float | None:
    value = view.const_value(i)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(-1)[0])


def _clip_bounds(view: NodeView) -> tuple[float | None, float | None]:
    if view.attr("min") is not None or view.attr("max") is not None:  # opset < 11
        return view.attr("min"), view.attr("max")
    return _const_scalar(view, 1), _const_scalar(view, 2)


def _depthwise(view: NodeView) -> bool:
    x, group = view.input(0), view.attr("group", 1)
    return group > 1 and x is not None and x.rank == 4 and x.shape[1] == group


def _softmax_not_last(view: NodeView) -> bool:
    x = view.input(0)
    axis = view.attr("axis", -1)
    return x is not None and x.rank is not None and axis not in (-1, x.rank - 1)


def _expand_noop(view: NodeView) -> bool:
    x, y = view.input(0), view.output()
    return x is not None and y is not None and x.shape == y.shape and x.shape is not None


def _same_shapes(view: NodeView) -> bool:
    shapes = [m.shape for m in view.inputs()]
    return all(sh is not None for sh in shapes) and len(set(shapes)) == 1


def _rank_broadcast(view: NodeView) -> bool:
    ranks = {m.rank for m in view.inputs()}
    return None not in ranks and len(ranks) > 1 and max(ranks) >= 3


def _rank_broadcast_inputs(view: NodeView) -> bool:
    """Two model inputs of different ranks (3-D and up) meet here ([3,4,5] with [5]); a computed or
    constant operand is broadcast fine (rms_normalization_*_expanded runs in int8)."""
    metas = [m for m in view.inputs() if m.rank is not None]
    return len(metas) == 2 and all(m.name in view.graph_inputs for m in metas) \
        and len({m.rank for m in metas}) == 2 and max(m.rank for m in metas) >= 3


def _reshape_nd_input(view: NodeView) -> bool:
    """A 3-D or larger model input reshaped to another rank whose first dimension is over 1 ([2,3,4,5] ->
    [2,60]) while another model input is reshaped too (LayerNorm's expansion flattens X, W and B).
    Batch-1 flattening ([1,C,H,W] -> [1,CHW]) and a lone Flatten (flatten_negative_axis3 runs) are not."""
    x, y = view.input(0), view.output()
    if x is None or y is None or x.name not in view.graph_inputs or x.rank is None or y.rank is None \
            or len(view.reshaped_inputs) < 2:
        return False
    return x.rank >= 3 and y.rank != x.rank and isinstance(y.shape[0], int) and y.shape[0] > 1 if y.shape else False


def _split_uneven(view: NodeView) -> bool:
    x, parts, axis = view.input(0), view.attr("num_outputs"), view.attr("axis", 0)
    return bool(parts) and x is not None and x.rank is not None and isinstance(x.shape[axis], int) \
        and x.shape[axis] % parts != 0


def _maxpool_min_pad_computed(view: NodeView) -> bool:
    """The -3.4e38 pad of `_maxpool_min_pad` on a computed input: int8 calibration spreads the pad's range
    to the producer's output scale. On a model input the range comes from the data and PADV2's constant
    just clamps to the int8 minimum (maxpool_2d_pads and maxpool_2d_ceil run on TFLM in int8)."""
    x = view.input(0)
    return _maxpool_min_pad(view) and x is not None and not x.model_input


def _maxpool_min_pad(view: NodeView) -> bool:
    """onnx2tf pads this 2-D MaxPool with -3.4e38 (onnx2tf_ops.maxpool_explicit_pads)."""
    x = view.input(0)
    if x is None or x.rank != 4 or not all(isinstance(d, int) and d > 0 for d in x.shape[2:]):
        return False
    auto_pad = view.attr("auto_pad", b"NOTSET")
    pads = onnx2tf_ops.maxpool_explicit_pads(
        tuple(x.shape[2:]), list(view.attr("kernel_shape")), list(view.attr("strides") or [1, 1]),
        list(view.attr("pads") or [0, 0, 0, 0]), bool(view.attr("ceil_mode", 0)),
        auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad)
    return any(pads)


CONDITIONS: dict[str, Callable[[NodeView], bool]] = {
    "maxpool_min_pad_computed": _maxpool_min_pad_computed,
    "same_shapes": _same_shapes,
    "rank_broadcast": _rank_broadcast,
    "rank_broadcast_inputs": _rank_broadcast_inputs,
    "reshape_nd_input_keeps_leading_dim": _reshape_nd_input,
    "resize_antialias": lambda v: v.attr("antialias", 0) == 1,
    "scale_lower_rank": lambda v: None not in (_rank(v.input(0)), _rank(v.input(1))) and _rank(v.input(0)) >= 3
    and _rank(v.input(1)) < _rank(v.input(0)),
    "always": lambda v: True,
    "graph_output": lambda v: bool(v.node.output) and v.node.output[0] in v.graph_outputs,
    "isinf_one_sided": lambda v: v.attr("detect_positive", 1) == 0 or v.attr("detect_negative", 1) == 0,
    "lp_p2": lambda v: v.attr("p", 2) == 2,
    "dilated": lambda v: any(d != 1 for d in (v.attr("dilations") or [])),
    "blocked": lambda v: (v.attr("block_size", 0) or 0) > 0,
    "shape_clip": lambda v: _rank(v.input(0)) is not None and any(
        x is not None and not -_rank(v.input(0)) <= x <= _rank(v.input(0)) for x in (v.attr("start"), v.attr("end"))),
    "l2_axis_0": lambda v: v.attr("axis", -1) == 0 and v.attr("p", 2) == 2,
    "float64_graph_output": lambda v: v.output() is not None and v.output().dtype == "float64"
    and v.node.output[0] in v.graph_outputs,
    "split_num_outputs_uneven": _split_uneven,
    # min and max both given as empty names (clip_default_inbounds: KeyError 'tf_node'); one bound with the other
    # empty converts (onnx2tf's Clip.py takes MAXIMUM or MINIMUM alone: F.normalize's clamp_min in SwiftFormer)
    "empty_optional_input": lambda v: len(v.node.input) > 1 and not any(v.node.input[1:]),
    "integer_inputs": lambda v: (v.data_input() or TensorMeta("", None, "")).dtype.startswith(("int", "uint")),
    "elu_alpha_not_1": lambda v: v.attr("alpha", 1.0) != 1.0,
    "exponent_2_or_3": lambda v: _const_scalar(v, 1) in (2.0, 3.0),
    "exponent_minus_half": lambda v: _const_scalar(v, 1) == -0.5,
    "single_input": lambda v: len(v.inputs()) == 1,
    "two_inputs": lambda v: len(v.inputs()) == 2,
    "same_type_cast": lambda v: v.input(0) is not None and v.output() is not None
    and v.input(0).dtype == v.output().dtype,
    "clip_relu6": lambda v: _clip_bounds(v) == (0.0, 6.0),
    "clip_relu": lambda v: _clip_bounds(v)[0] == 0.0 and _clip_bounds(v)[1] is None,
    "clip_min_only": lambda v: _clip_bounds(v)[0] is not None and _clip_bounds(v)[1] is None,
    "clip_max_only": lambda v: _clip_bounds(v)[0] is None and _clip_bounds(v)[1] is not None,
    "clip_none": lambda v: _clip_bounds(v) == (None, None) and len(v.inputs()) == 1,
    "softmax_not_last_axis": _softmax_not_last,
    "conv3d": lambda v: _rank(v.input(0)) == 5,
    "conv1d": lambda v: _rank(v.input(0)) == 3,
    "pool3d": lambda v: _rank(v.input(0)) == 5,
    "depthwise": _depthwise,
    "maxpool_indices": lambda v: len(v.node.output) > 1 and bool(v.node.output[1]),
    "maxpool_min_pad": _maxpool_min_pad,
    "gemm_non_const_b": lambda v: v.input(1) is not None and not v.input(1).const,
    "matmul_const_2d_rhs": lambda v: v.input(1) is not None and v.input(1).const and v.input(1).rank == 2,
    "lp_norm_l1": lambda v: v.attr("p", 2) == 1,
    "select_last_index": lambda v: v.attr("select_last_index", 0) == 1,
    "identity_perm": lambda v: list(v.attr("perm") or []) == sorted(v.attr("perm") or [None]),
    "uneven_split": lambda v: v.input(1) is not None or v.attr("split") is not None,
    "scalar_const_index": lambda v: v.input(1) is not None and v.input(1).const and v.input(1).rank == 0,
    "pad_reflect": lambda v: v.attr("mode", b"constant") in (b"reflect", "reflect"),
    "pad_edge": lambda v: v.attr("mode", b"constant") in (b"edge", "edge"),
    "pad_constant_value": lambda v: v.input(2) is not None and _const_scalar(v, 2) not in (None, 0.0),
    "expand_is_noop": _expand_noop,
    "crd_mode": lambda v: v.attr("mode", b"DCR") in (b"CRD", "CRD"),
    "resize_nearest": lambda v: v.attr("mode", b"nearest") in (b"nearest", "nearest"),
    "resize_linear": lambda v: v.attr("mode", b"nearest") in (b"linear", "linear", b"bilinear"),
    "resize_cubic": lambda v: v.attr("mode", b"nearest") in (b"cubic", "cubic"),
}


def _tflite_ops(view: NodeView, low: onnx2tf_ops.Lowering) -> list[str]:
    for condition, ops in low.variants:
        if CONDITIONS[condition](view):
            return list(ops)
    return list(low.tflite_ops)


@lru_cache(maxsize=1)
def _onnx2tf_converters() -> frozenset[str]:
    """ONNX ops onnx2tf has a converter module for, found on disk without importing onnx2tf (or TF)."""
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    ops_dir = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return frozenset(p.stem for p in ops_dir.glob("*.py") if not p.stem.startswith("_"))


def _finding(view: NodeView, ops: list[str], severity: str, message: str, hint: str = "") -> Finding:
    return Finding(view.name, view.op, list(ops), severity, message, hint)


def _runtime_dtype(dtype: str, quantize: str) -> str:
    """The type a tensor has in the converted model: floats follow the quantize mode, except float64,
    which onnx2tf keeps (cast_DOUBLE_to_FLOAT: the .tflite input is FLOAT64) and TFLM has no kernel for."""
    if dtype == "float64":
        return dtype
    if dtype in FLOAT_TYPES:
        return Quantize(quantize).activation_dtype
    return dtype


def _broadcasts(view: NodeView) -> bool:
    shapes = {m.shape for m in view.inputs() if m.shape is not None}
    return len(shapes) > 1


def _kernel_findings(view: NodeView, ops: list[str], op: str, k: Kernel, quantize: str,
                     low: onnx2tf_ops.Lowering, fixed: str | None = None) -> list[Finding]:
    """One TFLite op the node becomes against its TFLM kernel (hub.check.constraints), with what the graph
    predicts of its tensors."""
    data = view.data_input()
    index = view.input(1)
    runtime = []
    for onnx_index, tfl_index in low.const_operands.items():
        meta = view.input(onnx_index)
        from_output = onnx_index in low.shape_operands and view.output() is not None and view.output().static
        if meta is not None and not meta.const and not from_output:
            runtime.append((tfl_index, f"input {onnx_index} ({meta.name}) of {view.op}"))
    writes = low.output_dtype if op == ops[0].split("@")[0] and view.node.output[0] not in view.int32_indices else ""
    facts = OpFacts(
        op, view.op, quantize,
        dtype=fixed or (_runtime_dtype(data.dtype, quantize) if data is not None else "unknown"),
        cast_to=_runtime_dtype(view.output().dtype, quantize) if op == "CAST" and view.output() is not None else None,
        # input 1 is the index only when the node is this one op
        index_dtype=index.dtype if len(set(ops)) == 1 and index is not None and not index.const else None,
        output_dtype=writes or None, output_why=f" (onnx2tf keeps {view.op}'s {writes} output)",
        rank=max((m.rank for m in view.inputs() if m.rank is not None), default=None),
        broadcasts=_broadcasts(view), runtime_inputs=tuple(runtime), inputs=len(view.inputs()))
    out = []
    for constraint, message, hint in breaches(facts, k):
        if constraint is output_type:
            hint = with_rule(low.hint, view.op) or "do this step on the host"
        elif constraint is input_count:  # a rule that rewrites the op (chain_concat) does this
            hint = with_rule(hint, view.op, before=False)
        out.append(_finding(view, ops, "error", message, hint))
    return out


def _op_findings(view: NodeView, ops: list[str], op: str, quantize: str, low: onnx2tf_ops.Lowering) -> list[Finding]:
    if op.startswith("FlexOp:"):
        return [_finding(view, ops, "error", f"{view.op} becomes {op[7:]}, which needs a Flex op; TFLM has none.",
                         with_rule(low.hint, view.op) or "rewrite the layer with builtin ops")]
    op, _, fixed = op.partition("@")
    ops = [o.split("@")[0] for o in ops]
    k = KERNELS.get(op)
    if k is None:
        hint = with_rule(low.hint, view.op) or tflm_kernels.missing_hint(op)
        return [_finding(view, ops, "error", not_in_tflm(op, view.op), hint)]
    data = view.data_input()
    if not fixed and quantize != "float32" and op in onnx2tf_ops.FLOAT_FALLBACK \
            and (data is None or data.dtype in FLOAT_TYPES - {"float64"}):
        fixed = "float32"  # the converter keeps it in float32 between DEQUANTIZE and QUANTIZE
    return _kernel_findings(view, ops, op, k, quantize, low, fixed or None)


def check_node(view: NodeView, quantize: str) -> tuple[list[str], list[Finding]]:
    """The TFLite ops one ONNX node becomes and what TFLM will say about each."""
    if view.node.domain not in ONNX_STD_DOMAINS:
        return [], [_finding(view, [], "error", f"{view.op} is a custom op (domain {view.node.domain}); onnx2tf "
                             "and TFLM have no kernel for it.", "replace it with standard ONNX ops before export")]
    low = onnx2tf_ops.lowering(view.op)
    if low is None:
        if view.op in _onnx2tf_converters():
            return [], [_finding(view, [], "error", f"hub has no rule for what onnx2tf makes of {view.op}, so it "
                                 "cannot vouch that TFLM runs it.", "run hub convert to find out")]
        return [], [_finding(view, [], "error", f"{onnx2tf_ops.ONNX2TF_VERSION.split(' (')[0]} has no converter for {view.op}.",
                             "replace it with standard ONNX ops onnx2tf converts")]
    ops = _tflite_ops(view, low)
    if low.fails:
        return ops, [_finding(view, ops, "error", f"{view.op}: {low.fails}.", with_rule(low.hint, view.op))]
    for condition, why in low.fails_when + (low.fails_quantized if quantize != "float32" else ()):
        if CONDITIONS[condition](view):
            return ops, [_finding(view, ops, "error", f"{why}.", with_rule(low.hint, view.op))]
    for i in low.static_operands:
        meta = view.input(i)
        if meta is not None and not meta.const and i in low.shape_operands and view.output() is not None \
                and view.output().static:
            if quantize == "float32":
                continue  # onnx2tf takes the static output shape instead
            return ops, [_finding(view, ops, "error", f"input {i} ({meta.name}) of {view.op} is a run-time tensor; "
                                  f"onnx2tf uses the output shape in float32, but in {quantize} the TFLite converter's "
                                  "calibration fails on it (resize and reshape node tests).",
                                  "make it a constant, or convert with --quantize float32")]
        if meta is not None and not meta.const:
            return ops, [_finding(view, ops, "error", f"input {i} ({meta.name}) of {view.op} is a run-time tensor; "
                                  "onnx2tf needs its value when converting.", "make it a constant (fixed axes, "
                                  "sizes and weights), or let hub normalise fold it")]
    findings: list[Finding] = []
    for op in dict.fromkeys(ops):
        findings += _op_findings(view, ops, op, quantize, low)
    return [o.split("@")[0] for o in ops], findings


def module_path(node: onnx.NodeProto) -> str | None:
    """The PyTorch module a node came from, when the export kept it (metadata or a /a/b/Op name)."""
    for prop in node.metadata_props:
        if prop.key == "pytorch.module" and prop.value:  # set by hub.adapters.pytorch
            return prop.value
        if prop.key in ("pkg.torch.onnx.name_scopes", "namespace") and prop.value:
            scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",") if s.strip(" '\"")]
            return scopes[-1] if prop.key == "pkg.torch.onnx.name_scopes" and scopes else prop.value
    return module_path_from_name(node.name) or None


def _whole_model_findings(model: onnx.ModelProto, tensors: dict[str, TensorMeta], quantize: str) -> list[Finding]:
    findings: list[Finding] = []
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        meta = tensors.get(vi.name)
        if vi.name in inits or meta is None:
            continue
        readers = [n.op_type for n in model.graph.node if vi.name in n.input]
        converts = (meta.dtype == "int8" and all(op in onnx2tf_ops.CASTS_INTEGER_INPUTS for op in readers)) or \
            (meta.dtype == "int16" and all(op in onnx2tf_ops.CONVERTS_INT16_INPUTS for op in readers))
        if meta.dtype in CONVERTER_REFUSED_INPUT_TYPES and not converts:
            findings.append(Finding(vi.name, "Input", [], "error", f"input {vi.name} is {meta.dtype}; onnx2tf and "
                                    "the TFLite converter take float32, int32, int64 or bool model inputs.",
                                    "feed float32 (or int32) and cast inside the model"))
        if meta.dtype == "float64" and quantize != "float32":
            findings.append(Finding(vi.name, "Input", [], "error", f"input {vi.name} is float64; onnx2tf keeps it "
                                    f"float64 and the {quantize} converter cannot calibrate it.",
                                    "feed float32 and cast inside the model"))
        if meta.shape == ():
            findings.append(Finding(vi.name, "Input", [], "error", f"input {vi.name} is a scalar (0-D); onnx2tf "
                                    "turns it into a tensor of unknown shape.", "give it shape [1]"))
        elif not meta.static:
            dims = ",".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in (meta.shape or ()))
            findings.append(Finding(vi.name, "Input", [], "error",
                                    f"input {vi.name} has a dynamic shape ({dims or 'unknown rank'}); TFLM runs "
                                    "static shapes only.", f"pass --input-shape {vi.name}=1,... with fixed sizes"))
    unmapped = sorted(n for n, m in tensors.items() if m.dtype in onnx2tf_ops.UNMAPPED_TYPES)
    if unmapped:
        kinds = sorted({tensors[n].dtype for n in unmapped})
        findings.append(Finding(unmapped[0], "Tensor", [], "error",
                                f"{len(unmapped)} tensor(s) of type {', '.join(kinds)} (e.g. {unmapped[0]}); onnx2tf "
                                "1.29.24 has no TensorFlow type for it and stops.", "export the model in float32"))
    inits = {i.name for i in model.graph.initializer}
    if model.graph.node and not [i for i in model.graph.input if i.name not in inits]:
        findings.append(Finding("graph", "Model", [], "error", "the model has no run-time input; onnx2tf builds "
                                "models from their inputs and stops (test_constant).", "give the model an input"))
    float16 = sorted(n for n, m in tensors.items() if m.dtype == "float16")
    if float16:
        findings.append(Finding(float16[0], "Tensor", [], "warning",
                                f"{len(float16)} float16 tensor(s) (e.g. {float16[0]}); TFLM has no float16 kernels, "
                                "so onnx2tf computes them in float32.", "export the model in float32"))
    return findings


def _node_level_rules(view: NodeView, ops: list[str], quantize: str) -> list[Finding]:
    out: list[Finding] = []
    if view.op in DYNAMIC_QUANT_OPS:
        out.append(_finding(view, ops, "error", f"{view.op} makes a dynamically quantized (hybrid) model; "
                            f"{reason(hybrid, view.op)}.", "export in float32 and let hub quantize to int8"))
    rhs = view.input(1)
    if Quantize(quantize).quantized and view.op in ("MatMul", "Gemm") and rhs is not None and not rhs.const \
            and view.node.input[1] in view.unweighted:
        # The second operand is a model input reshaped or scaled (the node tests): the converter's calibration
        # fails (gemm_*, attention_*_expanded) or single MatMuls (matmul_2d/3d) run with wrong outputs.
        # Attention over projections by learned weights (the tiny ViT's q @ k^T) quantizes and runs.
        out.append(_finding(view, ops, "error", f"{view.op} multiplies two run-time tensors; in {quantize} the "
                            "converter fails or BATCH_MATMUL loses the result (seen in the node tests).",
                            "make one operand a constant weight, or convert with --quantize float32"))
    outs = [view.output(i) for i in range(len(view.node.output))]
    if any(m is not None and m.shape is not None and not m.static for m in outs) and \
            all(m.static for m in view.inputs() if m.shape is not None):
        out.append(_finding(view, ops, "error", f"{view.op}'s output shape depends on the data; TFLM needs "
                            "static shapes.", "give the output a fixed size (pad or mask instead)"))
    classes = _softmax_classes(view) if "SOFTMAX" in ops else None
    if quantize == "int8" and softmax_aborts(classes):
        out.append(softmax_int16_finding(view.name, view.op, ops, classes))  # hub convert's softmax_int16 pass
    return out


def _softmax_classes(view: NodeView) -> int | None:
    """The length of the axis a Softmax normalises (opset >= 13: one axis, default the last)."""
    meta = view.input(0)
    if meta is None or not meta.shape or not meta.static:
        return None
    axis = next((a.i for a in view.node.attribute if a.name == "axis"), -1)
    return int(meta.shape[axis]) if -len(meta.shape) <= axis < len(meta.shape) else None


def _fused_into(view: NodeView, producer_ops: dict[str, list[str]], producer_of: dict[str, str]) -> str | None:
    """The TFLite op a Relu/Relu6 fuses into, when its producer has a fused activation and no other reader."""
    act = ACTIVATION_OPS.get(view.op)
    if view.op == "Clip" and _clip_bounds(view) in ((0.0, 6.0), (0.0, None)):
        act = "RELU6" if _clip_bounds(view)[1] == 6.0 else "RELU"
    src = producer_of.get(view.node.input[0]) if view.node.input else None
    if act is None or src is None or view.consumers < 0:
        return None
    ops = producer_ops.get(src) or []
    k = KERNELS.get(ops[-1]) if ops else None
    return ops[-1] if k is not None and act in k.fused_activations else None


SOFTMAX_ONNX = {"SOFTMAX": "Softmax", "LOG_SOFTMAX": "LogSoftmax"}
BROADCASTING_BINARY = {"Add", "Sub", "Mul", "Div"}


def _tile_into_broadcast(node: onnx.NodeProto, tensors: dict[str, TensorMeta],
                         reader_nodes: dict[str, list[onnx.NodeProto]]) -> bool:
    """A Tile that only repeats unit axes for ADD/SUB/MUL/DIV readers whose other operand has the tiled shape:
    the TFLite converter's optimizer drops the TILE and lets the binary op broadcast (SwiftFormer's
    `global_queries.repeat(1, n, 1) * key` converts with no TILE; TFLM has none)."""
    if node.op_type != "Tile" or len(node.input) < 2:
        return False
    data, repeats, out = tensors.get(node.input[0]), tensors.get(node.input[1]), tensors.get(node.output[0])
    if data is None or repeats is None or repeats.value is None or out is None or not data.static or not out.static:
        return False
    if any(r != 1 and d != 1 for d, r in zip(data.shape, np.asarray(repeats.value).reshape(-1))):
        return False
    readers = reader_nodes.get(node.output[0], [])
    return bool(readers) and all(r.op_type in BROADCASTING_BINARY and len(r.input) == 2 and _other_has_shape(
        r, node.output[0], tuple(out.shape), tensors) for r in readers)


def _other_has_shape(node: onnx.NodeProto, name: str, shape: tuple, tensors: dict[str, TensorMeta]) -> bool:
    other = tensors.get(node.input[1] if node.input[0] == name else node.input[0])
    return other is not None and other.static and tuple(other.shape) == shape


def _reduced_axis(node: onnx.NodeProto, tensors: dict[str, TensorMeta], rank: int) -> int | None:
    """The one axis a ReduceSum/ReduceMax reduces (attribute before opset 13/18, constant input after)."""
    axes = next((list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        meta = tensors.get(node.input[1])
        axes = None if meta is None or meta.value is None else [int(v) for v in meta.value.reshape(-1)]
    return axes[0] % rank if axes and len(axes) == 1 else None


def _softmax_patterns(model: onnx.ModelProto, tensors: dict[str, TensorMeta]) -> tuple[dict[str, str], set[str]]:
    """Decomposed (log-)softmax the TFLite converter fuses back into one SOFTMAX / LOG_SOFTMAX.

    Exp(x - ReduceMax(x)) / ReduceSum(..), or (x - max) - Log(ReduceSum(Exp(x - max))), as ONNX's
    function expansions write them. Fused in the node tests only when the axis is ONNX axis 1 (the
    last axis of a 2-D tensor; the axis onnx2tf moves last for 3-D and up): softmax_axis_1_expanded,
    logsoftmax_example_1_expanded run as SOFTMAX/LOG_SOFTMAX, while axis 0, 2 and -1 of 3-D tensors keep
    EXP (int8 EXP then fails in TFLM). Returns {output of the last node: TFLite op}, {outputs of the
    nodes folded into it}.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    ends: dict[str, str] = {}
    parts: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Div" and len(node.input) == 2:
            exp, total = producer.get(node.input[0]), producer.get(node.input[1])
            op = "SOFTMAX"
        elif node.op_type == "Sub" and len(node.input) == 2:
            log = producer.get(node.input[1])
            total = producer.get(log.input[0]) if log is not None and log.op_type == "Log" else None
            exp = producer.get(total.input[0]) if total is not None else None
            op = "LOG_SOFTMAX"
            if exp is None or exp.input[0] != node.input[0]:
                continue
        else:
            continue
        if exp is None or total is None or exp.op_type != "Exp" or total.op_type != "ReduceSum" \
                or total.input[0] != exp.output[0]:
            continue
        x = tensors.get(exp.input[0])
        if x is None or x.rank is None or x.rank < 2 or _reduced_axis(total, tensors, x.rank) != 1:
            continue
        members = [exp, total] + ([log] if op == "LOG_SOFTMAX" else [])
        shift = producer.get(exp.input[0])
        if shift is not None and shift.op_type == "Sub" and producer.get(shift.input[1]) is not None \
                and producer[shift.input[1]].op_type == "ReduceMax":
            members += [shift, producer[shift.input[1]]]
        ends[node.output[0]] = op
        parts.update(m.output[0] for m in members)
    return ends, parts


def analyse_onnx(model: onnx.ModelProto, target: str = "tflm", quantize: str = "int8") -> CheckResult:
    """Predict TFLM's verdict on the model onnx2tf would make of this (normalised, static) ONNX graph."""
    quantize = check_target(target, quantize)
    model = as_converted(model)
    tensors = tensor_table(model)  # what hub.graph.network.build_graph puts on its edges, without networkx
    findings = _whole_model_findings(model, tensors, quantize)
    readers: dict[str, int] = {}
    reader_nodes: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
            reader_nodes.setdefault(name, []).append(node)
    softmax_ends, softmax_parts = _softmax_patterns(model, tensors)
    model_inputs = frozenset(i.name for i in model.graph.input) - {i.name for i in model.graph.initializer}
    unweighted = _unweighted_tensors(model, model_inputs, tensors)
    reshaped_inputs = frozenset(n.input[0] for n in model.graph.node
                                if n.op_type in ("Reshape", "Flatten") and n.input and n.input[0] in model_inputs)
    # hub normalise folds constant nodes except those producing a graph output: onnx2tf converts those.
    graph_outputs = {o.name for o in model.graph.output}
    int32_indices = _int32_indices(model)
    producer_of: dict[str, str] = {}
    producer_ops: dict[str, list[str]] = {}
    nodes: list[dict[str, Any]] = []
    for nid, node in ordered_nodes(model):
        view = NodeView(nid, node, tensors, readers.get(node.input[0], 0) if node.input else 0, model_inputs,
                        reshaped_inputs, frozenset(graph_outputs), unweighted=unweighted, int32_indices=int32_indices)
        out0 = node.output[0] if node.output else ""
        if all(tensors.get(o) is not None and tensors[o].const and o not in graph_outputs for o in node.output if o):
            ops, node_findings, node_verdict = [], [], "folded"  # constant subgraph: onnx2tf folds it
        elif out0 in softmax_parts or _tile_into_broadcast(node, tensors, reader_nodes):
            ops, node_findings, node_verdict = [], [], "fused"
        elif out0 in softmax_ends:
            op = softmax_ends[out0]
            ops = [op]
            node_findings = _op_findings(view, ops, op, quantize, onnx2tf_ops.LOWERINGS[SOFTMAX_ONNX[op]])
            node_findings += _node_level_rules(view, ops, quantize)
            node_verdict = verdict(node_findings)
        else:
            ops, node_findings = check_node(view, quantize)
            fused = _fused_into(view, producer_ops, producer_of) if not node_findings else None
            if fused and readers.get(node.input[0], 0) == 1:
                ops, node_verdict = [], "fused"
            else:
                node_findings += _node_level_rules(view, ops, quantize)
                node_verdict = verdict(node_findings)
        for out in node.output:
            producer_of[out] = nid
        producer_ops[nid] = ops
        findings += node_findings
        nodes.append({"name": nid, "op": node.op_type, "tflite_ops": ops, "verdict": node_verdict,
                      "module": module_path(node)})
    blocked = {n["name"] for n in nodes if n["verdict"] == "error"}
    if blocked and not any(f.severity == "error" and f.node not in blocked for f in findings):
        findings += _host_split_finding(model, blocked)
    return check_result(target, quantize, findings, nodes)


FOLD_ROUNDS = 16  # a Swin's shape chains fold in 3 rounds, a MobileViT's in 2


def as_converted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph whose ops reach the TFLite model: everything computed from constants and static shapes folded.

    onnx2tf computes such tensors while converting (its TensorFlow graph has static shapes) and the TFLite
    converter folds what is left, so a MobileViT's 36 int64 Gather -> STRIDED_SLICE and its run-time Reshape
    shapes never reach TFLM (it converts and runs). hub normalise folds one round; a shape only known after a
    folded Reshape needs shape inference again, so this repeats fold_constants with fresh shapes until nothing
    changes. A copy: the caller's graph is what conversion gets."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        for _ in range(FOLD_ROUNDS):
            copy, folded, _ = fold_constants.run(infer_shapes(copy))
            if not folded:
                break
        return infer_shapes(copy)
    except InputError:  # shape inference or folding refuses it: judge the graph as it is (normalise said why)
        return with_shapes(model)


def _unweighted_tensors(model: onnx.ModelProto, model_inputs: frozenset[str],
                        tensors: dict[str, TensorMeta]) -> frozenset[str]:
    """Model inputs and what is computed from them without passing a Conv/Gemm/MatMul by a constant weight."""
    found = set(model_inputs)
    for node in model.graph.node:  # topological order
        weighted = node.op_type in ("Conv", "Gemm", "MatMul") and any(
            tensors.get(name) is not None and tensors[name].const for name in node.input[1:2])
        if not weighted and any(name in found for name in node.input):
            found.update(node.output)
    return frozenset(found)


def with_rewrites(result: CheckResult, passes: Iterable[PassResult]) -> CheckResult:
    """`result` (of the rewritten graph) with each node a rewrite rule replaced named first, as `rewrite`."""
    rewritten = [Finding(r.node, r.op, [], "rewrite", f"rewritten into {r.into} by the {p.name} rule",
                         "--no-rewrite keeps the node as it is")
                 for p in passes for r in p.rewrites]
    return replace(result, findings=rewritten + result.findings) if rewritten else result


INDEX_CARRIERS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")  # become RESHAPE/SQUEEZE/EXPAND_DIMS


def _int32_indices(model: onnx.ModelProto) -> frozenset[str]:
    """ArgMax/ArgMin outputs that reach nothing but reshapes and graph outputs: hub.tflite.passes.argmax_int32
    has their ARG_MAX write int32, which TFLM's kernel takes."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def carried(name: str) -> bool:
        return all(r.op_type in INDEX_CARRIERS and r.input[0] == name and carried(r.output[0]) for r in readers.get(name, []))

    return frozenset(n.output[0] for n in model.graph.node if n.op_type in ("ArgMax", "ArgMin") and carried(n.output[0]))


def _host_split_finding(model: onnx.ModelProto, blocked: set[str]) -> list[Finding]:
    """Blocked nodes only at the end of the graph: say where to cut so TFLM runs everything before."""
    split = host_split(model, blocked)
    if split is None:
        return []
    shown = ", ".join(split.host[:4]) + (f" and {len(split.host) - 4} more" if len(split.host) > 4 else "")
    return [Finding("graph", "Model", [], "info",
                    f"the blocked nodes sit at the end of the graph: cut the model at {', '.join(split.cut)} and "
                    f"TFLM runs the other {split.device} nodes; run {shown} on the host.",
                    f"export the model up to {', '.join(split.cut)} (e.g. return that tensor from forward())")]


__all__ = ["CheckResult", "analyse_onnx", "as_converted", "with_rewrites", "check_node", "NodeView", "CONDITIONS"]
