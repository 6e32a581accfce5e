"""Quantization-aware fine-tuning (QAT) for `hub optimize`: train with the int8 rounding TFLite will apply.

The student is distilled from its teacher (hub.optimize.training.distill: Hinton's loss, seeded, deterministic) while
its forward pass carries fake quantization that mimics TFLite's full-integer int8 converter. Afterwards the
fake quantization is removed: the returned module is a plain float module with the same parameters and
state_dict keys, which hub exports to ONNX and converts with post-training calibration as before. The
converter then lands on the grid the network was trained for.

The scheme (what the converter does; tests/test_qat.py checks it against the converter's output: weights bit for
bit, activation scales to 1 %):
- Conv (and depthwise, transposed) weights: per output channel, symmetric, int8 in [-127, 127],
  scale_c = max|w_c| / 127, rounded half away from zero. A BatchNorm after a conv is folded into it by the
  converter, multiplying each output channel by gamma_c / sqrt(var_c + eps): per-channel symmetric
  quantization is invariant under a per-channel factor of either sign (the scale scales with it, the
  rounding is odd-symmetric), so quantizing the unfolded conv weight gives the folded conv's int8 values.
  The same does not hold for a Linear followed by a BatchNorm1d (per-tensor scale): rare, and left as is.
- Linear (FULLY_CONNECTED) weights: per tensor, symmetric, scale = max|W| / 127; per output channel
  with `per_channel_dense` (hub convert's --per-channel-dense).
- Activations: per tensor, asymmetric, int8 in [-128, 127], range widened to include 0. Ranges start as
  the min/max over a few calibration batches of the float network (what post-training calibration sees),
  then follow an exponential moving average of each training batch's min/max. Fake quantized are the
  tensors TFLite keeps in int8: the model input, and the output of every module that requantizes
  (conv, linear, BatchNorm, activations, onnx2torch's elementwise ops and ReduceMean), except a conv,
  linear or BatchNorm whose only consumer is a BatchNorm or a ReLU/ReLU6 (the converter fuses those).
  Average and max pools keep their input's scale and zero point in TFLite: their output is rounded
  onto the input's grid.
  Producers and consumers are found by tracing one forward pass with module hooks, so both user
  nn.Modules and onnx2torch's GraphModules are covered; tensors made by functional calls in a user's
  forward (torch.relu, +) are invisible to hooks and are not fake quantized.
- Gradients: straight-through estimator for the rounding; zero outside an activation's clipping range.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from hub.optimize.training import DistillOptions, _deterministic, distill

WEIGHT_MAX = 127  # narrow range: int8 weights are symmetric, -128 is never used
ACTIVATION_MIN, ACTIVATION_MAX = -128, 127
EMA_DECAY = 0.99  # per training batch: a few hundred steps move a range, a single batch does not
CALIBRATION_BATCHES = 8

_REQUANTIZING = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6,
                 nn.LeakyReLU, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.SiLU, nn.ELU)
_ONNX2TORCH_REQUANTIZING = {"OnnxBinaryMathOperation", "OnnxReduceStaticAxes"}  # Add/Mul/..., ReduceMean (MEAN)
_SAME_SCALE = (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._MaxPoolNd)
_ONNX2TORCH_SAME_SCALE = {"OnnxGlobalAveragePool", "OnnxGlobalAveragePoolWithKnownInputShape"}
_FUSED_INTO_PRODUCER = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6)
_FUSING_PRODUCERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def quantization_aware(module: nn.Module, x: np.ndarray, teacher: nn.Module, y: np.ndarray | None = None,
                       options: DistillOptions | None = None, *, probabilities: bool = False,
                       reconstruction: bool = False, per_channel_dense: bool = False) -> nn.Module:
    """Distill `module` from `teacher` (a different module) on samples `x` (and labels `y`) with TFLite's
    int8 fake quantization in its forward pass (see the module docstring); returns `module`, trained in
    place, as a plain float module again."""
    options = options or DistillOptions()
    example = torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32))
    with fake_quantized(module, example, per_channel_dense=per_channel_dense) as ranges:
        _calibrate(module, x, ranges, options)
        distill(teacher, module, x, y, options, probabilities=probabilities, reconstruction=reconstruction)
    return module


# --- weights ---------------------------------------------------------------------------------

def weight_axis(layer: nn.Module, per_channel_dense: bool = False) -> int | None:
    """The weight's output-channel axis TFLite quantizes along, None for one scale per tensor."""
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return 1  # (in, out / groups, k...)
    if isinstance(layer, nn.modules.conv._ConvNd):
        return 0
    return 0 if per_channel_dense else None


