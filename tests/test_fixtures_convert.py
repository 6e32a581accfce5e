"""Every fixture, through `hub convert` as a user runs it: it converts, TFLM runs it, report.json's
arena is the exact minimum (re-probed here at arena_bytes and arena_bytes - 16), fidelity is present."""
from __future__ import annotations

import json

import pytest

from hub.verify.tflm import probe_arena
from tests.conftest import FIXTURES, run_hub

# fixture -> extra flags (the README's commands for each format)
CASES = {
    "resnet_tiny.pt": [],
    "tiny_cnn.pt2": [],
    "tiny_cnn_state.pth": ["--factory", str(FIXTURES / "torch_models.py:TinyCNN"), "--input-shape", "1,3,32,32"],
    "tiny_cnn.onnx": [],
    "tiny_cnn_external.onnx": [],
    "keras_cnn.keras": [],
    "keras_dense.h5": [],
    "keras_savedmodel": [],
}


@pytest.fixture(scope="session")
def converted_fixtures(tmp_path_factory, converted_resnet) -> dict[str, tuple[bytes, dict]]:
    """{fixture: (model.tflite bytes, report.json)}; resnet_tiny.pt reuses the session's conversion."""
    out_dir, report, _ = converted_resnet
    results = {"resnet_tiny.pt": ((out_dir / "model.tflite").read_bytes(), report)}
    for name, flags in CASES.items():
        if name in results:
            continue
        out = tmp_path_factory.mktemp("fixture") / "out"
        proc = run_hub("convert", FIXTURES / name, "--target", "tflm", "--out", out, "--json", *flags, cwd=FIXTURES.parent)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
        results[name] = ((out / "model.tflite").read_bytes(), json.loads((out / "report.json").read_text()))
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_fixture_runs_on_tflm_with_good_fidelity(converted_fixtures, name):
    _, report = converted_fixtures[name]
    tflm = {k: v for k, v in report["tflm"].items() if k != "invoke_us_host"}
    assert tflm == {"loads": True, "invokes": True, "message": None}
    assert report["tflm"]["invoke_us_host"] > 0  # mean over the held-out samples, on this host
    assert all(io["dtype"] == "int8" for io in report["model"]["inputs"] + report["model"]["outputs"])
    fidelity = report["fidelity"]
    assert fidelity["samples"] == 8 and fidelity["cosine"] >= 0.99, fidelity
    assert fidelity["reference"] == REFERENCE[name.split(".")[-1] if "." in name else "keras"]  # the source itself


REFERENCE = {"pt": "pytorch", "pt2": "pytorch", "pth": "pytorch", "onnx": "onnxruntime", "keras": "keras", "h5": "keras"}


@pytest.mark.parametrize("name", list(CASES))
def test_reported_arena_is_the_exact_minimum(converted_fixtures, name):
    data, report = converted_fixtures[name]
    arena = report["memory"]["arena_bytes"]
    assert probe_arena(data, arena), f"{name}: {arena} B should allocate and invoke"
    assert not probe_arena(data, arena - 16), f"{name}: {arena - 16} B should not suffice"
    assert report["memory"]["arena_recommended_bytes"] >= arena
    assert report["memory"]["flash_bytes"] == len(data)
