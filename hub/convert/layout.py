"""The one layout change onnx2tf makes: an ONNX tensor of rank >= 3 (N, C, ...) becomes channels-last
(N, ..., C) in TFLite. Calibration, conversion and verification move samples and outputs with it."""
from __future__ import annotations


def channels_last(rank: int) -> tuple[int, ...]:
    """The permutation from (N, C, d1, ..., dk) to (N, d1, ..., dk, C); identity below rank 3."""
    return (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))


def moved_channels_last(onnx_shape: tuple[int, ...] | list[int], other: tuple[int, ...] | list[int]) -> bool:
    """Is `other` the channels-last form of `onnx_shape`? (Both, when C equals the other dims.)"""
    perm = channels_last(len(onnx_shape))
    return len(other) == len(onnx_shape) >= 3 and tuple(other) == tuple(onnx_shape[p] for p in perm)
