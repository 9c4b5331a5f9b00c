"""Deformable registration by instance optimisation in PyTorch (2D and 3D).

A stationary velocity field ``v`` (voxel units, on the fixed grid) is optimised with Adam over a coarse-to-fine
pyramid (default factors 4-2-1, 60-40-20 iterations) to maximise local normalised cross-correlation (box window,
default 7 voxels) or minimise MSE between the fixed image and the moving image warped by ``phi = exp(v)``, with a
diffusion penalty ``lambda * mean |grad v|^2``. ``exp`` is computed by scaling and squaring (``2^-K v`` composed
with itself ``K`` times, K = 6), which gives a diffeomorphism in the continuum — in practice (almost) no folding.
The moving image is first resampled onto the fixed grid with the (optional) linear transform, so the result
composes as ``T(x) = A(x + u(x))``.

Intensities are scaled to [0, 1] by the 0.5 and 99.5 percentiles of each image. The returned displacement field
holds LPS mm vectors on the fixed grid (ITK convention).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import MedimgError
from medimg.image import Image
from medimg.register.linear import check_pair
from medimg.register.transform import Transform, field_from_voxels

MAX_VOXELS = 300_000
"""Default time guard of :func:`register_deformable`: finer pyramid levels with more voxels are skipped (a 1 mm brain
then runs its 4x level only; ``max_voxels=None`` / ``--full-resolution`` runs all levels)."""


FAST_STEPS = 8
"""Adam steps of the ``fast`` preset's single pyramid level (:func:`fast_options`)."""
FAST_MIN_GRID = 4_000
"""The ``fast`` preset estimates the field on the coarsest pyramid grid (factor 4, 2 or 1) with at least this many
voxels: a cardiac cine volume 216 x 256 x 10 runs at 4x (54 x 64 x 10), a 35 x 48 x 32 hippocampus crop at 2x
(18 x 24 x 16: 4x would be 9 x 12 x 8)."""


def fast_options(shape: Sequence[int]) -> dict[str, Any]:
    """:func:`register_deformable` options of the ``fast`` preset for a fixed image of ``shape``: one coarse level
    (see :data:`FAST_MIN_GRID`), :data:`FAST_STEPS` Adam steps at learning rate 0.5, 3 squarings. Measured by
    ``benchmarks/register_fast.py`` against ANTs SyN and FireANTs (docs/registration.md)."""
    factor = 1
    for f in (4, 2):
        if int(np.prod([s if s < 16 else max(8, round(s / f)) for s in shape])) >= FAST_MIN_GRID:
            factor = f
            break
    return {"levels": (factor,), "iterations": (FAST_STEPS,), "lr": 0.5, "squaring_steps": 3}


def levels_note(
    levels_run: Sequence[int], skipped: Sequence[dict[str, Any]], grid: Sequence[int], shape: Sequence[int]
) -> str:
    """One sentence: which pyramid levels ran, which were skipped and why, and how to get full resolution."""
    g = "x".join(map(str, grid))
    ran = f"levels run: {', '.join(map(str, levels_run))} (field estimated on a {g} grid"
    if not skipped:
        full = list(grid) == list(shape)
        return ran + (", the full image grid)." if full else f", upsampled to {'x'.join(map(str, shape))}).")
    why = "; ".join(f"{d['factor']}: {d['reason']}" for d in skipped)
    return (
        f"{ran}, upsampled to {'x'.join(map(str, shape))}); skipped {why}. For full resolution pass "
        "--full-resolution (CLI) or max_voxels=None (Python); it takes longer and needs more memory."
    )


def _scaled(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / (hi - lo + 1e-8), 0, 1).astype(np.float32)


