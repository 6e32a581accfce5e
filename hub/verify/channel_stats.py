"""The per-layer profile's two figures from the sums its child collects per tensor and channel (hub.verify.
layer_error_worker: "q", "f", "qq", "ff", "qf" over the held-out samples, the tensor's "scale", values per channel
"n"). Plain arithmetic, shared by the child (which orders ops by them) and the parent (which reports them).
"""
from __future__ import annotations

import math


def rmse_over_scale(sums: dict) -> float:
    """RMSE in steps of the tensor's scale, over every value."""
    n = max(sums["n"] * len(sums["qq"]), 1)
    sq_error = sum(qq - 2 * qf + ff for qq, qf, ff in zip(sums["qq"], sums["qf"], sums["ff"]))
    rmse = math.sqrt(max(sq_error, 0.0) / n)
    return rmse / sums["scale"] if sums["scale"] else math.inf


def cosine(sums: dict) -> float:
    """The mean over channels of the cosine of each channel's values around their mean (their correlation).
    Per channel: one outlier channel, which sets the tensor's scale, would otherwise hide that the others
    drowned in it; around the mean: an offset (a bias of 10000) would hide that the variation was rounded
    away. A channel constant in float agrees when it is constant quantized too."""
    n = max(sums["n"], 1)
    cosines = []
    for q, f, qq, ff, qf in zip(sums["q"], sums["f"], sums["qq"], sums["ff"], sums["qf"]):
        var_q, var_f, cov = qq - q * q / n, ff - f * f / n, qf - q * f / n
        tiny = 1e-12 * max(qq, ff, 1e-30)  # float rounding of the sums, not variation
        if var_f <= tiny:
            cosines.append(float(var_q <= tiny))
        else:
            cosines.append(cov / math.sqrt(var_f * var_q) if var_q > tiny else 0.0)
    return sum(cosines) / len(cosines) if cosines else 1.0
