"""The ONNX graph evaluated by onnxruntime: the reference every rule's error and every ONNX-sourced
fidelity and accuracy figure is measured against."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx


def reference_outputs(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]
                      ) -> tuple[list[str], list[list[np.ndarray]]]:
    """(output names, each sample's outputs) of `model` under onnxruntime's CPU provider."""
    names, run = _session(model)
    return names, [run(sample) for sample in samples]


def onnx_runner(model: onnx.ModelProto) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """onnxruntime on `model` as a source's forward pass (SourceModel.run's form): one session for every sample."""
    names, run = _session(model)
    return lambda sample: dict(zip(names, run(sample)))


def _session(model: onnx.ModelProto) -> tuple[list[str], Callable[[dict[str, np.ndarray]], list[np.ndarray]]]:
    import onnxruntime as ort  # why here: 0.1 s that hub check, which runs no model, does not pay

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, lambda sample: session.run(names, {k: np.asarray(v, dtype=np.float32) for k, v in sample.items()})
