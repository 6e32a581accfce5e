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
    assert proc.stderr.strip().endswith("unknown --quantize 'int4' for --target tflm: choose one of int8, int16x8, auto, float32")


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


def test_convert_options_are_declared_once():
    """hub/options.py's table is what `hub convert --help`, api.convert, the converter child and sweep.toml read;
    README's tables list every option."""
    import dataclasses
    import re

    from hub.convert.converter import ConvertOptions
    from hub.options import CONVERT_OPTIONS, SWEEP_OPTIONS, ConvertRequest
    from hub.sweep.run import OPTIONS, SWEEP_TOML_HELP
    from tests.conftest import ROOT

    help_text = run_hub("convert", "--help", env={"COLUMNS": "200"}).stdout
    readme = (ROOT / "README.md").read_text()
    convert_table = readme.split("### `hub convert` options", 1)[1].split("\n\n**", 1)[0]
    sweep_section = readme.split("## `hub sweep`", 1)[1].split("\n## ", 1)[0]
    requested = {f.name for f in dataclasses.fields(ConvertRequest)}
    for option in CONVERT_OPTIONS:
        assert re.search(rf"{option.flag}\b", help_text) and option.flag in convert_table, option.flag
        assert option.load or option.name in requested, option.flag
    for option in SWEEP_OPTIONS:
        assert OPTIONS[option.key][0] == option.flag and option.key in SWEEP_TOML_HELP
        assert f"`{option.key}`" in sweep_section, option.key
    assert {"per_channel_dense", "per_tensor_weights"} <= {f.name for f in dataclasses.fields(ConvertOptions)}


def test_api_convert_refuses_an_unknown_keyword_and_a_contradiction(tmp_path):
    from hub import api
    from hub.errors import InputError

    with pytest.raises(TypeError, match="per_tensor_weight"):
        api.convert(tmp_path / "m.onnx", per_tensor_weight=True)
    with pytest.raises(InputError, match="--per-channel-dense and --per-tensor-weights contradict each other"):
        api.convert(tmp_path / "m.onnx", out=tmp_path / "out", per_channel_dense=True, per_tensor_weights=True)
    with pytest.raises(InputError, match="--schedule 'fast': choose one of min-arena, default"):
        api.convert(tmp_path / "m.onnx", out=tmp_path / "out", schedule="fast")
    assert not (tmp_path / "out").exists()
