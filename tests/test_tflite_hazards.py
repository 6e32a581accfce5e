"""Two .tflite hazards hub check, verify and report name (issue 25): weights stored after the flatbuffer
(ai-edge-quantizer 0.10; TFLM reads only Buffer.data and runs on garbage) and float islands (float32 compute
between DEQUANTIZE and QUANTIZE in a quantized model). Fixtures are built from real files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hub.check.tflite import OFFSET_BUFFERS_MESSAGE, analyse_tflite
from hub.errors import InputError
from hub.report.portability import tflite_sections
from hub.tflite.islands import float_islands
from hub.tflite.model import read_tflite
from tests.conftest import MLPERF, run_hub
from tests.offset_buffers import to_offset_buffers

AD = MLPERF / "ad" / "reference_int8.tflite"


@pytest.fixture(scope="module")
def ad_offset(tmp_path_factory) -> Path:
    if not AD.exists():
        pytest.skip("MLPerf Tiny models not available")
    path = tmp_path_factory.mktemp("offset") / "ad_offset.tflite"
    path.write_bytes(to_offset_buffers(AD.read_bytes()))
    return path


@pytest.fixture(scope="module")
def tf_sin_int8(tmp_path_factory) -> Path:
    """TensorFlow's converter leaves tf.sin in float (no int8 SIN kernel) inside an int8 model."""
    tf = pytest.importorskip("tensorflow")
    inp = tf.keras.Input((8, 8, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.Lambda(lambda t: tf.sin(t))(x)
    out = tf.keras.layers.Conv2D(4, 3, padding="same")(x)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, 8, 8, 3), dtype=np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("islands") / "tf_sin_int8.tflite"
    path.write_bytes(converter.convert())
    return path


# ---------------------------------------------------------------- buffers after the flatbuffer

def test_reader_finds_offset_buffers(ad_offset):
    moved = read_tflite(ad_offset.read_bytes()).offset_buffers()
    assert len(moved) == 11 and sum(size for *_, size in moved) == 266_752  # the research's count on AD
    assert read_tflite(AD.read_bytes()).offset_buffers() == []
    flash = lambda data: sum(t.data_bytes for t in read_tflite(data).tensors)  # noqa: E731
    assert flash(ad_offset.read_bytes()) == flash(AD.read_bytes())  # the weights still count as flash


def test_truncated_offset_file_is_an_input_error(ad_offset):
    with pytest.raises(InputError, match="past the end of the file"):
        read_tflite(ad_offset.read_bytes()[:200_000])


def test_check_names_offset_buffers(ad_offset):
    errors = [f for f in analyse_tflite(ad_offset.read_bytes()).findings if f.severity == "error"]
    assert len(errors) == 1 and errors[0].message.startswith(OFFSET_BUFFERS_MESSAGE)
    assert "functional_1/dense/MatMul" in errors[0].message and "266,752 B" in errors[0].message
    assert not any(OFFSET_BUFFERS_MESSAGE in f.message for f in analyse_tflite(AD.read_bytes()).findings)


def test_cli_check_and_verify_fail_on_offset_buffers(ad_offset):
    check = run_hub("check", ad_offset, "--json")
    assert check.returncode == 1, check.stderr
    assert any(OFFSET_BUFFERS_MESSAGE in f["message"] for f in json.loads(check.stdout)["findings"])
    verify = run_hub("verify", ad_offset, "--json")
    assert verify.returncode == 1, verify.stderr  # TFLM loads and invokes it: the finding alone fails it
    assert json.loads(verify.stdout)["tflm"]["invokes"] is True
    text = run_hub("verify", ad_offset)
    assert text.returncode == 1 and OFFSET_BUFFERS_MESSAGE in " ".join(text.stdout.split())
    original = run_hub("verify", AD)
    assert original.returncode == 0 and OFFSET_BUFFERS_MESSAGE not in original.stdout


def test_report_blocks_the_tflm_row(ad_offset):
    rows = {r["name"]: r for r in tflite_sections(ad_offset.read_bytes(), targets=["tflm-int8", "tflite"])["targets"]}
    assert rows["tflm-int8"]["compatible"] is False
    assert OFFSET_BUFFERS_MESSAGE in rows["tflm-int8"]["blocking"][0]["message"]
    assert rows["tflite"]["compatible"] is True  # LiteRT reads Buffer.offset


# ---------------------------------------------------------------- float islands

def test_tf_sin_is_one_island(tf_sin_int8):
    model = read_tflite(tf_sin_int8.read_bytes())
    [island] = float_islands(model)
    assert [o.name for o in island.ops] == ["SIN"]
    assert [model.ops[i].name for i in island.entry_dequantize] == ["DEQUANTIZE"]
    assert [model.ops[i].name for i in island.exit_quantize] == ["QUANTIZE"]
    assert island.activation_bytes == 2 * 8 * 8 * 4 * 4 and island.constant_bytes == 0  # SIN in and out, float32
    warnings = [f for f in analyse_tflite(tf_sin_int8.read_bytes()).findings if f.severity == "warning"
                and "between DEQUANTIZE and QUANTIZE" in f.message]
    assert len(warnings) == 1 and f"#{island.ops[0].index} SIN" in warnings[0].message


def test_report_lists_islands(tf_sin_int8):
    report = tflite_sections(tf_sin_int8.read_bytes(), targets=["tflm-int8"])
    assert [o["op"] for o in report["float_islands"][0]["ops"]] == ["SIN"]
    assert report["targets"][0]["compatible"] is True  # int8 with an island, not "hybrid"
    from hub.report.render import render

    assert "Float islands" in render(report, "text") and "float-islands" in render(report, "html")


def test_no_islands_in_integer_and_float_models():
    if not AD.exists():
        pytest.skip("MLPerf Tiny models not available")
    assert float_islands(read_tflite(AD.read_bytes())) == []
    report = tflite_sections(AD.read_bytes(), targets=["tflm-int8"])
    assert report["float_islands"] == []


def test_convert_report_lists_normalize_islands(tmp_path):
    """Without the rewrite rules (the l2_normalize rule lowers it to int8), hub's conversion of F.normalize(x, dim=1)
    keeps SQUARE/DIV and SQRT/MAXIMUM in float (the research's two islands): report.json says so. About 12 s."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.c2(F.normalize(torch.relu(self.c1(x)), dim=1)).mean(dim=(2, 3))

    onnx_path = tmp_path / "l2.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(onnx_path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    done = run_hub("convert", onnx_path, "--no-rewrite", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    islands = json.loads((tmp_path / "out" / "report.json").read_text())["float_islands"]
    assert sorted(o["op"] for island in islands for o in island["ops"]) == ["DIV", "MAXIMUM", "SQRT", "SQUARE"]
    assert "float island" in done.stdout
