"""Child-process side of the convert stage: ONNX -> one TFLite variant.

Run as `python -m hub.convert.worker JOB_DIR`. JOB_DIR holds model.onnx,
calibration.npz (ONNX layout) and job.json (with each input's permutation, hub.convert.layout's
decision: onnx2tf is told to keep every input not moved channels-last); the worker writes model.tflite (and, when
job.json asks for `float32_twin`, model.float32.tflite: the same Keras graph unquantized) and result.json there.
It runs apart from `hub` so that tensorflow's import, its memory, onnx2tf's sys.exit() calls and any crash stay
out of the parent.

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

from hub.convert import lstm, prefix_values, split
from hub.options import CONVERTER_OPTIONS


def _block_network() -> None:
    """The tool never reaches for the network; fail fast if anything tries."""

    def refuse(*_args, **_kwargs):
        raise OSError("network access is disabled in hub (offline by design)")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _checked_permutation(perm: list[int], onnx_shape: list[int], tf_shape: list[int]) -> list[int]:
    """The input's decided permutation, once onnx2tf is seen to have laid the input out that way."""
    if [onnx_shape[p] for p in perm] != list(tf_shape):
        raise RuntimeError(f"onnx2tf input shape {tf_shape} is not ONNX shape {onnx_shape} permuted by {perm}")
    return perm


FLOAT32_TWIN = "model.float32.tflite"


def main(job_dir: str) -> int:
    _block_network()
    job_path = Path(job_dir)
    job = json.loads((job_path / "job.json").read_text())
    keras_model, model, calibration, timings = keras_from_job(job_path, job)
    ordered = tf_ordered(model, keras_model, calibration, job["input_perms"])
    # why here: keras_from_job imported (and timed) it after the network was blocked
    import tensorflow as tf

    t0 = time.perf_counter()
    converter = tflite_converter(tf, keras_model)
    options = {o.name: job.get(o.name, o.field_default) for o in CONVERTER_OPTIONS}
    _configure(converter, tf, job["quantize"], ordered, **options)
    if job.get("float_fallback") and job["quantize"] == "int16x8":  # lite.py: TFLITE_BUILTINS allows float ops
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    if options["calibration_method"] == "minmax":
        tflite_bytes = converter.convert()
    else:  # the same two steps the converter takes for int8 (lite.py _quantize), the ranges changed between them
        calibrated = with_ranges(tf, calibrate_only(converter), ordered, options["calibration_method"])
        tflite_bytes = quantize_calibrated(tf, calibrated, options["per_channel_dense"], options["per_tensor_weights"])
    timings["tflite_converter"] = time.perf_counter() - t0
    (job_path / "model.tflite").write_bytes(tflite_bytes)
    if job.get("float32_twin") and job["quantize"] != "float32":
        t0 = time.perf_counter()
        _float32_twin(tf, keras_model, ordered, job_path / FLOAT32_TWIN)
        timings["float32_twin"] = time.perf_counter() - t0
    (job_path / "result.json").write_text(json.dumps({"timings_s": timings}))
    return 0


def _float32_twin(tf, keras_model, ordered: dict, path: Path) -> None:
    """The same Keras graph unquantized, what a poor-fidelity diagnosis measures first. Best effort: without it
    the diagnosis converts again, so a failure here must not fail the conversion asked for."""
    try:
        twin = tflite_converter(tf, keras_model)
        _configure(twin, tf, "float32", ordered)
        path.write_bytes(twin.convert())
    except Exception as exc:  # noqa: BLE001 - any converter error: the parent falls back to a conversion
        print(f"hub: the float32 twin was not made: {exc}", file=sys.stderr)


