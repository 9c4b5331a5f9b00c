"""Image pre-processing and filters of the radiomics pipeline: normalisation, resampling, wavelet, LoG.

Arrays are ``(z, y, x)``; spacings are given ``(x, y, z)`` in mm (SimpleITK order), as pyradiomics takes them.

- :func:`normalize`: ``scale * (x - mean) / sd`` over the whole image (sample SD, as ITK's NormalizeImageFilter).
- :func:`resample`: pyradiomics' ``resampleImage``: the grid is aligned to the input origin, covers the mask's
  bounding box plus ``pad_distance`` voxels (of the new grid), clipped to the image; the image is interpolated with
  a cubic B-spline (mirror boundary, ITK's ``sitkBSpline``), the mask by nearest neighbour (round half up); grid
  points outside the input (continuous index outside ``[-0.5, n - 0.5)``, e.g. the last one when an odd size is
  halved) get 0 in both, as ITK's resampler gives. A spacing of 0 keeps the input's; an axis the mask spans with
  one voxel is not resampled.
- :func:`wavelet`: one level of the undecimated (stationary) wavelet transform with Coiflet-1 filters and periodic
  extension (PyWavelets' ``swtn``), odd sizes wrap-padded by one voxel and cropped back, as pyradiomics does.
  Names: one letter per axis in x, y(, z) order, ``L`` low-pass, ``H`` high-pass.
- :func:`log_filter`: Laplacian of Gaussian, ``sigma`` in mm, scale-normalised (``sigma^2`` times the Laplacian).
  ITK's recursive Gaussian is approximated with SciPy's sampled Gaussian (nearest-edge extension), so LoG
  features agree with pyradiomics only approximately (pyradiomics never applies LoG to 2D images: they are 1 voxel
  thick and LoG needs at least 4 voxels per axis).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

#: Coiflet-1 decomposition filters (Daubechies' coiflets, as tabulated by PyWavelets).
COIF1_LO = np.array(
    [
        -0.015655728135791993,
        -0.07273261951252645,
        0.3848648468648578,
        0.8525720202116004,
        0.3378976624574818,
        -0.07273261951252645,
    ]
)
COIF1_HI = np.array(
    [
        0.07273261951252645,
        0.3378976624574818,
        -0.8525720202116004,
        0.3848648468648578,
        0.07273261951252645,
        -0.015655728135791993,
    ]
)


def normalize(image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``scale * (image - mean) / sd`` with the sample SD of all voxels (float64)."""
    x = image.astype(np.float64)
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return (x - x.mean()) / (sd if sd > 0 else 1.0) * scale


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower index and size of the mask's bounding box, in ``(x, y, z)`` order."""
    idx = np.argwhere(mask)
    lo = idx.min(0)[::-1]
    hi = idx.max(0)[::-1]
    return lo, hi - lo + 1


