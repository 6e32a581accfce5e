"""Exact graph passes on the normalised ONNX, in the spirit of onnxscript's rewriter: each pass is a
small module whose `run` follows `GraphPass`, listed by reference in PASSES in the order they run.
Adding one is adding a module, a line here and its test.

Passes keep the model's meaning exactly and always run; the rules that may approximate, for what TFLM
lacks, are hub.graph.rules.
"""
from __future__ import annotations

from types import ModuleType
from typing import Protocol

import onnx

from hub.artifacts import PassResult
from hub.graph.passes import (cancel_transposes, canonical_pooling, canonical_slice, decompose_groupnorm,
                              fold_batchnorm, fold_constants, fold_conv_pads, fold_scale_shift, fuse_activations,
                              matmul_to_gemm, pad_maxpool, remove_identity, remove_noops, remove_unused_initializers,
                              repair_ceil_pool)
from hub.graph.shapes import infer_shapes


class GraphPass(Protocol):
    """A pass module: `run(model) -> (model, nodes changed or removed, what it did in words)`."""

    @staticmethod
    def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]: ...


PASSES: tuple[ModuleType, ...] = (
    remove_identity,
    fold_constants,
    remove_noops,
    cancel_transposes,  # after remove_noops, which merges Transposes in a row; before the folds it unblocks
    decompose_groupnorm,  # before the folds: its Conv + Add(eps) then folds into one Conv
    canonical_slice,
    matmul_to_gemm,
    fold_batchnorm,
    fold_scale_shift,
    fuse_activations,
    pad_maxpool,  # after fuse_activations: it recognises non-negative inputs by their Relu
    repair_ceil_pool,  # before canonical_pooling, which states the global pool it writes as one window
    canonical_pooling,
    fold_conv_pads,  # strided Conv padding that is SAME's: no PAD op in the .tflite
    remove_unused_initializers,  # last: every fold above leaves old weights behind
)


def name_of(module: ModuleType) -> str:
    """A pass or rule is named by its module: report.json's `passes[].name`, `--passes` in tests."""
    return module.__name__.rpartition(".")[2]


def run_passes(model: onnx.ModelProto, only: list[str] | None = None) -> tuple[onnx.ModelProto, list[PassResult]]:
    """Run the passes in order (or only those named); shapes are re-inferred after any change."""
    results = []
    for module in PASSES:
        name = name_of(module)
        if only is not None and name not in only:
            continue
        model, changed, detail = module.run(model)
        if changed:
            model = infer_shapes(model)
        results.append(PassResult(name=name, changed=changed, detail=detail))
    return model, results
