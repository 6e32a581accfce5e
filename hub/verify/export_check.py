"""The reference is the source: the outputs every fidelity figure is measured against, and the check that the
ONNX export computes them.

A PyTorch or Keras source runs itself (SourceModel.run) on the held-out samples; those outputs are the
reference. Before any later stage trusts the normalised ONNX graph, onnxruntime on it must agree with them to
float tolerance (hub.verify.diagnose's FLOAT_MIN_COSINE / FLOAT_MAX_RELATIVE_ERROR, as for a float32
conversion): an export that changes the model's meaning (PyTorch's ceil-mode pools before repair_ceil_pool)
is refused here, naming the first module whose exported nodes compute something else. An ONNX source has no
other reference than onnxruntime on its normalised graph.

Localising: each leaf module (PyTorch, SourceModel.run_module) runs on the exported graph's own input to its
nodes, and its output is compared with the tensor the last node of its scope writes; the first module, in
graph order, that disagrees is named with that node. Feeding the graph's own inputs names the module that
diverges, not every one after it (and needs no forward hooks, which TorchScript modules do not run).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hub.artifacts import REFERENCE_NAMES, ReferenceOutputs, SourceModel
from hub.errors import IncompatibleError
from hub.graph.evaluate import reference_outputs
from hub.graph.network import module_path_from_name
from hub.graph.shapes import with_shapes
from hub.verify.diagnose import poor
from hub.verify.metrics import output_metrics


@dataclass(frozen=True)
class Divergence:
    """The first module whose exported nodes compute something else than the module."""

    module: str  # its module path
    node: str  # the last ONNX node of its scope
    op: str
    why: str  # hub.verify.diagnose.poor's reason


def source_reference(source: SourceModel, graph: onnx.ModelProto, samples: list[dict[str, np.ndarray]]
                     ) -> ReferenceOutputs | None:
    """The source's outputs on `samples`, after checking that onnxruntime on `graph` agrees with them
    (IncompatibleError, exit 1, when it does not). None for an ONNX source: verification runs onnxruntime on
    the graph itself, after the converter had its say (onnxruntime lacks ops the converter handles)."""
    if source.run is None:
        return None
    names, ort = reference_outputs(graph, samples)
    expected = [_in_order(source.run(sample), names, outs) for sample, outs in zip(samples, ort)]
    if any(len(e) != len(names) for e in expected):  # outputs the export flattened otherwise: onnxruntime's stand
        return ReferenceOutputs("onnxruntime", names, ort)
    for o, name in enumerate(names):
        fidelity = output_metrics([e[o] for e in expected], [np.asarray(r[o], np.float64) for r in ort])
        if poor(fidelity, "float32"):
            raise _export_error(source, graph, samples[0], fidelity)
    return ReferenceOutputs(source.framework, names, expected)


def _in_order(outputs: dict[str, np.ndarray], names: list[str], ort: list[np.ndarray]) -> list[np.ndarray]:
    """The source's outputs in the graph's output order (by name, else by position), in the graph's shapes."""
    values = [outputs[n] for n in names] if set(names) <= set(outputs) else list(outputs.values())[:len(names)]
    return [_as_shape(np.asarray(v, np.float64), np.shape(r)) for v, r in zip(values, ort)]


def _as_shape(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A Keras image output is NHWC where the graph's may be NCHW; else the same elements, reshaped."""
    if value.shape == tuple(shape) or value.size != int(np.prod(shape)):
        return value
    if value.ndim == 4 and value.shape == (shape[0], shape[2], shape[3], shape[1]):
        return value.transpose(0, 3, 1, 2)
    return value.reshape(shape)


def _export_error(source: SourceModel, graph: onnx.ModelProto, sample: dict[str, np.ndarray],
                  fidelity) -> IncompatibleError:
    found = first_divergence(graph, source.run_module, sample) if source.run_module else None
    place = (f"they first diverge at module {found.module!r}, ONNX node {found.node} ({found.op}): {found.why}"
             if found else "the node where they first diverge was not found")
    cosine = "undefined" if fidelity.cosine is None else f"{fidelity.cosine:.4f}"
    relative = "undefined" if fidelity.relative_error is None else f"{fidelity.relative_error:.3g}"
    return IncompatibleError(
        f"the ONNX export of {Path(source.path).name} changes the model's outputs (cosine {cosine}, relative error "
        f"{relative} against {REFERENCE_NAMES.get(source.framework, source.framework)}); {place}", source.path,
        hint="the exporter lowers that layer wrongly: rewrite it with other ops, or report it to hub")


def first_divergence(model: onnx.ModelProto, run_module, sample: dict[str, np.ndarray]) -> Divergence | None:
    """The first leaf module, in graph order, whose output on the graph's own inputs differs from what the last
    node of its scope writes (onnxruntime); None when none can be compared or none differs."""
    scopes = _scopes(model)
    wanted = {name for inputs, node in scopes.values() for name in [*inputs, node.output[0]]}
    values = _intermediates(model, wanted, sample)
    for path, (inputs, node) in scopes.items():
        if node.output[0] not in values or any(i not in values for i in inputs):
            continue
        got = values[node.output[0]]
        module_out = run_module(path, [values[i] for i in inputs])
        if module_out is None or module_out.size != got.size:
            continue
        why = poor(output_metrics([np.asarray(module_out, np.float64).ravel()], [got.ravel()]), "float32")
        if why:
            return Divergence(path, node.name, node.op_type, why)
    return None


def _scopes(model: onnx.ModelProto) -> dict[str, tuple[list[str], onnx.NodeProto]]:
    """{module path: (its nodes' inputs from outside the scope, its last node)} in graph order."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        path = meta.get("pytorch.module") or module_path_from_name(node.name)
        if path and node.op_type != "Constant":
            nodes.setdefault(path, []).append(node)
    scopes = {}
    for path, members in nodes.items():
        inside = {o for n in members for o in n.output}
        outside = [i for n in members for i in n.input if i and i not in inside and i not in constants]
        if outside:
            scopes[path] = (list(dict.fromkeys(outside)), members[-1])
    return scopes


def _intermediates(model: onnx.ModelProto, names: set[str], sample: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """The float32 tensors `names` (and the graph inputs) of one onnxruntime run of `sample`."""
    probe = onnx.ModelProto()
    probe.CopyFrom(with_shapes(model))  # a copy: with_shapes hands back the graph itself when it has shapes
    typed = {v.name: v for v in [*probe.graph.value_info, *probe.graph.output]}
    known = {o.name for o in probe.graph.output}
    floats = [n for n in names if n in typed and typed[n].type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    probe.graph.output.extend(typed[n] for n in floats if n not in known)
    out_names, outputs = reference_outputs(probe, [sample])
    values = {k: np.asarray(v, np.float64) for k, v in sample.items()}
    values.update({n: np.asarray(v, np.float64) for n, v in zip(out_names, outputs[0])})
    return values
