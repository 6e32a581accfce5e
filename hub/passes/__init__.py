"""Graph passes on the normalised ONNX, in the spirit of onnxscript's rewriter: each pass
is a small module with `NAME` and `run(model) -> (model, changed, detail)`, listed
in PASSES in the order they run. Adding one is adding a module and a line here.

PASSES keep the model's meaning exactly and always run. REWRITES are the rules that replace
what TFLM has no kernel for (GELU, LayerNorm, GRU, LRN, ...) by builtins it has, some of them
approximations: they run for TFLM targets unless --no-rewrite, after the PASSES, and each
module has `NAME` and `run(model) -> (model, list[Rewrite])`; hub.rewrites measures the error
each one adds.
"""
from __future__ import annotations

import importlib

import onnx

from hub.artifacts import PassResult
from hub.shapes import infer_shapes

PASSES: list[str] = [
    "remove_identity",
    "fold_constants",
    "remove_noops",
    "decompose_groupnorm",  # before the folds: its Conv + Add(eps) then folds into one Conv
    "canonical_slice",
    "matmul_to_gemm",
    "fold_batchnorm",
    "fold_scale_shift",
    "fuse_activations",
    "pad_maxpool",  # after fuse_activations: it recognises non-negative inputs by their Relu
    "canonical_pooling",
    "fold_conv_pads",  # strided Conv padding that is SAME's: no PAD op in the .tflite
    "remove_unused_initializers",  # last: every fold above leaves old weights behind
]

REWRITES: list[str] = [
    "decompose_layernorm",
    "decompose_rmsnorm",
    "gelu_tanh",
    "erf_approx",  # after gelu_tanh, which takes the Erf of each GELU whole
    "split_qkv_heads",
    "unroll_rnn",
    "rewrite_hardsigmoid",
    "chain_concat",
    "topk_to_argmax",
    "decompose_lrn",
]


def run_passes(model: onnx.ModelProto, only: list[str] | None = None) -> tuple[onnx.ModelProto, list[PassResult]]:
    """Run the passes in order (or only those named); shapes are re-inferred after any change."""
    results = []
    for name in PASSES:
        if only is not None and name not in only:
            continue
        module = importlib.import_module(f"hub.passes.{name}")
        model, changed, detail = module.run(model)
        if changed:
            model = infer_shapes(model)
        results.append(PassResult(name=name, changed=changed, detail=detail))
    return model, results
