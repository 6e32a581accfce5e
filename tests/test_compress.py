"""Weight clustering (hub.optimize.cluster) and TFLM look-up-table compression (hub.tflite.compress, hub convert --compress):
the real compressor of the pinned tflite-micro wheel, the real interpreter running DECODE."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from hub.errors import IncompatibleError
from hub.knowledge import compression as knowledge
from hub.knowledge import resolver, tflm_kernels
from hub.optimize import cluster as clustering
from hub.tflite import compress as stage
from hub.tflite.model import read_tflite
from tests.conftest import FIXTURES, run_hub

ROOT = FIXTURES.parent
DIGITS = ["fixtures/digits_cnn_state.pth", "--factory", "fixtures/torch_models.py:DigitsCNN", "--input-shape", "1,1,8,8"]


def _distinct(tensor: torch.Tensor, per_channel: bool) -> int:
    rows = tensor.detach().reshape(tensor.shape[0], -1) if per_channel else tensor.detach().reshape(1, -1)
    return max(len(torch.unique(r)) for r in rows)


def test_knowledge_agrees_with_the_wheel_and_the_kernel_tables():
    from tflite_micro.tensorflow.lite.micro.compression import decode_insert, lut

    assert knowledge.DECODE_CODE == decode_insert.DECODE_CUSTOM_OP_NAME
    assert resolver.CUSTOM_OPS[knowledge.DECODE_CODE].adder == "AddDecode"
    assert knowledge.MAX_INDEX_BITS == lut.LutAncillaryData.MAX_BITWIDTH
    for op, position in knowledge.WEIGHT_INPUT.items():
        assert op in tflm_kernels.KERNELS and tflm_kernels.role(op, position) == tflm_kernels.WEIGHTS


def test_kmeans_clusters_each_channel_and_keeps_the_extremes_close():
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(8, 6, 3), nn.Linear(20, 5)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(20), nn.ReLU(), fc)
    model(torch.rand(1, 8, 6, 6))
    before = conv.weight.detach().clone()
    done = clustering.cluster(model, 16)
    assert [c.per_channel for c in done] == [True, False, False]  # FULLY_CONNECTED is per-tensor quantized
    assert _distinct(conv.weight, True) <= 16 and _distinct(fc.weight, False) <= 16
    assert _distinct(conv.weight, False) > 16  # per channel, not one table for the layer
    err = (conv.weight - before).abs().max() / before.abs().max()
    assert err < 0.1  # 16 values over 72 weights per channel: a small move


def test_fine_tuning_keeps_the_clusters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    done = clustering.cluster(model, 4)
    labels = [c.labels.clone() for c in done]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        loss = model(torch.rand(8, 1, 8, 8)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        clustering.project(done)
    assert clustering.distinct_values(done) <= 4
    assert all(torch.equal(a, c.labels) for a, c in zip(labels, done))


def test_cluster_count_is_checked():
    with pytest.raises(Exception, match="2 to 128"):
        clustering.cluster(nn.Linear(3, 3), 200)


def test_unclustered_weights_are_not_compressed(tmp_path):
    """An int8 model straight from the converter has ~255 values per filter: --compress says to cluster."""
    proc = run_hub("convert", *DIGITS, "--calibration", "fixtures/digits_val.npz", "--compress", "--out",
                   tmp_path / "out", cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cluster them first" in lines[0] and "hub optimize" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_compress_refuses_other_targets(tmp_path):
    proc = run_hub("convert", "fixtures/tiny_cnn.onnx", "--target", "tflite", "--compress", "--out", tmp_path / "o",
                   cwd=ROOT)
    assert proc.returncode == 2 and "--compress is for --target tflm" in proc.stderr


def test_lossless_check_names_the_difference():
    same = [[np.array([1, 2, 3], np.int8)]]
    stage.check_lossless(same, same)
    with pytest.raises(IncompatibleError, match="differs .* max difference 2"):
        stage.check_lossless(same, [[np.array([1, 2, 5], np.int8)]])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """The digits CNN clustered to 16 values (1 epoch of fine-tuning) and compressed: hub optimize's output."""
    out = tmp_path_factory.mktemp("clustered") / "digits16"
    proc = run_hub("optimize", *DIGITS, "--data", "fixtures/digits_train.npz", "--val", "fixtures/digits_val.npz",
                   "--prune", "0", "--cluster", "16", "--epochs", "1", "--out", out, "--json", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_clustered_digits_compress_on_tflm(clustered):
    out, doc = clustered
    compression, section = doc["compression"], doc["optimize"]
    assert section["cluster"] == 16 and section["prune_ratio"] == 0
    # layer scope (the default): per-tensor weights, one 16-value table per filter, every filter compressed
    assert sorted((t["op"], t["bits"], t["tables"]) for t in compression["tensors"]) == [
        ("CONV_2D", 4, 1), ("CONV_2D", 4, 1), ("CONV_2D", 4, 1), ("FULLY_CONNECTED", 4, 1)]
    assert compression["skipped"] == [] and compression["weight_ratio"] >= 1.9
    assert section["change"]["weight_bytes"] <= -0.45
    before, after = compression["before"], compression["after"]
    assert after["arena_bytes"] > before["arena_bytes"]  # DECODE rebuilds the weights in the arena
    assert after["arena_bytes"] == doc["memory"]["arena_bytes"]
    assert compression["decode_arena_bytes"] == after["arena_bytes"] - before["arena_bytes"]
    assert before["invoke_us_host"] > 0 and after["invoke_us_host"] > 0
    assert section["student"]["int8_accuracy_tflm"] >= section["teacher"]["int8_accuracy_tflm"] - 0.01
    ops = read_tflite((out / "model.tflite").read_bytes()).ops
    assert sum(op.custom_code == "TFLM_DECODE" for op in ops) == 4


@pytest.fixture(scope="module")
def per_channel_int8(tmp_path_factory):
    """The digits CNN's plain int8 model (per-channel conv filters) with each conv filter's int8 values cut to
    16 levels in the flatbuffer itself (clustering without training): <= 16 values per channel and per filter."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    out = tmp_path_factory.mktemp("plain") / "digits"
    proc = run_hub("convert", *DIGITS, "--calibration", "fixtures/digits_val.npz", "--schedule", "default", "--out",
                   out, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = (out / "model.tflite").read_bytes()
    model, info = model_editor.read(data), read_tflite(data)
    convs = [i for i, t in enumerate(info.tensors) if t.is_constant and t.per_channel and len(t.shape) == 4]
    for index in convs:
        tensor = model.subgraphs[0].tensors[index]
        levels = np.unique(np.quantile(tensor.array, np.linspace(0, 1, 16)).round()).astype(np.int8)
        tensor.array = levels[np.abs(tensor.array[..., None].astype(int) - levels.astype(int)).argmin(-1)]
    x = np.load(FIXTURES / "digits_val.npz")["x"][:16]
    return bytes(model.build()), convs, [{"image": x[i:i + 1]} for i in range(len(x))]


def test_per_channel_tables_decode_exactly(per_channel_int8):
    from hub.verify.tflm import tflm_raw_outputs

    data, convs, samples = per_channel_int8
    compressed, result = stage.compress(data)
    assert sorted(t.tables for t in result.tensors if t.op == "CONV_2D") == [64, 64]  # the 32-channel stem stays
    stage.check_lossless(tflm_raw_outputs(data, samples), tflm_raw_outputs(compressed, samples))


def test_a_table_against_the_quantization_decodes_wrong(per_channel_int8):
    """The fact hub.knowledge.compression records: one table for a per-channel filter is accepted by the
    compressor and decoded wrongly by the pinned interpreter (if this starts failing, the wheel changed)."""
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    from hub.verify.tflm import tflm_raw_outputs

    data, convs, samples = per_channel_int8
    wrong = compression.compress(data, compression.SpecBuilder().add_tensor(0, convs[-1]).with_lut(4, spec.PerTensor())
                                 .build())
    with pytest.raises(IncompatibleError, match="differs"):
        stage.check_lossless(tflm_raw_outputs(data, samples), tflm_raw_outputs(bytes(wrong), samples))


def test_firmware_registers_decode_and_states_its_arena(clustered):
    out, doc = clustered
    assert "resolver.AddDecode()" in (out / "digits_cnn_state_model_ops.h").read_text()
    settings = (out / "digits_cnn_state_model_settings.h").read_text()
    assert f"kDecodeArenaBytes = {doc['compression']['decode_arena_bytes']}," in settings


def test_hub_verify_runs_the_compressed_model(clustered):
    out, doc = clustered
    proc = run_hub("verify", out / "model.tflite", "--json", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["memory"]["arena_bytes"] == doc["memory"]["arena_bytes"]


def test_plan_follows_the_quantization():
    """One table for a per-tensor quantized filter, one per channel otherwise; bits from the values."""
    from hub.tflite.model import TensorInfo

    per_tensor = TensorInfo(0, "w", (4, 10), (4, 10), "int8", scales=[0.1], zero_points=[0], is_constant=True)
    array = np.tile(np.array([-3, 0, 5, 9, 11], np.int8), 8).reshape(4, 10)
    planned = stage._plan(per_tensor, "FULLY_CONNECTED", array)
    assert (planned.tables, planned.values, planned.bits) == (1, 5, 3)
    assert planned.bytes_after == math.ceil(40 * 3 / 8) + 5 + knowledge.DCM_BYTES
    per_channel = TensorInfo(0, "w", (4, 10), (4, 10), "int8", scales=[0.1] * 4, zero_points=[0] * 4,
                             quantized_dimension=0, is_constant=True)
    assert "would not shrink" in stage._plan(per_channel, "CONV_2D", array)


def test_report_counts_decoded_filters_as_parameters(clustered):
    out, _ = clustered
    proc = run_hub("report", out / "model.tflite", "--format", "json", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["totals"]["params"] == 56_394  # the digits CNN's 56,714 less BatchNorm's 320
