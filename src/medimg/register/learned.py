"""Learned registration (VoxelMorph-style): a small U-Net predicts a stationary velocity field from a (fixed, moving)
pair in one forward pass; ``exp(v)`` by scaling and squaring makes it diffeomorphic, ``exp(-v)`` gives the inverse.

Training is unsupervised (local NCC + diffusion regularisation), bidirectional (the fixed image warped by the
inverse must match the moving one too) and optionally label-supervised (soft Dice of warped one-hot labels).
Pairs are formed on the fly; the moving image is first resampled onto the fixed image's grid by world coordinates
(identity transform), exactly as at inference, then both are centre-padded/cropped to the network's grid.
:func:`register_learned` can refine the network's field with instance optimisation
(:func:`medimg.register.deformable.register_deformable` started from it).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap
from medimg.register.deformable import _diffusion, _scaled, integrate_velocity, local_ncc, warp
from medimg.register.linear import check_pair
from medimg.register.transform import Transform, field_from_voxels

BUNDLED_DIR = Path(__file__).parent / "models"


class FlowUNet(nn.Module):
    """A 3-level U-Net (2D or 3D) from 2 channels (fixed, moving) to ``dims`` velocity channels (voxel units)."""

    def __init__(self, dims: int = 3, widths: Sequence[int] = (16, 32, 32, 32)) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.dims = dims
        self.widths = list(widths)

        def block(a: int, b: int, stride: int = 1) -> nn.Module:
            return nn.Sequential(conv(a, b, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))

        self.enc = nn.ModuleList([block(2, widths[0])] + [block(a, b, 2) for a, b in itertools.pairwise(widths)])
        rev = widths[::-1]
        self.dec = nn.ModuleList([block(a + b, b) for a, b in itertools.pairwise(rev)])
        self.out = conv(widths[0], dims, 3, 1, 1)
        nn.init.normal_(self.out.weight, 0, 1e-5)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)
        self.mode = "trilinear" if dims == 3 else "bilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        x = skips.pop()
        for d in self.dec:
            s = skips.pop()
            x = F.interpolate(x, size=s.shape[2:], mode=self.mode, align_corners=False)
            x = d(torch.cat([x, s], 1))
        return self.out(x)


def _fit(a: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Centre pad/crop ``a`` to ``size``; returns it and per axis (src_start, dst_start, length, original size)."""
    out = np.zeros(tuple(size), a.dtype)
    src, dst, spans = [], [], []
    for n, s in zip(a.shape, size, strict=True):
        length = min(n, s)
        a0, b0 = (n - length) // 2, (s - length) // 2
        src.append(slice(a0, a0 + length))
        dst.append(slice(b0, b0 + length))
        spans.append((a0, b0, length, n))
    out[tuple(dst)] = a[tuple(src)]
    return out, spans


def _pair(fixed: Image, moving: Image, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list]:
    mv = Transform().apply(moving, fixed, "linear")
    f, spans = _fit(_scaled(np.asarray(fixed.array, np.float32)), size)
    m, _ = _fit(_scaled(np.asarray(mv.array, np.float32)), size)
    return f, m, spans


