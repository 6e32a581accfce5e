"""--target ethos-u: the verified int8 model compiled by Arm's Vela for Ethos-U NPUs (hub.firmware.ethos_u).

One conversion (a Conv -> DepthToSpace -> Conv pixel-shuffle model: Vela maps no DEPTH_TO_SPACE, so it
stays on the CPU) is shared by the module; the other NPU config recompiles its int8 file (about a second).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hub import api
from hub.errors import InputError
from hub.firmware import ethos_u
from hub.report.portability import ethos_u_row
from hub.report.terminal import ethos_u_lines
from hub.targets import resolve
from tests.conftest import run_hub


def pixel_shuffle_onnx() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu1"),
             helper.make_node("DepthToSpace", ["b"], ["c"], blocksize=2, mode="DCR", name="pixel_shuffle"),
             helper.make_node("Conv", ["c", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    graph = helper.make_graph(nodes, "pixel_shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ethos_u") / "pixel_shuffle.onnx"
    onnx.save(pixel_shuffle_onnx(), str(path))
    return path


@pytest.fixture(scope="module")
def converted(onnx_path: Path):
    return api.convert(onnx_path, target="ethos-u", npu="ethos-u55-128", out=onnx_path.parent / "out")


def test_u55_output_folder_report_and_firmware(converted) -> None:
    out = converted.output
    doc = json.loads((out / "report.json").read_text())
    assert doc["tflm"]["invokes"]  # verified on TFLM before Vela
    assert doc["fidelity"]["cosine"] > 0.99
    npu = doc["ethos_u"]
    assert npu["npu"] == "ethos-u55-128" and npu["ops_total"] == 3 and npu["npu_ops"] == 2
    assert npu["sram_bytes"] > 0 and npu["cycles"] > 0 and npu["inference_ms"] > 0
    assert "host cannot execute" in npu["note"]
    [cpu] = npu["cpu_ops"]
    assert cpu["op"] == "DEPTH_TO_SPACE" and cpu["reasons"] == ["Unsupported opType"]  # Vela's own words
    ops_header = (out / "pixel_shuffle_model_ops.h").read_text()
    assert "resolver.AddEthosU()" in ops_header and "resolver.AddDepthToSpace()" in ops_header
    assert "AddConv2D" not in ops_header  # the convolutions run on the NPU
    settings = (out / "pixel_shuffle_model_settings.h").read_text()
    assert f"kEthosUScratchSize = {npu['scratch_bytes']}," in settings and "estimated, not measured" in settings
    vela_model = (out / "model_vela.tflite").read_bytes()
    assert len(vela_model) == npu["tflite_size"] and (out / "model.tflite").exists()
    rows = {r["name"]: r for r in doc["targets"]}
    assert rows["tflm-int8"]["arena_basis"] == "measured" and rows["ethos-u55-128"]["compatible"]
    assert "Unsupported opType" in rows["ethos-u55-128"]["blocking"][0]["message"]


def test_u65_compiles_the_same_int8_file(converted) -> None:
    result = ethos_u.compile_model((converted.output / "model.tflite").read_bytes(), "ethos-u65-256")
    assert result.system_config.startswith("Ethos_U65") and result.cycles > 0
    # the stage returns data; the report layer words it (hub.report.terminal, hub.report.portability)
    lines = ethos_u_lines(result)
    assert lines[0].startswith("ethos-u      ethos-u65-256") and "host cannot execute" in lines[-1]
    assert any("DEPTH_TO_SPACE" in line and "Unsupported opType" in line for line in lines)
    row = ethos_u_row(result)
    assert row["name"] == "ethos-u65-256" and row["flash_bytes"] == len(result.tflite_bytes)
    assert [op.op for op in result.cpu_ops] == ["DEPTH_TO_SPACE"]


def test_check_on_vela_compiled_tflite(converted) -> None:
    vela_model = converted.output / "model_vela.tflite"
    plain = api.check(vela_model)
    assert plain.verdict == "will not run" and any("Ethos-U driver" in f.message for f in plain.findings)
    npu = api.check(vela_model, target="ethos-u")
    assert npu.verdict == "will run"
    assert [n["npu"] for n in npu.nodes] == ["npu", "cpu", "npu"]
    assert all(f.severity == "info" and "Ethos-U driver" in f.message for f in npu.findings)


def test_check_maps_nodes_of_onnx_and_int8_tflite(onnx_path: Path, converted) -> None:
    graph = api.check(onnx_path, target="ethos-u")
    assert {n["name"]: n["npu"] for n in graph.nodes}["pixel_shuffle"] == "cpu"
    compiled = api.check(converted.output / "model.tflite", target="ethos-u", npu="ethos-u65-256")
    [finding] = compiled.findings
    assert finding.op == "DEPTH_TO_SPACE" and finding.message == "stays on the CPU: Vela: Unsupported opType"


def test_check_returns_a_new_result_and_leaves_the_tflm_one_as_it_was() -> None:
    """`hub check --target ethos-u` adds "npu" to copies of the nodes: the TFLM check it starts from is unchanged."""
    from hub.check.onnx import analyse_onnx

    tflm = analyse_onnx(pixel_shuffle_onnx())
    nodes_before = [dict(n) for n in tflm.nodes]
    findings_before = list(tflm.findings)
    npu = ethos_u.check(tflm, "ethos-u55-128", None)
    assert tflm.nodes == nodes_before and tflm.findings == findings_before and tflm.target == "tflm"
    assert npu is not tflm and npu.target == "ethos-u55-128"
    assert {n["name"]: n["npu"] for n in npu.nodes}["pixel_shuffle"] == "cpu"
    assert [{k: v for k, v in n.items() if k != "npu"} for n in npu.nodes] == nodes_before


def test_refusals() -> None:
    for mode in ("int16x8", "float32", "float16"):
        with pytest.raises(InputError, match="--target ethos-u"):
            resolve("ethos-u", mode)
    with pytest.raises(InputError, match="--npu is for --target ethos-u"):
        api.convert("missing.onnx", target="tflm", npu="ethos-u55-128")
    with pytest.raises(InputError, match="unknown --npu"):
        ethos_u.check_npu("ethos-u42")


def test_npu_list_is_velas() -> None:
    result = run_hub("convert", "unused.onnx", "--target", "ethos-u", "--npu", "list")
    assert result.returncode == 0
    assert result.stdout.split() == ethos_u.npu_configs() and "ethos-u65-256" in result.stdout
