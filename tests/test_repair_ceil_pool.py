"""repair_ceil_pool: PyTorch's AvgPool2d(kernel >= the map, ceil_mode=True), as model libraries pool a 3x3
map with kernel=hidden_dim, exports as an AveragePool onnxruntime divides by the whole kernel. The pass
makes the ONNX compute what the module computes (the map's mean), measured against PyTorch itself."""
from __future__ import annotations

import io

import numpy as np
import onnx
import torch
from torch import nn

from hub.graph.passes import run_passes
from tests.test_passes import make, ops, rand, run_ort


class CeilPooled(nn.Module):
    """The pooler of a public library's EfficientNet: a 3x3 map pooled with kernel 640."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.pool = nn.AvgPool2d(640, ceil_mode=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


def test_the_exported_pool_computes_the_modules_mean_after_the_repair():
    torch.manual_seed(0)
    module, x = CeilPooled().eval(), torch.rand(1, 3, 12, 12)
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    exported = onnx.shape_inference.infer_shapes(onnx.load_from_string(buffer.getvalue()))
    with torch.no_grad():
        expected = module(x).numpy()
    feeds = {"x": x.numpy()}
    assert not np.allclose(run_ort(exported, feeds)[0], expected, atol=1e-3)  # the exporter's bug, as seen
    repaired, results = run_passes(exported, ["repair_ceil_pool"])
    assert "GlobalAveragePool" in ops(repaired) and "AveragePool" not in ops(repaired)
    assert results[0].changed == 1 and "PyTorch's export" in results[0].detail
    np.testing.assert_allclose(run_ort(repaired, feeds)[0], expected, rtol=1e-5, atol=1e-6)


def test_a_windowed_ceil_mode_pool_is_left_alone():
    """A kernel smaller than the map pools windows: not a global pool, whatever ceil_mode says."""
    pool = onnx.helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    model = make([pool], {"x": [1, 4, 5, 5]}, {"y": None}, {})
    after, results = run_passes(model, ["repair_ceil_pool"])
    assert ops(after) == ["AveragePool"] and results[0].changed == 0
    feeds = {"x": rand(1, 4, 5, 5)}
    np.testing.assert_array_equal(run_ort(after, feeds)[0], run_ort(model, feeds)[0])
