"""Benchmark helper: convert many ONNX models in one process (TensorFlow imported once).

    python bench/_convert_batch.py JOBS.json
JOBS.json: [{"dir": ..., "quantize": "int8"|"float32"}, ...]; each dir holds model.onnx and
calibration.npz ({input name: (N, *onnx shape)} samples). Writes model.tflite or error.txt per job,
and prints one "DONE <dir>" line per job so the parent can tell how far a crashed batch got.
Uses hub.convert.worker's network block, layout logic and converter settings; onnx2tf's sample
download is replaced as in hub.convert.worker.main.
"""
from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hub.convert.layout import channels_last, moved_channels_last  # noqa: E402
from hub.convert.worker import _block_network, _configure  # noqa: E402
from hub.tflite.passes import run_passes  # noqa: E402

JOB_TIMEOUT_S = 90


def layout_permutation(onnx_shape: list[int], tf_shape: list[int]) -> list[int]:
    """How onnx2tf's defaults laid out an input (this batch passes it no input layouts): identity, or channels
    moved last (NCHW -> NHWC)."""
    if list(tf_shape) == list(onnx_shape):
        return list(range(len(onnx_shape)))
    if moved_channels_last(onnx_shape, tf_shape):
        return list(channels_last(len(onnx_shape)))
    raise RuntimeError(f"onnx2tf input shape {tf_shape} does not match ONNX shape {onnx_shape}")


class JobTimeout(Exception):
    pass


def _alarm(*_args) -> None:
    raise JobTimeout(f"conversion took over {JOB_TIMEOUT_S} s")


def convert_one(job_dir: Path, quantize: str, np, onnx, onnx2tf, tf) -> None:
    calibration = dict(np.load(job_dir / "calibration.npz"))
    model = onnx.load(str(job_dir / "model.onnx"))
    first = next((v for v in calibration.values() if v.ndim == 5), None)

    import onnx2tf.onnx2tf as core

    core.download_test_image_data = lambda: (np.ascontiguousarray(first[:, 0].transpose(0, 2, 3, 1))
                                             if first is not None else np.zeros((1, 32, 32, 3), np.float32))
    keras_model = onnx2tf.convert(onnx_graph=model, output_folder_path=str(job_dir / "onnx2tf"),
                                  disable_model_save=True, not_use_onnxsim=True, non_verbose=True,
                                  verbosity="error")
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    samples = []  # per input: (N, *tf shape); each sample is a whole input tensor, batch included
    for name, tensor in zip(names, keras_model.inputs):
        perm = layout_permutation(shapes[name], list(tensor.shape))
        arr = calibration[name]
        arr = np.ascontiguousarray(arr.transpose(0, *[p + 1 for p in perm]))
        samples.append(arr.astype(np.float32) if arr.dtype.kind == "f" else arr)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    _configure(converter, tf, quantize, [])
    if quantize != "float32":
        count = len(samples[0]) if samples else 0
        converter.representative_dataset = lambda: ([s[i] for s in samples] for i in range(count))
    tflite_bytes, _ = run_passes(converter.convert())  # the flatbuffer fixes hub convert applies
    (job_dir / "model.tflite").write_bytes(tflite_bytes)


def main(jobs_file: str) -> int:
    _block_network()
    import numpy as np
    import onnx
    import onnx2tf
    import tensorflow as tf

    signal.signal(signal.SIGALRM, _alarm)
    for job in json.loads(Path(jobs_file).read_text()):
        job_dir = Path(job["dir"])
        signal.alarm(JOB_TIMEOUT_S)
        try:
            convert_one(job_dir, job["quantize"], np, onnx, onnx2tf, tf)
        except BaseException as exc:  # onnx2tf calls sys.exit() on failures
            lines = traceback.format_exception_only(type(exc), exc)
            (job_dir / "error.txt").write_text((" ".join(lines).strip() or type(exc).__name__)[-2000:])
        finally:
            signal.alarm(0)
            tf.keras.backend.clear_session()
        print(f"DONE {job_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
