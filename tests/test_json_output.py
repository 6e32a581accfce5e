"""`--json` always answers: every command prints exactly one parseable JSON document on stdout, on success
and on failure (the exit code, the one-line error and the stages that finished), whatever the failure is:
a usage error typer catches, an input error, a conversion that stops part way. Success documents of the
heavy commands (convert, verify, export, optimize, sweep) are checked beside their own tests."""
from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, one_node_onnx, run_hub


def one_document(proc) -> dict:
    """stdout is exactly one JSON document (json.loads refuses a second one or trailing text)."""
    return json.loads(proc.stdout)


def assert_failure(proc, code: int) -> dict:
    doc = one_document(proc)
    assert proc.returncode == code == doc["exit_code"] and doc["ok"] is False, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hub: error:")]
    assert errors == [f"hub: error: {doc['error']}"] and "Traceback" not in proc.stderr
    return doc


@pytest.mark.parametrize("args", [
    ("convert", "missing.onnx"),
    ("check", "missing.onnx"),
    ("verify", "missing.tflite"),
    ("export", "missing.tflite"),
    ("optimize", "missing.pt", "--data", "missing.npz"),
    ("sweep", "missing_folder"),
])
def test_an_input_error_is_one_document(tmp_path, args):
    doc = assert_failure(run_hub(*args, "--json", cwd=tmp_path), 2)
    assert "missing" in doc["error"] and doc["finished_stages"] == {}


def test_report_in_json_format_answers_its_failure_in_json(tmp_path):
    assert "no such file" in assert_failure(run_hub("report", "missing.onnx", "--format", "json", cwd=tmp_path), 2)["error"]


def test_a_usage_error_caught_before_any_command_is_one_document(tmp_path):
    doc = one_document(proc := run_hub("convert", "--json", cwd=tmp_path))
    assert proc.returncode == 2 == doc["exit_code"] and "Missing argument" in doc["error"]
    doc = one_document(proc := run_hub("check", FIXTURES / "tiny_cnn.onnx", "--no-such-flag", "--json", cwd=tmp_path))
    assert proc.returncode == 2 and "--no-such-flag" in doc["error"]
    assert run_hub("check", "--no-such-flag", cwd=tmp_path).stdout == ""  # without --json: typer's usage text only


def test_a_conversion_that_stops_part_way_names_the_stages_that_finished(tmp_path):
    """The converter stops on a TensorFlow op tf2onnx left behind: load and normalise had finished."""
    path = one_node_onnx(tmp_path / "erfc.onnx", "Erfc", name="gelu/Erfc")
    doc = assert_failure(run_hub("convert", path, "--out", tmp_path / "out", "--json"), 1)
    assert "gelu/Erfc (Erfc)" in doc["error"]
    assert {"load", "normalise", "analyse"} <= set(doc["finished_stages"]) and "convert" not in doc["finished_stages"]


def test_check_answers_in_one_document_whether_the_model_runs_or_not(tmp_path):
    runs = one_document(proc := run_hub("check", FIXTURES / "tiny_cnn.onnx", "--json"))
    assert proc.returncode == 0 and runs["compatible"] is True
    path = one_node_onnx(tmp_path / "mystery.onnx", "Mystery", domain="com.example")
    blocked = one_document(proc := run_hub("check", path, "--json"))
    assert proc.returncode == 1 and blocked["compatible"] is False
