"""Bad input never crashes hub, untrusted files never run code, nothing is ever half-written.

- Canaries: a pickle, a Keras Lambda layer and ONNX external-data locations that would touch a
  canary file if executed or followed; refused by default, canary untouched.
- Interrupts: SIGTERM / SIGINT during a real conversion leave no output, no temp folder, no child.
- Child limits: a child over its time or memory limit is a reported failure, not a hang.
- Error paths: each anticipated failure is exit 2 (1: incompatible), one line naming the file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import psutil
import pytest
from onnx import TensorProto, helper

from tests.conftest import FIXTURES, HUB, run_hub, sign_onnx, small_cnn_onnx

OLD_ATIME = 1_000_000  # older than the mtime: on relatime mounts any read of the file updates it


def one_error_line(proc: subprocess.CompletedProcess, name: str) -> str:
    """The contract of a failure: exactly one stderr line, `hub: error:`, naming the file, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("hub: error:") and name in lines[0], lines[0]
    return lines[0]


def make_canary(path: Path, content: bytes = b"canary") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (OLD_ATIME, OLD_ATIME + 1000))
    return path


def assert_untouched(canary: Path, content: bytes = b"canary") -> None:
    assert canary.read_bytes() == content  # reading it here updates atime: check that last
    canary_stat = os.stat(canary)
    assert canary_stat.st_mtime == OLD_ATIME + 1000


def assert_not_read(canary: Path) -> None:
    assert os.stat(canary).st_atime == OLD_ATIME, "the canary was opened"


# --- canaries ---------------------------------------------------------------------------------------

def test_pickle_payload_is_refused_and_runs_only_with_trust_pickle(tmp_path):
    import torch

    canary = tmp_path / "pickle_ran.txt"

    class Payload:  # unpickling calls eval(expr): writes the canary, returns a working module
        def __reduce__(self):
            expr = (f"(open({str(canary)!r}, 'w').write('pickle ran'), "
                    "__import__('torch').nn.Sequential(__import__('torch').nn.Linear(4, 2)))[1]")
            return (eval, (expr,))

    model = tmp_path / "evil.pt"
    torch.save(Payload(), model)
    refused = run_hub("check", model, "--input-shape", "1,4", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--trust-pickle" in one_error_line(refused, "evil.pt")
    assert not canary.exists()

    trusted = run_hub("check", model, "--input-shape", "1,4", "--trust-pickle", cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert canary.read_text() == "pickle ran"  # the flag really hands the file to pickle


@pytest.fixture(scope="module")
def lambda_keras(tmp_path_factory) -> tuple[Path, Path]:
    """A .keras model whose Lambda layer writes a canary file when its code runs."""
    import keras

    folder = tmp_path_factory.mktemp("lambda_keras")
    canary = folder / "lambda_ran.txt"
    fn = eval(f"lambda x: (open({str(canary)!r}, 'w').write('lambda ran'), x * 2.0)[1]")  # noqa: S307
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Lambda(fn, name="payload")(inputs)))
    path = folder / "lambda.keras"
    model.save(path)
    canary.unlink(missing_ok=True)  # building the model ran the lambda once
    return path, canary


def test_keras_lambda_is_refused_and_runs_only_with_trust_code(lambda_keras):
    model, canary = lambda_keras
    refused = run_hub("check", model, cwd=model.parent)
    assert refused.returncode == 2
    line = one_error_line(refused, "lambda.keras")
    assert "Lambda layer 'payload'" in line and "--trust-code" in line
    assert not canary.exists()

    trusted = run_hub("check", model, "--trust-code", cwd=model.parent)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert canary.read_text() == "lambda ran"