def tflite_converter(tf, keras_model):
    """TensorFlow's converter on the Keras model's inference function as from_keras_model traces it (its SavedModel
    signature), saving only that function and the variables: from_keras_model saves the whole Keras model first,
    whose layer-by-layer serialisation traces every layer's call again (a Keras LSTM 10 times: 13 s of the KWS
    LSTM's 17 s converter call) for the same file (same tensors, scales and outputs, measured)."""
    # why here: TensorFlow is imported by then (after the network was blocked)
    from tf_keras.src.saving.legacy.saving_utils import trace_model_call

    holder = tf.Module()  # what the converter saves: the function's variables, no Keras layer
    holder.keras_variables = list(keras_model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([trace_model_call(keras_model)], holder)


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
    import onnx2tf.ops.LSTM as onnx2tf_lstm
    import onnx2tf.ops.Split as onnx2tf_split
    import onnx2tf.utils.common_functions as onnx2tf_common
    import tensorflow as tf
    import tf_keras

    timings["import"] = time.perf_counter() - t0
    calibration = dict(np.load(job_path / "calibration.npz"))
    model = onnx.load(str(job_path / "model.onnx"))
    perms = job["input_perms"]  # {input name: permutation}, hub.convert.layout's decision
    first = next(iter(calibration.items()), None)

    # onnx2tf downloads sample images when every input is a 3-channel image
    # (field notes); hand it our own samples instead, in the input's .tflite layout.
    def own_samples() -> "np.ndarray":
        if first is None or first[1].ndim != 4:
            return np.zeros((1, 32, 32, 3), np.float32)
        return np.ascontiguousarray(first[1].transpose(perms.get(first[0], range(4))))

    onnx2tf_core.download_test_image_data = own_samples
    lstm.install(onnx2tf_lstm, tf_keras)  # plain LSTM cells as Keras LSTMs: TFLM's fused kernel
    split.install(onnx2tf_split, tf)  # unrolled cells' Splits as one SPLIT, not a slice per output
    # its per-op checks reuse values and copy no layer history: linear, not quadratic, time
    prefix_values.install(onnx2tf_common, tf, tf_keras.src.engine.keras_tensor.KerasTensor)

    t0 = time.perf_counter()
    keras_model = onnx2tf.convert(
        onnx_graph=model,
        output_folder_path=str(job_path / "onnx2tf"),
        disable_model_save=True,
        not_use_onnxsim=job.get("skip_onnxsim", True),
        non_verbose=True,
        verbosity="error",
        keep_shape_absolutely_input_names=job["keep_inputs"] or None,
    )
    timings["onnx2tf"] = time.perf_counter() - t0
    return keras_model, model, calibration, timings


def tf_ordered(model, keras_model, arrays: dict, perms: dict[str, list[int]]) -> dict:
    """Samples keyed by ONNX input name -> by Keras input name, each in the layout hub.convert.layout decided
    (`perms`): the converter's calibrator matches a list to ITS input order, so samples go by name."""
    import numpy as np  # why here: the worker imports nothing heavy before the network is blocked

    onnx_shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    init_names = {i.name for i in model.graph.initializer}
    onnx_inputs = [i.name for i in model.graph.input if i.name not in init_names]
    ordered = {}
    for name, tensor in zip(onnx_inputs, keras_model.inputs):
        perm = _checked_permutation(perms.get(name, list(range(len(onnx_shapes[name])))), onnx_shapes[name],
                                    list(tensor.shape))
        ordered[tensor.name] = (np.ascontiguousarray(arrays[name].transpose(perm)).astype(np.float32)
                                if arrays[name].dtype.kind == "f" else arrays[name])
    return ordered


def feed(interp, samples: dict, k: int) -> None:
    """Set sample k of `samples` (by Keras input name) on a TFLite interpreter. Several inputs go by the
    signature's names (those names), never by position: the file's input order need not be the graph's."""
    if len(samples) == 1:
        detail, array = interp.get_input_details()[0], next(iter(samples.values()))
        interp.set_tensor(detail["index"], array[k : k + 1].astype(detail["dtype"]))
        return
    for name, detail in interp.get_signature_runner().get_input_details().items():
        interp.set_tensor(detail["index"], samples[name][k : k + 1].astype(detail["dtype"]))


def calibrate_only(converter) -> bytes:
    """The float model with each activation's min/max on the representative samples, not yet quantized."""
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantize_calibrated(tf, calibrated: bytes, per_channel_dense: bool, per_tensor_weights: bool) -> bytes:
    """A calibrated model quantized as the converter's int8 path does it (int8 inputs and outputs)."""
    from tensorflow.lite.python import convert as tf_convert  # why here: TensorFlow is imported by then

    return tf_convert.mlir_quantize(calibrated, disable_per_channel=per_tensor_weights, input_data_type=tf.int8,
                                    output_data_type=tf.int8, disable_per_channel_for_dense_layers=not per_channel_dense)


RANGE_VALUES_PER_SAMPLE = 20_000  # values of one activation kept per calibration sample, drawn at random


def with_ranges(tf, calibrated: bytes, samples: dict, method: str) -> bytes:
    """`calibrated` with every activation's min/max set by hub.convert.calibration.activation_range from its float
    values on `samples` (the calibrated model still computes in float)."""
    import numpy as np  # why here: TensorFlow is imported by then
    from tensorflow.lite.tools import flatbuffer_utils

    from hub.convert.calibration import activation_range  # why here: numpy-only, but the child's, not the parent's

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    ranged = [i for i, t in enumerate(tensors) if t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1]
    interp = tf.lite.Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    rng, seen = np.random.default_rng(0), {i: [] for i in ranged}
    for k in range(len(next(iter(samples.values()))) if samples else 0):
        feed(interp, samples, k)
        interp.invoke()
        for i in ranged:
            values = interp.get_tensor(i).reshape(-1)
            seen[i].append(rng.choice(values, RANGE_VALUES_PER_SAMPLE, replace=False)
                           if values.size > RANGE_VALUES_PER_SAMPLE else values.copy())
    for i in ranged:
        lo, hi = activation_range(np.concatenate(seen[i]), method)
        tensors[i].quantization.min, tensors[i].quantization.max = [lo], [hi]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _configure(converter, tf, quantize: str, samples: dict, per_channel_dense: bool = False,
               per_tensor_weights: bool = False, calibration_method: str = "minmax") -> None:
    """Set the converter for exactly one variant. Only TFLite builtins: TFLM has no Flex ops.
    Takes every option hub.options marks `converter`, by name (calibration_method acts after calibration:
    `with_ranges`)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    count = len(next(iter(samples.values()))) if samples else 0

    def representative_dataset():
        # A list would be matched to the flatbuffer's input order, which need not be the graph's (two inputs
        # "mfcc", "fbank" came out in name order): by name when there are several.
        for i in range(count):
            batch = {name: s[i : i + 1] for name, s in samples.items()}
            yield batch if len(batch) > 1 else list(batch.values())

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
