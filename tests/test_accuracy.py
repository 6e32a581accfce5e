"""Accuracy on the user's data (issue 25): `hub convert/verify --data`, `--max-accuracy-drop`, hub.verify.accuracy."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub.convert.dataset import Dataset
from hub.verify import accuracy

from .conftest import run_hub

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ["fixtures/digits_cnn_state.pth", "--factory", "fixtures/torch_models.py:DigitsCNN", "--input-shape", "1,1,8,8",
          "--calibration", "fixtures/digits_train.npz"]
VAL = ROOT / "fixtures" / "digits_val.npz"


# --- the figures, by hand ----------------------------------------------------------------------

def test_measure_classifier_with_labels_by_hand():
    y = np.array([0, 0, 1, 2])
    source = np.eye(3)[[0, 0, 1, 1]]  # 3 of 4 right
    tflm = np.eye(3)[[0, 1, 1, 1]]  # 2 of 4 right
    got = accuracy.measure(Dataset(np.zeros((4, 2)), y, "d.npz"), {"out": tflm}, {"out": source}, "pytorch")
    assert got.task == "classification" and got.source_accuracy == 0.75 and got.tflm_accuracy == 0.5
    assert got.drop == 25.0 and got.agreement == 0.75
    assert [(c.label, c.samples, c.source, c.tflm) for c in got.per_class] == [(0, 2, 1.0, 0.5), (1, 1, 1.0, 1.0),
                                                                             (2, 1, 0.0, 0.0)]
    assert got.confusion == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    judged, finding = accuracy.judge(got, 10)
    assert not judged.ok and finding.severity == "error" and "25.00 percentage points" in finding.message
    assert accuracy.judge(got, 30)[0].ok and accuracy.judge(got, 30)[1] is None
    doc = json.loads(json.dumps(judged.to_dict()))
    assert doc["drop_percentage_points"] == 25.0 and doc["max_drop_percentage_points"] == 10 and doc["ok"] is False


def test_measure_without_labels_is_agreement_and_non_classifiers_get_errors():
    source, tflm = np.eye(4)[[0, 1, 2, 3]], np.eye(4)[[0, 1, 2, 2]]
    got = accuracy.measure(Dataset(np.zeros((4, 2)), None, "d.npz"), {"o": tflm}, {"o": source}, "onnxruntime")
    assert got.agreement == 0.75 and got.tflm_accuracy is None and got.drop == 25.0
    assert got.confusion[3] == [0, 0, 1, 0]  # rows: the source's top-1
    feats = np.ones((3, 1, 4, 4))
    reg = accuracy.measure(Dataset(np.zeros((3, 2)), None, "d.npz"), {"f": feats + 0.5}, {"f": feats}, "keras")
    assert reg.task == "regression" and reg.outputs[0].rmse == pytest.approx(0.5) and reg.outputs[0].max_abs_error == 0.5
    assert accuracy.judge(reg, 1.0)[1].severity == "warning"  # not a classifier: not checked, said so


# --- bad --data: one-line input errors, before any conversion -----------------------------------

def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hub: error:"), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    x = np.load(VAL)["x"]
    np.savez(d / "short_y.npz", x=x, y=np.zeros(3, np.int64))
    np.savez(d / "float_y.npz", x=x, y=np.zeros(len(x), np.float32))
    np.savez(d / "big_class.npz", x=x, y=np.full(len(x), 12, np.int64))
    np.savez(d / "wrong_shape.npz", x=np.zeros((5, 3, 4, 4), np.float32))
    (d / "text.csv").write_text("1,2,3\n")
    return d


@pytest.mark.parametrize("name, says", [("missing.npz", "no such file"), ("text.csv", "--data must be a .npz"),
                                        ("short_y.npz", "one non-negative integer class label per sample"),
                                        ("float_y.npz", "one non-negative integer class label per sample"),
                                        ("wrong_shape.npz", "expected (N, 1, 8, 8)"),
                                        ("big_class.npz", "y holds class 12")])
def test_bad_data_is_a_one_line_input_error(bad_files, name, says, tmp_path):
    # --data is read right after the model loads: a bad file costs no conversion
    line = _one_line_error(run_hub("convert", *DIGITS, "--data", bad_files / name, "--out", tmp_path / "o", cwd=ROOT))
    assert says in line


def test_max_accuracy_drop_needs_data_and_tflm(tmp_path):
    line = _one_line_error(run_hub("convert", *DIGITS, "--max-accuracy-drop", "1", "--out", tmp_path / "o", cwd=ROOT))
    assert "give --data" in line
    line = _one_line_error(run_hub("convert", *DIGITS, "--data", VAL, "--target", "tflite", "--out", tmp_path / "o",
                                   cwd=ROOT))
    assert "--target tflm" in line


# --- the whole command on the digits model (one conversion shared) ------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("acc") / "digits"
    proc = run_hub("convert", *DIGITS, "--data", VAL, "--max-accuracy-drop", "50", "--out", out, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_convert_prints_and_stores_source_and_tflm_accuracy(converted):
    _, stdout, doc = converted
    a = doc["accuracy"]
    assert a["samples"] == 359 and a["labelled"] and a["reference"] == "pytorch" and a["task"] == "classification"
    assert a["source_accuracy"] > 0.95 and a["tflm_accuracy"] > 0.95 and a["ok"] is True
    assert a["drop_percentage_points"] == pytest.approx(100 * (a["source_accuracy"] - a["tflm_accuracy"]), abs=1e-3)
    assert len(a["confusion"]) == 10 and sum(map(sum, a["confusion"])) == 359 and len(a["per_class"]) == 10
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("accuracy"))
    assert f"source (pytorch) {100 * a['source_accuracy']:.2f} %" in line
    assert f"TFLM {100 * a['tflm_accuracy']:.2f} %" in line and "drop" in line


INDEPENDENT_LOOP = """
import json, sys
import numpy as np
from tflite_micro import runtime
folder, data = sys.argv[1], sys.argv[2]
spec = json.load(open(folder + "/report.json"))["model"]["inputs"][0]
interp = runtime.Interpreter.from_bytes(open(folder + "/model.tflite", "rb").read(), arena_size=1 << 20)
with np.load(data) as npz:
    x, y = npz["x"], npz["y"]
