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

Any number of image channels (RGB, multi-sequence MR, two visits; 2D network with ``stem`` > 0): each image channel
is scaled on its own (1st-99th percentiles of the crop), channel 0 above becomes their mean, and a shared
convolution (1 -> ``stem`` features, 3 x 3) runs on every channel separately; the mean and the maximum of those
features over the channels join the input (``2 * stem`` more channels). The stem is the same for every channel and
the pooling does not depend on their order or number, so one network reads grey, RGB or 4-sequence images, and it
can still find a structure that shows in one channel only (the maximum). A stem network made from a grey one by
:func:`with_channel_stem` starts with zero weights on the stem's features: before fine-tuning it computes exactly
what the grey network computes on the channels' mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medimg.errors import MedimgError

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
        self,
        widths: tuple[int, ...] = (16, 32, 64, 96),
        in_channels: int = IN_CHANNELS,
        dims: int = 2,
        stem: int = 0,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, not {dims}")
        if stem and dims != 2:
            raise ValueError("The per-channel stem is built for the 2D network only.")
        self.widths = tuple(widths)
        self.in_channels = in_channels
        self.dims = dims
        self.stem_features = int(stem)
        conv = _conv(dims)
        up_conv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, padding=1), nn.LeakyReLU(0.01, inplace=True)) if stem else None
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        cin = in_channels + 2 * self.stem_features
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

    def forward(
        self, x: torch.Tensor, channels: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, 1, ...) for the input ``x`` (B, in_channels, ...). A stem network also reads the image
        ``channels`` (B, C, H, W), each scaled to [0, 1], with ``valid`` (B, C) bool marking the real ones when
        images with fewer channels are padded into the batch; None = channel 0 of ``x`` is the only channel."""
        if self.stem is not None:
            x = torch.cat([x, self.pooled_stem(x[:, :1] if channels is None else channels, valid)], 1)
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

    def pooled_stem(self, channels: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """The stem's features on every channel, pooled over the channels: mean then max, (B, 2 * stem, H, W)."""
        assert self.stem is not None
        b, c, h, w = channels.shape
        dtype = next(self.stem.parameters()).dtype
        u = self.stem(channels.reshape(b * c, 1, h, w).to(dtype)).reshape(b, c, -1, h, w)
        if valid is None:
            return torch.cat([u.mean(1), u.amax(1)], 1)
        keep = valid.to(u.device)[:, :, None, None, None]
        n = keep.sum(1).clamp(min=1).to(u.dtype)
        mean = (u * keep).sum(1) / n
        peak = u.masked_fill(~keep, float("-inf")).amax(1)
        return torch.cat([mean, peak], 1)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"widths": list(self.widths), "in_channels": self.in_channels}
        if self.dims != 2:
            out["dims"] = self.dims
        if self.stem_features:
            out["stem"] = self.stem_features
        return out


def with_channel_stem(net: PromptUNet, stem: int = 8) -> PromptUNet:
    """A copy of the 2D network ``net`` with a per-channel stem of ``stem`` features whose pooled output enters
    through zero weights: it computes what ``net`` computes (on the channels' mean) until it is fine-tuned."""
    if net.dims != 2 or net.stem is not None:
        raise ValueError("with_channel_stem takes a 2D network without a stem.")
    out = PromptUNet(net.widths, net.in_channels, 2, stem)
    state = net.state_dict()
    first = "enc.0.0.weight"
    w = state[first]
    grown = torch.zeros(w.shape[0], w.shape[1] + 2 * stem, *w.shape[2:], dtype=w.dtype)
    grown[:, : w.shape[1]] = w
    state = {**state, first: grown}
    missing, unexpected = out.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("stem.") for k in missing), (missing, unexpected)
    return out


def save_net(
    net: PromptUNet, folder: str | Path, kind: str, size: int, meta: dict[str, Any], half: bool = True
) -> Path:
    """Write ``<kind>.pt`` (the weights; float16 when ``half``) and ``<kind>.json`` (``kind``, the crop ``size``,
    the network's config, then ``meta``) into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save(state, folder / f"{kind}.pt")
    info = {"kind": kind, "size": size, **net.config(), **meta}
    (folder / f"{kind}.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def load_net(folder: Path, kind: str, what: str) -> tuple[PromptUNet, dict[str, Any]]:
    """The network and the metadata of a folder written by :func:`save_net` (weights loaded as float32); a folder
    without ``<kind>.json`` is refused as not being ``what``."""
    cfg_path = folder / f"{kind}.json"
    if not cfg_path.is_file():
        raise MedimgError(f"{folder} is not {what} folder (no {kind}.json).")
    meta = json.loads(cfg_path.read_text())
    dims = int(meta.get("dims", 2))
    default_in = IN_CHANNELS_3D if dims == 3 else IN_CHANNELS
    net = PromptUNet(
        tuple(meta["widths"]), int(meta.get("in_channels", default_in)), dims=dims, stem=int(meta.get("stem", 0))
    )
    state = torch.load(folder / f"{kind}.pt", map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net, meta
