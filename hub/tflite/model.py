"""Read a .tflite flatbuffer into plain Python objects, without tensorflow.

Uses the schema bindings that ship inside `ai_edge_litert` (pulled in by
onnx2tf); importing them costs ~0.1 s, importing tensorflow ~2 s.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.errors import InputError
from hub.knowledge.tflm_buffers import OFFSET_VALID_ABOVE

# Field slots of the TFLite schema's tables, for the passes that patch a flatbuffer in place: the vtable
# offset flatbuffers gives field n of a table (schema.fbs order) is 4 + 2 * n; `table._tab.Offset(SLOT)`
# finds the field. Every schema offset hub uses is here.
SUBGRAPH_OPERATORS_SLOT = 10  # SubGraph.operators (field 3)
TENSOR_TYPE_SLOT = 6  # Tensor.type (field 1)
QUANTIZATION_SCALE_SLOT = 8  # QuantizationParameters.scale (field 2)
ARG_MAX_OUTPUT_TYPE_SLOT = 4  # ArgMaxOptions.output_type and ArgMinOptions.output_type (field 0)

# Builtin operator code -> its schema name (e.g. 9 -> "FULLY_CONNECTED"); hub.tflite.mixed reads it too.
OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # "int8", "float32", ...
    scales: list[float] = field(default_factory=list)
    zero_points: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    is_constant: bool = False  # has data in a buffer (weights)
    data_bytes: int = 0
    is_variable: bool = False  # state TFLM keeps outside the planned arena
    buffer: int = 0  # index into Model.buffers (0 = the empty sentinel)
    # > 0: the data lives after the flatbuffer at this absolute file offset (Buffer.offset/size, schema 3c;
    # ai-edge-quantizer >= 0.10 writes it once weights pass 256 KiB). TFLM reads only Buffer.data: it plans such a
    # tensor in the arena, uninitialised, and computes garbage without any error.
    buffer_offset: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1


@dataclass
class OpInfo:
    index: int
    name: str  # builtin name, e.g. "CONV_2D", or "CUSTOM"
    version: int
    custom_code: str | None
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    fused_activation: str | None = None  # "RELU6", ... from the op's builtin options, None when they have none


@dataclass
class TFLiteModel:
    size_bytes: int
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    subgraphs: int
    description: str = ""
    # tensor index -> name in the serving signature; onnx2tf keys it by the ONNX input/output name
    signature_names: dict[int, str] = field(default_factory=dict)
    # the ops of subgraphs 1.. (WHILE/IF bodies; their tensor indices are their own subgraph's), in order
    subgraph_ops: list[OpInfo] = field(default_factory=list)

    def offset_buffers(self) -> list[tuple[int, list[str], int]]:
        """[(buffer index, names of the tensors using it, size)] for buffers stored outside the flatbuffer."""
        found: dict[int, tuple[list[str], int]] = {}
        for t in self.tensors:
            if t.buffer_offset:
                found.setdefault(t.buffer, ([], t.data_bytes))[0].append(t.name)
        return [(b, names, size) for b, (names, size) in sorted(found.items())]

    def op_histogram(self) -> dict[str, int]:
        """{"CONV_2D": 9, ...} sorted by name, as report.json expects."""
        return dict(sorted(Counter(op.name for op in [*self.ops, *self.subgraph_ops]).items()))

    def io_specs(self, which: str) -> list[dict]:
        """report.json entries for "inputs" or "outputs"."""
        specs = []
        for idx in self.inputs if which == "inputs" else self.outputs:
            t = self.tensors[idx]
            specs.append(
                {
                    "name": self.signature_names.get(idx, t.name),
                    "tensor": t.name,
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "scale": t.scales[0] if len(t.scales) == 1 else (t.scales or None),
                    "zero_point": t.zero_points[0] if len(t.zero_points) == 1 else (t.zero_points or None),
                }
            )
        return specs


def read_tflite(data: bytes, source: str = "model") -> TFLiteModel:
    """Parse flatbuffer bytes; InputError if they are not a TFLite model."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError("not a TFLite flatbuffer (no TFL3 identifier)", source)
    try:
        model = _parse(data)
    except InputError:
        raise
    except Exception as exc:  # corrupt offsets surface as struct/index errors
        raise InputError(f"corrupt TFLite flatbuffer ({type(exc).__name__})", source) from exc
    _check_indices(model, source)
    _check_offsets(model, len(data), source)
    return model


