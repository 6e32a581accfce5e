"""Portability reports: the numbers (MACs, parameters, arena, board margins) against hand-computed
values and the MLPerf Tiny figures, the CLI formats, and the HTML page rendered in headless Chromium."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub.artifacts import Measured
from hub.check.layers import Buffer, onnx_layers, plan_arena, tflite_layers
from hub.errors import InputError
from hub.knowledge import boards, kernel_flash
from hub.report.portability import portability_sections
from hub.report.render import write_html
from hub.tflite.model import read_tflite

from .conftest import MLPERF, run_hub, small_cnn_onnx

# MLPerf Tiny IC ResNet-8, counted by hand from the network's definition (BatchNorm folded):
# conv 3->16 on 32x32; two 3x3 16->16 on 32x32; 3x3 16->32 s2, 3x3 32->32, 1x1 16->32 on 16x16;
# 3x3 32->64 s2, 3x3 64->64, 1x1 32->64 on 8x8; dense 64->10.
IC_MACS = (32 * 32 * 16 * 3 * 9 + 2 * 32 * 32 * 16 * 16 * 9
           + 16 * 16 * 32 * 16 * 9 + 16 * 16 * 32 * 32 * 9 + 16 * 16 * 32 * 16
           + 8 * 8 * 64 * 32 * 9 + 8 * 8 * 64 * 64 * 9 + 8 * 8 * 64 * 32 + 64 * 10)
IC_PARAMS = ((3 * 9 * 16 + 16) + 2 * (16 * 9 * 16 + 16)
             + (16 * 9 * 32 + 32) + (32 * 9 * 32 + 32) + (16 * 32 + 32)
             + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) + (32 * 64 + 64) + (64 * 10 + 10))
# Smallest arenas of the reference int8 models in the real TFLM interpreter (mlperf_tiny/README.md).
MEASURED_ARENA = {"ic": 55_996, "kws": 24_286, "vww": 103_673, "ad": 4_639}


def _model(nodes, inputs, outputs, inits, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _f(*shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _conv_model(cin: int, cout: int, k: int, hw: int, group: int = 1, stride: int = 1, bias: bool = True):
    inits = [numpy_helper.from_array(_f(cout, cin // group, k, k), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(_f(cout), "b"))
        ins.append("b")
    pad = k // 2
    node = helper.make_node("Conv", ins, ["y"], pads=[pad] * 4, group=group, strides=[stride, stride], name="conv")
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


# ---------------------------------------------------------------- MACs and parameters


def test_conv_macs_follow_the_mlperf_convention():
    layer = onnx_layers(_conv_model(16, 32, 3, 32)).layers[0]
    assert layer.output_shape == [1, 32, 32, 32]
    assert layer.macs == 32 * 32 * 32 * 16 * 9 == 4_718_592
    assert layer.params == 32 * 16 * 9 + 32 and layer.bias_params == 32
    assert layer.activation_bytes == 32 * 32 * 32 * 4


def test_strided_conv_counts_output_positions_only():
    layer = onnx_layers(_conv_model(16, 32, 3, 32, stride=2)).layers[0]
    assert layer.output_shape == [1, 32, 16, 16]
    assert layer.macs == 16 * 16 * 32 * 16 * 9


def test_depthwise_conv_macs_and_params():
    layer = onnx_layers(_conv_model(16, 16, 3, 32, group=16)).layers[0]
    assert layer.macs == 32 * 32 * 16 * 9 == 147_456
    assert layer.params == 16 * 9 + 16


def test_gemm_and_matmul():
    gemm = _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                  [numpy_helper.from_array(_f(10, 64), "w"), numpy_helper.from_array(_f(10), "b")])
    layer = onnx_layers(gemm).layers[0]
    assert (layer.macs, layer.params, layer.bias_params) == (64 * 10, 64 * 10 + 10, 10)
    matmul = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                    [numpy_helper.from_array(_f(20, 5), "w")])
    layer = onnx_layers(matmul).layers[0]
    assert layer.output_shape == [1, 8, 5]
    assert (layer.macs, layer.params) == (8 * 5 * 20, 100)


def test_batchnorm_after_conv_counts_as_folded():
    bn = helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["y"], name="bn")
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv")
    inits = [numpy_helper.from_array(_f(8, 4, 3, 3), "w")] + [
        numpy_helper.from_array(np.ones(8, np.float32), n) for n in ("s", "o", "m", "v")]
    table = onnx_layers(_model([conv, bn], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits))
    conv_layer, bn_layer = table.layers
    assert conv_layer.params == 8 * 4 * 9 + 8 and conv_layer.bias_params == 8  # BN becomes its bias
    assert (bn_layer.params, bn_layer.macs) == (0, 0) and "folded" in bn_layer.note


def test_small_cnn_totals_and_storage_bytes():
    table = onnx_layers(small_cnn_onnx())
    assert table.params == (8 * 3 * 9 + 8) + (8 * 9 + 8) + (4 * 8 + 4) == 340
    assert table.macs == 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 8 * 4 == 73_760
    assert table.param_bytes("int8") == (340 - 20) + 4 * 20  # int8 weights, int32 biases
    assert table.param_bytes("float32") == 4 * 340
    assert table.op_histogram() == {"Conv": 2, "Relu": 2, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1}


@pytest.fixture(scope="session")
def ic_onnx(mlperf_source):
    """MLPerf Tiny IC ResNet-8 (Keras .h5) through the adapters and normalise, as `hub report` sees it."""
    from hub.graph.normalise import normalise

    return normalise(mlperf_source("ic").onnx_model, {}).onnx_model


def test_resnet8_matches_mlperf_figures(ic_onnx):
    table = onnx_layers(ic_onnx)
    assert table.macs == IC_MACS == 12_501_632
    assert table.params == IC_PARAMS == 77_706
    assert abs(table.macs - 12.5e6) / 12.5e6 < 0.01 and abs(table.params - 78e3) / 78e3 < 0.01


def test_reference_tflite_gives_the_same_counts():
    data = (MLPERF / "ic" / "reference_int8.tflite").read_bytes()
    table = tflite_layers(read_tflite(data))
    assert (table.macs, table.params) == (IC_MACS, IC_PARAMS)
    assert table.per_channel == 3 * 16 + 3 * 32 + 3 * 64  # per-channel quantized conv outputs


# ---------------------------------------------------------------- memory


def test_planner_places_largest_first_in_the_first_gap():
    bufs = [Buffer("a", 100, 1, 0, 1, 0), Buffer("b", 200, 1, 1, 2, 1), Buffer("c", 50, 1, 2, 3, 2),
            Buffer("d", 40, 1, 3, 3, 3)]
    arena, plan = plan_arena(bufs)
    offsets = {p["name"]: (p["offset"], p["bytes"]) for p in plan}
    # sizes round up to 16; b (208) at 0; a (112) is alive with b -> 208; c alive with b -> 208;
    # d only meets c (at 208..272) -> fits below it at 0
    assert offsets == {"b": (0, 208), "a": (208, 112), "c": (208, 64), "d": (0, 48)}
    assert arena == 320


@pytest.mark.parametrize("name", sorted(MEASURED_ARENA))
def test_arena_estimate_is_near_tflm_measured(name):
    table = tflite_layers(read_tflite((MLPERF / name / "reference_int8.tflite").read_bytes()))
    estimate, _ = table.arena(None)
    assert abs(estimate - MEASURED_ARENA[name]) / MEASURED_ARENA[name] < 0.10, (estimate, MEASURED_ARENA[name])


# ---------------------------------------------------------------- boards


def test_board_table_has_the_common_boards_with_sources():
    assert len(boards.BOARDS) >= 8
    for wanted in ("Arduino Nano 33 BLE Sense", "Raspberry Pi Pico", "ESP32-S3", "STM32F746", "STM32L4R5",
                   "nRF52840 DK", "SparkFun Edge", "Corstone-300", "Blue Pill"):
        assert any(wanted in b.name for b in boards.BOARDS), wanted
    for b in boards.BOARDS:
        assert b.ram_bytes > 0 and b.flash_bytes > 0 and b.source.startswith("https://"), b
    assert boards.find_board("NANO33BLE").name == "Arduino Nano 33 BLE Sense"
    assert boards.find_board("SparkFun Edge").key == "sparkfun-edge"
    with pytest.raises(InputError, match="nano33ble.*corstone-300"):
        boards.find_board("arduino uno")


def test_board_fit_margins_by_hand():
    nano = boards.find_board("nano33ble")  # 256 KB RAM = 262,144 B; 1 MB flash = 1,048,576 B
    bare = replace(nano, runtime_ram_bytes=0)
    core = kernel_flash.CORE_FLASH_BYTES  # no op: the interpreter core alone
    fit = boards.board_fit(bare, 300_000, 1_048_577 - core, []).to_dict()
    assert fit["ram"]["margin_bytes"] == 262_144 - 300_000 == -37_856
    assert fit["ram"]["verdict"] == "does not fit by 37 KB"  # 36.97 KB, rounded up
    assert fit["flash"]["verdict"] == "does not fit by 1 B" and fit["fits"] is False
    fit = boards.board_fit(bare, 200_000, 98_496 - core, []).to_dict()
    assert fit["ram"]["margin_bytes"] == 62_144 and fit["ram"]["verdict"] == "fits (60 KB spare)"
    assert fit["flash"]["margin_bytes"] == 1_048_576 - 98_496 and fit["fits"] is True
    unknown = boards.board_fit(nano, None, None, ["CONV_2D"])
    assert unknown.fits is None and unknown.ram["verdict"] == "not checked"


def test_board_fit_counts_the_runtime_beside_arena_and_model():
    nano = boards.find_board("nano33ble")
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "CUSTOM:TFLM_DECODE"]
    code, estimated = kernel_flash.firmware_flash_bytes(ops)
    fit = boards.board_fit(nano, 30_000, 64 * 1024, ops)
    assert estimated == [] and fit.flash_needed == 64 * 1024 + code == fit.model_bytes + fit.kernel_code_bytes
    # three distinct ops: the one-op resolver in RUNTIME_RAM_BYTES grows by two entries
    assert fit.ram_needed == 30_000 + kernel_flash.RUNTIME_RAM_BYTES + 2 * kernel_flash.RESOLVER_BYTES_PER_OP
    assert fit.ram_available == 256 * 1024 and fit.flash_available == 1024 * 1024 and fit.fits is True
    assert fit.to_dict()["counted"] == {
        "arena_bytes": 30_000, "runtime_ram_bytes": fit.ram_needed - 30_000, "model_bytes": 64 * 1024,
        "kernel_code_bytes": code, "ops": ["CONV_2D", "DEPTHWISE_CONV_2D", "TFLM_DECODE"], "estimated_ops": []}
    assert nano.runtime_ram_bytes == kernel_flash.RUNTIME_RAM_BYTES
    assert boards.board_fit(replace(nano, runtime_ram_bytes=0), 30_000, 0, []).ram_needed == 30_000
    assert boards.board_fit(nano, 1, 1, ["NO_SUCH_OP"]).estimated_ops == ("NO_SUCH_OP",)


def test_a_64_kb_model_fits_the_nano_33_ble_but_not_a_blue_pill():
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"]
    verdicts = {key: boards.board_fit(boards.find_board(key), 12 * 1024, 64 * 1024, ops).to_dict()
                for key in ("nano33ble", "Blue Pill")}
    assert verdicts["nano33ble"]["fits"] is True
    pill = verdicts["Blue Pill"]  # 20 KB SRAM holds the arena; 64 KB of weights alone fill its 64 KB flash
    assert pill["ram"]["fits"] and pill["flash"]["fits"] is False and pill["fits"] is False

def test_portability_sections_with_measured_numbers_and_board():
    measured = Measured("tflm", "int8", tflite_bytes=270_000, arena_bytes=9_000, invokes=True)
    sections = portability_sections(small_cnn_onnx(), measured=measured, board="nrf52840dk")
    row = next(t for t in sections["targets"] if t["name"] == "tflm-int8")
    assert (row["flash_bytes"], row["flash_basis"], row["arena_bytes"], row["arena_basis"]) == \
        (270_000, "measured", 9_000, "measured")
    assert sections["totals"]["flash_bytes"] == 270_000 and sections["totals"]["params"] == 340
    board, counted = sections["board"], sections["board"]["counted"]
    # the one board-fit rule: TFLM's runtime RAM and code (core + the kernels of the predicted ops) counted
    assert counted["arena_bytes"] == 9_000 and counted["model_bytes"] == 270_000
    assert "CONV_2D" in counted["ops"] and counted["kernel_code_bytes"] > kernel_flash.CORE_FLASH_BYTES
    assert board["ram"]["need_bytes"] == 9_000 + counted["runtime_ram_bytes"]
    assert board["ram"]["margin_bytes"] == 256 * 1024 - 9_000 - counted["runtime_ram_bytes"] and board["ram"]["fits"]
    assert board["flash"]["margin_bytes"] == 1024 * 1024 - 270_000 - counted["kernel_code_bytes"]
    assert board["fits"] is True and board["per_target"]["tflm-int8"] == {
        k: board[k] for k in ("ram", "flash", "fits", "counted")}
    assert [t["name"] for t in sections["targets"]] == ["tflm-int8", "tflm-float32", "tflite", "onnxruntime"]
    assert all(t["compatible"] for t in sections["targets"])
    assert len(sections["layers"]) == 7 and sections["layers"][0]["support"]["tflm-int8"] == "ok"


# ---------------------------------------------------------------- CLI


def test_cli_json_against_a_custom_budget(small_cnn_path):
    proc = run_hub("report", small_cnn_path, "--format", "json", "--ram", "5", "--flash", "64")
    assert proc.returncode == 1, proc.stderr  # the arena does not fit 5 KB: exit 1
    report = json.loads(proc.stdout)
    totals, board = report["totals"], report["board"]
    assert (totals["params"], totals["macs"]) == (340, 73_760)
    assert totals["flash_bytes"] == 400 and totals["target"] == "tflm-int8"
    counted = board["counted"]
    assert board["ram"]["margin_bytes"] == 5 * 1024 - totals["arena_bytes"] - counted["runtime_ram_bytes"] < 0
    assert board["flash"]["margin_bytes"] == 64 * 1024 - 400 - counted["kernel_code_bytes"] and board["flash"]["fits"]
    runtime = next(t for t in report["targets"] if t["name"] == "onnxruntime")
    # onnxruntime would run the normalised graph (hub convert's model.onnx), not the file as given
    from hub.graph.normalise import normalise

    normalised = normalise(onnx.load(str(small_cnn_path))).onnx_model
    assert runtime["compatible"] is True and runtime["flash_bytes"] == len(normalised.SerializeToString())


def test_cli_lists_boards_and_refuses_unknown_ones(small_cnn_path):
    proc = run_hub("report", small_cnn_path, "--board", "list")
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == len(boards.BOARDS)
    assert "corstone-300" in proc.stdout
    proc = run_hub("report", small_cnn_path, "--board", "uno")
    assert proc.returncode == 2 and "unknown board 'uno'" in proc.stderr and "nano33ble" in proc.stderr
    proc = run_hub("report", small_cnn_path, "--targets", "tflm-int8,cuda")
    assert proc.returncode == 2 and "cuda" in proc.stderr and "Traceback" not in proc.stderr


def _tile_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Tile", ["r", "repeats"], ["y"], name="tile")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                  [numpy_helper.from_array(np.array([1, 2], np.int64), "repeats")])


def test_blocking_op_is_named_per_target(tmp_path):
    path = tmp_path / "tile.onnx"
    onnx.save(_tile_model(), str(path))
    out = tmp_path / "tile.md"
    proc = run_hub("report", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr  # LiteRT and onnxruntime can run it
    report = json.loads(proc.stdout)
    verdicts = {t["name"]: t["compatible"] for t in report["targets"]}
    assert verdicts == {"tflm-int8": False, "tflm-float32": False, "tflite": True, "onnxruntime": True}
    blocking = next(t for t in report["targets"] if t["name"] == "tflm-int8")["blocking"]
    assert [b["node"] for b in blocking] == ["tile"] and "TILE" in blocking[0]["message"]
    tile = next(la for la in report["layers"] if la["name"] == "tile")
    assert tile["support"] == {"tflm-int8": "error", "tflm-float32": "error", "tflite": "ok"}
    proc = run_hub("report", path, "--format", "md", "--targets", "tflm-int8", "-o", out)
    assert proc.returncode == 1 and proc.stdout == ""  # the only target asked for is blocked
    text = out.read_text()
    assert "| tflm-int8 | blocked | tile (Tile)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile.md", "tile.onnx"]  # no partial files left


def test_tflite_input_is_measured_as_it_is():
    path = MLPERF / "ic" / "reference_int8.tflite"
    proc = run_hub("report", path, "--format", "json", "--board", "nano33ble")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = {t["name"]: t for t in report["targets"]}
    assert rows["tflm-int8"]["compatible"] is True  # TFLM runs the reference file; its batch -1 signature is ignored
    assert rows["tflm-int8"]["flash_bytes"] == 98_496 and rows["tflm-int8"]["flash_basis"] == "file size"
    # measured on the interpreter, not estimated (the estimate leaves kernel scratch out)
    assert rows["tflm-int8"]["arena_bytes"] == 55_984 and rows["tflm-int8"]["arena_basis"] == "measured"
    assert "XNNPACK" not in proc.stderr + proc.stdout
    assert rows["tflm-float32"]["compatible"] is False and rows["onnxruntime"]["compatible"] is None
    assert rows["tflite"]["compatible"] is True
    assert (report["totals"]["params"], report["totals"]["macs"]) == (IC_PARAMS, IC_MACS)
    counted = report["board"]["counted"]  # the file's own ops: their kernels are counted in flash
    assert counted["ops"] == sorted(read_tflite(path.read_bytes()).op_histogram())
    assert counted["kernel_code_bytes"] == kernel_flash.firmware_flash_bytes(counted["ops"])[0]
    assert report["board"]["flash"]["margin_bytes"] == 1024 * 1024 - 98_496 - counted["kernel_code_bytes"]


# ---------------------------------------------------------------- HTML in a real browser


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is needed to render the HTML report: install Debian's package with "
                    "`apt-get install -y chromium` (or run scripts/setup.sh --test as root)")
    return exe


def _browse(html: Path, png: Path) -> str:
    """Load the page in headless Chromium: return the DOM it built, save a screenshot to `png`."""
    exe = _chromium()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={png.parent / 'chromium-profile'}"]
    url = html.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run([*flags, f"--screenshot={png}", "--window-size=1200,2000", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    return dom.stdout


def test_html_report_renders_in_chromium(tmp_path, ic_onnx):
    model = tmp_path / "resnet8.onnx"
    onnx.save(ic_onnx, str(model))
    page = tmp_path / "report.html"
    proc = run_hub("report", model, "--format", "html", "--board", "pico", "-o", page)
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    for remote in ("<script", "<link", "src=", "url(", "@import"):
        assert remote not in html, f"the report must be self-contained, found {remote!r}"
    dom = _browse(page, tmp_path / "report.png")
    assert '<table id="matrix">' in dom and "tflm-int8" in dom
    assert dom.count("<svg") >= 3 and 'class="peak"' in dom
    assert "Raspberry Pi Pico" in dom and "12,501,632" in dom
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a real picture, not a blank page


def test_write_html_renders_a_convert_report_with_fidelity(tmp_path):
    measured = {"target": "tflm", "quantize": "int8", "source": {"path": "small.onnx", "framework": "onnx"},
                "model": {"tflite_bytes": 6_000, "ops": {"CONV_2D": 2}}, "memory": {"arena_bytes": 7_000},
                "fidelity": {"samples": 8, "cosine": 0.99871, "top1_agreement": 1.0}}
    figures = Measured("tflm", "int8", tflite_bytes=6_000, arena_bytes=7_000, invokes=True)
    report = {**measured, **portability_sections(small_cnn_onnx(), measured=figures)}
    path = tmp_path / "report.html"
    write_html(report, path)
    dom = _browse(path, tmp_path / "convert.png")
    assert '<table id="matrix">' in dom and "<svg" in dom
    assert "0.9987" in dom and "top1_agreement" in dom and "(measured)" in dom


@pytest.mark.parametrize("quantize", ["int16x8", "float32"])
def test_the_converted_mode_is_the_row_the_totals_describe(quantize):
    """An int16x8 conversion gets its own (measured) row; a float32 one makes the float row the primary."""
    measured = Measured("tflm", quantize, tflite_bytes=123_456, arena_bytes=54_321, invokes=True)
    sections = portability_sections(small_cnn_onnx(), measured=measured)
    row = next(t for t in sections["targets"] if t["name"] == f"tflm-{quantize}")
    assert (row["flash_bytes"], row["arena_bytes"], row["arena_basis"]) == (123_456, 54_321, "measured")
    assert sections["totals"]["target"] == f"tflm-{quantize}" and sections["totals"]["arena_bytes"] == 54_321
