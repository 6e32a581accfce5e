"""Normalise stage: any adapter's ONNX -> the graph every later stage sees.

Static shapes everywhere (from --input-shape, or batch 1 for a dynamic first
dimension), opset 13 or newer where it can be lifted, then the graph passes in `hub.graph.passes` run in
order, each reporting what it changed.
"""
from __future__ import annotations

import onnx
from onnx import helper

from hub.artifacts import LoadOptions, NormalisedModel, PassResult, SourceModel, TensorSpec
from hub.errors import InputError, first_line
from hub.graph.network import ordered_nodes
from hub.graph.passes import run_passes
from hub.graph.shapes import infer_shapes, is_dynamic

MIN_OPSET = 13  # onnx2tf 1.29 and our op tables are written against opset >= 13
IR_INITIALIZERS_APART = 4  # onnx IR version 4: initializers need not be graph inputs
# onnxruntime 1.23 (the reference every figure is measured against) reads IR 11 at most; onnx 1.19
# saves IR 12 by default, which adds only the FLOAT8E8M0 type, a type no converter here handles.
MAX_IR_VERSION = 11


def normalise(model: onnx.ModelProto, input_shapes: dict[str | None, tuple[int, ...]] | None = None,
              *, passes: list[str] | None = None) -> NormalisedModel:
    """Return a static-shape, cleaned copy of `model`; `passes` limits which passes run (default all)."""
    model = _copy(model)
    _drop_initializer_inputs(model)
    _fix_input_shapes(model, input_shapes or {})
    model, lifted = _convert_opset(model)
    model = infer_shapes(model)
    model, results = run_passes(model, passes)
    results.insert(0, lifted)
    _name_nodes(model)
    _require_static_outputs(model)
    return NormalisedModel(onnx_model=model, inputs=_specs(model, model.graph.input),
                           outputs=_specs(model, model.graph.output), passes=results)


def normalise_source(source: SourceModel, options: LoadOptions, passes: list[str] | None = None) -> NormalisedModel:
    """Normalise an adapter's output. `--input-shape` applies here only to ONNX sources: the
    PyTorch and Keras adapters already exported with it (Keras in its own NHWC layout, before
    transposing images to NCHW), so applying it again would undo that."""
    shapes = options.input_shapes if source.framework == "onnx" else {}
    return normalise(source.onnx_model, shapes, passes=passes)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node the unique name hub check shows for it, so rewrites and findings agree."""
    for nid, node in ordered_nodes(model):
        node.name = nid


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 files list every initializer among the graph inputs: keep only the real inputs.

    The IR version rises to 4, the first that allows initializers outside the inputs; left at 3,
    the version converter finds no definition for the weights and refuses to lift the opset.
    It is capped at MAX_IR_VERSION, so onnxruntime loads what onnx itself saves (IR 12).
    """
    inits = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.input if v.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.ir_version = min(max(model.ir_version, IR_INITIALIZERS_APART), MAX_IR_VERSION)


def _fix_input_shapes(model: onnx.ModelProto, shapes: dict[str | None, tuple[int, ...]]) -> None:
    names = [v.name for v in model.graph.input]
    unknown = [n for n in shapes if n is not None and n not in names]
    if unknown:
        raise InputError(f"--input-shape names {unknown[0]!r}, but the model's inputs are {', '.join(names)}")
    if None in shapes and len(names) > 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}): give --input-shape NAME=D0,D1,...")
    for i, value in enumerate(model.graph.input):
        given = shapes.get(value.name) or (shapes.get(None) if i == 0 else None)
        dims = value.type.tensor_type.shape.dim
        if given is not None:
            if dims and len(dims) != len(given):
                raise InputError(f"--input-shape for {value.name!r} has rank {len(given)}, the model expects {len(dims)}")
            _set_dims(value, given)
            continue
        if not dims and not value.type.tensor_type.HasField("shape"):
            raise InputError(f"input {value.name!r} has no shape: pass --input-shape {value.name}=D0,D1,...")
        fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if fixed and fixed[0] is None:
            fixed[0] = 1  # a dynamic batch becomes 1: microcontrollers run one sample at a time
        if any(d is None for d in fixed):
            shown = ",".join("?" if d is None else str(d) for d in fixed)
            raise InputError(f"input {value.name!r} has dynamic dimensions ({shown}): pass --input-shape "
                             f"{value.name}=D0,D1,... to fix them")
        _set_dims(value, tuple(fixed))


def _set_dims(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    tensor_type = value.type.tensor_type
    tensor_type.shape.ClearField("dim")
    for d in shape:
        tensor_type.shape.dim.add().dim_value = int(d)


def _convert_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassResult]:
    """Lift opsets below 13 (what onnx2tf 1.29 and our tables are written against); newer ones stay.

    The version converter cannot lift every old graph (e.g. a Reshape whose shape
    is a graph input in opset 9 files); onnx2tf still reads most of those, so a
    failed lift keeps the original and says so instead of refusing the model.
    """
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        return model, PassResult("convert_opset", 0)
    try:
        lifted = onnx.version_converter.convert_version(model, MIN_OPSET)
        return lifted, PassResult("convert_opset", 1, f"opset {version} -> {MIN_OPSET}")
    except Exception as exc:  # the converter raises bare RuntimeError/ConvertError types
        reason = first_line(exc, 160)
        return model, PassResult("convert_opset", 0, f"kept opset {version}: the converter could not lift it ({reason})")


def _require_static_outputs(model: onnx.ModelProto) -> None:
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") or is_dynamic(out):
            raise InputError(f"output {out.name!r} has no static shape after inference; the model computes shapes "
                             "at run time, which TFLM cannot do")


def _specs(model: onnx.ModelProto, values) -> list[TensorSpec]:
    return [TensorSpec(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim),
                       helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name) for v in values]


__all__ = ["normalise", "normalise_source"]