def int8_weights(w: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, scales broadcastable to w) as the converter computes them for a weight tensor."""
    dims = [d for d in range(w.dim()) if d != axis]
    peak = w.detach().abs().amax(dim=dims, keepdim=True) if axis is not None else w.detach().abs().max()
    scale = torch.where(peak > 0, peak / WEIGHT_MAX, torch.ones_like(peak))
    return _round_half_away(w.detach() / scale).clamp(-WEIGHT_MAX, WEIGHT_MAX).to(torch.int8), scale


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight as TFLite will hold it, with a straight-through gradient."""

    def __init__(self, axis: int | None):
        super().__init__()
        self.axis = axis

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = int8_weights(w, self.axis)
        return q.to(w.dtype) * scale + (w - w.detach())  # exactly the grid forward, identity backward


def _round_half_away(t: torch.Tensor) -> torch.Tensor:
    """TFLite's rounding (std::round); torch.round rounds ties to even."""
    return torch.sign(t) * torch.floor(t.abs() + 0.5)


# --- activations -----------------------------------------------------------------------------

@dataclass
class _Range:
    """One int8 activation tensor: its observed range and how it is being used."""

    lo: float = float("inf")
    hi: float = float("-inf")
    calibrating: bool = False

    def __call__(self, t: torch.Tensor, training: bool) -> torch.Tensor:
        if self.calibrating or training:
            lo, hi = float(t.detach().min()), float(t.detach().max())
            if self.calibrating:
                self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
                return t
            self.lo = EMA_DECAY * self.lo + (1 - EMA_DECAY) * lo
            self.hi = EMA_DECAY * self.hi + (1 - EMA_DECAY) * hi
        return self.fake_quantize(t)

    def grid(self) -> tuple[float, int]:
        """(scale, zero point) of the range widened to include 0, as TFLite derives them."""
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max(hi - lo, 1e-8) / (ACTIVATION_MAX - ACTIVATION_MIN)
        return scale, min(max(round(ACTIVATION_MIN - lo / scale), ACTIVATION_MIN), ACTIVATION_MAX)

    def fake_quantize(self, t: torch.Tensor) -> torch.Tensor:
        scale, zero = self.grid()
        clipped = t.clamp((ACTIVATION_MIN - zero) * scale, (ACTIVATION_MAX - zero) * scale)
        q = (_round_half_away(clipped.detach() / scale) + zero).clamp(ACTIVATION_MIN, ACTIVATION_MAX)
        return (q - zero) * scale + (clipped - clipped.detach())


@dataclass
class _SameGrid:
    """A pooled tensor: TFLite's AVERAGE_POOL_2D and MAX_POOL_2D keep their input's scale and zero point, so
    the output is rounded onto the input's grid and observes nothing itself."""

    source: _Range

    def __call__(self, t: torch.Tensor, training: bool) -> torch.Tensor:
        return t if self.source.calibrating else self.source.fake_quantize(t)


@dataclass
class _Call:
    module: nn.Module
    index: int  # how many times the module ran before in this forward pass (shared ReLUs run several times)
    inputs: list[int]  # id() of its tensor inputs
    output: Any


@dataclass
class _Ranges:
    """The activation ranges of one fake-quantized module: the model input and each quantized module call."""

    input: _Range
    outputs: dict[tuple[int, int], _Range | _SameGrid] = field(default_factory=dict)  # (id(module), call index)
    calls: defaultdict = field(default_factory=lambda: defaultdict(int))

    def all(self) -> list[_Range]:
        return [self.input, *(r for r in self.outputs.values() if isinstance(r, _Range))]


