"""Where int8 filters lose, and what splitting them buys: the figures behind hub/tflite/split_weights.py.

For each model of tests/hub_models.py (CNNs nobody here wrote, weights shaped like trained ones, BatchNorm settled,
exported to ONNX and calibrated on synthetic samples over the input range as hub convert does):
- in torch, on the held-out samples, against the float module: the filters alone fake-quantized per channel
  (BatchNorm folded, activations float), the same with empirical bias correction, with MSE-chosen filter scales,
  and a random perturbation of the same size (how sensitive the network is to any filter error);
- on the TFLM interpreter, against onnxruntime on the same graph: whole int16x8, then its first k convolutions'
  filters split (k = 1, 2, 4, ..., all) in network order, and in the order of each split's own gain (every split
  measured alone first): cosine and arena.

    .venv/bin/python bench/filter_split.py [--models mobilenetv1,mobilenetv2] [--out bench/results/filter_split.md]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.convert_speed import add_output_args, recorded_run  # noqa: E402
from hub.convert.calibration import build_calibration  # noqa: E402
from hub.convert.converter import ConvertOptions, convert  # noqa: E402
from hub.graph.normalise import normalise  # noqa: E402
from hub.tflite import split_weights  # noqa: E402
from hub.tflite.passes import run_passes  # noqa: E402
from hub.verify.tflm import verify  # noqa: E402
from tests.hub_models import BY_NAME, save  # noqa: E402

MODELS = ("mobilenetv1", "mobilenetv2", "efficientnet", "regnet", "resnet")
GAIN_ORDER = ("mobilenetv1", "mobilenetv2")  # the split measured alone per filter: one TFLM run per convolution


def _folded(model: nn.Module) -> nn.Module:
    """BatchNorm folded into the convolution before it, as the converter does."""
    model, conv = copy.deepcopy(model), None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            conv = module
        elif isinstance(module, nn.BatchNorm2d) and conv is not None:
            gain = module.weight / torch.sqrt(module.running_var + module.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(module.running_mean)
            conv.weight.data.mul_(gain.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - module.running_mean) * gain + module.bias)
            module.running_mean.zero_(), module.running_var.fill_(1 - module.eps)
            module.weight.data.fill_(1), module.bias.data.zero_()
            conv = None
    return model


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _int8(w: torch.Tensor, mse: bool = False) -> torch.Tensor:
    """Symmetric int8 per output channel, TFLite's filter scheme; `mse`: each channel's scale the clipped one (50 to
    100 % of its peak) with the least squared error."""
    peak = w.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *[1] * (w.dim() - 1))
    fractions = torch.linspace(0.5, 1.0, 51) if mse else torch.ones(1)
    best, best_err = None, None
    for fraction in fractions:
        q = torch.round(w / (peak * fraction / 127)).clamp(-127, 127) * peak * fraction / 127
        err = ((q - w) ** 2).flatten(1).sum(1)
        if best is None:
            best, best_err = q, err
        else:
            better = (err < best_err).view(-1, *[1] * (w.dim() - 1))
            best, best_err = torch.where(better, q, best), torch.minimum(err, best_err)
    return best


def _output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    got = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: got.setdefault("y", out))
    model(x)
    hook.remove()
    return got["y"]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean())


def torch_probes(module: nn.Module, calibration: np.ndarray, held_out: np.ndarray) -> dict:
    """Cosine against the float module with the filters alone fake-quantized, and three variations."""
    x, test = torch.from_numpy(calibration), torch.from_numpy(held_out)
    with torch.no_grad():
        reference, folded = module(test), _folded(module)
        quantized, mse, noisy = (copy.deepcopy(folded) for _ in range(3))
        for q, m, n, f in zip(*map(_weighted, (quantized, mse, noisy, folded))):
            q.weight.copy_(_int8(f.weight))
            m.weight.copy_(_int8(f.weight, mse=True))
            error = (q.weight - f.weight).flatten()
            n.weight.copy_(f.weight + error[torch.randperm(error.numel())].view_as(f.weight))
        corrected = copy.deepcopy(quantized)
        for f, c in zip(_weighted(folded), _weighted(corrected)):  # each layer's mean output shift, in order
            shift = (_output(corrected, c, x) - _output(folded, f, x)).mean(dim=[0, *range(2, f.weight.dim())])
            if c.bias is None:
                c.bias = nn.Parameter(torch.zeros_like(shift))
            c.bias.data -= shift
        return {name: _cosine(m(test), reference) for name, m in
                (("folded, float", folded), ("filters int8", quantized), ("+ bias correction", corrected),
                 ("mse scales", mse), ("same-size random error", noisy))}


def tflm_splits(graph, samples, gain_order: bool) -> dict:
    """Whole int16x8 and the first k convolutions' filters split, on TFLM: {label: (cosine, arena)}."""
    converted = convert(graph, samples, ConvertOptions("tflm", "int16x8", float_fallback=True), float32_twin=True)
    int16, float32 = converted.tflite_bytes, converted.float32_bytes
    held_out = samples.held_out_samples()

    def run(data: bytes) -> tuple[float, int]:
        checked = verify(run_passes(data)[0], graph.onnx_model, held_out)
        return checked.fidelity.cosine, checked.memory.arena_bytes

    convs = split_weights.candidates(int16, float32)
    counts = sorted({min(2 ** i, len(convs)) for i in range(len(convs).bit_length() + 1)})
    rows = {"int16x8": run(int16)}
    rows |= {f"network order, first {k}": run(split_weights.split(int16, float32, convs[:k])) for k in counts}
    if gain_order:
        alone = {c: run(split_weights.split(int16, float32, [c]))[0] for c in convs}
        ranked = sorted(convs, key=lambda c: -alone[c])
        rows |= {f"own-gain order, first {k}": run(split_weights.split(int16, float32, sorted(ranked[:k])))
                 for k in counts}
    return {"convolutions": len(convs), "rows": {k: list(v) for k, v in rows.items()}}


