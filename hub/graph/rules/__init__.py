"""Rewrite rules: what TFLM has no kernel for, replaced by builtins it has (some approximate).

Each rule is a module whose `run` follows `Rule`, listed by reference in RULES in the order they run
(for TFLM targets unless --no-rewrite, after hub.graph.passes); hub.graph.rewrite measures the error
each one adds. A rule declares `UNBLOCKS`: the ONNX ops it makes runnable, and `DOES`: what it does to
them, so `hub check` names the rule ("the <rule> rule <DOES>") from that one place. Adding a rule is
adding a module, a line here and its test.
"""
from __future__ import annotations

from types import ModuleType
from typing import Protocol

import onnx

from hub.artifacts import Rewrite
from hub.graph.rules import (arange_gather, chain_concat, col2im, decompose_layernorm, decompose_lrn, decompose_rmsnorm,
                             drop_softmax_nan_guard, equal_axes_layout, erf_approx, fuse_lstm, gather_to_slice,
                             gelu_tanh, l2_normalize, neg_to_mul, reciprocal_sqrt, rewrite_hardsigmoid, split_qkv_heads,
                             topk_to_argmax, unfold_gather, unit_batch_transpose, unroll_rnn)


class Rule(Protocol):
    """A rule module: `run(model) -> (model, one Rewrite per node replaced)`; `UNBLOCKS` the ops it rewrites,
    `DOES` what it does to them (a phrase hub check puts after "the <rule> rule")."""

    UNBLOCKS: tuple[str, ...]
    DOES: str

    @staticmethod
    def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]: ...


RULES: tuple[ModuleType, ...] = (
    decompose_layernorm,
    decompose_rmsnorm,
    gelu_tanh,
    erf_approx,  # after gelu_tanh, which takes the Erf of each GELU whole
    split_qkv_heads,
    fuse_lstm,  # before unroll_rnn, which leaves the LSTMs it keeps whole
    unroll_rnn,
    rewrite_hardsigmoid,
    chain_concat,
    topk_to_argmax,
    decompose_lrn,
    unfold_gather,  # F.unfold's Gathers, before unit_batch_transpose: they write 6-D Transposes
    col2im,
    unit_batch_transpose,  # after col2im and unfold_gather, whose Transposes are 6-D
    l2_normalize,
    reciprocal_sqrt,
    neg_to_mul,
    drop_softmax_nan_guard,
    arange_gather,  # before gather_to_slice: a one-element arange is a Reshape too
    gather_to_slice,
    equal_axes_layout,  # after the rules that write Reshapes/Transposes, so it sees the final layout chain
)