def _external_model(folder: Path, location: str) -> Path:
    """small_cnn with its first weight stored in external data at `location`."""
    model = small_cnn_onnx()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(8 * 3 * 3 * 3 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def _weight_bytes() -> bytes:
    return onnx.numpy_helper.to_array(small_cnn_onnx().graph.initializer[0]).tobytes()


@pytest.mark.parametrize("how,message", [
    ("absolute", "unsafe location"),
    ("dotdot", "points outside the model's folder"),
    ("symlink_file", "symbolic link"),
    ("symlink_dir", "symbolic link"),
])
def test_external_data_outside_the_model_folder_is_never_read(tmp_path, how, message):
    # The canary holds exactly the weight's bytes: following the location would load a valid model.
    canary = make_canary(tmp_path / "outside" / "weights.bin", _weight_bytes())
    folder = tmp_path / "model"
    folder.mkdir()
    if how == "symlink_file":
        (folder / "weights.bin").symlink_to(canary)
    if how == "symlink_dir":
        (folder / "data").symlink_to(canary.parent, target_is_directory=True)
    location = {"absolute": str(canary), "dotdot": "../outside/weights.bin", "symlink_file": "weights.bin",
                "symlink_dir": "data/weights.bin"}[how]
    model = _external_model(folder, location)
    proc = run_hub("check", model, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in one_error_line(proc, "model.onnx")
    assert_not_read(canary)
    assert_untouched(canary, _weight_bytes())


def test_external_data_beside_the_model_is_read(tmp_path):
    """The control for the canaries above: the same model with its weight file in place loads."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(_weight_bytes())
    proc = run_hub("check", _external_model(folder, "weights.bin"))
    assert proc.returncode == 0, proc.stderr


# --- interrupts ---------------------------------------------------------------------------------------

def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _as_from_a_terminal() -> None:
    """SIGINT as a terminal's Ctrl-C finds it. A shell without job control starts background commands with
    SIGINT ignored (`cmd &` in a script), children inherit that, and Python then never raises
    KeyboardInterrupt: the test would depend on how its runner was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_during_conversion_leaves_nothing(tmp_path, small_cnn_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen([*HUB, "convert", str(small_cnn_path), "--out", str(out)], cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 300
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:  # until the onnx2tf child is at work
        workers = [p for p in _descendants(proc.pid) if "hub.convert.worker" in " ".join(p.cmdline())]
        if workers and list(tmp.glob("hub-convert-*")):
            break
        time.sleep(0.1)
    assert workers, f"the conversion child never started: {proc.communicate()[1][-2000:]}"
    time.sleep(1.0)  # let it get into TensorFlow
    family = [psutil.Process(proc.pid), *_descendants(proc.pid)]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]  # handled and reported, not killed by the signal
    assert "hub: error: interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"], "a partial folder was left beside the output"
    assert list(tmp.iterdir()) == [], "a temp folder was left behind"
    gone, alive = psutil.wait_procs(family[1:], timeout=30)
    assert not alive, f"orphaned children: {[p.cmdline() for p in alive]}"


# --- child limits ---------------------------------------------------------------------------------------

@pytest.fixture
def child_modules(tmp_path) -> Path:
    (tmp_path / "sleeper.py").write_text(
        "import subprocess, sys, time\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "open('grandchild.pid', 'w').write(str(grandchild.pid))\n"
        "time.sleep(300)\n")
    (tmp_path / "hog.py").write_text("block = bytearray(2 * 1024 ** 3)\nprint('allocated', len(block))\n")
    return tmp_path


def test_child_over_its_time_limit_is_stopped_with_its_children(child_modules):
    from hub.child import run_python_module

    result = run_python_module("sleeper", [], timeout_s=3, cwd=str(child_modules))
    assert result.timed_out and result.signal_name == "SIGKILL"
    grandchild = int((child_modules / "grandchild.pid").read_text())
    deadline = time.monotonic() + 30
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.1)


def test_a_child_dies_with_hub_when_hub_is_killed(child_modules):
    """A SIGKILL around `hub convert` (a bench's timeout) kills the converter child too: it runs in its own
    session, so only its parent-death signal stops it from converting on alone for minutes."""
    parent = subprocess.Popen([sys.executable, "-c", "from hub.child import run_python_module; "
                               f"run_python_module('sleeper', [], timeout_s=300, cwd={str(child_modules)!r})"])
    pid_file = child_modules / "grandchild.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.1)
    child = next(p for p in psutil.Process(parent.pid).children() if "sleeper" in " ".join(p.cmdline()))
    parent.kill()
    parent.wait()
    gone, alive = psutil.wait_procs([child], timeout=10)
    assert not alive, "the child outlived hub"


def test_child_over_its_memory_limit_fails_cleanly(child_modules):
    from hub.child import run_python_module

    result = run_python_module("hog", [], timeout_s=60, memory_mb=256, cwd=str(child_modules))
    assert result.returncode != 0 and not result.timed_out
    assert "allocated" not in result.stdout
    assert "MemoryError" in result.last_error_line()


@pytest.mark.parametrize("limits,message", [
    ({"timeout_s": 0.5}, "did not finish within"),
    ({"memory_mb": 300}, "conver"),  # the child fails importing TensorFlow: an error or a signal
])
def test_conversion_over_its_limits_is_one_line_incompatible_error(limits, message):
    from hub.convert.calibration import build_calibration
    from hub.convert.converter import ConvertOptions, convert
    from hub.errors import IncompatibleError
    from hub.graph.normalise import normalise

    normalised = normalise(small_cnn_onnx())
    calibration = build_calibration(normalised.inputs, None, (0.0, 1.0))
    with pytest.raises(IncompatibleError) as caught:
        convert(normalised, calibration, ConvertOptions("tflm", "int8", **limits))
    line = caught.value.one_line()
    assert message in line and "\n" not in line, line


def test_hdf5_that_hangs_its_reader_is_a_one_line_error(tmp_path, monkeypatch):
    """Fuzz case h5 seed 2042 (a spliced keras_dense.h5): the HDF5 C library loops forever reading
    its attributes, where no Python timeout reaches; the adapter's bounded child turns that into an error."""
    import hub.adapters.keras as keras_adapter
    from hub.errors import InputError
    from tests.mutations import fixture_bytes, make_case

    case = make_case("h5", fixture_bytes("h5"), 2042)
    assert case.kind == "splice"
    model = case.write(tmp_path)
    monkeypatch.setattr(keras_adapter, "HDF5_PROBE_TIMEOUT_S", 5)
    with pytest.raises(InputError, match="did not finish within 5 s"):
        keras_adapter._probe_hdf5(model, "h5")
    keras_adapter._probe_hdf5(FIXTURES / "keras_dense.h5", "h5")  # a sound file passes
    keras_adapter._probe_hdf5(FIXTURES / "keras_cnn.keras", "keras")


def test_torchscript_with_an_emptied_weight_member_is_refused_not_a_segfault(tmp_path):
    """Fuzz case pt seed 20057: resnet_tiny.pt with data/55 (fc.bias) emptied loads in torch.jit.load,
    then running it segfaulted the whole CLI."""
    from tests.mutations import fixture_bytes, make_case

    case = make_case("pt", fixture_bytes("pt"), 20057)
    assert case.kind == "zip.empty_member"
    model = case.write(tmp_path)
    proc = run_hub("check", model, cwd=tmp_path)
    assert proc.returncode == 2
    assert "'fc.bias' are truncated" in one_error_line(proc, model.name)


# --- the error path ----------------------------------------------------------------------------------------

def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _onnx_file(tmp: Path, name: str, edit) -> Path:
    model = small_cnn_onnx()
    edit(model)
    path = tmp / name
    onnx.save(model, str(path))
    return path


def _dims(model, *values):
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for i, value in values:
        if isinstance(value, str):
            dims[i].dim_param = value
        else:
            dims[i].dim_value = value
    del model.graph.value_info[:]


def _no_inputs(tmp: Path) -> Path:
    const = helper.make_tensor("v", TensorProto.FLOAT, [1, 4], [1, 2, 3, 4])
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=const),
                               helper.make_node("Relu", ["c"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp / "no_inputs.onnx"
    onnx.save(model, str(path))
    return path


def _missing_external(tmp: Path) -> Path:
    path = tmp / "external.onnx"
    path.write_bytes((FIXTURES / "tiny_cnn_external.onnx").read_bytes())  # its .data file is not copied
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.onnx"
    os.mkfifo(path)  # tests run as root, so chmod 000 cannot make a file unreadable: a FIFO blocks a reader
    return path


def _half(fixture: str, name: str):
    return lambda tmp: _write(tmp, name, (FIXTURES / fixture).read_bytes()[: (FIXTURES / fixture).stat().st_size // 2])


# (case id, make(tmp) -> model path, extra args, command, exit code, words in the error line)
ERROR_CASES = [
    ("fifo", _fifo, [], "check", 2, "not a regular file"),
    ("directory", lambda t: (t / "folder.onnx").mkdir() or t / "folder.onnx", [], "check", 2, "is a folder"),
    ("missing", lambda t: t / "nope.onnx", [], "check", 2, "no such file"),
    ("dangling_link", lambda t: (t / "link.onnx").symlink_to(t / "gone.onnx") or t / "link.onnx", [], "check", 2,
     "no such file"),
    ("empty", lambda t: _write(t, "empty.onnx", b""), [], "check", 2, "empty"),
    ("truncated_onnx", _half("tiny_cnn.onnx", "half.onnx"), [], "check", 2, "not a valid ONNX file"),
    ("truncated_pt", _half("resnet_tiny.pt", "half.pt"), [], "check", 2, "truncated or corrupt"),
    ("truncated_keras", _half("keras_cnn.keras", "half.keras"), [], "check", 2, "corrupt or truncated"),
    ("truncated_h5", _half("keras_dense.h5", "half.h5"), [], "check", 2, "corrupt or truncated"),
    ("keras_named_onnx", lambda t: _write(t, "k.onnx", (FIXTURES / "keras_cnn.keras").read_bytes()), [], "check", 2,
     "not a valid ONNX file"),
    ("onnx_named_tflite", lambda t: _write(t, "o.tflite", (FIXTURES / "tiny_cnn.onnx").read_bytes()), [], "check", 2,
     "wrong format for the extension"),
    ("unknown_format", lambda t: _write(t, "notes.bin", b"just some text\n" * 20), [], "check", 2,
     "unknown model format"),
    ("missing_external_data", _missing_external, [], "check", 2, "is missing"),
    ("no_inputs", _no_inputs, [], "check", 2, "has no inputs"),
    ("string_input", lambda t: _onnx_file(t, "strings.onnx", lambda m: setattr(
        m.graph.input[0].type.tensor_type, "elem_type", TensorProto.STRING)), [], "check", 2, "unsupported type STRING"),
    ("dynamic_shape", lambda t: _onnx_file(t, "dyn.onnx", lambda m: _dims(m, (2, "H"), (3, "W"))), [], "check", 2,
     "--input-shape"),
    ("absurd_declared_shape", lambda t: _onnx_file(t, "huge.onnx", lambda m: _dims(m, (2, 100000), (3, 100000))), [],
     "check", 2, "absurd shape"),
    ("absurd_input_shape_flag", lambda t: _onnx_file(t, "ok.onnx", lambda m: None), ["--input-shape", "1,3,99999,99999"],
     "check", 2, "absurdly large"),
    ("state_dict_without_factory", lambda t: FIXTURES / "tiny_cnn_state.pth", [], "check", 2, "--factory"),
    ("pickled_module_untrusted", lambda t: FIXTURES / "tiny_cnn_pickled.pth", ["--input-shape", "1,3,32,32"], "check",
     2, "--trust-pickle"),
    ("existing_output_folder", lambda t: _onnx_file(t, "ok.onnx", lambda m: (t / "out").mkdir()), ["--out", "out"],
     "convert", 2, "output folder exists"),
    ("bad_target", lambda t: _onnx_file(t, "ok.onnx", lambda m: None), ["--target", "esp32", "--out", "out"],
     "convert", 2, "unknown --target 'esp32'"),
    ("bad_quantize", lambda t: _onnx_file(t, "ok.onnx", lambda m: None), ["--quantize", "float16", "--out", "out"],
     "convert", 2, "no float16 kernels"),
    ("unknown_quantize", lambda t: _onnx_file(t, "ok.onnx", lambda m: None), ["--quantize", "int4", "--out", "out"],
     "convert", 2, "unknown --quantize"),
    ("tflite_given_to_convert", lambda t: _write(t, "m.tflite", b"\x00" * 4 + b"TFL3" + b"\x00" * 24),
     ["--out", "out"], "convert", 2, "TFLite"),
]


NAMED = {"existing_output_folder": "out"}  # the line names the file at fault: here the output folder


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_path(tmp_path, case):
    case_id, make, extra, command, code, words = case
    model = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_hub(command, model, *extra, cwd=tmp_path, timeout=300)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert words in one_error_line(proc, NAMED.get(case_id, model.name))
    if command == "convert":
        assert sorted(p.name for p in tmp_path.iterdir()) == before, "convert left files after refusing"


def test_incompatible_model_exits_1_with_the_reason_on_stdout(tmp_path):
    model = tmp_path / "sign.onnx"
    onnx.save(sign_onnx(), str(model))
    proc = run_hub("check", model, "--quantize", "float32")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Sign" in proc.stdout or "SIGN" in proc.stdout


@pytest.mark.parametrize("case_id", ["truncated_onnx", "absurd_declared_shape", "bad_target"])
def test_debug_shows_the_traceback_then_the_same_line(tmp_path, case_id):
    _, make, extra, command, code, words = next(c for c in ERROR_CASES if c[0] == case_id)
    model = make(tmp_path)
    proc = subprocess.run([*HUB, "--debug", command, str(model), *extra], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == code
    assert "Traceback" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hub: error:") and words in last and model.name in last


def test_inputs_are_never_modified(tmp_path, small_cnn_path):
    """A full convert reads its model and calibration file and writes only into the output folder."""
    import hashlib

    import numpy as np

    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (small_cnn_path, calibration)}
    mtimes = {p: p.stat().st_mtime_ns for p in digests}
    proc = run_hub("convert", small_cnn_path, "--calibration", calibration, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in digests} == digests
    assert {p: p.stat().st_mtime_ns for p in digests} == mtimes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.npy", "out"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
