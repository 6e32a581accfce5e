"""An absurd arena is a finding: a measured arena far beyond what the converted graph's activations imply, or
beyond every board, fails verification instead of landing in the firmware's settings header
(hub.knowledge.arena.absurd_arena decides; ABSURD_ARENA_FACTOR says why 16x)."""
from __future__ import annotations

from dataclasses import replace

import onnx

from hub.artifacts import Finding, Verification
from hub.check.layers import onnx_layers
from hub.knowledge.arena import absurd_arena
from hub.knowledge.boards import BOARDS


def judge_arena(verification: Verification, graph: onnx.ModelProto, quantize: str) -> Verification:
    """`verification` failed with an error finding when its measured arena is absurd for `graph` (the graph
    that was converted); as it is otherwise."""
    arena = verification.memory.arena_bytes
    if not arena:
        return verification
    why = absurd_arena(arena, onnx_layers(graph).arena(quantize)[0], max(b.ram_bytes for b in BOARDS))
    if why is None:
        return verification
    finding = Finding("model", "", [], "error", f"the converted model needs an absurd arena: {arena:,} bytes, {why}",
                      "the converter inflated an activation (a padded pool or a layout transpose): hub check "
                      "and report.json's ops show which")
    return replace(verification, findings=[*verification.findings, finding], ok=False)
