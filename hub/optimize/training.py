"""Training primitives for hub optimize: structured pruning, knowledge distillation, scores, ONNX export.

- Pruning: torch-pruning 1.6.1 (DepGraph) removes whole channels by L2 magnitude, following
  residual adds, concats and depthwise groups, so the result is a smaller dense network: TFLM has no
  sparse kernels, a masked zero saves nothing. The output layer keeps its width; grouped convs that
  are not depthwise and single-output-channel convs (torch-pruning #126, #179, #328) are left whole.
- Distillation (Hinton et al. 2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(y).
  Without labels alpha is 1: pure distillation, and accuracy is top-1 agreement with the teacher.
  A model whose output has the input's size (an autoencoder) is distilled with MSE to the teacher's
  output, and agreement is the mean cosine between the two.
- Seeded and deterministic on CPU (torch.use_deterministic_algorithms, one seed for shuffles).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hub.artifacts import TensorSpec
from hub.errors import IncompatibleError, InputError
from hub.quiet import silenced_fds
from hub.verify.accuracy import top1_accuracy, top1_agreement

BATCH = 64
PROBABILITY_FLOOR = 1e-12  # log() of a softmax output as the teacher's logits


@dataclass
class DistillOptions:
    epochs: int = 10
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the teacher's soft targets; 1.0 without labels, 0.0 with --no-distill
    batch: int = BATCH
    seed: int = 0
    on_epoch: Callable[[int, float], None] | None = field(default=None, repr=False)  # (epoch, mean loss)
    after_step: Callable[[], None] | None = field(default=None, repr=False)  # e.g. hub.optimize.cluster.project


# --- pruning ---------------------------------------------------------------------------------

def prune(module: Any, example_input: Any, ratio: float, *, round_to: int | None = None) -> Any:
    """Remove the fraction `ratio` of channels of every prunable layer (L2 magnitude, DepGraph);
    returns `module`, pruned in place. The output layer keeps its width."""
    import torch
    import torch_pruning as tp

    if not 0.0 <= ratio < 1.0:
        raise InputError(f"--prune must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return module
    module.eval()
    with torch.no_grad():
        before = module(example_input).shape
    pruner = tp.pruner.BasePruner(module, example_input, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=_kept_whole(module, example_input),
                                  round_to=round_to)
    pruner.step()
    with torch.no_grad():
        after = module(example_input).shape
    if after != before:  # DepGraph missed a dependency: a wrong network must not go further
        raise IncompatibleError(f"pruning changed the output shape from {tuple(before)} to {tuple(after)}")
    return module


def _kept_whole(module: Any, example_input: Any) -> list[Any]:
    """Layers pruning must not cut: the last conv/linear to run (the classifier or decoder output),
    single-output-channel convs and grouped convs that are not depthwise (torch-pruning mishandles them)."""
    import torch
    from torch import nn

    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, *_: order.append(m)) for m in module.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(example_input)
    for hook in hooks:
        hook.remove()
    kept = order[-1:]
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            depthwise = m.groups == m.in_channels and m.groups > 1
            if m.out_channels == 1 or (m.groups > 1 and not depthwise):
                kept.append(m)
    return kept


def count(module: Any, example_input: Any) -> dict[str, int]:
    """Parameters and MACs of one forward pass (torch-pruning's counter)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(module, example_input)
    return {"params": int(params), "macs": int(macs)}


# --- distillation ----------------------------------------------------------------------------

def distill(teacher: Any, student: Any, x: np.ndarray, y: np.ndarray | None = None, options: DistillOptions | None = None,
            *, probabilities: bool = False, reconstruction: bool = False) -> Any:
    """Train `student` towards `teacher` on samples `x` (and labels `y`): Hinton's loss, MSE to the
    teacher's output for a reconstruction model. alpha=0 trains on the labels alone. Returns `student`."""
    import torch

    options = options or DistillOptions()
    if options.alpha == 0.0 and y is None:
        raise InputError("training without distillation needs labels (y)")
    alpha = 1.0 if y is None else options.alpha
    torch.manual_seed(options.seed)
    with _deterministic():
        xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        ys = None if y is None else torch.from_numpy(y)
        with torch.no_grad():
            teacher.eval()
            targets = torch.cat([teacher(xs[i:i + 256]) for i in range(0, len(xs), 256)])
        if probabilities:
            targets = targets.clamp_min(PROBABILITY_FLOOR).log()
        optimiser = torch.optim.Adam(student.parameters(), lr=options.lr)
        generator = torch.Generator().manual_seed(options.seed)
        for epoch in range(options.epochs):
            student.train()
            total = 0.0
            for idx in torch.randperm(len(xs), generator=generator).split(options.batch):
                out = student(xs[idx])
                loss = _loss(out, targets[idx], None if ys is None else ys[idx], alpha, options.temperature,
                             probabilities, reconstruction)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if options.after_step is not None:
                    options.after_step()
                total += float(loss.detach()) * len(idx)
            if options.on_epoch is not None:
                options.on_epoch(epoch + 1, total / len(xs))
    student.eval()
    return student


def _loss(out: Any, teacher_logits: Any, y: Any, alpha: float, temperature: float, probabilities: bool,
          reconstruction: bool) -> Any:
    import torch.nn.functional as F

    if reconstruction:
        return F.mse_loss(out, teacher_logits)
    logits = out.clamp_min(PROBABILITY_FLOOR).log() if probabilities else out
    loss = 0.0
    if alpha > 0:
        soft = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                        reduction="batchmean", log_target=True)
        loss = alpha * temperature**2 * soft
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(logits, y)
    return loss


class _deterministic:
    """torch's deterministic algorithms for the duration (restored after): same seed, same student."""

    def __enter__(self) -> None:
        import torch

        self.was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.use_deterministic_algorithms(self.was)


# --- scores ----------------------------------------------------------------------------------

def predict(module: Any, x: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    with torch.no_grad():
        xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return torch.cat([module(xs[i:i + 256]) for i in range(0, len(xs), 256)]).numpy()


def scores(outputs: np.ndarray, teacher: np.ndarray, y: np.ndarray | None, reconstruction: bool) -> dict[str, float | None]:
    """accuracy (top-1 vs labels, None without) and agreement with the teacher's outputs (top-1, or mean
    cosine for a reconstruction model)."""
    a, b = outputs.reshape(len(outputs), -1), teacher.reshape(len(teacher), -1)
    if reconstruction:
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return {"accuracy": None, "agreement": round(float(np.mean(cos)), 6)}
    return {"accuracy": None if y is None else round(top1_accuracy(a, y), 6),  # hub convert --data's figures too
            "agreement": round(top1_agreement(a, b), 6)}


def export_onnx(module: Any, spec: TensorSpec, output_name: str, path: Path) -> None:
    """The student as an ONNX file for `hub convert`'s path (same input and output names as the teacher)."""
    import warnings

    import torch

    module.eval()
    with silenced_fds(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(spec.shape),), str(path), dynamo=False, opset_version=17,
                          input_names=[spec.name], output_names=[output_name], do_constant_folding=True)
