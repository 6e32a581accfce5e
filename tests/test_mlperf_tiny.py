"""hub convert on the four MLPerf Tiny models against their reference int8 files: file size, op
count and smallest TFLM arena must not exceed the reference's, and the reported arena is exact.
Invoke times (noisy on shared machines) are in bench/mlperf_tiny.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.tflite.model import read_tflite
from tests.conftest import MLPERF, run_hub

# Input ranges from ../shared/mlperf_tiny/README.md.
CASES = {"kws": (MLPERF / "kws" / "ds_cnn_savedmodel", "-123,26"), "ic": (MLPERF / "ic" / "resnet8.h5", "0,255"),
         "ad": (MLPERF / "ad" / "autoencoder.h5", "-85,15"), "vww": (MLPERF / "vww" / "mobilenet_v1_025.h5", "0,1")}
CLASSIFIERS = ("kws", "ic", "vww")



@pytest.fixture(scope="session")
def mlperf_converted(tmp_path_factory) -> dict[str, tuple[bytes, dict]]:
    """`hub convert` on each model, once per session: {name: (tflite bytes, report.json)}."""
    out = {}
    for name, (source, value_range) in CASES.items():
        folder = tmp_path_factory.mktemp("mlperf") / name
        proc = run_hub("convert", source, "--target", "tflm", f"--input-range={value_range}", "--out", folder, "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = ((folder / "model.tflite").read_bytes(), json.loads((folder / "report.json").read_text()))
    return out


@pytest.fixture(scope="session")
def reference_arenas() -> dict[str, int]:
    """Smallest arena of each reference file, measured exactly as hub convert measures its own."""
    from hub.verify.tflm import verify

    return {name: verify(_reference(name), None, None).memory.arena_bytes for name in CASES}


def _reference(name: str) -> bytes:
    return Path(MLPERF / name / "reference_int8.tflite").read_bytes()


@pytest.mark.parametrize("name", list(CASES))
def test_size_and_op_count_do_not_exceed_the_reference(mlperf_converted, name):
    ours, ref = read_tflite(mlperf_converted[name][0]), read_tflite(_reference(name))
    assert ours.size_bytes <= ref.size_bytes
    assert len(ours.ops) <= len(ref.ops), (ours.op_histogram(), ref.op_histogram())
    # The ops onnx2tf added before the passes existed (field notes): none left.
    assert not {"STRIDED_SLICE", "TRANSPOSE", "ADD", "MUL"} & set(ours.op_histogram()) - set(ref.op_histogram())
    # hub's default, as in the references: one scale per FULLY_CONNECTED weight tensor (per channel
    # costs ~24 B of flash per output channel and arena for per-channel multipliers).
    dense_weights = [ours.tensors[op.inputs[1]] for op in ours.ops if op.name == "FULLY_CONNECTED"]
    assert dense_weights and all(len(t.scales) == 1 for t in dense_weights)


@pytest.mark.parametrize("name", list(CASES))
def test_arena_does_not_exceed_the_reference(mlperf_converted, reference_arenas, name):
    arena = mlperf_converted[name][1]["memory"]["arena_bytes"]
    assert arena is not None and reference_arenas[name] is not None
    assert arena <= reference_arenas[name]


@pytest.mark.parametrize("name", list(CASES))
def test_int8_follows_the_float_model_and_passes_are_reported(mlperf_converted, name):
    report = mlperf_converted[name][1]
    assert report["fidelity"]["cosine"] >= 0.99
    changed = {p["name"] for p in report["passes"] if p["changed"]}
    if name in CLASSIFIERS:
        assert report["fidelity"]["top1_agreement"] >= 0.875
    if name in ("kws", "ic"):
        assert "canonical_pooling" in changed  # both end in a pad-free AveragePool
    if name == "ad":
        assert "fold_scale_shift" in changed  # tf2onnx's Gemm -> Mul -> Add BatchNorm, the nine extra ADDs


@pytest.mark.parametrize("name", list(CASES))
def test_reported_arena_is_the_exact_minimum(mlperf_converted, name):
    from hub.verify.tflm import probe_arena

    data, report = mlperf_converted[name]
    arena = report["memory"]["arena_bytes"]
    assert probe_arena(data, arena) and not probe_arena(data, arena - 16)
