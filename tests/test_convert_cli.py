"""`hub convert` end to end through the CLI: the report.json contract, offline, safe output."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from hub.output import current_umask
from hub.tflite.model import read_tflite
from tests.conftest import one_node_onnx, run_hub, small_cnn_onnx

REPORT_KEYS = {"target", "source", "model", "calibration", "timings_s", "memory", "fidelity", "tflm"}
IO_KEYS = {"name", "shape", "dtype", "scale", "zero_point"}


def test_default_example_report_contract(converted_resnet):
    out, stdout_doc, _ = converted_resnet
    files = {p.name for p in out.iterdir()}
    assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # an ordinary folder, not mkdtemp's 0700
    assert {"model.onnx", "model.tflite", "report.json"} <= files
    assert any(name.endswith("_model_data.cc") for name in files)
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["source"] == {"path": str(Path("fixtures/resnet_tiny.pt").resolve()), "framework": "pytorch"} \
        or report["source"]["framework"] == "pytorch"
    assert report["model"]["tflite_bytes"] == (out / "model.tflite").stat().st_size
    assert report["model"]["ops"].get("CONV_2D", 0) >= 3
    for io in report["model"]["inputs"] + report["model"]["outputs"]:
        assert IO_KEYS <= set(io) and io["dtype"] == "int8"
    assert report["calibration"]["source"] == "synthetic" and report["calibration"]["samples"] >= 32
    assert report["tflm"]["loads"] and report["tflm"]["invokes"]
    assert report["memory"]["arena_bytes"] > 0 and report["fidelity"]["cosine"] > 0.9
    # --json prints that same document (plus where it was written).
    assert {k: v for k, v in stdout_doc.items() if k != "output"} == report


def test_default_example_json_stdout_is_one_document(converted_resnet):
    _, _, proc = converted_resnet
    json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert "Traceback" not in proc.stderr


def _sandbox_prefix(tmp_path: Path) -> tuple[list[str], dict]:
    """Block the network: a network namespace with no interfaces where we may create one, else a
    sitecustomize that refuses every connect() in this process and its children."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        return ["unshare", "-n"], {}
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refuse(*a, **k):\n    raise OSError('network blocked by test')\n"
        "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\n")
    return [], {"PYTHONPATH": str(site)}


def test_conversion_with_the_network_blocked(tmp_path, small_cnn_path):
    prefix, env = _sandbox_prefix(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_hub("convert", small_cnn_path, "--out", tmp_path / "out", "--json", cwd=work, prefix=prefix, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = read_tflite((tmp_path / "out" / "model.tflite").read_bytes())
    assert model.io_specs("inputs")[0]["dtype"] == "int8"
    # Only the requested variant: no onnx2tf side products in the working folder or the output.
    assert list(work.iterdir()) == []
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".pb", ".h5") or "saved_model" in p.name]


def test_existing_output_is_kept_unless_force(tmp_path, small_cnn_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_hub("convert", small_cnn_path, "--out", out, "--quantize", "float32")
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    proc = run_hub("convert", small_cnn_path, "--out", out, "--quantize", "float32", "--force")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (out / "keep.txt").exists() and (out / "model.tflite").exists()
    assert read_tflite((out / "model.tflite").read_bytes()).io_specs("inputs")[0]["dtype"] == "float32"


def test_failed_conversion_leaves_no_output_folder(tmp_path):
    # A custom-domain op onnx2tf cannot convert; output shape declared so normalisation succeeds.
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "mystery.onnx"
    onnx.save(model, str(path))
    proc = run_hub("convert", path, "--out", tmp_path / "new" / "parents" / "out")
    assert proc.returncode in (1, 2), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("hub: warning:")]
    assert len(errors) == 1 and errors[0].startswith("hub: error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists()  # the parents it made for the output go too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out") or "tmp" in p.name]


def test_calibration_file_via_cli(tmp_path, small_cnn_path):
    """A .npz with labels beside the samples (as MLPerf Tiny ships them), an output folder whose parents
    do not exist yet (created, as mkdir -p), and plain-text output piped: no line is hard-wrapped."""
    import numpy as np

    samples = np.random.default_rng(3).random((16, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "cal.npz", specs=samples, labels=np.arange(16))
    out = tmp_path / "results" / "run1" / "out"
    proc = run_hub("convert", small_cnn_path, "--out", out, "--calibration", tmp_path / "cal.npz")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["samples"] + report["calibration"]["held_out_samples"] == 16 and not report["calibration"]["synthetic"]
    assert "'specs'" in report["calibration"]["notes"][0] and "'specs'" in proc.stdout
    assert "synthetic" not in proc.stderr
    ops = ", ".join(f"{k} x{v}" for k, v in report["model"]["ops"].items())
    assert any(line.startswith("  model.tflite") and line.endswith(ops) for line in proc.stdout.splitlines())
    assert max(len(line) for line in proc.stdout.splitlines()) > 80  # long lines stay whole


def test_mobile_tflite_target_writes_float16_without_tflm_files(tmp_path, small_cnn_path):
    proc = run_hub("convert", small_cnn_path, "--target", "tflite", "--quantize", "float16", "--out", tmp_path / "out",
                   "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["target"] == "tflite" and "tflm" not in report and "firmware" not in report
    model = read_tflite((tmp_path / "out" / "model.tflite").read_bytes())
    assert "float16" in {t.dtype for t in model.tensors}


def test_a_failure_hub_check_predicted_is_said_by_the_check_not_the_converter(tmp_path):
    """A TensorFlow op tf2onnx left in an ONNX file (ConvNeXt's Erfc): onnx2tf's own last line is an
    internal error; the one-line message names the node and op instead."""
    path = one_node_onnx(tmp_path / "erfc.onnx", "Erfc", name="gelu/Erfc")
    proc = run_hub("convert", path, "--out", tmp_path / "out")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hub: error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "gelu/Erfc (Erfc)" in errors[0] and "as hub check predicted" in errors[0]


def test_a_failure_elsewhere_keeps_the_converters_reason_before_the_checks():
    """The check's finding replaces the converter's line only when the converter stopped at that node:
    a memory limit or a timeout hit while a TopK was also blocked stays what it was."""
    from hub.api import _conversion_failure
    from hub.artifacts import CheckResult, Finding
    from hub.errors import IncompatibleError

    check = CheckResult(False, "tflm", "int8", [Finding("topk", "TopK", ["TOPK_V2"], "error", "TOPK_V2 is not in TFLM.")])
    memory = _conversion_failure(IncompatibleError("the converter ran out of its 8192 MB memory limit"), check, Path("m"))
    assert memory.message == ("the converter ran out of its 8192 MB memory limit; hub check predicted: topk (TopK): "
                              "TOPK_V2 is not in TFLM.")
    at_node = _conversion_failure(IncompatibleError("onnx2tf/TFLite conversion failed at ONNX node topk: KeyError"),
                                  check, Path("m"))
    assert at_node.message == "conversion failed at topk (TopK), as hub check predicted: TOPK_V2 is not in TFLM."
