"""hub sweep: jobs on a 2-worker LocalCluster and on a real dask scheduler + workers, each row checked
against a single hub convert; sweep.toml, resume, a failing and a timing-out job, and Ctrl-C."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.errors import InputError
from hub.sweep import run as sweep_stage
from tests.conftest import FIXTURES, HUB, ROOT, run_hub

MODELS = ("tiny_cnn.onnx", "keras_dense.h5", "resnet_tiny.pt")
MODES = ("int8", "float32")


def _figures(row: dict) -> tuple:
    return row["tflite_bytes"], row["arena_bytes"], row["runs_on_tflm"]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sweep") / "out"
    proc = run_hub("sweep", *(FIXTURES / m for m in MODELS), "--quantize", ",".join(MODES), "--workers", "2",
                   "--board", "nano33ble,pico", "--out", out, "--json", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return {"doc": json.loads(proc.stdout), "out": out}


@pytest.fixture(scope="module")
def single_converts(tmp_path_factory) -> dict:
    """(model, mode) -> (size, arena, runs) from one plain `hub convert --json` each."""
    work = tmp_path_factory.mktemp("single")
    figures = {}
    for model in MODELS:
        for mode in MODES:
            proc = run_hub("convert", FIXTURES / model, "--quantize", mode, "--out", work / f"{model}-{mode}", "--json")
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
            figures[model, mode] = (report["model"]["tflite_bytes"], report["memory"]["arena_bytes"],
                                    report["tflm"]["invokes"])
    return figures


@pytest.mark.slow
def test_local_cluster_rows_match_single_converts(local_sweep, single_converts):
    doc, out = local_sweep["doc"], local_sweep["out"]
    assert (doc["jobs"], doc["ok"], doc["failed"], doc["interrupted"]) == (6, 6, 0, False)
    assert doc["where"] == "LocalCluster of 2 workers"
    assert [(r["name"], r["mode"]) for r in doc["rows"]] == [(m, mode) for m in MODELS for mode in MODES]
    for row in doc["rows"]:
        assert _figures(row) == single_converts[row["name"], row["mode"]], row
        assert row["fits"] == {"nano33ble": True, "pico": True}
        # hub report's and hub optimize's rule: TFLM's code for the job's ops and its runtime RAM counted
        counted = row["board_fit"]["nano33ble"]["counted"]
        assert counted["model_bytes"] == row["tflite_bytes"] and counted["arena_bytes"] == row["arena_bytes"]
        assert counted["ops"] == row["op_names"] and counted["kernel_code_bytes"] > 0
        assert row["board_fit"]["nano33ble"]["flash"]["need_bytes"] == row["tflite_bytes"] + counted["kernel_code_bytes"]
        assert (Path(row["output"]) / "model.tflite").stat().st_size == row["tflite_bytes"]
    assert len({r["worker"] for r in doc["rows"]}) == 2  # both workers took jobs
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].endswith("fits_nano33ble,fits_pico")
    html = (out / "sweep.html").read_text()
    assert html.count("<tr>") == 7 and "<svg" in html and html.count("<circle") >= 6 + 3  # points + legend
    assert "<script" not in html and "src=" not in html  # self-contained


@pytest.fixture(scope="module")
def dask_cluster():
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                    "--no-dashboard", "--memory-limit", "0"], env=env, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = set(client.nthreads())
        yield address, workers
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_sweep_through_a_dask_scheduler(dask_cluster, local_sweep, tmp_path):
    address, workers = dask_cluster
    proc = run_hub("sweep", FIXTURES / "keras_dense.h5", "--quantize", ",".join(MODES), "--scheduler", address,
                   "--out", tmp_path / "out", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["where"] == address and doc["ok"] == 2
    local = {r["key"]: r for r in local_sweep["doc"]["rows"]}
    for row in doc["rows"]:
        assert row["worker"] in workers
        assert _figures(row) == _figures(local[row["key"]])  # same model and options: same key, same figures


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """A one-worker sweep of two jobs, SIGINT once the first has finished and the second is running."""
    out = tmp_path_factory.mktemp("interrupt") / "out"
    proc = subprocess.Popen([*HUB, "sweep", str(FIXTURES / "keras_dense.h5"), str(FIXTURES / "tiny_cnn.onnx"),
                             "--workers", "1", "--out", str(out), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 300
    while not list(out.glob("jobs/*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2)  # the second job's hub convert is under way
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return {"code": proc.returncode, "doc": json.loads(stdout), "stderr": stderr, "out": out}


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".partial-" in p.name]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_jobs_and_no_half_written_folder(interrupted):
    doc, out = interrupted["doc"], interrupted["out"]
    assert interrupted["code"] == 130, interrupted["stderr"]
    assert "sweep interrupted: 1 of 2 jobs finished" in interrupted["stderr"]
    assert doc["interrupted"] and [r["status"] for r in doc["rows"]] == ["ok", "not run"]
    assert (Path(doc["rows"][0]["output"]) / "report.json").exists()
    assert sorted(p.name for p in (out / "jobs").iterdir()) == sorted(
        [Path(doc["rows"][0]["output"]).name, Path(doc["rows"][0]["output"]).name + ".json"])
    assert not _leftovers(out) and (out / "sweep.json").exists()
    converters = subprocess.run(["pgrep", "-f", f"hub.cli convert .*--out {out}"], capture_output=True, text=True)
    assert converters.stdout == ""  # the stopped job's hub convert is gone


@pytest.mark.slow
def test_resume_runs_only_the_unfinished_job(interrupted, local_sweep):
    out = interrupted["out"]
    proc = run_hub("sweep", FIXTURES / "keras_dense.h5", FIXTURES / "tiny_cnn.onnx", "--workers", "1", "--out", out,
                   "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [(r["status"], r["resumed"]) for r in rows] == [("ok", True), ("ok", False)]
    assert rows[0] == {**interrupted["doc"]["rows"][0], "resumed": True}
    local = {r["key"]: r for r in local_sweep["doc"]["rows"]}
    assert _figures(rows[1]) == _figures(local[rows[1]["key"]])


def test_failing_and_timed_out_jobs_are_rows(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.onnx").write_bytes(b"not a model")
    shutil.copy(FIXTURES / "keras_dense.h5", models)
    (models / "sweep.toml").write_text('["keras_dense.h5"]\ntimeout = 3\n')
    proc = run_hub("sweep", models, "--workers", "2", "--out", tmp_path / "out", "--json")
    assert proc.returncode == 1, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["broken.onnx"]["status"] == "error" and rows["broken.onnx"]["exit"] == 2
    assert "broken.onnx" in rows["broken.onnx"]["error"] and "\n" not in rows["broken.onnx"]["error"]
    assert rows["keras_dense.h5"]["status"] == "timeout"
    assert rows["keras_dense.h5"]["error"] == "timed out after 3 s"
    assert rows["keras_dense.h5"]["output"] is None and not _leftovers(tmp_path / "out")


def test_sweep_toml_options_and_errors(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"y")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"z")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "sweep.toml").write_text('[defaults]\ninput_range = "0,255"\n\n["a.pth"]\nfactory = "m.py:Net"\n'
                                         'input_shape = "1,3,8,8"\ncalibration = "cal.npz:x"\ntrust_pickle = true\n'
                                         'timeout = 5\n')
    found = dict(sweep_stage.find_models([tmp_path]))
    assert sorted(p.name for p in found) == ["a.pth", "b.onnx", "saved"]
    flags = sweep_stage.convert_flags(found[tmp_path / "a.pth"])
    assert flags == (f"--calibration={tmp_path.absolute()}/cal.npz:x", f"--factory={tmp_path.absolute()}/m.py:Net",
                     "--input-range=0,255", "--input-shape=1,3,8,8", "--trust-pickle")
    jobs = sweep_stage.plan([tmp_path], ["int8", "float32"], tmp_path / "out")
    assert [j.timeout_s for j in jobs[:2]] == [5.0, 5.0] and jobs[2].timeout_s == sweep_stage.DEFAULT_TIMEOUT_S
    assert len({j.key for j in jobs}) == 6
    (tmp_path / "sweep.toml").write_text('["b.onnx"]\nschedule = "default"\ncompress = true\nper_tensor_weights = true\n'
                                         'per_channel_dense = false\n')
    assert sweep_stage.convert_flags(dict(sweep_stage.find_models([tmp_path]))[tmp_path / "b.onnx"]) == (
        "--compress", "--per-tensor-weights", "--schedule=default")
    for bad, message in (('["a.pth"]\nquantise = "int8"\n', "unknown option 'quantise'"),
                         ('["missing.onnx"]\ntimeout = 1\n', "missing.onnx, which is not a model"),
                         ('["a.pth"]\ntimeout = "soon"\n', "timeout must be a float"),
                         ('["a.pth"]\nschedule = "fast"\n', "schedule must be one of min-arena, default")):
        (tmp_path / "sweep.toml").write_text(bad)
        with pytest.raises(InputError, match=message):
            sweep_stage.find_models([tmp_path])


def test_job_key_follows_content_mode_and_options(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    key = sweep_stage.job_key(model, "int8", ())
    assert key == sweep_stage.job_key(model, "int8", ())
    assert key != sweep_stage.job_key(model, "float32", ())
    assert key != sweep_stage.job_key(model, "int8", ("--input-range=0,255",))
    (tmp_path / "m.onnx.data").write_bytes(b"external weights")  # ONNX external data counts as the model
    assert key != (with_data := sweep_stage.job_key(model, "int8", ()))
    model.write_bytes(b"two")
    assert with_data != sweep_stage.job_key(model, "int8", ())


def test_usage_errors_exit_2(tmp_path):
    for args, message in ((["nowhere.onnx"], "no such file or folder"),
                          ([FIXTURES / "tiny_cnn.onnx", "--quantize", "float16"], "refused for --target tflm"),
                          ([FIXTURES / "tiny_cnn.onnx", "--board", "nosuchboard"], "unknown board"),
                          ([FIXTURES / "tiny_cnn.onnx", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"],
                           "--workers takes")):
        proc = run_hub("sweep", *args, "--out", tmp_path / "out", cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