def measure_one(name: str, work: Path) -> dict:
    spec = BY_NAME[name]
    module = spec.build()
    graph = normalise(onnx.load(save(spec, "onnx", work, built=module)), {})
    samples = build_calibration(graph.inputs, None, spec.input_range, {})
    (calibration,), (held_out,) = samples.samples.values(), samples.held_out.values()
    return {"model": name, "torch": torch_probes(module, calibration, held_out),
            **tflm_splits(graph, samples, name in GAIN_ORDER)}


def render(run: dict) -> str:
    lines = ["# Int8 filters: where they lose, and what splitting them buys", "",
             f"`{run['command']}` ({run['date']}, {run['seconds']:.0f} s). Models of tests/hub_models.py exported to "
             "ONNX, synthetic calibration over the input range; held-out samples as hub convert takes them.", "",
             "Torch, against the float module (BatchNorm folded, activations float): cosine with the filters alone "
             "fake-quantized per channel, the same with empirical bias correction, with MSE-chosen scales, and with "
             "a random error of the same size.", "",
             "| model | folded, float | filters int8 | + bias correction | mse scales | same-size random error |",
             "|---|---|---|---|---|---|"]
    for row in run["rows"]:
        t = row["torch"]
        lines.append(f"| {row['model']} | {t['folded, float']:.4f} | {t['filters int8']:.4f} | "
                     f"{t['+ bias correction']:.4f} | {t['mse scales']:.4f} | {t['same-size random error']:.4f} |")
    lines += ["", "TFLM, against onnxruntime on the same graph: whole int16x8 and the first k convolutions' filters "
              "split (hub/tflite/split_weights.py): cosine, arena bytes.", ""]
    for row in run["rows"]:
        lines.append(f"- {row['model']} ({row['convolutions']} convolutions): " + "; ".join(
            f"{label} {cosine:.4f} {arena:,} B" for label, (cosine, arena) in row["rows"].items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    add_output_args(parser, ROOT / "bench" / "results" / "filter_split.md")
    args = parser.parse_args()

    def measure() -> dict:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory(prefix="hub-split-") as tmp:
            return {"rows": [measure_one(name, Path(tmp)) for name in args.models.split(",")]}

    run = recorded_run(args, "bench/filter_split.py", measure)
    Path(args.out).write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