def _trace(module: nn.Module, example: torch.Tensor) -> list[_Call]:
    calls: list[_Call] = []
    counts: defaultdict = defaultdict(int)

    def record(mod: nn.Module, args: tuple, output: Any) -> None:
        calls.append(_Call(mod, counts[id(mod)], [id(a) for a in args if isinstance(a, torch.Tensor)], output))
        counts[id(mod)] += 1

    hooks = [m.register_forward_hook(record) for m in module.modules() if not any(m.children())]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(example)
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    return calls


def _plan(calls: list[_Call], example: torch.Tensor) -> _Ranges:
    """A range for each module call whose output TFLite keeps as an int8 tensor of its own, the input's
    grid for each pool; a traced call's output is told apart by id() (the trace keeps them alive)."""
    consumers: defaultdict = defaultdict(list)
    for call in calls:
        for i in call.inputs:
            consumers[i].append(call.module)
    ranges = _Ranges(_Range())
    grid = {id(example): ranges.input}  # tensor -> the range it is quantized with
    for call in calls:
        key = (id(call.module), call.index)
        if not isinstance(call.output, torch.Tensor):
            continue
        if _same_scale(call.module):
            if call.inputs and call.inputs[0] in grid:
                ranges.outputs[key] = _SameGrid(grid[call.inputs[0]])
                grid[id(call.output)] = grid[call.inputs[0]]
            continue
        after = consumers[id(call.output)]
        fused = (isinstance(call.module, _FUSING_PRODUCERS) and len(after) == 1
                 and isinstance(after[0], _FUSED_INTO_PRODUCER))
        if _requantizes(call.module) and not fused:
            ranges.outputs[key] = grid[id(call.output)] = _Range()
    return ranges


def _requantizes(module: nn.Module) -> bool:
    return isinstance(module, _REQUANTIZING) or type(module).__name__ in _ONNX2TORCH_REQUANTIZING


def _same_scale(module: nn.Module) -> bool:
    return isinstance(module, _SAME_SCALE) or type(module).__name__ in _ONNX2TORCH_SAME_SCALE


# --- installing and removing -----------------------------------------------------------------

@contextlib.contextmanager
def fake_quantized(module: nn.Module, example: torch.Tensor, *, per_channel_dense: bool = False) -> Iterator[_Ranges]:
    """`module` with weight parametrizations and activation hooks for the duration; afterwards it is the
    plain module again (the latent float weights, no hooks). Activation ranges start empty: calibrate them."""
    calls = _trace(module, example)
    ranges = _plan(calls, example)
    layers = [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    hooks = [module.register_forward_pre_hook(_input_hook(ranges))]
    quantized = {id(c.module): c.module for c in calls if (id(c.module), c.index) in ranges.outputs}
    hooks += [m.register_forward_hook(_output_hook(ranges)) for m in quantized.values()]
    orders = [list(layer._parameters) for layer in layers]
    try:
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", _WeightFakeQuant(weight_axis(layer, per_channel_dense)))
        yield ranges
    finally:
        for hook in hooks:
            hook.remove()
        for layer, order in zip(layers, orders):
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            params = dict(layer._parameters)  # removal appends the weight after the bias: keep state_dict's order
            layer._parameters.clear()
            layer._parameters.update({name: params[name] for name in order})


def _input_hook(ranges: _Ranges) -> Any:
    def hook(mod: nn.Module, args: tuple) -> tuple:
        ranges.calls.clear()  # a new forward pass: call indices start again
        return (ranges.input(args[0], mod.training), *args[1:])
    return hook


def _output_hook(ranges: _Ranges) -> Any:
    def hook(mod: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        index = ranges.calls[id(mod)]
        ranges.calls[id(mod)] += 1
        found = ranges.outputs.get((id(mod), index))
        return None if found is None else found(output, mod.training)
    return hook


def _calibrate(module: nn.Module, x: np.ndarray, ranges: _Ranges, options: DistillOptions) -> None:
    """Activation ranges from the float network's min/max over a few seeded batches (eval mode: BatchNorm
    uses its running statistics, as the converted model will)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(options.seed))
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for r in ranges.all():
        r.calibrating = True
    module.eval()
    with _deterministic(), torch.no_grad():
        for idx in order[:CALIBRATION_BATCHES * options.batch].split(options.batch):
            module(xs[idx])
    for r in ranges.all():
        r.calibrating = False
