"""Shape inference for the ONNX graph, shared by normalise and the passes (which re-infer after a change)."""
from __future__ import annotations

import onnx

from hub.errors import InputError, first_line

VALUE_BYTES = 1024  # initializers up to this size keep their values for inference (shape and axes constants)


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
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises bare InferenceError/ValidationError types
        raise InputError(f"shape inference failed: {first_line(exc, 200)}") from None
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` as it is when it carries inferred shapes (normalise's output does), else a copy with
    them where inference manages; for readers of shapes, which work with what they get."""
    if model.graph.value_info or not model.graph.node:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        return infer_shapes(copy)
    except InputError:
        return model


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers are declared as typed graph inputs instead: inference needs their
    shapes, not their values (small ones stay: shapes and axes are computed from them). onnx's inference
    serialises the whole model, weights included: 3.4 s of 4.4 s normalising a ResNet-50."""
    light = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                            functions=model.functions)
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(light.graph, field).extend(getattr(model.graph, field))
    declared = {v.name for v in model.graph.input}
    for tensor in model.graph.initializer:
        if tensor_nbytes(tensor) <= VALUE_BYTES:
            light.graph.initializer.append(tensor)
        elif tensor.name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                        list(tensor.dims)))
    return light


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """The bytes of an initializer's values, from its dims and type (no values read)."""
    count = 1
    for d in tensor.dims:
        count *= d
    return count * max(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize, 1) if tensor.data_type else 0


def is_dynamic(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims)