def identity_grid(shape: Sequence[int], device: Any = None) -> torch.Tensor:
    """Voxel coordinates ``(1, ndim, *shape)`` in array-axis order (on ``device``; default the CPU)."""
    axes = [torch.arange(s, dtype=torch.float32, device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


@functools.lru_cache(maxsize=32)
def _sampling_grid(shape: tuple[int, ...], device: str) -> torch.Tensor:
    """The identity in ``grid_sample``'s normalised coordinates, ``(1, *shape, ndim)`` with the last axis first (a
    constant per grid: cached, never modified in place)."""
    base = identity_grid(shape, torch.device(device))
    nd = len(shape)
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=base.device).view(1, nd, *[1] * nd)
    return (base * scale - 1).flip(1).movedim(1, -1).contiguous()


def warp(img: torch.Tensor, disp: torch.Tensor, mode: str = "bilinear", padding: str = "border") -> torch.Tensor:
    """Sample ``img`` ``(n, c, *shape)`` at ``x + disp(x)``; ``disp`` ``(n, ndim, *shape)`` in voxels, array-axis
    order."""
    shape = tuple(int(s) for s in disp.shape[2:])
    nd = len(shape)
    if nd not in (2, 3):
        return img
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape[::-1]], dtype=disp.dtype, device=disp.device)
    # grid_sample wants (x = last axis, ..., first axis) in [-1, 1]
    grid = _sampling_grid(shape, str(disp.device)) + disp.flip(1).movedim(1, -1) * scale
    return F.grid_sample(img, grid, mode=mode, padding_mode=padding, align_corners=True)


