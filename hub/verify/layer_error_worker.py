"""Child-process side of the per-layer error profile (hub.verify.layer_error).

Run as `python -m hub.verify.layer_error_worker JOB_DIR`. JOB_DIR holds what the convert worker gets
(model.onnx, calibration.npz, job.json) plus held_out.npz (ONNX names and layout); the worker writes
result.json.

The method is TensorFlow's QuantizationDebugger's (tensorflow/lite/tools/optimize/debugging/python/
debugger.py): the converter calibrates only (`_experimental_calibrate_only`), then `mlir_quantize` with
`enable_numeric_verify` and `enable_whole_model_verify` writes a debug model in which every quantized op's
output feeds a NumericVerify op together with the same tensor of the float model. Two views:
- as converted: every op quantized; the difference is the error accumulated up to that op;
- isolated: every other op denylisted (`denylisted_nodes`, the debugger's selective quantization), so the
  op's inputs are the float model's, quantized: the error that op alone adds. One quantization per op: under
  job.json's `isolated_budget_s` the ops are taken in order of the error they add as converted, and the rest are
  left unmeasured. (The debugger's layer-wise
  mode instead feeds each float op the quantized model's inputs: an op downstream of a bad one then sees
  inputs beyond its calibrated range and takes the blame.)
Tensors are matched by name: the calibrated model names them as the converted model does (one Keras graph
through one quantizer); the debug model appends a counter to the quantized copy's name.
"""
from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from hub.convert.worker import (_block_network, _configure, calibrate_only, feed, keras_from_job, tf_ordered,
                                tflite_converter, with_ranges)
from hub.options import CONVERTER_OPTIONS
from hub.verify.channel_stats import cosine

NUMERIC_VERIFY = "NumericVerify"


def main(job_dir: str) -> int:
    _block_network()
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    keras_model, model, calibration, timings = keras_from_job(job_path, job)
    # why here: keras_from_job imported it after the network was blocked
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    options = {o.name: job.get(o.name, o.field_default) for o in CONVERTER_OPTIONS}
    t0 = time.perf_counter()
    converter = tflite_converter(tf, keras_model)  # the convert worker's, so tensors are named alike
    ordered = tf_ordered(model, keras_model, calibration, job["input_perms"])
    _configure(converter, tf, job["quantize"], ordered, **options)
    calibrated = calibrate_only(converter)
    if options["calibration_method"] != "minmax":  # the ranges the conversion used
        calibrated = with_ranges(tf, calibrated, ordered, options["calibration_method"])
    timings["calibrate"] = time.perf_counter() - t0
    with np.load(job_path / "held_out.npz") as npz:
        held_out = tf_ordered(model, keras_model, dict(npz), job["input_perms"])
    quantize = partial(tf_convert.mlir_quantize, calibrated, fully_quantize=False,
                       disable_per_channel=options.get("per_tensor_weights", False), enable_numeric_verify=True,
                       enable_whole_model_verify=True,
                       disable_per_channel_for_dense_layers=not options.get("per_channel_dense", False))
    inputs = op_inputs(tf, calibrated)
    names = list(inputs)
    t0 = time.perf_counter()
    converted = plain_names(verify_pairs(tf, quantize(), held_out), names)
    timings["converted"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    isolated = {}
    budget_s = job.get("isolated_budget_s")
    for name in by_error_added(converted, inputs):
        alone = plain_names(verify_pairs(tf, quantize(denylisted_nodes=[n for n in names if n != name]), held_out),
                            names)
        isolated.update({k: v for k, v in alone.items() if k == name})
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
    timings["isolated"] = time.perf_counter() - t0
    views = {"converted": converted, "isolated": isolated}
    (job_path / "result.json").write_text(json.dumps({"views": views, "timings_s": timings}))
    return 0


def op_inputs(tf, model: bytes) -> dict[str, list[str]]:
    """Each op output's tensor name (the calibrated model names them as the converted model does), in op order ->
    the names of that op's inputs."""
    interp = tf.lite.Interpreter(model_content=model)

    def name(i: int) -> str:
        return interp._get_tensor_details(i, subgraph_index=0)["name"]

    return {name(o): [name(i) for i in op["inputs"] if i >= 0]
            for op in interp._get_ops_details() for o in op["outputs"]}


def by_error_added(converted: dict[str, dict], inputs: dict[str, list[str]]) -> list[str]:
    """The converted view's tensors, the op that adds the most error first: its output's cosine as converted below
    its inputs' (each quantization sees the error accumulated upstream; the drop across one op is roughly what it
    adds). Under a time budget the isolated view then measures the likeliest culprits first."""
    def drop(name: str) -> float:
        upstream = [cosine(converted[i]) for i in inputs.get(name, ()) if i in converted]
        return min(upstream, default=1.0) - cosine(converted[name])

    return sorted(converted, key=drop, reverse=True)


def plain_names(sums: dict[str, dict], names: list[str]) -> dict[str, dict]:
    """The debug model names a quantized tensor after the float one with a counter appended (MLIR keeps
    the plain name for the float copy): back to the plain name, the longest of `names` it extends by digits."""
    return {_plain(debug_name, set(names)): value for debug_name, value in sums.items()}


def _plain(debug_name: str, known: set[str]) -> str:
    for cut in range(len(debug_name), 0, -1):
        head, tail = debug_name[:cut], debug_name[cut:]
        if head in known and (not tail or tail.isdigit()):
            return head
    return debug_name


def verify_pairs(tf, debug_model: bytes, samples: dict[str, np.ndarray]) -> dict[str, dict]:
    """quantized tensor name -> sums over the samples of every NumericVerify op's (quantized q, float f) input
    pair, per channel (the last axis, channels in TFLite's layout): "q", "f", "qq", "ff", "qf" (lists), with
    the tensor's "scale" and the values per channel "n"."""
    interp = tf.lite.Interpreter(model_content=debug_model, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    pairs = [op["inputs"] for op in interp._get_ops_details() if op["op_name"] == NUMERIC_VERIFY]
    sums: dict[str, dict] = {}
    count = len(next(iter(samples.values()))) if samples else 0
    for i in range(count):
        feed(interp, samples, i)
        interp.invoke()
        for q_index, f_index in pairs:
            q_detail = interp._get_tensor_details(q_index, subgraph_index=0)
            scales = q_detail["quantization_parameters"]["scales"]
            zero_points = q_detail["quantization_parameters"]["zero_points"]
            if len(scales) != 1:  # activations are quantized per tensor; anything else is not an op output
                continue
            quant = (interp.get_tensor(q_index).astype(np.float64) - zero_points[0]) * scales[0]
            real = interp.get_tensor(f_index).astype(np.float64).reshape(quant.shape)
            channels = quant.shape[-1] if quant.ndim else 1
            q, f = quant.reshape(-1, channels), real.reshape(-1, channels)
            new = {"q": q.sum(0), "f": f.sum(0), "qq": (q * q).sum(0), "ff": (f * f).sum(0), "qf": (q * f).sum(0)}
            entry = sums.setdefault(q_detail["name"], {"scale": float(scales[0]), "n": 0})
            for key, value in new.items():
                entry[key] = (np.asarray(entry.get(key, 0.0)) + value).tolist()
            entry["n"] += len(q)
    return sums


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
