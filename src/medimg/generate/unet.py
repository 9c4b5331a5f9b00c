"""A small conditional 2D U-Net for diffusion models.

Input ``(n, c_img + c_cond, h, w)``: the noisy image plus, for a mask-conditioned model, the label map one-hot
(``c_cond`` channels; all zero = "no condition", used for classifier-free guidance). The diffusion time enters as a
sinusoidal embedding, a class label (class-conditional models) as a learned embedding whose last row is "no
class". Output: the velocity ``v`` (same shape as the image). ``h`` and ``w`` must be divisible by
``2 ** (len(widths) - 1)``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion time ``t`` in [0, 1], ``(n,) -> (n, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    """Zero a convolution's weights and bias (residual branches start as the identity)."""
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, with a residual path."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n1 = _norm(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.n2 = _norm(cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.c2(self.drop(nn.functional.silu(self.n2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels (used at the coarsest level only)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, ch * 3, 1)
        self.out = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        a = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None]
        )[:, 0]
        return x + self.out(a.transpose(1, 2).reshape(n, c, h, w))


class DiffusionUNet(nn.Module):
    """Conditional U-Net: ``forward(x, t, y=None, cond=None) -> v``.

    Args:
        image_channels: channels of the generated image (1 grey, 3 colour).
        widths: channels per resolution level (each next level halves ``h`` and ``w``).
        n_classes: class-conditional models: number of classes (embedding row ``n_classes`` = no class); 0 = none.
        cond_channels: mask-conditioned models: one-hot label channels concatenated to the input; 0 = none.
        blocks: residual blocks per level.
        dropout: dropout inside the residual blocks.
    """

    def __init__(
        self,
        image_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 128),
        n_classes: int = 0,
        cond_channels: int = 0,
        blocks: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.image_channels = image_channels
        self.n_classes = n_classes
        self.cond_channels = cond_channels
        self.widths = tuple(widths)
        emb = widths[0] * 4
        self.emb_dim = widths[0]
        self.time = nn.Sequential(nn.Linear(widths[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label = nn.Embedding(n_classes + 1, emb) if n_classes > 0 else None
        self.inp = nn.Conv2d(image_channels + cond_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for i, w in enumerate(widths):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(ch, w, emb, dropout))
                ch = w
                skips.append(ch)
            self.down.append(level)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb, dropout)
        self.attn = Attention(ch)
        self.mid2 = ResBlock(ch, ch, emb, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(ResBlock(ch + skips.pop(), w, emb, dropout))
                ch = w
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, image_channels, 3, padding=1)))

    @property
    def multiple(self) -> int:
        """Image sides must be divisible by this."""
        return int(2 ** (len(self.widths) - 1))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        e = self.time(timestep_embedding(t, self.emb_dim))
        if self.label is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.n_classes, dtype=torch.long, device=x.device)
            e = e + self.label(y)
        if self.cond_channels:
            if cond is None:
                cond = torch.zeros(x.shape[0], self.cond_channels, *x.shape[2:], dtype=x.dtype, device=x.device)
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        h = self.inp(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block in cast(nn.ModuleList, level):
                h = block(h, e)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        for i, level in enumerate(self.up):
            for block in cast(nn.ModuleList, level):
                h = block(torch.cat([h, hs.pop()], dim=1), e)
            if i < len(self.upsample):
                h = self.upsample[i](nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)
