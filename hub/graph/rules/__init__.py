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
from hub.graph.rules import (chain_concat, decompose_layernorm, decompose_lrn, decompose_rmsnorm,
                             drop_softmax_nan_guard, erf_approx, gelu_tanh, rewrite_hardsigmoid, split_qkv_heads,
                             topk_to_argmax, unroll_rnn)


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
    unroll_rnn,
    rewrite_hardsigmoid,
    chain_concat,
    topk_to_argmax,
    decompose_lrn,
    drop_softmax_nan_guard,
)
