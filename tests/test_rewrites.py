"""The rewrite stage's contract, independent of any one rule: what the user reads about rewrites."""
from __future__ import annotations

from hub.artifacts import PassResult, Rewrite
from hub.rewrites import describe, summary_line


def test_summary_line_counts_nodes_and_names_each_rule_with_its_measured_error():
    gelu = [Rewrite(f"Erf_{i}", "Gelu", "tanh form") for i in range(4)]
    norm = [Rewrite(f"LN_{i}", "LayerNormalization", "builtins") for i in range(4)]
    passes = [PassResult("fold_constants", 3, "folded 3"),
              PassResult("gelu_tanh", 4, describe(gelu), gelu, 3.1e-4),
              PassResult("decompose_layernorm", 4, describe(norm), norm, 0.0)]
    assert summary_line(passes) == ("rewrote 8 nodes: 4 Gelu -> tanh form (max err 3e-4), "
                                    "4 LayerNormalization -> builtins")


def test_no_rewrite_no_summary():
    assert summary_line([PassResult("fold_constants", 3, "folded 3")]) is None
