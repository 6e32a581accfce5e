"""Torchvision-style architectures written out here (torchvision is not installed), random weights:
the op patterns of the real networks (MobileNetV3's Hardswish/Hardsigmoid squeeze-excite, DenseNet's
concatenations of up to 25 tensors, ShuffleNetV2's channel shuffle and chunk, EfficientNet's SiLU, ...)
for counting what blocks TFLM (bench/blocker_ranking.py). Widths follow the originals; depths too,
except where noted. Also a few common heads and layers of other real models: a top-1 head
(torch.topk(k=1)), a U-Net-style decoder (F.interpolate), PReLU nets (MobileFaceNet, ENet).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cbn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act: type[nn.Module] = nn.ReLU, gate: type[nn.Module] = nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.fc2, self.act, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class MBConv(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type[nn.Module], stride: int,
                 se_act: type[nn.Module] = nn.ReLU, gate: type[nn.Module] = nn.Hardsigmoid, se_div: int = 4):
        super().__init__()
        layers: list[nn.Module] = [cbn(cin, exp, 1, act=act)] if exp != cin else []
        layers.append(cbn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            squeeze = _divisible(exp // 4) if se_div == 4 and gate is nn.Hardsigmoid else max(1, cin // se_div)
            layers.append(SqueezeExcite(exp, squeeze, se_act, gate))
        layers.append(cbn(exp, cout, 1, act=None))
        self.block, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v3_small(classes: int = 1000) -> nn.Module:
    re, hs = nn.ReLU, nn.Hardswish
    cfg = [(16, 3, 16, 16, True, re, 2), (16, 3, 72, 24, False, re, 2), (24, 3, 88, 24, False, re, 1),
           (24, 5, 96, 40, True, hs, 2), (40, 5, 240, 40, True, hs, 1), (40, 5, 240, 40, True, hs, 1),
           (40, 5, 120, 48, True, hs, 1), (48, 5, 144, 48, True, hs, 1), (48, 5, 288, 96, True, hs, 2),
           (96, 5, 576, 96, True, hs, 1), (96, 5, 576, 96, True, hs, 1)]
    return nn.Sequential(cbn(3, 16, 3, 2, act=hs), *[MBConv(*c) for c in cfg], cbn(96, 576, 1, act=hs),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), hs(), nn.Dropout(0.2),
                         nn.Linear(1024, classes))


def efficientnet_b0(classes: int = 1000) -> nn.Module:
    silu = nn.SiLU
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    blocks = []
    for e, k, s, cin, cout, n in stages:
        for i in range(n):
            c = cin if i == 0 else cout
            blocks.append(MBConv(c, k, c * e, cout, True, silu, s if i == 0 else 1, silu, nn.Sigmoid, 4))
    return nn.Sequential(cbn(3, 32, 3, 2, act=silu), *blocks, cbn(320, 1280, 1, act=silu), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, classes))


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(cbn(cin, cin, 3, stride, groups=cin, act=None), cbn(cin, half, 1))
        self.branch2 = nn.Sequential(cbn(cin if stride > 1 else half, half, 1), cbn(half, half, 3, stride, groups=half, act=None),
                                     cbn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def shufflenet_v2_x0_5(classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [cbn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for cout, repeats in ((48, 4), (96, 8), (192, 4)):
        layers += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)]
        cin = cout
    return nn.Sequential(*layers, cbn(192, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


def squeezenet1_1(classes: int = 1000) -> nn.Module:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64), Fire(128, 16, 64), pool(),
                         Fire(128, 32, 128), Fire(256, 32, 128), pool(), Fire(256, 48, 192), Fire(384, 48, 192),
                         Fire(384, 64, 256), Fire(512, 64, 256), nn.Dropout(0.5), nn.Conv2d(512, classes, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class DenseBlock(nn.Module):
    def __init__(self, layers: int, cin: int, growth: int = 32, bn_size: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(), nn.Conv2d(cin + i * growth, bn_size * growth, 1, bias=False),
                          nn.BatchNorm2d(bn_size * growth), nn.ReLU(), nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:  # torchvision concatenates every earlier feature map afresh
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


def densenet121(classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        layers.append(DenseBlock(n, c))
        c += n * 32
        if i < 3:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
            c //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int):
        super().__init__()
        self.b1 = cbn(cin, c1, 1)
        self.b2 = nn.Sequential(cbn(cin, c3r, 1), cbn(c3r, c3, 3))
        self.b3 = nn.Sequential(cbn(cin, c5r, 1), cbn(c5r, c5, 3))  # torchvision's "5x5" branch is 3x3
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), cbn(cin, pp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def googlenet(classes: int = 1000) -> nn.Module:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        cbn(3, 64, 7, 2), pool(), cbn(64, 64, 1), cbn(64, 192, 3), pool(),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64), pool(),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(2, 2, ceil_mode=True),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, classes))


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(cbn(cin, cout, 3, stride), cbn(cout, cout, 3, act=None))
        self.skip = cbn(cin, cout, 1, stride, act=None) if stride > 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


def resnet18(classes: int = 1000) -> nn.Module:
    blocks, c = [], 64
    for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [Basic(c, cout, s), Basic(cout, cout, 1)]
        c = cout
    return nn.Sequential(cbn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, classes))


class Top1(nn.Module):
    """A classifier that returns its best score and class (torch.topk(k=1)), as deployed pipelines do."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.topk(self.body(x), 1, dim=1)


