"""An absurd arena is a finding: a measured arena far beyond what the converted graph's activations imply fails
verification instead of landing in the firmware's settings header (hub.knowledge.arena.absurd_arena decides;
ABSURD_ARENA_FACTOR says why 16x). An arena beyond the RAM of every board hub knows is said as a warning: a
large model (ResNet-50 in float32) can need it, and a board with external RAM can give it."""
from __future__ import annotations

from dataclasses import replace

import onnx

from hub.artifacts import Finding, Verification
from hub.check.layers import onnx_layers
from hub.knowledge.arena import absurd_arena
from hub.knowledge.boards import BOARDS


def judge_arena(verification: Verification, graph: onnx.ModelProto, quantize: str) -> Verification:
    """`verification` with an error finding (and failed) when its measured arena is absurd for `graph` (the
    graph that was converted), with a warning when no known board has that much RAM; as it is otherwise."""
    arena = verification.memory.arena_bytes
    if not arena:
        return verification
    why = absurd_arena(arena, onnx_layers(graph).arena(quantize)[0])
    if why is not None:
        finding = Finding("model", "", [], "error", f"the converted model needs an absurd arena: {arena:,} bytes, "
                          f"{why}", "the converter inflated an activation (a padded pool or a layout transpose): "
                          "hub check and report.json's ops show which")
        return replace(verification, findings=[*verification.findings, finding], ok=False)
    largest = max(BOARDS, key=lambda b: b.ram_bytes)
    if arena <= largest.ram_bytes:
        return verification
    finding = Finding("model", "", [], "warning", f"the arena, {arena:,} bytes, is more than the RAM of every board "
                      f"hub knows (the largest, {largest.name}, has {largest.ram_bytes:,} bytes)",
                      "a board with external RAM can place the arena there; else prune or quantize the model")
    return replace(verification, findings=[*verification.findings, finding])