def _flow(v: torch.Tensor) -> torch.Tensor:
    """``exp(v)`` integrated at half resolution (as VoxelMorph's ``int_downsize=2``), upsampled to full size."""
    mode = "trilinear" if v.ndim == 5 else "bilinear"
    half = [max(2, s // 2) for s in v.shape[2:]]
    scale = torch.tensor([h / s for h, s in zip(half, v.shape[2:], strict=True)]).view(1, -1, *[1] * (v.ndim - 2))
    d = integrate_velocity(F.interpolate(v, size=half, mode=mode, align_corners=True) * scale, 6)
    return F.interpolate(d, size=list(v.shape[2:]), mode=mode, align_corners=True) / scale


def _soft_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(2, a.ndim))
    inter = (a * b).sum(dims)
    return 1 - (2 * inter / (a.sum(dims) + b.sum(dims) + 1e-5))[:, 1:].mean()


def train_learned(
    images: Sequence[Image],
    out_dir: str | Path,
    time_budget_s: float = 600.0,
    labels: Sequence[LabelMap] | None = None,
    size: Sequence[int] | None = None,
    smoothness: float = 1.0,
    dice_weight: float = 1.0,
    lr: float = 1e-3,
    seed: int = 0,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train on random pairs of ``images`` (with ``labels`` for the Dice term) and write ``flow.pt`` + ``flow.json``."""
    if len(images) < 2:
        raise MedimgError("Learned registration needs at least 2 training images.")
    dims = images[0].ndim
    grid = list(size) if size else [int(np.ceil(max(im.shape[i] for im in images) / 8) * 8) for i in range(dims)]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = FlowUNet(dims)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n_lab = int(max(int(lab.array.max()) for lab in labels)) + 1 if labels else 0
    t0 = time.perf_counter()
    log: list[dict[str, Any]] = []
    losses: list[float] = []
    step = 0
    while time.perf_counter() - t0 < time_budget_s:
        i, j = rng.choice(len(images), 2, replace=False)
        f, m, _ = _pair(images[i], images[j], grid)
        ft, mt = torch.from_numpy(f)[None, None], torch.from_numpy(m)[None, None]
        v = net(torch.cat([ft, mt], 1))
        fwd, bwd = _flow(v), _flow(-v)
        loss = -local_ncc(ft, warp(mt, fwd), 7) - local_ncc(mt, warp(ft, bwd), 7) + smoothness * _diffusion(v)
        if labels and dice_weight > 0:
            fl, _ = _fit(np.asarray(labels[i].array), grid)
            ml_img = Transform().apply(labels[j], images[i], "nearest", 0)
            ml, _ = _fit(np.asarray(ml_img.array), grid)
            fo = F.one_hot(torch.from_numpy(fl.astype(np.int64)), n_lab).movedim(-1, 0)[None].float()
            mo = F.one_hot(torch.from_numpy(ml.astype(np.int64)), n_lab).movedim(-1, 0)[None].float()
            loss = loss + dice_weight * _soft_dice(warp(mo, fwd), fo)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            entry = {
                "step": step,
                "elapsed_s": round(time.perf_counter() - t0, 1),
                "loss": float(np.mean(losses[-50:])),
            }
            log.append(entry)
            if on_log:
                on_log(entry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from medimg.io._atomic import atomic_path

    info = {
        "task": "registration",
        "format": "medimg-flow-1",
        "dims": dims,
        "grid": grid,
        "widths": net.widths,
        "smoothness": smoothness,
        "dice_weight": dice_weight if labels else 0.0,
        "steps": step,
        "seconds": round(time.perf_counter() - t0, 1),
        "n_images": len(images),
        "log": log,
    }
    with atomic_path(out / "flow.pt") as tmp:
        torch.save({k: v.half() for k, v in net.state_dict().items()}, tmp)
    with atomic_path(out / "flow.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return info


class LearnedRegistration:
    """A trained flow network: a folder with flow.pt + flow.json, or a bundled name (``hippocampus_flow``)."""

    def __init__(self, path: str | Path = "hippocampus_flow", device: str | None = "cpu") -> None:
        from medimg.device import resolve_device

        self.device = resolve_device(device)
        p = Path(path)
        if not (p / "flow.json").exists() and not p.is_dir():
            from medimg.registry import find

            p = find(path, "registration")
        if not (p / "flow.json").exists() or not (p / "flow.pt").exists():
            raise MedimgError(f"{p} is not a learned-registration model folder (flow.json + flow.pt).")
        self.info = json.loads((p / "flow.json").read_text())
        self.net = FlowUNet(int(self.info["dims"]), self.info["widths"])
        state = torch.load(p / "flow.pt", map_location="cpu", weights_only=True)
        self.net.load_state_dict({k: v.float() for k, v in state.items()})
        self.net.to(self.device).eval()

    def _predict(self, fixed: Image, moving: Image) -> tuple[torch.Tensor, list]:
        """The network's velocity on its padded grid ``(1, ndim, *grid)`` and the spans to crop it back."""
        check_pair(fixed, moving)
        if fixed.ndim != int(self.info["dims"]):
            raise MedimgError(f"This model registers {self.info['dims']}D images; got {fixed.ndim}D.")
        f, m, spans = _pair(fixed, moving, self.info["grid"])
        with torch.no_grad():
            x = torch.cat([torch.from_numpy(f)[None, None], torch.from_numpy(m)[None, None]], 1).to(self.device)
            return self.net(x).cpu(), spans

    @staticmethod
    def _crop(a: torch.Tensor, spans: list, shape: Sequence[int]) -> np.ndarray:
        """``(1, c, *grid)`` on the padded grid -> ``(c, *shape)`` on the fixed grid (zero where it was cropped)."""
        out = np.zeros((a.shape[1], *shape), np.float32)
        src = tuple(slice(b0, b0 + length) for a0, b0, length, n in spans)
        dst = tuple(slice(a0, a0 + length) for a0, b0, length, n in spans)
        out[(slice(None), *dst)] = a[0].numpy()[(slice(None), *src)]
        return out

    def velocity(self, fixed: Image, moving: Image) -> np.ndarray:
        """The predicted velocity field ``(ndim, *fixed.shape)`` in voxel units on the fixed grid."""
        v, spans = self._predict(fixed, moving)
        return self._crop(v, spans, fixed.shape[: fixed.ndim])

    def __call__(self, fixed: Image, moving: Image) -> tuple[Transform, dict[str, Any]]:
        """One forward pass: the transform (displacement field on the fixed grid) and a report."""
        from medimg.metrics.registration import jacobian_metrics

        t0 = time.perf_counter()
        v, spans = self._predict(fixed, moving)
        with torch.no_grad():
            d = self._crop(_flow(v), spans, fixed.shape[: fixed.ndim])
        tr = Transform(None, field_from_voxels(d, fixed))
        return tr, {"seconds": time.perf_counter() - t0, **jacobian_metrics(tr.jacobian_determinant())}


def register_learned(
    fixed: Image,
    moving: Image,
    model: str | Path | LearnedRegistration = "hippocampus_flow",
    refine: bool = False,
    refine_levels: Sequence[int] = (2, 1),
    refine_iterations: Sequence[int] = (30, 15),
    smoothness: float = 0.5,
    device: str | None = "cpu",
) -> tuple[Transform, dict[str, Any]]:
    """Register with a trained network (one forward pass) and, with ``refine``, continue the instance optimisation
    of :func:`~medimg.register.deformable.register_deformable` from the network's velocity field (test-time
    refinement); returns one displacement-field transform. ``device``: where the network and the refinement run
    (:func:`medimg.device.resolve_device`)."""
    from medimg.metrics.registration import jacobian_metrics
    from medimg.register.deformable import register_deformable

    t0 = time.perf_counter()
    net = model if isinstance(model, LearnedRegistration) else LearnedRegistration(model, device)
    tr, rep = net(fixed, moving)
    report: dict[str, Any] = {"network_seconds": rep["seconds"], "refined": refine}
    if refine:  # continue optimising the network's velocity field: the result stays diffeomorphic
        v0 = net.velocity(fixed, moving)
        tr, _ = register_deformable(
            fixed, moving, None, "ncc", refine_levels, refine_iterations, smoothness, init_velocity=v0, device=device
        )
    report.update(seconds=time.perf_counter() - t0, **jacobian_metrics(tr.jacobian_determinant()))
    return tr, report
