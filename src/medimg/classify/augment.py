"""Batch preprocessing and augmentation in PyTorch, for 2D ``(n, c, h, w)`` and 3D ``(n, c, d, h, w)`` tensors.

Intensities are normalised per image and channel (z-score over the spatial axes), so a model does not depend on a
scanner's absolute grey levels; geometric augmentation is one random affine per image (rotation, isotropic scale,
translation, optional flips), applied with bilinear/trilinear resampling and zero padding in normalised space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image, per-channel z-score over the spatial axes."""
    dims = tuple(range(2, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (std + eps)


def resize(x: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """Linear resize to ``size`` (spatial, numpy order); unchanged when ``size`` is None or already equal."""
    if size is None or tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(int(s) for s in size), mode=mode, align_corners=False)


def _rotation(dims: int, angles: np.ndarray) -> np.ndarray:
    if dims == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    return rot


def random_affine(
    x: torch.Tensor,
    rng: np.random.Generator,
    rotate_deg: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    translate: float = 0.08,
    flip_axes: Sequence[int] = (),
    crop_scale: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One random affine per image. ``translate`` is a fraction of the field of view; ``flip_axes`` are spatial
    axes (0-based, numpy order) flipped with probability 1/2; ``crop_scale`` (area fraction range) zooms into a
    random crop, as in SimCLR's random resized crop."""
    n, dims = x.shape[0], x.ndim - 2
    thetas = np.zeros((n, dims, dims + 1))
    for i in range(n):
        a = _rotation(dims, rng.uniform(-1, 1, size=1 if dims == 2 else 3) * math.radians(rotate_deg))
        s = rng.uniform(*scale)
        if crop_scale is not None:
            s *= math.sqrt(rng.uniform(*crop_scale))
        m = a * s
        for ax in flip_axes:
            if rng.random() < 0.5:
                m[:, dims - 1 - ax] *= -1  # affine_grid's coordinates are (x, y[, z]) = reversed numpy axes
        thetas[i, :, :dims] = m
        shift = translate if crop_scale is None else max(translate, 1 - s)
        thetas[i, :, dims] = rng.uniform(-shift, shift, size=dims)
    theta = torch.as_tensor(thetas, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_intensity(
    x: torch.Tensor,
    rng: np.random.Generator,
    gamma: float = 0.3,
    noise: float = 0.05,
    p_blur: float = 0.0,
    bias: float = 0.0,
) -> torch.Tensor:
    """Gamma (on min-max scaled intensities, exponent in ``exp(+-gamma)``), a smooth multiplicative bias field
    ``exp(a * p)`` (``p`` a random linear + quadratic polynomial scaled to [-1, 1], ``|a| <= bias``), Gaussian noise
    (up to ``noise`` times the image's standard deviation) and an occasional Gaussian blur (sigma 0.5-1.5 px)."""
    n = x.shape[0]
    dims = tuple(range(2, x.ndim))
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    u = (x - lo) / (hi - lo + 1e-6)
    g = torch.as_tensor(np.exp(rng.uniform(-gamma, gamma, size=n)), dtype=x.dtype).view(-1, *[1] * (x.ndim - 1))
    u = u.clamp_min(0) ** g
    if bias > 0:
        nd = x.ndim - 2
        grids = torch.meshgrid(*[torch.linspace(-1, 1, s, dtype=x.dtype) for s in x.shape[2:]], indexing="ij")
        c = torch.as_tensor(rng.uniform(-1, 1, size=(n, nd, 2)), dtype=x.dtype)
        shape = (n, *[1] * nd)
        p = torch.zeros((n, *x.shape[2:]), dtype=x.dtype)
        for d in range(nd):
            p = p + c[:, d, 0].view(shape) * grids[d] + c[:, d, 1].view(shape) * (grids[d] ** 2 - 0.5)
        p = p / (p.flatten(1).abs().amax(1).view(shape) + 1e-6)
        a = torch.as_tensor(rng.uniform(-bias, bias, size=n), dtype=x.dtype).view(shape)
        u = u * torch.exp(a * p)[:, None]
    if p_blur > 0:
        for i in np.nonzero(rng.random(n) < p_blur)[0]:
            u[i : i + 1] = gaussian_blur(u[i : i + 1], float(rng.uniform(0.5, 1.5)))
    std = u.std(dim=dims, keepdim=True)
    sig = torch.as_tensor(rng.uniform(0, noise, size=n), dtype=x.dtype).view(-1, *[1] * (x.ndim - 1))
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return u + torch.randn(u.shape, generator=gen, dtype=x.dtype) * sig * std


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sigma in pixels/voxels, reflect padding)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = x
    dims = x.ndim - 2
    for ax in range(dims):
        shape = [1] * dims
        shape[ax] = 2 * r + 1
        w = k.view(1, 1, *shape).repeat(c, 1, *[1] * dims)
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - ax)] = pad[2 * (dims - 1 - ax) + 1] = r
        padded = F.pad(out, pad, mode="reflect") if min(out.shape[2:]) > r else F.pad(out, pad, mode="replicate")
        out = (F.conv2d if dims == 2 else F.conv3d)(padded, w, groups=c)
    return out


def augment(x: torch.Tensor, rng: np.random.Generator, cfg: dict[str, Any]) -> torch.Tensor:
    """Training augmentation (config keys: ``rotate_deg``, ``scale``, ``translate``, ``flip_axes``, ``gamma``,
    ``noise``, ``p_blur``, ``bias``), then per-image normalisation."""
    x = random_affine(
        x,
        rng,
        rotate_deg=cfg.get("rotate_deg", 10.0),
        scale=(float(cfg.get("scale", (0.9, 1.1))[0]), float(cfg.get("scale", (0.9, 1.1))[1])),
        translate=cfg.get("translate", 0.08),
        flip_axes=cfg.get("flip_axes", ()),
    )
    x = random_intensity(
        x,
        rng,
        gamma=cfg.get("gamma", 0.3),
        noise=cfg.get("noise", 0.05),
        p_blur=cfg.get("p_blur", 0.0),
        bias=cfg.get("bias", 0.0),
    )
    return normalize(x)


def strong_views(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A SimCLR-style view: random resized crop (20-100 % area), rotation, flips, strong gamma, blur, noise and a
    random erased box, then normalisation."""
    dims = x.ndim - 2
    v = random_affine(
        x, rng, rotate_deg=20, scale=(0.9, 1.1), translate=0.1, flip_axes=tuple(range(dims)), crop_scale=(0.2, 1.0)
    )
    v = random_intensity(v, rng, gamma=0.6, noise=0.1, p_blur=0.5)
    sz = v.shape[2:]
    for i in range(v.shape[0]):
        if rng.random() < 0.5:
            ext = [int(s * rng.uniform(0.1, 0.35)) for s in sz]
            st = [int(rng.integers(0, s - e + 1)) for s, e in zip(sz, ext, strict=True)]
            box: tuple[slice, ...] = (slice(None), *[slice(a, a + e) for a, e in zip(st, ext, strict=True)])
            v[i][box] = v[i].mean()
    return normalize(v)
