"""Weight clustering (`hub optimize --cluster N`): few distinct values per filter, so TFLM's look-up-table
compression (hub.tflite.compress) can store each weight as a log2(N)-bit index.

The clusters follow the int8 quantization the converter applies afterwards, because the distinct values
must survive it. Scope "channel": per output channel for convolutions (per-channel symmetric scales, which
also absorb a BatchNorm folded into the conv: a per-channel factor keeps the count of distinct values), per
tensor for Linear layers (FULLY_CONNECTED is quantized per tensor unless --per-channel-dense); TFLM then
needs one value table per channel, 2^bits int8 values each, which caps the saving at (8 / bits) / (1 +
2^bits * 8 / (bits * fan-in)): 1.8x at 4 bits needs a fan-in of 288. Scope "layer": one set of values per layer, for
models converted with every weight per tensor (--per-tensor-weights) and BatchNorm already folded (hub
optimize goes through the student's ONNX graph): one table per filter, 2x at 4 bits. Each group's weights
are split by 1-D k-means (Lloyd's algorithm from quantile seeds); fine-tuning then keeps the assignments
and moves the shared values: after every optimiser step each cluster's weights are reset to their mean
(projected gradient descent, as TF-MOT's weight clustering trains centroids with fixed assignments).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hub.errors import InputError

LLOYD_ITERATIONS = 30


@dataclass
class Clustered:
    """One clustered weight: its cluster labels, groups along dim 0 or one group."""

    module: Any  # nn.Conv1d/nn.Conv2d/nn.Linear
    labels: Any  # torch.LongTensor, (groups, elements per group)
    per_channel: bool


SCOPES = ("channel", "layer")


def targets(module: Any, scope: str = "channel") -> list[tuple[Any, bool]]:
    """(layer, per_channel) for every conv and linear layer of `module`."""
    from torch import nn

    found = []
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            found.append((m, scope == "channel" and not isinstance(m, nn.Linear)))
    return found


def check(clusters: int, scope: str) -> None:
    """InputError unless TFLM can index `clusters` values (1-7 bits) and `scope` is one of SCOPES."""
    if not 2 <= clusters <= 128:
        raise InputError(f"--cluster takes 2 to 128 values per filter (TFLM's indices are 1-7 bits), got {clusters}")
    if scope not in SCOPES:
        raise InputError(f"--cluster-scope {scope!r}: choose one of {', '.join(SCOPES)}")


def cluster(module: Any, clusters: int, *, scope: str = "channel") -> list[Clustered]:
    """Cluster every conv/linear weight of `module` in place to at most `clusters` values per group (see the
    module docstring for `scope`); returns the assignments that `project` keeps during fine-tuning."""
    import torch

    check(clusters, scope)
    done = []
    with torch.no_grad():
        for layer, per_channel in targets(module, scope):
            weight = layer.weight
            groups = weight.reshape(weight.shape[0], -1) if per_channel else weight.reshape(1, -1)
            centroids, labels = kmeans(groups, clusters)
            weight.copy_(torch.gather(centroids, 1, labels).reshape(weight.shape))
            done.append(Clustered(layer, labels, per_channel))
    return done


def kmeans(groups: Any, k: int) -> tuple[Any, Any]:
    """Batched 1-D k-means over the rows of `groups` (G, N): (centroids (G, k'), labels (G, N)), k' <= k.
    Seeds at evenly spaced quantiles, so dense regions near zero get more values than the tails."""
    import torch

    k = min(k, groups.shape[1])
    q = torch.linspace(0, 1, k, dtype=groups.dtype)
    centroids = torch.quantile(groups, q, dim=1).T.contiguous()  # (G, k)
    for _ in range(LLOYD_ITERATIONS):
        labels = (groups[:, :, None] - centroids[:, None, :]).abs().argmin(-1)
        sums = torch.zeros_like(centroids).scatter_add_(1, labels, groups)
        counts = torch.zeros_like(centroids).scatter_add_(1, labels, torch.ones_like(groups))
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # an empty cluster stays put
        if torch.equal(updated, centroids):
            break
        centroids = updated
    labels = (groups[:, :, None] - centroids[:, None, :]).abs().argmin(-1)
    return centroids, labels


def project(clustered: list[Clustered]) -> None:
    """Reset each cluster's weights to their mean (called after every optimiser step)."""
    import torch

    with torch.no_grad():
        for c in clustered:
            weight = c.module.weight
            groups = weight.reshape(c.labels.shape)
            k = int(c.labels.max()) + 1
            sums = torch.zeros(groups.shape[0], k, dtype=groups.dtype).scatter_add_(1, c.labels, groups)
            counts = torch.zeros_like(sums).scatter_add_(1, c.labels, torch.ones_like(groups))
            means = sums / counts.clamp_min(1)
            weight.copy_(torch.gather(means, 1, c.labels).reshape(weight.shape))


def distinct_values(clustered: list[Clustered]) -> int:
    """The largest count of distinct values in any group (for the report and tests)."""
    most = 0
    for c in clustered:
        groups = c.module.weight.detach().reshape(c.labels.shape).numpy()
        most = max(most, max(len(np.unique(g)) for g in groups))
    return most