def integrate_velocity(v: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Displacement of ``exp(v)`` by scaling and squaring."""
    d = v / (2**steps)
    for _ in range(steps):
        d = d + warp(d, d)
    return d


def local_ncc(a: torch.Tensor, b: torch.Tensor, win: int) -> torch.Tensor:
    """Mean local normalised cross-correlation (squared, as in VoxelMorph) over ``win``-voxel boxes."""
    nd = a.ndim - 2
    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    w = [min(win, s if s % 2 else s - 1) for s in a.shape[2:]]

    def m(x: torch.Tensor) -> torch.Tensor:  # separable box mean: nd passes of a 1D window
        for ax, k in enumerate(w):
            ks = [1] * nd
            ks[ax] = k
            pad = [0] * nd
            pad[ax] = k // 2
            x = pool(x, tuple(ks), stride=1, padding=tuple(pad), count_include_pad=False)
        return x

    mu_a, mu_b = m(a), m(b)
    cross = m(a * b) - mu_a * mu_b
    va = (m(a * a) - mu_a**2).clamp_min(0)
    vb = (m(b * b) - mu_b**2).clamp_min(0)
    return (cross**2 / (va * vb + 1e-5)).mean()


def _diffusion(v: torch.Tensor) -> torch.Tensor:
    nd = v.ndim - 2
    total = v.new_zeros(())
    for ax in range(nd):
        total = total + (torch.diff(v, dim=2 + ax) ** 2).mean()
    return total / nd


def _resize(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(shape), mode=mode, align_corners=True)


def register_deformable(
    fixed: Image,
    moving: Image,
    initial: Transform | None = None,
    metric: str = "ncc",
    levels: Sequence[int] = (4, 2, 1),
    iterations: Sequence[int] = (60, 40, 20),
    smoothness: float = 1.0,
    window: int = 7,
    lr: float = 0.3,
    diffeomorphic: bool = True,
    squaring_steps: int = 6,
    max_voxels: int | None = MAX_VOXELS,
    init_velocity: np.ndarray | None = None,
    device: str | None = "cpu",
) -> tuple[Transform, dict[str, Any]]:
    """Estimate a dense deformation (after ``initial``'s linear part). ``levels`` are downsampling factors of the
    pyramid (axes shorter than 16 voxels are not downsampled), ``iterations`` Adam steps per level,
    ``smoothness`` the diffusion weight. Time guard: levels whose grid has more than ``max_voxels`` voxels (after
    the first) are skipped and the field is upsampled from the finest level run; ``max_voxels=None`` runs every
    level (full resolution; CLI ``--full-resolution``). The report says which levels ran (``levels_run``), which
    were skipped and why (``levels_skipped``), the grid the field was estimated on (``field_grid``) and whether
    that is the image's own (``full_resolution``). ``init_velocity`` ``(ndim, *fixed.shape)`` (voxel units,
    array-axis order; e.g. a learned network's prediction) starts the optimisation. ``device`` (``auto``, ``cpu``,
    ``cuda[:N]``; :func:`medimg.device.resolve_device`) is where the optimisation runs. Returns the combined
    :class:`Transform` and a report."""
    if metric not in ("ncc", "mse"):
        raise MedimgError(f"Unknown deformable metric {metric!r}; use ncc or mse.")
    if len(levels) != len(iterations) or not levels:
        raise MedimgError("Give one iteration count per pyramid level (and at least one level).")
    if any(int(f) < 1 for f in levels):
        raise MedimgError(f"Pyramid levels are downsampling factors >= 1; got {list(levels)}.")
    if max_voxels is not None and max_voxels < 1:
        raise MedimgError(f"max_voxels must be positive (or None for full resolution); got {max_voxels}.")
    check_pair(fixed, moving)
    from medimg.device import resolve_device

    dev = resolve_device(device)
    t0 = time.perf_counter()
    lin = initial.linear if initial is not None else None
    moved = Transform(lin, None).apply(moving, fixed, "linear")
    f_full = torch.from_numpy(_scaled(np.asarray(fixed.array, np.float32)))[None, None].to(dev)
    m_full = torch.from_numpy(_scaled(np.asarray(moved.array, np.float32)))[None, None].to(dev)
    shape = list(f_full.shape[2:])
    nd = len(shape)
    v: torch.Tensor | None = None
    losses = []
    levels_run: list[int] = []
    skipped: list[dict[str, Any]] = []
    field_grid: list[int] = []
    threads = torch.get_num_threads()
    for factor, iters in zip(levels, iterations, strict=True):
        lshape = [s if s < 16 else max(8, round(s / factor)) for s in shape]
        n_vox = int(np.prod(lshape))
        if v is not None and max_voxels is not None and n_vox > max_voxels:
            # time guard: the field stays at the previous level's resolution and is upsampled at the end
            skipped.append(
                {
                    "factor": int(factor),
                    "grid": lshape,
                    "voxels": n_vox,
                    "reason": f"grid of {n_vox} voxels > max_voxels {max_voxels} (time guard)",
                }
            )
            continue
        field_grid = lshape
        f = _resize(f_full, lshape) if lshape != shape else f_full
        m = _resize(m_full, lshape) if lshape != shape else m_full
        if v is None and init_velocity is not None:
            v0 = torch.as_tensor(np.asarray(init_velocity, np.float32))[None].to(dev)
            if tuple(v0.shape[2:]) != tuple(shape):
                raise MedimgError(f"init_velocity must have shape ({nd}, {', '.join(map(str, shape))}).")
            scale = torch.tensor([n / o for n, o in zip(lshape, shape, strict=True)], device=dev)
            v = _resize(v0, lshape) * scale.view(1, nd, *[1] * nd) if lshape != shape else v0
        elif v is None:
            v = torch.zeros((1, nd, *lshape), device=dev)
        else:
            scale = torch.tensor([n / o for n, o in zip(lshape, v.shape[2:], strict=True)], device=dev)
            v = _resize(v, lshape) * scale.view(1, nd, *[1] * nd)
        v = v.detach().requires_grad_(True)
        levels_run.append(int(factor))
        opt = torch.optim.Adam([v], lr=lr)
        for _ in range(iters):
            d = integrate_velocity(v, squaring_steps) if diffeomorphic else v
            w = warp(m, d)
            sim = -local_ncc(f, w, window) if metric == "ncc" else ((f - w) ** 2).mean() * 10
            loss = sim + smoothness * _diffusion(v)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert v is not None
    with torch.no_grad():
        d = integrate_velocity(v, squaring_steps) if diffeomorphic else v
        if list(d.shape[2:]) != shape:
            scale = torch.tensor([n / o for n, o in zip(shape, d.shape[2:], strict=True)], device=dev)
            d = _resize(d, shape) * scale.view(1, nd, *[1] * nd)
    result = Transform(lin, field_from_voxels(d[0].cpu().numpy(), fixed))
    from medimg.metrics.registration import jacobian_metrics

    quality = jacobian_metrics(result.jacobian_determinant())
    full = field_grid == shape
    report = {
        "device": str(dev),
        "metric": metric,
        "levels": list(levels),
        "iterations": list(iterations),
        "smoothness": smoothness,
        "diffeomorphic": diffeomorphic,
        "squaring_steps": squaring_steps,
        "levels_run": levels_run,
        "levels_skipped": skipped,
        "max_voxels": max_voxels,
        "image_grid": shape,
        "field_grid": field_grid,
        "full_resolution": full,
        "levels_note": levels_note(levels_run, skipped, field_grid, shape),
        "final_loss": losses[-1] if losses else float("nan"),
        "seconds": time.perf_counter() - t0,
        "threads": threads,
        **quality,
    }
    return result, report
