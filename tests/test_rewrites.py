"""The rewrite stage's contract, independent of any one rule: what the user reads about rewrites."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from hub.artifacts import PassResult, Rewrite
from hub.graph.rewrite import describe, summary_line
from tests.conftest import run_hub


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


# --- the contract through the CLI --------------------------------------------------------------

def gelu_mlp(path: Path) -> Path:
    """MatMul -> exact GELU (the ONNX Gelu op, opset 20) -> MatMul: TFLM has no GELU kernel. Saved
    with onnx's default IR version (12), which onnxruntime 1.23 only loads once hub caps it at 11."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.5, (16, 32)).astype(np.float32), rng.normal(0, 0.3, (32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Gelu", ["h"], ["g"], name="act"),
         helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2")], "gelu_mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


@pytest.fixture(scope="module")
def gelu_model(tmp_path_factory) -> Path:
    return gelu_mlp(tmp_path_factory.mktemp("gelu") / "gelu_mlp.onnx")


def test_check_names_the_rewritten_node_and_passes_when_every_blocker_is_rewritable(gelu_model):
    proc = run_hub("check", gelu_model, "--json")
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert [(f["node"], f["op"], f["severity"]) for f in findings] == [("act", "Gelu", "rewrite")]
    assert "gelu_tanh" in findings[0]["message"]
    plain = run_hub("check", gelu_model, "--no-rewrite", "--json")
    assert plain.returncode == 1
    assert [(f["node"], f["severity"]) for f in json.loads(plain.stdout)["findings"]] == [("act", "error")]


def test_convert_says_what_it_rewrote_with_the_measured_error_and_report_json_keeps_it(gelu_model, tmp_path):
    proc = run_hub("convert", gelu_model, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "rewrote" in ln)
    assert "rewrote 1 node: 1 Gelu -> tanh form (max err " in line
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    [rule] = [p for p in report["passes"] if p["rewrites"]]
    assert rule["name"] == "gelu_tanh" and rule["rewrites"] == [{"node": "act", "op": "Gelu", "into": "tanh form",
                                                                           "path": None}]
    assert 0 < rule["max_abs_error"] < 5e-3  # the tanh form's 4.7e-4 per GELU, through the second layer
    assert "GELU" not in report["model"]["ops"] and report["fidelity"]["cosine"] >= 0.98
