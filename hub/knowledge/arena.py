"""How TFLM lays out its tensor arena, as numbers the arena estimate uses (hub.check.layers), and the
headroom the firmware's kTensorArenaSize gets over the measured arena.

Alignment from tensorflow/lite/micro/micro_arena_constants.h at the commit
hub.knowledge.tflm_kernels.TFLM_VERSION names: MicroArenaBufferAlignment() is 16, and
GreedyMemoryPlanner (memory_planner/greedy_memory_planner.cc) rounds every buffer up to it.
"""
from __future__ import annotations

import math

ALIGN = 16  # bytes; every planned arena buffer is rounded up to this

# Persistent ("tail") data TFLM keeps beside the planned activations, modelled from the
# RecordingMicroAllocator breakdown of the MLPerf Tiny reference models on the host
# interpreter (64-bit: pointers are 8 bytes, so a 32-bit MCU needs somewhat less):
# TfLiteEvalTensor 24 B per tensor, NodeAndRegistration 64 B per op, kernel OpData
# ~72 B per op, int8 per-channel multiplier + shift 8 B per output channel of a conv,
# ~1 KB of interpreter structs. Within 3 % of the measured tails of ic, kws, vww, ad.
TAIL_FIXED, TAIL_PER_TENSOR, TAIL_PER_OP, TAIL_PER_CHANNEL = 1000, 30, 136, 8
# While planning, AllocationInfo (~40 B per tensor) and the planner's lists (~36 B per
# buffer) sit in the arena's head as temporary data: small models can need more then.
PLAN_TEMP_PER_TENSOR, PLAN_TEMP_PER_BUFFER = 40, 36

# Recommended arena = measured x 1.10, rounded up to a multiple of 1,024 bytes.
# Why: optimised kernels (CMSIS-NN, ESP-NN, ...) request scratch buffers the reference kernels
# do not (im2col-style buffers for convolutions), and a firmware build may use another TFLM
# version; 10 % covers the scratch of typical small conv nets, and whole KB keep linker maps
# readable. On 32-bit MCUs TFLM's own structs are smaller than on this 64-bit host, which adds margin.
HEADROOM = 0.10
ROUND_TO = 1024


def recommended_arena(arena_bytes: int | None) -> int | None:
    """Measured + 10 % headroom, rounded up to whole KB (see above for why)."""
    if not arena_bytes:
        return None
    return int(math.ceil(arena_bytes * (1 + HEADROOM) / ROUND_TO) * ROUND_TO)

# A measured arena more than this many times the converted graph's own estimate (hub.check.layers: planned
# activations in the quantized width + the persistent tail above) is the converter's doing, not the model's:
# an activation it inflated (onnx2tf padding a 3x3 map to a 640x640 kernel: ~45,000x). Why 16: the measured
# arenas of the MLPerf Tiny models and resnet_tiny sit at 0.65-0.98x the estimate; 16x leaves four doublings
# (layout transposes, scratch, another planner) before a real model could reach it.
ABSURD_ARENA_FACTOR = 16


def absurd_arena(arena_bytes: int | None, estimate_bytes: int) -> str | None:
    """Why a measured arena is absurd for its graph (None when it is not): beyond ABSURD_ARENA_FACTOR times
    the graph's estimate."""
    if not arena_bytes or estimate_bytes <= 0 or arena_bytes <= ABSURD_ARENA_FACTOR * estimate_bytes:
        return None
    return (f"{arena_bytes / estimate_bytes:,.0f}x the {estimate_bytes:,} bytes the graph's activations imply "
            f"(more than {ABSURD_ARENA_FACTOR}x)")
