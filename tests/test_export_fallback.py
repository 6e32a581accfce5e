"""The PyTorch adapter's exporter fallback: a module using F.fold / F.unfold (MobileViT-v2's patches), which the
TorchScript exporter refuses (no aten::col2im at opset 17), is exported by the dynamo exporter, the report says
so, and the col2im / unfold_gather / unit_batch_transpose rules leave a graph TFLM runs (no Col2Im, no
Gather, no Transpose above 5-D) that still computes what the module does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hub.adapters.pytorch import PyTorchAdapter
from hub.artifacts import LoadOptions
from hub.graph.edit import static_shape
from hub.graph.normalise import normalise_source
from hub.graph.rewrite import rewrite
from tests.conftest import run_hub

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PATCH_FOLD = '''
import torch
import torch.nn.functional as F
from torch import nn


class PatchFold(nn.Module):
    """MobileViT-v2's unfold -> per-patch mixing -> fold, kernel = stride = 2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv1d(8 * 4, 8 * 4, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        patches = F.unfold(x, kernel_size=2, stride=2)
        x = F.fold(torch.relu(self.mix(patches)), output_size=x.shape[-2:], kernel_size=2, stride=2)
        return self.head(x.mean((2, 3)))
'''
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def patch_fold(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fold") / "patch_fold.py"
    path.write_text(PATCH_FOLD)
    return path


def test_the_dynamo_exporter_takes_over_when_the_torchscript_one_refuses_and_the_rules_make_it_tflm_shaped(patch_fold):
    options = LoadOptions(input_shapes={None: SHAPE}, factory="PatchFold")
    source = PyTorchAdapter().load(patch_fold, options)
    assert source.exporter == "dynamo" and "dynamo exporter" in source.notes[0]
    assert "Col2Im" in {n.op_type for n in source.onnx_model.graph.node}
    graph = rewrite(normalise_source(source, options)).onnx_model
    ops = {n.op_type for n in graph.graph.node}
    assert not {"Col2Im", "Gather"} & ops
    assert max(len(static_shape(graph, n.input[0])) for n in graph.graph.node if n.op_type == "Transpose") <= 5
    sample = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    [ours] = session.run(None, {graph.graph.input[0].name: sample})
    [theirs] = source.run({graph.graph.input[0].name: sample}).values()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.heavy
def test_a_module_using_f_fold_converts_and_runs_on_tflm(patch_fold, tmp_path):
    out = tmp_path / "out"
    proc = run_hub("convert", f"{patch_fold}:PatchFold", "--input-shape", ",".join(map(str, SHAPE)), "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(pytorch, dynamo exporter)" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["exporter"] == "dynamo" and report["verification"]["tflm"]["loads"]
    assert "GATHER" not in report["model"]["ops"] and report["verification"]["fidelity"]["cosine"] > 0.99
