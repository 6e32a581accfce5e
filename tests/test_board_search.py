"""`hub optimize --board/--ram/--flash` (issue 16): candidates measured on TFLM, the most accurate that fits,
the Pareto charts in report.html rendered in headless Chromium."""
from __future__ import annotations

import json

import pytest

from hub.knowledge.boards import find_board
from hub.optimize import board_search
from tests.conftest import FIXTURES, run_hub
from tests.test_report import _browse

ROOT = FIXTURES.parent
DIGITS = ["fixtures/digits_cnn_state.pth", "--factory", "fixtures/torch_models.py:DigitsCNN", "--input-shape", "1,1,8,8",
          "--data", "fixtures/digits_train.npz", "--val", "fixtures/digits_val.npz"]
FLASH_KB = 68  # the digits CNN needs ~110 KB unpruned (model + kernels), ~67 KB at half its channels


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "fit"
    proc = run_hub("optimize", *DIGITS, "--flash", str(FLASH_KB), "--prune-levels", "0,0.5", "--epochs", "1",
                   "--out", out, "--json", cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_search_returns_the_most_accurate_candidate_that_fits(searched):
    out, doc = searched
    search = doc["optimize"]["search"]
    assert search == json.loads((out / "report.json").read_text())["optimize"]["search"]
    candidates = {c["label"]: c for c in search["candidates"]}
    assert len(candidates) == 2 * len(board_search.VARIANTS)  # both levels measured: nothing fits unpruned
    assert search["unoptimised_fits"] is False and not candidates["prune 0%, int8"]["fits"]
    fitting = [c for c in candidates.values() if c["fits"]]
    assert fitting and all(c["prune"] == 0.5 and c["flash_need"] <= FLASH_KB * 1024 for c in fitting)
    chosen = candidates[search["chosen"]]
    assert chosen["accuracy"] == max(c["accuracy"] for c in fitting)
    for c in candidates.values():  # every figure measured: flatbuffer, arena, kernels, runtime
        assert c["error"] is None and c["flash_need"] > c["flash_bytes"] and c["ram_need"] > c["arena_bytes"]
    assert doc["model"]["tflite_bytes"] == chosen["flash_bytes"]
    assert (out / "model.tflite").stat().st_size == chosen["flash_bytes"]
    assert (out / "digits_cnn_state_model_settings.h").exists()


def test_pareto_charts_render_in_chromium(searched, tmp_path):
    out, _ = searched
    dom = _browse(out / "report.html", tmp_path / "search.png")
    assert dom.count('aria-label="Accuracy against') == 2  # flash and RAM
    assert 'class="chosen"' in dom and 'class="front"' in dom and 'class="budget"' in dom
    assert '<table id="search">' in dom and "(chosen)" not in dom  # the table marks the row by class


def test_the_closest_candidate_is_named_when_none_fits():
    board = find_board("bluepill")
    small = board_search.Candidate(0.5, board_search.Variant("int8"), flash_need=70_000, ram_need=9_000)
    big = board_search.Candidate(0.0, board_search.Variant("int8"), flash_need=110_000, ram_need=10_000)
    line = board_search.closest([big, small])
    assert "prune 50%, int8" in line and "70,000 B of flash" in line and board.name not in line
    failed = board_search.Candidate(0.0, board_search.Variant("int16x8"), error="TFLM did not run it")
    assert "TFLM did not run it" in board_search.closest([failed])
