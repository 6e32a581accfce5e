"""The ONNX graph evaluated by onnxruntime: the reference every rule's error and every ONNX-sourced
fidelity figure is measured against."""
from __future__ import annotations

import numpy as np
import onnx


def reference_outputs(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]
                      ) -> tuple[list[str], list[list[np.ndarray]]]:
    """(output names, each sample's outputs) of `model` under onnxruntime's CPU provider."""
    import onnxruntime as ort  # why here: 0.1 s that hub check, which runs no model, does not pay

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = [{k: np.asarray(v, dtype=np.float32) for k, v in s.items()} for s in samples]
    return names, [session.run(names, f) for f in feeds]
