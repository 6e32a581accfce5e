"""Remove Identity and inference-mode Dropout: they compute nothing, yet onnx2tf may emit ops for them."""
from __future__ import annotations

import onnx

from hub.graph.edit import bypass_node

NO_OPS = {"Identity", "Dropout"}


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    removed = 0
    for node in list(model.graph.node):
        # Dropout's optional mask output must be unused for it to be a no-op.
        if node.op_type in NO_OPS and len([o for o in node.output if o]) == 1 and node.input and node.input[0]:
            if bypass_node(model, node):
                removed += 1
    return model, removed, f"removed {removed} Identity/Dropout nodes" if removed else ""
