"""Shape inference for the ONNX graph, shared by normalise and the passes (which re-infer after a change)."""
from __future__ import annotations

import onnx

from hub.errors import InputError, first_line


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fresh shape inference (stale value_info dropped, so fixed input shapes propagate)."""
    inputs = {v.name for v in model.graph.input}
    passthrough = next((o.name for o in model.graph.output if o.name in inputs), None)
    if passthrough is not None:  # onnx's shape inference segfaults when the two declare different types
        raise InputError(f"graph output {passthrough!r} is also a graph input; the model computes nothing for it")
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape") if is_dynamic(out) else None
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises bare InferenceError/ValidationError types
        raise InputError(f"shape inference failed: {first_line(exc, 200)}") from None


def is_dynamic(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims)
