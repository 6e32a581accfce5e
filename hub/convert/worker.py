"""Child-process side of the convert stage: ONNX -> one TFLite variant.

Run as `python -m hub.convert.worker JOB_DIR`. JOB_DIR holds model.onnx,
calibration.npz (ONNX layout) and job.json; the worker writes model.tflite and
result.json there. It runs apart from `hub` so that tensorflow's import, its
memory, onnx2tf's sys.exit() calls and any crash stay out of the parent.

onnx2tf is used only to build the Keras graph (`disable_model_save=True`), and
TensorFlow's converter then writes the one variant asked for: onnx2tf's own
`-oiqt` path saves a SavedModel and writes seven .tflite files.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from hub.convert.layout import channels_last, moved_channels_last
from hub.options import CONVERTER_OPTIONS


def _block_network() -> None:
    """The tool never reaches for the network; fail fast if anything tries."""

    def refuse(*_args, **_kwargs):
        raise OSError("network access is disabled in hub (offline by design)")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _layout_permutation(onnx_shape: list[int], tf_shape: list[int]) -> list[int]:
    """How onnx2tf laid out an input: identity, or channels moved last (NCHW -> NHWC)."""
    if list(tf_shape) == list(onnx_shape):
        return list(range(len(onnx_shape)))
    if moved_channels_last(onnx_shape, tf_shape):
        return list(channels_last(len(onnx_shape)))
    raise RuntimeError(f"onnx2tf input shape {tf_shape} does not match ONNX shape {onnx_shape}")


def main(job_dir: str) -> int:
    _block_network()
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    keras_model, model, calibration, timings = keras_from_job(job_path, job)
    ordered = tf_ordered(model, keras_model, calibration)
    # why here: keras_from_job imported (and timed) it after the network was blocked
    import tensorflow as tf

    t0 = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    _configure(converter, tf, job["quantize"], ordered, **{o.name: job.get(o.name, o.field_default)
                                                           for o in CONVERTER_OPTIONS})
    tflite_bytes = converter.convert()
    timings["tflite_converter"] = time.perf_counter() - t0
    (job_path / "model.tflite").write_bytes(tflite_bytes)
    (job_path / "result.json").write_text(json.dumps({"timings_s": timings}))
    return 0


def keras_from_job(job_path: Path, job: dict):
    """onnx2tf's Keras graph of JOB_DIR/model.onnx, the ONNX model, its calibration.npz samples and the
    timings; shared with hub.verify.layer_error_worker, which profiles the same graph."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # why here: after the network is blocked, and timed (TensorFlow's import is report.json's convert.import)
    import numpy as np
    import onnx
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_core
    import tensorflow  # noqa: F401  (timed here: onnx2tf imports it anyway)

    timings["import"] = time.perf_counter() - t0
    calibration = dict(np.load(job_path / "calibration.npz"))
    model = onnx.load(str(job_path / "model.onnx"))
    first = next(iter(calibration.values()), None)

    # onnx2tf downloads sample images when every input is a 3-channel image
    # (field notes); hand it our own samples instead, already channels-last.
    def own_samples() -> "np.ndarray":
        if first is None or first.ndim != 4:
            return np.zeros((1, 32, 32, 3), np.float32)
        return np.ascontiguousarray(first.transpose(channels_last(4)))

    onnx2tf_core.download_test_image_data = own_samples

    t0 = time.perf_counter()
    keras_model = onnx2tf.convert(
        onnx_graph=model,
        output_folder_path=str(job_path / "onnx2tf"),
        disable_model_save=True,
        not_use_onnxsim=job.get("skip_onnxsim", True),
        non_verbose=True,
        verbosity="error",
    )
    timings["onnx2tf"] = time.perf_counter() - t0
    return keras_model, model, calibration, timings


def tf_ordered(model, keras_model, arrays: dict) -> list:
    """Samples keyed by ONNX input name -> one array per Keras input, in its order and layout."""
    import numpy as np  # why here: the worker imports nothing heavy before the network is blocked

    onnx_shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    init_names = {i.name for i in model.graph.initializer}
    onnx_inputs = [i.name for i in model.graph.input if i.name not in init_names]
    ordered = []
    for name, tensor in zip(onnx_inputs, keras_model.inputs):
        perm = _layout_permutation(onnx_shapes[name], list(tensor.shape))
        ordered.append(np.ascontiguousarray(arrays[name].transpose(0, *[p for p in perm[1:]])).astype(np.float32)
                       if arrays[name].dtype.kind == "f" else arrays[name])
    return ordered


def _configure(converter, tf, quantize: str, samples: list, per_channel_dense: bool = False,
               per_tensor_weights: bool = False) -> None:
    """Set the converter for exactly one variant. Only TFLite builtins: TFLM has no Flex ops.
    Takes every option hub.options marks `converter`, by name."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    count = len(samples[0]) if samples else 0

    def representative_dataset():
        for i in range(count):
            yield [s[i : i + 1] for s in samples]

    converter.representative_dataset = representative_dataset
    # Per-tensor FULLY_CONNECTED weights by default, as the MLPerf Tiny reference files have them:
    # per-channel costs ~24 B of flash per output channel plus per-channel data in TFLM's arena
    # (MLPerf AD: +40 KB flash, arena 22.0 KB against 4.6 KB) for accuracy int8 dense layers rarely need.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    # Conv weights per tensor only when asked: a model clustered per layer keeps <= N int8 values per filter
    # only under one scale per filter (hub.optimize.cluster), and TFLM then decodes it from one table (hub.tflite.compress).
    converter._experimental_disable_per_channel = per_tensor_weights
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantize == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
    else:
        raise ValueError(f"unknown quantize mode {quantize}")


if __name__ == "__main__":
    code = main(sys.argv[1])
    # Skip the interpreter's teardown once the results are on disk: after TensorFlow has been
    # imported it takes ~2 s (measured here), 15-20 % of a small model's whole `hub convert`.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
