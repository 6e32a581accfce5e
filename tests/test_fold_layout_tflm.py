"""F.unfold / F.fold with kernel == stride (MobileViT-v2's patches) on maps whose axes are all one size, as the dynamo
exporter writes them, converted by the real onnx2tf and run on TFLM against the PyTorch module.

Folding 2x2 patches into a 4x4 map is a 6-D Transpose (1,C,2,2,2,2); without its batch axis, (C,2,2,2,2), onnx2tf 1.29
takes it for channels-last and permutes other axes (MobileViT-v2 at 64x64: float32 cosine 0.30 against the source).
hub.graph.rules.unit_batch_transpose does such permutations in steps onnx2tf reads right; into a 2x2 map the perm
only moves unit axes and becomes a Reshape."""
from __future__ import annotations

from pathlib import Path

import pytest

from hub import api
from hub.artifacts import LoadOptions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PATCHES = '''
import torch
import torch.nn.functional as F
from torch import nn


class Patches(nn.Module):
    """Two MobileViT-v2-like stages: unfold 2x2 patches, mix each patch's pixels, fold back (4x4, then 2x2 maps)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mix4 = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mix2 = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 4)

    @staticmethod
    def _patch_mix(x: torch.Tensor, mix: nn.Module) -> torch.Tensor:
        n, c, h, w = x.shape
        patches = F.unfold(x, kernel_size=2, stride=2).reshape(n, c, 4, -1)  # (N, C, pixels of a patch, patches)
        patches = torch.relu(mix(patches)).reshape(n, c * 4, -1)
        return F.fold(patches, output_size=(h, w), kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._patch_mix(torch.relu(self.stem(x)), self.mix4)
        x = self._patch_mix(torch.relu(self.down(x)), self.mix2)
        return self.head(x.mean((2, 3)))
'''
SHAPE = (1, 3, 8, 8)


def test_folds_on_maps_of_equal_axes_run_on_tflm_as_the_module_computes(tmp_path: Path):
    source = tmp_path / "patches.py"
    source.write_text(PATCHES)
    report = api.convert(source, options=LoadOptions(input_shapes={None: SHAPE}, factory="Patches"),
                         out=tmp_path / "out")
    assert report.source["exporter"] == "dynamo"
    assert any(r.into.startswith("2 Transposes") for p in report.passes for r in p.rewrites)
    assert report.verification.ok and report.verification.fidelity.cosine > 0.99  # int8 on TFLM vs the module
