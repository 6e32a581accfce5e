"""Child-process side of the divergence search: where does a float32 TFLite model stop
computing what its ONNX source computes?

Run as `python -m hub.verify.diverge_worker JOB_DIR`; JOB_DIR holds model.onnx, model.tflite,
onnx_inputs.npz (ONNX names and layout) and tflite_inputs.npz (i0, i1, ... in TFLite
order and layout); the worker writes result.json.

TFLite tensor names are not ONNX names (the converter names them after Keras ops), so
tensors are matched by value: every float ONNX node output (onnxruntime) is looked for
among the TFLite model's tensors (LiteRT's interpreter with all tensors preserved) of
the same size, as is, channels-last or flattened. The divergence is the first node, in
graph order, whose output no TFLite tensor holds and below which no output is found
again (a conv output fused with its activation is missing too, but its consumer is found).
LiteRT's interpreter runs without TensorFlow (ai_edge_litert, ~0.1 s to import).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx

RTOL = 1e-3  # float32 kernels differ in summation order: ~1e-6 relative; a wrong layout is O(1)


def main(job_dir: str) -> int:
    job = Path(job_dir)
    model = onnx.load(str(job / "model.onnx"))
    with np.load(job / "onnx_inputs.npz") as npz:
        expected = onnx_values(model, dict(npz))
    with np.load(job / "tflite_inputs.npz") as npz:
        tensors = tflite_values((job / "model.tflite").read_bytes(), [npz[f"i{i}"] for i in range(len(npz.files))])
    (job / "result.json").write_text(json.dumps(first_divergence(model, expected, tensors)))
    return 0


def onnx_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float node output of `model` on `feeds`, by tensor name."""
    import onnxruntime as ort

    floats = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    floats |= {o.name for o in model.graph.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(v for v in model.graph.value_info if v.name in floats and v.name not in known)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def tflite_values(tflite: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Every float tensor the TFLite model holds after one invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    for detail, array in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], array)
    interp.invoke()
    values = []
    for detail in interp.get_tensor_details():
        if detail["dtype"] != np.float32:
            continue
        try:
            values.append(np.array(interp.get_tensor(detail["index"])))
        except ValueError:  # a tensor without data (e.g. an omitted optional input)
            continue
    return values


def first_divergence(model: onnx.ModelProto, expected: dict[str, np.ndarray], tensors: list[np.ndarray]) -> dict:
    by_size: dict[int, list[np.ndarray]] = {}
    for t in tensors:
        by_size.setdefault(t.size, []).append(t)
    found: dict[str, str | None] = {}  # "" missing, else the layouts it was found in; None: says nothing (constant)
    for node in model.graph.node:
        for name in node.output:
            if name in expected:
                value = expected[name]
                found[name] = None if np.ptp(value) == 0 else _layouts(value, by_size.get(value.size, []))
    below = _descendants(model)
    summary = {"found": sum(1 for v in found.values() if v), "compared": len(found)}
    for node in model.graph.node:
        missing = [o for o in node.output if found.get(o) == ""]
        if missing and not any(found.get(o) for o in below[node.output[0]]):
            return {"node": node.name or missing[0], "op": node.op_type, "output": missing[0],
                    "channels_first_from": _channels_first_origin(model, node, found), **summary}
    return {"node": None, **summary}


def _layouts(reference: np.ndarray, candidates: list[np.ndarray]) -> str:
    """"first" (as ONNX lays it out), "last" (channels-last, as onnx2tf does), both, or "" (not found)."""
    tol = RTOL * float(np.max(np.abs(reference))) + 1e-6
    views = {"first": reference}
    if reference.ndim >= 3:
        views["last"] = np.transpose(reference, (0, *range(2, reference.ndim), 1))
    hits = {k for k, v in views.items() for c in candidates if float(np.max(np.abs(v.reshape(-1) - c.reshape(-1)))) <= tol}
    return "+".join(sorted(hits))


def _channels_first_origin(model: onnx.ModelProto, node: onnx.NodeProto, found: dict[str, str | None]) -> str | None:
    """A divergence whose input was computed right but only in ONNX's channels-first order is a layout
    error upstream: the earliest node of that channels-first run of tensors."""
    producers = {o: n for n in model.graph.node for o in n.output}
    origin, frontier = None, [i for i in node.input if found.get(i) == "first"]
    while frontier:
        origin = producers[frontier.pop()]
        frontier = [i for i in origin.input if found.get(i) == "first"]
    return (origin.name or origin.output[0]) if origin is not None else None


def _descendants(model: onnx.ModelProto) -> dict[str, set[str]]:
    """tensor -> every tensor computed from it (the nodes are in topological order)."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in set(node.input):
            users.setdefault(name, []).append(node)
    below: dict[str, set[str]] = {}
    for node in reversed(model.graph.node):
        reach = set()
        for out in node.output:
            for user in users.get(out, []):
                reach |= set(user.output) | below.get(user.output[0], set())
        for out in node.output:
            below[out] = reach
    return below


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