def resample(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    pad_distance: float = 5,
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Resample ``image`` (cubic B-spline) and ``mask`` (nearest) to ``new_spacing`` over the mask's padded
    bounding box (pyradiomics' grid). Returns the image, the mask and the spacing used (x, y, z)."""
    sp = np.asarray(spacing, dtype=np.float64)
    ns = np.asarray(new_spacing, dtype=np.float64)
    ns = np.where(ns == 0, sp, ns)
    lo, size = bounding_box(mask)
    ns = np.where(size != 1, ns, sp)
    shape_xyz = np.array(mask.shape[::-1])
    if np.allclose(sp, ns):
        return (*crop_to_mask(image, mask, pad_distance), tuple(sp))
    ratio = sp / ns
    nlo = np.floor((lo - 0.5) * ratio - pad_distance)
    nhi = np.ceil((lo + size - 0.5) * ratio + pad_distance)
    nhi = np.minimum(nhi, np.ceil(shape_xyz * ratio) - 1)
    nlo = np.maximum(nlo, 0)
    new_size = (nhi - nlo + 1).astype(int)
    origin_idx = 0.5 * (ns - sp) / sp + nlo / ratio
    axes = [origin_idx[a] + np.arange(new_size[a]) / ratio[a] for a in range(3)]  # x, y, z continuous indices
    coords_zyx = [axes[2], axes[1], axes[0]]
    img = image.astype(np.float64)
    resampled_axes = [a for a in range(3) if not np.allclose(coords_zyx[a], np.round(coords_zyx[a]))]
    if resampled_axes:
        # the spline is separable: filter and interpolate only along the axes whose samples fall between voxels
        out = img
        for a in range(3):
            c = coords_zyx[a]
            if a in resampled_axes:
                coeff = ndimage.spline_filter1d(out, order=3, axis=a, mode="mirror")
                out = _interp1d(coeff, c, a)
            else:
                out = np.take(out, np.round(c).astype(int), axis=a)
    else:
        out = img[np.ix_(*[np.round(c).astype(int) for c in coords_zyx])]
    # ITK samples only inside the buffer, continuous index in [-0.5, n - 0.5); elsewhere both get 0
    inside = [(c >= -0.5) & (c < n - 0.5) for c, n in zip(coords_zyx, mask.shape, strict=True)]
    valid = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    nn = [np.clip(np.floor(c + 0.5).astype(int), 0, n - 1) for c, n in zip(coords_zyx, mask.shape, strict=True)]
    m = mask[np.ix_(*nn)] & valid
    return np.where(valid, out, 0.0), m, tuple(ns)


def _interp1d(coeff: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """Evaluate a cubic B-spline (coefficients ``coeff``, mirror boundary) at continuous indices ``pos`` along
    ``axis``."""
    n = coeff.shape[axis]
    base = np.floor(pos).astype(int)
    t = pos - base
    w = np.stack(
        [
            (1 - t) ** 3 / 6,
            (3 * t**3 - 6 * t**2 + 4) / 6,
            (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
            t**3 / 6,
        ]
    )  # weights of base-1, base, base+1, base+2
    out = 0.0
    for k in range(4):
        idx = base - 1 + k
        if n == 1:
            idx = np.zeros_like(idx)
        else:
            period = 2 * n - 2
            idx = np.abs(idx) % period
            idx = np.where(idx >= n, period - idx, idx)
        shape = [1] * coeff.ndim
        shape[axis] = -1
        out = out + np.take(coeff, idx, axis=axis) * w[k].reshape(shape)
    return np.asarray(out)


def crop_to_mask(image: np.ndarray, mask: np.ndarray, pad: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crop image and mask to the mask's bounding box grown by ``pad`` voxels (clipped to the image)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - int(pad), 0)
    hi = np.minimum(idx.max(0) + int(pad) + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return image[sl], mask[sl]


def _swt_axis(x: np.ndarray, filt: np.ndarray, axis: int) -> np.ndarray:
    """One level of the stationary wavelet transform along ``axis``: ``out[o] = sum_j f[j] x[(o + F/2 - j) mod N]``."""
    out = np.zeros_like(x)
    half = len(filt) // 2
    for j, f in enumerate(filt):
        out += f * np.roll(x, j - half, axis=axis)
    return out


def wavelet(image: np.ndarray, force2d: bool) -> Iterator[tuple[str, np.ndarray]]:
    """The Coiflet-1 stationary wavelet images (``wavelet-LH`` ... and the approximation ``wavelet-LL(L)``) in
    pyradiomics' order; with ``force2d`` only the x and y axes are filtered."""
    axes = [2, 1] if force2d else [2, 1, 0]
    pad = [(0, 1 if n % 2 else 0) for n in image.shape]
    data = np.pad(image.astype(np.float64), pad, mode="wrap")
    crop = tuple(slice(0, n) for n in image.shape)
    bands: dict[str, np.ndarray] = {"": data}
    for ax in axes:
        bands = {k + c: _swt_axis(v, COIF1_LO if c == "L" else COIF1_HI, ax) for k, v in bands.items() for c in "LH"}
    approx = "L" * len(axes)
    for name in _pywt_order(len(axes)):
        if name != approx:
            yield f"wavelet-{name}", bands[name][crop]
    yield f"wavelet-{approx}", bands[approx][crop]


def _pywt_order(n: int) -> list[str]:
    """Band names in the order PyWavelets' ``swtn`` returns them (itertools.product of 'ad' per axis)."""
    import itertools

    return ["".join("L" if c == "a" else "H" for c in p) for p in itertools.product("ad", repeat=n)]


def log_filter(image: np.ndarray, spacing: Sequence[float], sigma: float) -> np.ndarray:
    """Scale-normalised Laplacian of Gaussian (``sigma`` in mm; ``spacing`` x, y, z)."""
    sig_vox = [sigma / s for s in spacing[::-1]]
    return np.asarray(ndimage.gaussian_laplace(image.astype(np.float64), sig_vox, mode="nearest")) * sigma**2


def log_sigmas_allowed(shape: Sequence[int], spacing: Sequence[float], sigmas: Sequence[float]) -> list[float]:
    """The sigmas pyradiomics applies: none if any axis has < 4 voxels, else those with size >= ceil(sigma /
    spacing) + 1 on every axis."""
    size = np.array(shape[::-1])
    if size.min() < 4:
        return []
    sp = np.asarray(spacing, dtype=np.float64)
    return [s for s in sigmas if s > 0 and np.all(size >= np.ceil(s / sp) + 1)]
