"""The promptable network: a small U-Net (2D, or 3D for :mod:`medimg.interactive.promptable3d`) that reads an image
crop together with its prompts and the previous mask.

Input channels (all on the network's square crop, ``size`` x ``size`` pixels, default 96):

0. image, scaled to [0, 1] by the crop's 1st-99th intensity percentiles;
1. positive prompts: disks (radius ``CLICK_RADIUS``) at positive clicks and positive scribble strokes;
2. negative prompts: the same for negative clicks and scribbles;
3. box: 1 inside the box, 0 outside (all 0 when there is no box);
4. previous mask (probability in [0, 1]; all 0 on the first interaction);
5. reference image: when propagating through a volume, the neighbouring slice whose mask is channel 4
   (scaled like channel 0), so the network can see how the anatomy changed; all 0 otherwise.

Output: one channel of logits for "this pixel belongs to the prompted structure". The 3D network has channels 0-4
only (``IN_CHANNELS_3D``), on a cube of ``size``^3 voxels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IN_CHANNELS = 6
IN_CHANNELS_3D = 5
CLICK_RADIUS = 3.0


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _block(cin: int, cout: int, dims: int = 2) -> nn.Sequential:
    conv = _conv(dims)
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(4, cout),
        nn.LeakyReLU(0.01, inplace=True),
        conv(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(4, cout),
        nn.LeakyReLU(0.01, inplace=True),
    )


class PromptUNet(nn.Module):
    """U-Net with ``len(widths)`` levels (stride-2 convolutions down, transposed convolutions up); ``dims`` 2 or 3."""

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 64, 96), in_channels: int = IN_CHANNELS, dims: int = 2
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, not {dims}")
        self.widths = tuple(widths)
        self.in_channels = in_channels
        self.dims = dims
        conv = _conv(dims)
        up_conv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            self.enc.append(_block(cin, w, dims))
            if i < len(widths) - 1:
                self.down.append(conv(w, w, 2, stride=2))
            cin = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(up_conv(widths[i], widths[i - 1], 2, stride=2))
            self.dec.append(_block(2 * widths[i - 1], widths[i - 1], dims))
        self.head = conv(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        out: torch.Tensor = self.head(x)
        return out

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"widths": list(self.widths), "in_channels": self.in_channels}
        if self.dims != 2:
            out["dims"] = self.dims
        return out
