"""Models nobody here wrote: the onnx package's light model zoo (IR 3, opset 9, every weight built by
ConstantOfShape), converted end to end through the CLI and held to the expected outputs that ship
with them (`light_*_output_0.pb`, onnx's reference evaluator on the input its test runner makes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.conftest import run_hub

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def expected_output(name: str) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString((LIGHT / f"light_{name}_output_0.pb").read_bytes())
    return numpy_helper.to_array(tensor)


def runner_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input onnx's backend test runner feeds these models (generate_dummy_data, random=False)."""
    value = model.graph.input[0]
    shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return {value.name: (np.arange(n).reshape(shape) / n).astype(np.float32)}


def convert(name: str, quantize: str, out: Path):
    """--schedule default: what these tests hold (exact outputs, the softmax abort) does not depend on the
    operator order, and measuring candidate orders of a 100 MB float model costs minutes (bench/arena.py)."""
    return run_hub("convert", LIGHT / f"light_{name}.onnx", "--quantize", quantize, "--out", out, "--json",
                   "--schedule", "default", timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_float32_conversion_runs_on_tflm_and_hub_keeps_the_models_meaning(tmp_path, name):
    proc = convert(name, "float32", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["tflm"]["invokes"] and report["fidelity"]["cosine"] > 0.9999
    assert report["passes"][0]["detail"] == "opset 9 -> 13"  # IR 3 lifted: opset 9's Softmax flattens
    normalised = onnx.load(str(tmp_path / "out" / "model.onnx"))
    session = ort.InferenceSession(normalised.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, runner_input(normalised))[0]
    np.testing.assert_allclose(got, expected_output(name), rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_int8_squeezenet_is_refused_naming_the_softmax_and_check_said_it_may_not_run(tmp_path):
    """Constant weights make the 1,000 logits equal: TFLM's int8 SOFTMAX aborts at invoke on such a row
    (512+ classes tied), and hub says so, exit 1; the check could not see the logits: 'may not run'."""
    proc = convert("squeezenet", "int8", tmp_path / "out")
    assert proc.returncode == 1
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("hub: error:")]
    assert "SIGABRT" in error and "int8 SOFTMAX over 1,000 classes" in error
    check = run_hub("check", LIGHT / "light_squeezenet.onnx", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["verdict"] == "unknown"
