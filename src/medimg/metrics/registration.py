"""Registration quality metrics: Jacobian determinant, folding, SDlogJ, target registration error.

A displacement field is an :class:`~medimg.Image` (or array) with one channel per spatial axis holding the
displacement in **mm along the image's index axes** (x, y[, z]), sampled on the fixed image's grid.
The transform maps a point p to p + u(p); its Jacobian is J = det(I + grad u) with gradients in mm/mm
(central differences, one-sided at the borders).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medimg.errors import DimensionError, MedimgError
from medimg.image import Image


def jacobian_determinant(field: Image | npt.ArrayLike, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Jacobian determinant map of a displacement field ``(x, y[, z], ndim)`` in mm (see module docstring)."""
    if isinstance(field, Image):
        u = np.asarray(field.array, dtype=np.float64)
        sp = tuple(field.spacing) if spacing is None else tuple(spacing)
    else:
        u = np.asarray(field, dtype=np.float64)
        sp = tuple(spacing) if spacing is not None else (1.0,) * (u.ndim - 1)
    n = u.ndim - 1
    if n not in (2, 3) or u.shape[-1] != n or len(sp) != n:
        raise DimensionError(f"A {n}D displacement field needs shape (..., {n}) and {n} spacings; got {u.shape}.")
    if min(u.shape[:-1]) < 2:
        raise DimensionError(f"Displacement field {u.shape[:-1]} is too small to differentiate.")
    # J[i][j] = d u_i / d x_j + delta_ij; the determinant in closed form (cofactor expansion), which is several times
    # faster than a batched LU (np.linalg.det) and equal to it to rounding
    jac = []
    for i in range(n):
        grads = list(np.gradient(u[..., i], *sp))
        grads[i] = grads[i] + 1.0
        jac.append(grads)
    if n == 2:
        return np.asarray(jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0])
    (a, b, c), (d, e, f), (g, h, k) = jac
    return np.asarray(a * (e * k - f * h) - b * (d * k - f * g) + c * (d * h - e * g))


def registration_metrics(
    field: Image | npt.ArrayLike, spacing: Sequence[float] | None = None, mask: npt.ArrayLike | None = None
) -> dict[str, float]:
    """% folding (J <= 0), SDlogJ (std of log J with J clipped to [1e-9, 1e9], the Learn2Reg convention),
    and min/max/mean J, optionally inside ``mask``."""
    return jacobian_metrics(jacobian_determinant(field, spacing), mask)


def jacobian_metrics(det: npt.ArrayLike, mask: npt.ArrayLike | None = None) -> dict[str, float]:
    """:func:`registration_metrics` from a Jacobian determinant map already computed."""
    j = np.asarray(det, dtype=np.float64)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != j.shape:
            raise DimensionError(f"Mask shape {m.shape} differs from field shape {j.shape}.")
        j = j[m]
    if j.size == 0:
        raise MedimgError("The mask selects no voxel.")
    return {
        "folding_percent": float(100.0 * np.mean(j <= 0)),
        "sdlogj": float(np.std(np.log(np.clip(j, 1e-9, 1e9)))),
        "jacobian_min": float(j.min()),
        "jacobian_max": float(j.max()),
        "jacobian_mean": float(j.mean()),
    }


def target_registration_error(fixed_points_mm: npt.ArrayLike, warped_points_mm: npt.ArrayLike) -> dict[str, Any]:
    """Euclidean distances (mm) between corresponding landmarks: mean, std, median, max and the list."""
    a = np.asarray(fixed_points_mm, dtype=np.float64)
    b = np.asarray(warped_points_mm, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] not in (2, 3):
        raise DimensionError(f"Landmarks must be two (n, 2|3) arrays of the same shape; got {a.shape}, {b.shape}.")
    d = np.linalg.norm(a - b, axis=1)
    return {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "median": float(np.median(d)),
        "max": float(d.max()),
        "distances": d.tolist(),
    }
