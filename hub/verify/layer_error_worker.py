"""Child-process side of the per-layer error profile (hub.verify.layer_error).

Run as `python -m hub.verify.layer_error_worker JOB_DIR`. JOB_DIR holds what the convert worker gets
(model.onnx, calibration.npz, job.json) plus held_out.npz (ONNX names and layout) and model.tflite (the
converted model); the worker writes result.json.

The method is TensorFlow's QuantizationDebugger's (tensorflow/lite/tools/optimize/debugging/python/
debugger.py): the converter calibrates only (`_experimental_calibrate_only`), then `mlir_quantize` with
`enable_numeric_verify` writes a debug model in which every quantized op's output feeds a NumericVerify op
together with the output of the same op computed in float. Its two variants are the profile's two views:
- `enable_whole_model_verify=True`: the float ops run from the float ops before them, so the float side is
  the float model's tensor and the difference is the error accumulated up to that op, as converted;
- False: each float op runs from the (dequantized) quantized ops before it, so the difference is the error
  that op alone adds: the model with only that layer quantized.
Ops are matched to the converted model by the quantized tensor's name (NumericVerify's output is named
`NumericVerify/{name}:{index}`): both come from one Keras graph through one quantizer.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from hub.convert.worker import _block_network, _configure, keras_from_job, tf_ordered
from hub.options import CONVERTER_OPTIONS

NUMERIC_VERIFY = "NumericVerify"


def main(job_dir: str) -> int:
    _block_network()
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    keras_model, model, calibration, timings = keras_from_job(job_path, job)
    # why here: keras_from_job imported it after the network was blocked
    import tensorflow as tf
    from tensorflow.compiler.mlir.lite import types_pb2
    from tensorflow.lite.python import convert as tf_convert

    options = {o.name: job.get(o.name, o.field_default) for o in CONVERTER_OPTIONS}
    t0 = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    _configure(converter, tf, job["quantize"], tf_ordered(model, keras_model, calibration), **options)
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    timings["calibrate"] = time.perf_counter() - t0
    with np.load(job_path / "held_out.npz") as npz:
        held_out = tf_ordered(model, keras_model, dict(npz))
    inference_type = (types_pb2.QUANTIZED_INT16 if job["quantize"] == "int16x8"
                      else types_pb2.QUANTIZED_INT8)
    views = {}
    for view, whole in (("converted", True), ("isolated", False)):
        t0 = time.perf_counter()
        debug_model = tf_convert.mlir_quantize(
            calibrated, disable_per_channel=options.get("per_tensor_weights", False), fully_quantize=False,
            inference_type=inference_type, enable_numeric_verify=True, enable_whole_model_verify=whole,
            disable_per_channel_for_dense_layers=not options.get("per_channel_dense", False))
        views[view] = verify_pairs(tf, debug_model, held_out)
        timings[view] = time.perf_counter() - t0
    (job_path / "result.json").write_text(json.dumps({"views": views, "timings_s": timings}))
    return 0


def verify_pairs(tf, debug_model: bytes, samples: list[np.ndarray]) -> dict[str, dict]:
    """quantized tensor name -> {"sq_error", "sq_float", "dot", "sq_quant", "scale", "count"} summed over
    the samples, from every NumericVerify op's (quantized, float) input pair."""
    interp = tf.lite.Interpreter(model_content=debug_model, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    pairs = [op["inputs"] for op in interp._get_ops_details() if op["op_name"] == NUMERIC_VERIFY]
    sums: dict[str, dict] = {}
    count = len(samples[0]) if samples else 0
    for i in range(count):
        for detail, array in zip(interp.get_input_details(), samples):
            interp.set_tensor(detail["index"], array[i : i + 1].astype(detail["dtype"]))
        interp.invoke()
        for q_index, f_index in pairs:
            q_detail = interp._get_tensor_details(q_index, subgraph_index=0)
            scales = q_detail["quantization_parameters"]["scales"]
            zero_points = q_detail["quantization_parameters"]["zero_points"]
            if len(scales) != 1:
                continue
            quant = (interp.get_tensor(q_index).astype(np.float64) - zero_points[0]) * scales[0]
            real = interp.get_tensor(f_index).astype(np.float64).reshape(quant.shape)
            entry = sums.setdefault(q_detail["name"], {"sq_error": 0.0, "sq_float": 0.0, "sq_quant": 0.0, "dot": 0.0,
                                                       "scale": float(scales[0]), "count": 0})
            entry["sq_error"] += float(np.sum((quant - real) ** 2))
            entry["sq_float"] += float(np.sum(real**2))
            entry["sq_quant"] += float(np.sum(quant**2))
            entry["dot"] += float(np.sum(quant * real))
            entry["count"] += int(quant.size)
    return sums


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