class UNetSmall(nn.Module):
    """U-Net-style segmenter: encoder, bilinear and nearest upsampling, skip concatenations."""

    def __init__(self, mode: str = "bilinear", align_corners: bool | None = False):
        super().__init__()
        self.mode, self.align = mode, align_corners
        self.e1, self.e2, self.e3 = cbn(3, 16), cbn(16, 32, s=2), cbn(32, 64, s=2)
        self.d2, self.d1, self.head = cbn(96, 32), cbn(48, 16), nn.Conv2d(16, 2, 1)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=self.align)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(a)
        c = self.e3(b)
        d = self.d2(torch.cat([self.up(c), b], 1))
        return self.head(self.d1(torch.cat([self.up(d), a], 1)))


def mobilefacenet_like(classes: int = 128) -> nn.Module:
    """MobileFaceNet/ArcFace-style: per-channel PReLU after every convolution."""
    def cbp(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))
    return nn.Sequential(cbp(3, 64, 3, 2), cbp(64, 64, 3, 1, 64), cbp(64, 128, 1), cbp(128, 128, 3, 2, 128), cbp(128, 128, 1),
                         cbp(128, 256, 3, 2, 128), nn.Conv2d(256, 512, 1), nn.BatchNorm2d(512), nn.PReLU(512),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def enet_like(classes: int = 4) -> nn.Module:
    """ENet-style: PReLU with one shared slope (nn.PReLU()), dilated convolutions."""
    def cbp(cin: int, cout: int, s: int = 1, d: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, d, dilation=d, bias=False), nn.BatchNorm2d(cout), nn.PReLU())
    return nn.Sequential(cbp(3, 16, 2), cbp(16, 64, 2), cbp(64, 64, d=2), cbp(64, 64, d=4), cbp(64, 128, 2),
                         nn.Conv2d(128, classes, 1))


def hardsigmoid_clip_net() -> nn.Module:
    """Hand-written hard activations as many model files write them (F.relu6(x + 3) / 6, x.clamp(0, 1))."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = cbn(3, 16, s=2, act=None), cbn(16, 32, s=2, act=None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.c1(x)
            x = x * F.relu6(x + 3) / 6
            x = self.c2(x)
            return (x * 0.2 + 0.5).clamp(0, 1)
    return Net()


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mobilenet_v3_small": mobilenet_v3_small, "efficientnet_b0": efficientnet_b0,
    "shufflenet_v2_x0_5": shufflenet_v2_x0_5, "squeezenet1_1": squeezenet1_1, "densenet121": densenet121,
    "googlenet": googlenet, "resnet18": resnet18, "resnet18_top1": lambda: Top1(resnet18()),
    "mobilenet_v3_small_top1": lambda: Top1(mobilenet_v3_small()),
    "unet_bilinear": UNetSmall, "unet_bilinear_align": lambda: UNetSmall("bilinear", True),
    "unet_nearest": lambda: UNetSmall("nearest", None), "mobilefacenet_like": mobilefacenet_like,
    "enet_like": enet_like, "hand_hardswish": hardsigmoid_clip_net,
}
