"""Issue 12: a ResNet-18-style TorchScript model (fixtures/resnet18_128.pt, 3x128x128, padded 3x3/2 max-pool
after the stem's ReLU) converts to int8, runs on the real TFLM interpreter, and `hub check` said so beforehand.

Before the pad_maxpool pass, onnx2tf padded that max-pool with -3.4e38 (PADV2), the int8 stem got a scale of
~1.3e36 and TFLM aborted preparing the first residual ADD while `hub check` said "will run"."""
from __future__ import annotations

import json

from tests.conftest import FIXTURES, run_hub

FIXTURE = FIXTURES / "resnet18_128.pt"


def test_resnet18_128_runs_on_tflm_and_check_agrees(tmp_path):
    check = run_hub("check", FIXTURE, "--json")
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert json.loads(check.stdout)["compatible"]

    out = tmp_path / "resnet18_tflm"
    proc = run_hub("convert", FIXTURE, "--target", "tflm", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["tflm"]["loads"] and report["tflm"]["invokes"]
    assert report["model"]["ops"] == {"ADD": 8, "AVERAGE_POOL_2D": 1, "CONV_2D": 20, "FULLY_CONNECTED": 1,
                                      "MAX_POOL_2D": 1, "PAD": 5}  # the pool's padding is a PAD of zeros
    assert report["fidelity"]["cosine"] > 0.999 and report["fidelity"]["top1_agreement"] == 1
    assert 140_000 < report["memory"]["arena_bytes"] < 170_000  # 153,096 B measured; onnx2tf -oiqt's: 154 KB
    assert 740_000 < report["model"]["tflite_bytes"] < 780_000

    converted = run_hub("check", out / "model.tflite")  # the .tflite check agrees with what TFLM did
    assert converted.returncode == 0, converted.stdout[-2000:]
