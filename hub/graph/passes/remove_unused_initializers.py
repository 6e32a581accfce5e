"""Drop initializers no node reads: folds leave the old weights behind, and every byte of
model.onnx (and of what onnx2tf loads) would otherwise carry them."""
from __future__ import annotations

import onnx

from hub.graph.edit import remove_unused_initializers


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    removed = remove_unused_initializers(model)
    return model, removed, f"dropped {removed} unused initializers" if removed else ""
