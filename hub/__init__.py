"""hub: from a trained PyTorch, Keras or ONNX model to a model proven on TensorFlow Lite Micro.

The operations are in `hub.api` (convert, check, verify, export, report):

    from hub import api
    report = api.convert("fixtures/resnet_tiny.pt", target="tflm")

They cannot be `hub.convert.converter(...)` itself: `hub.convert.converter`, `hub.verify.tflm`, `hub.firmware.export` and
`hub.report.portability` are the pipeline-stage modules.
"""
from __future__ import annotations

__version__ = "0.1.0"
