"""A fixed-seed sample of mutated model files through the real CLI (bench/fuzz_cli.py runs >= 1,000).

Every case must end with exit 0, 1 or 2 within the time bound, with no traceback, a failure as one
`hub: error:` line naming the file, nothing half-written and the input unchanged (tests/mutations.py
`judge`). The sample is small enough for CI (~3 min on 2 cores): mostly `hub check`, a few `hub
convert` and `hub report`.
"""
from __future__ import annotations

import io
import zipfile
import onnx
import pytest

from tests.mutations import FORMATS, fixture_bytes, make_case, run_case

# (format, cases): cheap formats get more; torch/Keras cases pay 4-7 s of imports when they load.
CHECK_SAMPLE = [(fmt, seed) for fmt, n in (("onnx", 14), ("tflite", 12), ("pt", 5), ("pt2", 4), ("keras", 5),
                                           ("h5", 5)) for seed in range(n)]
OTHER_SAMPLE = [("convert", "onnx", 7), ("convert", "onnx", 11), ("report", "onnx", 3), ("report", "tflite", 5)]


@pytest.fixture(scope="module")
def originals(small_cnn_int8_tflite):
    cache: dict[str, bytes] = {}

    def get(fmt: str) -> bytes:
        if fmt not in cache:
            cache[fmt] = fixture_bytes(fmt, small_cnn_int8_tflite[0])
        return cache[fmt]

    return get


@pytest.mark.parametrize("fmt,seed", CHECK_SAMPLE, ids=[f"{f}-{s}" for f, s in CHECK_SAMPLE])
def test_check_keeps_the_contract_on_mutated_files(tmp_path, originals, fmt, seed):
    case = make_case(fmt, originals(fmt), seed)
    outcome = run_case(case, tmp_path / "case", "check")
    assert outcome.ok, f"{fmt} seed {seed} ({case.kind}): {outcome.problems}; exit {outcome.returncode}: {outcome.stderr}"


@pytest.mark.parametrize("command,fmt,seed", OTHER_SAMPLE, ids=[f"{c}-{f}-{s}" for c, f, s in OTHER_SAMPLE])
def test_convert_and_report_keep_the_contract_on_mutated_files(tmp_path, originals, command, fmt, seed):
    case = make_case(fmt, originals(fmt), 100000 + seed)
    outcome = run_case(case, tmp_path / "case", command)
    assert outcome.ok, f"{command} {fmt} ({case.kind}): {outcome.problems}; exit {outcome.returncode}: {outcome.stderr}"


def test_mutations_are_deterministic_and_reach_inside_the_structure(originals):
    """Same seed, same bytes; structure-aware cases stay parseable containers, so the damage
    reaches the loaders and the analysis, not only the first parser."""
    for fmt in FORMATS:
        cases = [make_case(fmt, originals(fmt), seed) for seed in range(40)]
        assert [c.data for c in cases[:5]] == [make_case(fmt, originals(fmt), s).data for s in range(5)]
        assert all(c.data != originals(fmt) for c in cases)
        structured = [c for c in cases if "." in c.kind]
        assert len({c.kind for c in structured}) >= 4, (fmt, sorted({c.kind for c in cases}))
        for case in structured:
            if fmt == "onnx":
                onnx.ModelProto().ParseFromString(case.data)
            elif fmt == "tflite" and case.kind != "tflite.offset":
                assert case.data[4:8] == b"TFL3"
            elif fmt in ("pt", "pt2", "keras"):
                assert zipfile.ZipFile(io.BytesIO(case.data)).namelist()
            elif fmt == "h5":
                assert case.data[:8] == b"\x89HDF\r\n\x1a\n"


def test_a_broken_contract_is_detected(tmp_path):
    """The judge itself: a traceback, a second error line or a leftover partial folder are caught."""
    from tests.mutations import judge, sha256

    model = tmp_path / "case_0.onnx"
    model.write_bytes(b"x")
    (tmp_path / "tmp").mkdir()
    digest = sha256(model)
    assert judge("check", 2, f"hub: error: {model}: bad\n", tmp_path, model, digest).ok
    assert not judge("check", 1, "Traceback (most recent call last):\n", tmp_path, model, digest).ok
    assert not judge("check", 2, "hub: error: something else\n", tmp_path, model, digest).ok
    assert not judge("check", -11, "", tmp_path, model, digest).ok
    assert not judge("check", None, "", tmp_path, model, digest).ok
    (tmp_path / ".out.partial-x").mkdir()
    assert not judge("convert", 2, f"hub: error: {model}: bad\n", tmp_path, model, digest).ok
    (tmp_path / ".out.partial-x").rmdir()
    model.write_bytes(b"y")
    assert not judge("check", 0, "", tmp_path, model, digest).ok


def test_sample_covers_every_format():
    assert {f for f, _ in CHECK_SAMPLE} == set(FORMATS)

