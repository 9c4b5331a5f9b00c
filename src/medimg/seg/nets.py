"""Network adapters (torch is imported here, so import this module lazily)."""

from __future__ import annotations

from typing import Any

import torch


class SliceNet(torch.nn.Module):
    """A 2D network applied to 3D patches one slice thick (the 2D configuration of a 3D dataset).

    Input ``(B, C, *S)`` with the slice axis of ``S`` (``slice_axis``, 0-2) of any length; every slice goes through
    the 2D network independently and the output keeps the same layout -- ``(B, K, *S)``, or with deep supervision in
    training ``(B, H, K, *S)`` -- so sliding-window prediction, losses and resampling treat it as a 3D network."""

    def __init__(self, net: torch.nn.Module, slice_axis: int) -> None:
        super().__init__()
        self.net = net
        self.slice_axis = int(slice_axis)

    def forward(self, x: torch.Tensor) -> Any:
        d = 2 + self.slice_axis
        n_slices = x.shape[d]
        y = self.net(x.movedim(d, 1).flatten(0, 1))  # (B * slices, C, a, b) -> (B * slices, [H,] K, a, b)
        y = y.unflatten(0, (x.shape[0], n_slices))  # (B, slices, [H,] K, a, b)
        return y.movedim(1, y.dim() - 3 + self.slice_axis)
