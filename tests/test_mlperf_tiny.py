"""hub convert on the two smallest MLPerf Tiny models (KWS, IC) against their reference int8
files: file size, op count and smallest TFLM arena must not exceed the reference's.
The other two (VWW, AD) and invoke times are in bench/mlperf_tiny.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.tflite_model import read_tflite
from tests.conftest import MLPERF, run_hub

# Input ranges from ../shared/mlperf_tiny/README.md.
CASES = {"kws": (MLPERF / "kws" / "ds_cnn_savedmodel", "-123,26"), "ic": (MLPERF / "ic" / "resnet8.h5", "0,255")}



@pytest.fixture(scope="session")
def mlperf_converted(tmp_path_factory) -> dict[str, tuple[bytes, dict]]:
    """`hub convert` on KWS and IC, once per session: {name: (tflite bytes, report.json)}."""
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
    from hub.verify import verify

    return {name: verify(_reference(name), None, None).memory["arena_bytes"] for name in CASES}


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
    assert report["fidelity"]["cosine"] >= 0.99 and report["fidelity"]["top1_agreement"] >= 0.875
    changed = {p["name"] for p in report["passes"] if p["changed"]}
    assert "canonical_pooling" in changed  # both end in a pad-free AveragePool
