"""Small residual networks for 2D and 3D images, built for CPU training: an encoder (reusable by pre-training, probes
and the other engines), a classification head and a light decoder for reconstruction pre-training.

Shapes: inputs ``(n, c, *spatial)``; the encoder returns the last feature map ``(n, widths[-1], *spatial / 2^k)``
where ``k = len(widths) - 1`` (plus ``stem_stride - 1``), :meth:`ResNetEncoder.embed` the globally average-pooled
vector ``(n, widths[-1])``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(dims: int, ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch) if dims == 2 else nn.BatchNorm3d(ch)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        conv = _conv(dims)
        self.c1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(dims, cout)
        self.c2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(dims, cout)
        self.act = nn.ReLU(inplace=True)
        self.short: nn.Module = (
            nn.Sequential(conv(cin, cout, 1, stride, bias=False), _norm(dims, cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.n1(self.c1(x)))
        y = self.n2(self.c2(y))
        return self.act(y + self.short(x))


class ResNetEncoder(nn.Module):
    """A ResNet-style encoder: stem conv, then one stage per width (each halves the resolution except the first)."""

    def __init__(
        self,
        dims: int = 2,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError("dims must be 2 or 3")
        self.config = {
            "dims": dims,
            "in_channels": in_channels,
            "widths": list(widths),
            "blocks": list(blocks),
            "stem_stride": stem_stride,
        }
        conv = _conv(dims)
        self.stem = nn.Sequential(
            conv(in_channels, widths[0], 3, stem_stride, 1, bias=False), _norm(dims, widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        cin = widths[0]
        for i, (w, nb) in enumerate(zip(widths, blocks, strict=True)):
            layers = [BasicBlock(dims, cin, w, 1 if i == 0 else 2)]
            layers += [BasicBlock(dims, w, w, 1) for _ in range(nb - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = int(widths[-1])
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features ``(n, out_channels)``."""
        return self.forward(x).flatten(2).mean(-1)


class Classifier(nn.Module):
    """Encoder + dropout + linear head; returns logits ``(n, n_outputs)``."""

    def __init__(self, encoder: ResNetEncoder, n_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.out_channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.encoder.embed(x)))


class ReconstructionDecoder(nn.Module):
    """Upsamples the encoder's last feature map back to the input size (for masked-image modelling and
    Models-Genesis-style restoration pre-training)."""

    def __init__(self, encoder: ResNetEncoder, out_channels: int) -> None:
        super().__init__()
        dims = encoder.dims
        conv = _conv(dims)
        widths = [int(w) for w in encoder.config["widths"]][::-1]  # type: ignore[attr-defined]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [conv(a, b, 3, 1, 1, bias=False), _norm(dims, b), nn.ReLU(inplace=True)]
        self.body = nn.ModuleList(layers)
        self.n_up = len(widths) - 1
        self.out = conv(widths[-1], out_channels, 1)
        self.mode = "bilinear" if dims == 2 else "trilinear"

    def forward(self, feat: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = feat
        for i in range(self.n_up):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False)
            for layer in self.body[3 * i : 3 * i + 3]:
                x = layer(x)
        x = nn.functional.interpolate(x, size=tuple(size), mode=self.mode, align_corners=False)
        return self.out(x)


def build_encoder(config: dict[str, Any]) -> ResNetEncoder:
    """An encoder from its ``config`` dict (as stored in model.json / encoder.json)."""
    return ResNetEncoder(
        dims=int(config["dims"]),
        in_channels=int(config["in_channels"]),
        widths=config["widths"],
        blocks=config["blocks"],
        stem_stride=int(config.get("stem_stride", 1)),
    )


def default_encoder_config(dims: int, in_channels: int, spatial: Sequence[int]) -> dict[str, Any]:
    """Widths/blocks sized to the image: 4 stages at 2D (2 blocks each for small images), 4 lighter stages in 3D,
    a stride-2 stem when the smallest side exceeds 96 voxels."""
    small = min(spatial)
    if dims == 2:
        widths, blocks = [32, 64, 128, 256], [1, 1, 1, 1]
    else:
        widths, blocks = [16, 32, 64, 128], [1, 1, 1, 1]
    return {
        "dims": dims,
        "in_channels": in_channels,
        "widths": widths,
        "blocks": blocks,
        "stem_stride": 2 if small > 96 else 1,
    }