right = 0
for sample, label in zip(x, y):
    q = np.clip(np.round(np.transpose(sample, (1, 2, 0)) / spec["scale"]) + spec["zero_point"], -128, 127)
    interp.set_input(q.astype(np.int8)[None], 0)
    interp.invoke()
    right += int(np.argmax(interp.get_output(0)) == label)  # the scale is positive: argmax of the int8 scores
print(right / len(y))
"""


@pytest.mark.slow
def test_tflm_accuracy_is_what_the_interpreter_itself_gives(converted):
    out, _, doc = converted
    proc = subprocess.run([sys.executable, "-c", INDEPENDENT_LOOP, str(out), str(VAL)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == doc["accuracy"]["tflm_accuracy"]


@pytest.mark.slow
def test_confusion_matrix_renders_in_chromium(converted, tmp_path):
    from .test_report import _browse

    out, _, doc = converted
    html = (out / "report.html").read_text()
    assert "<script" not in html
    dom = _browse(out / "report.html", tmp_path / "accuracy.png")
    assert "Accuracy on your data" in dom and '<table id="confusion">' in dom and '<table id="per-class">' in dom
    assert dom.count("<tr>", dom.index('<table id="confusion">')) >= 11  # head + 10 classes
    assert f"{100 * doc['accuracy']['tflm_accuracy']:.2f} %" in dom


@pytest.mark.slow
def test_max_accuracy_drop_zero_fails_and_a_generous_one_passes(converted, tmp_path):
    out, _, _ = converted
    with np.load(VAL) as npz:  # noise beyond the calibrated input range: the int8 input clips, the source does not
        x = npz["x"] + np.random.default_rng(0).normal(0, 0.5, npz["x"].shape)
        np.savez(tmp_path / "noisy.npz", x=x.astype(np.float32), y=npz["y"])
    common = ["verify", out / "model.tflite", "--reference", out / "model.onnx", "--data", tmp_path / "noisy.npz"]
    strict = run_hub(*common, "--max-accuracy-drop", "0")
    assert strict.returncode == 1, strict.stderr
    assert "past --max-accuracy-drop 0" in strict.stdout
    generous = run_hub(*common, "--max-accuracy-drop", "100", "--json")
    assert generous.returncode == 0, generous.stderr
    a = json.loads(generous.stdout)["accuracy"]
    assert a["drop_percentage_points"] > 0 and a["ok"] is True and a["reference"] == "onnxruntime"


@pytest.mark.slow
def test_verify_unlabelled_data_gives_agreement_and_without_reference_tflm_alone(converted, tmp_path):
    out, _, doc = converted
    with np.load(VAL) as npz:
        np.savez(tmp_path / "unlabelled.npz", x=npz["x"])
    proc = run_hub("verify", out / "model.tflite", "--reference", out / "model.onnx", "--data",
                   tmp_path / "unlabelled.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    a = json.loads(proc.stdout)["accuracy"]
    assert not a["labelled"] and a["source_accuracy"] is None and a["agreement"] > 0.95
    alone = run_hub("verify", out / "model.tflite", "--data", VAL, "--json")
    assert alone.returncode == 0, alone.stderr
    a = json.loads(alone.stdout)["accuracy"]
    assert a["reference"] is None and a["source_accuracy"] is None
    assert a["tflm_accuracy"] == doc["accuracy"]["tflm_accuracy"]  # the same samples on the same interpreter
