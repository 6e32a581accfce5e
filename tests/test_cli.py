"""The CLI contract: commands, --help, --version, exit codes, one-line errors, --json on stdout only."""
from __future__ import annotations

import pytest

from hub import __version__
from tests.conftest import run_hub


def test_version():
    proc = run_hub("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hub {__version__}"


@pytest.mark.parametrize("command", ["convert", "check", "report", "export", "verify"])
def test_help_for_each_command(command):
    proc = run_hub(command, "--help")
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout and command in proc.stdout


def test_check_validates_the_quantize_mode(small_cnn_path):
    proc = run_hub("check", small_cnn_path, "--quantize", "int4")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("unknown --quantize 'int4' for --target tflm: choose one of int8, int16x8, float32")


def test_unknown_option_is_a_usage_error():
    proc = run_hub("convert", "x.onnx", "--no-such-flag")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--quantize", "float16"], "no float16 kernels"),
    (["--quantize", "dynamic"], "hybrid"),
    (["--target", "esp32"], "unknown --target 'esp32' for hub convert: choose one of tflm, ethos-u, tflite"),
    (["--input-range", "5,1"], "--input-range"),
    (["--input-shape", "1,x,3"], "--input-shape"),
])
def test_bad_requests_fail_before_any_work(tmp_path, small_cnn_path, args, message):
    proc = run_hub("convert", small_cnn_path, "--out", tmp_path / "out", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub: error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_file_is_one_line_exit_2(tmp_path):
    proc = run_hub("check", tmp_path / "nope.onnx")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nope.onnx" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    quiet = run_hub("check", bad)
    loud = run_hub("--debug", "check", bad)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