def _check_offsets(model: TFLiteModel, size: int, source: str) -> None:
    """Out-of-flatbuffer buffers must lie inside the file (a truncated copy would otherwise read as zeros)."""
    for t in model.tensors:
        if t.buffer_offset and t.buffer_offset + t.data_bytes > size:
            raise InputError(f"corrupt TFLite file: buffer {t.buffer} of tensor {t.name!r} ends at byte "
                             f"{t.buffer_offset + t.data_bytes}, past the end of the file ({size} B)", source)


def _check_indices(model: TFLiteModel, source: str) -> None:
    """Tensor indices must point at tensors: later stages index with them (fuzzed files broke analysis)."""
    count = len(model.tensors)
    bad = [i for op in model.ops for i in op.inputs if not -1 <= i < count]
    bad += [i for op in model.ops for i in op.outputs if not 0 <= i < count]
    bad += [i for i in model.inputs + model.outputs if not 0 <= i < count]
    if bad:
        raise InputError(f"corrupt TFLite flatbuffer: tensor index {bad[0]} out of range (the model has {count} "
                         "tensors)", source)


def _parse(data: bytes) -> TFLiteModel:
    model = schema.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise InputError("TFLite model has no subgraph")
    opcodes = [_opcode(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    sg = model.Subgraphs(0)
    tensors = [_tensor(model, sg.Tensors(i), i) for i in range(sg.TensorsLength())]
    ops = _ops(sg, opcodes)
    desc = model.Description()
    return TFLiteModel(
        size_bytes=len(data),
        tensors=tensors,
        ops=ops,
        inputs=[int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else [],
        outputs=[int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else [],
        subgraphs=model.SubgraphsLength(),
        description=desc.decode("utf-8", "replace") if desc else "",
        signature_names=_signature_names(model),
        subgraph_ops=[op for k in range(1, model.SubgraphsLength()) for op in _ops(model.Subgraphs(k), opcodes)],
    )


def _ops(sg, opcodes: list[tuple[str, int, str | None]]) -> list[OpInfo]:
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name, version, custom = opcodes[op.OpcodeIndex()]
        ops.append(
            OpInfo(i, name, version, custom, [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else [],
                   [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else [], _fused_activation(op))
        )
    return ops


_ACTIVATIONS = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
_OPTIONS = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}


def _fused_activation(op) -> str | None:
    table = op.BuiltinOptions()
    kind = getattr(schema, _OPTIONS.get(op.BuiltinOptionsType(), ""), None)
    if table is None or kind is None or not hasattr(kind, "FusedActivationFunction"):
        return None
    options = kind()
    options.Init(table.Bytes, table.Pos)
    return _ACTIVATIONS.get(options.FusedActivationFunction())


def _signature_names(model) -> dict[int, str]:
    names: dict[int, str] = {}
    if model.SignatureDefsLength() < 1:
        return names
    sig = model.SignatureDefs(0)
    for entries, count in ((sig.Inputs, sig.InputsLength()), (sig.Outputs, sig.OutputsLength())):
        for j in range(count):
            names[entries(j).TensorIndex()] = entries(j).Name().decode("utf-8", "replace")
    return names


def _opcode(oc) -> tuple[str, int, str | None]:
    # Old files keep the code in the deprecated int8 field (values < 127).
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
    name = OP_NAMES.get(code, f"UNKNOWN_{code}")
    custom = oc.CustomCode()
    return name, oc.Version(), custom.decode("utf-8", "replace") if custom else None


def _tensor(model, t, index: int) -> TensorInfo:
    q = t.Quantization()
    scales, zps, qdim = [], [], 0
    if q is not None and not q.ScaleIsNone():
        scales = [float(x) for x in q.ScaleAsNumpy()]
        zps = [int(x) for x in q.ZeroPointAsNumpy()] if not q.ZeroPointIsNone() else []
        qdim = q.QuantizedDimension()
    buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
    nbytes = offset = 0
    if buf is not None:
        nbytes = buf.DataLength()  # 0 when the data vector is absent
        if not nbytes and buf.Offset() > OFFSET_VALID_ABOVE:  # hub.knowledge.tflm_buffers: 1 is a placeholder
            nbytes, offset = buf.Size(), buf.Offset()
    name = t.Name()
    return TensorInfo(
        index=index,
        name=name.decode("utf-8", "replace") if name else f"tensor_{index}",
        shape=tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else (),
        shape_signature=tuple(int(x) for x in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else (),
        dtype=_TYPE_NAMES.get(t.Type(), f"type_{t.Type()}"),
        scales=scales,
        zero_points=zps,
        quantized_dimension=qdim,
        is_constant=nbytes > 0,
        data_bytes=nbytes,
        is_variable=bool(t.IsVariable()),
        buffer=t.Buffer(),
        buffer_offset=offset,
    )


def numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype({"bool": "bool"}.get(dtype, dtype))
