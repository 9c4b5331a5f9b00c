"""Synthetic interactive-segmentation tasks on real, unlabelled images, so the promptable network learns that "the
structure" is whatever the prompts point at rather than a fixed list of organs.

- :func:`superpixel_tasks`: SLIC superpixels of a real image (or the union of a superpixel and a neighbour) are
  targets — real boundaries, arbitrary regions;
- :func:`blob_tasks`: a random smooth shape (thresholded smoothed noise, or an ellipse) is painted into a real
  image with a random contrast, texture and blurred edge — the target is that shape.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medimg.interactive.train import Task


def _scaled(img: np.ndarray) -> np.ndarray:
    """``img`` scaled to [0, 1] by its 1st-99th percentiles; a colour image (x, y, channels) channel by channel."""
    if img.ndim == 3:
        return np.stack([_scaled(img[..., c]) for c in range(img.shape[-1])], -1)
    lo, hi = np.percentile(img, [1, 99])
    return np.clip((img - lo) / (hi - lo + 1e-6), 0, 1).astype(np.float32)


def superpixel_tasks(image: np.ndarray, rng: np.random.Generator, n: int = 4, family: str = "synthetic") -> list[Task]:
    """Up to ``n`` tasks whose targets are SLIC superpixels (sometimes merged with a neighbour) of ``image`` (2D,
    or (x, y, channels): superpixels in colour) that cover 0.5-25 % of it."""
    from skimage.segmentation import slic

    img = _scaled(image)
    n_seg = int(rng.integers(8, 40))
    colour = img.ndim == 3
    compact = float(rng.uniform(0.05, 0.3)) * (30 if colour else 1)  # SLIC's colour distance is in Lab units
    seg = slic(img, n_segments=n_seg, compactness=compact, channel_axis=-1 if colour else None, start_label=1)
    ids, counts = np.unique(seg, return_counts=True)
    ok = ids[(counts > 0.005 * seg.size) & (counts < 0.25 * seg.size)]
    out = []
    for i in rng.permutation(ok)[:n]:
        m = seg == i
        if rng.random() < 0.4:
            ring = ndimage.binary_dilation(m) & ~m
            nb = np.unique(seg[ring])
            if len(nb):
                m = m | (seg == nb[rng.integers(len(nb))])
        lab, k = ndimage.label(m)
        if k > 1:
            m = lab == (1 + int(np.argmax(ndimage.sum(m, lab, range(1, k + 1)))))
        if m.sum() >= 9:
            out.append(Task(img, m, family))
    return out


def random_shape(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random connected shape covering roughly 1-20 % of ``shape``: smoothed noise thresholded, or an ellipse."""
    h, w = shape
    if rng.random() < 0.5:
        sigma = rng.uniform(0.05, 0.15) * min(h, w)
        field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
        m = field > np.quantile(field, 1 - rng.uniform(0.03, 0.2))
    else:
        cx, cy = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        a, b = rng.uniform(0.05, 0.25) * h, rng.uniform(0.05, 0.25) * w
        t = rng.uniform(0, np.pi)
        xx, yy = np.mgrid[:h, :w].astype(float)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1
    lab, k = ndimage.label(m)
    if k > 1:
        m = lab == (1 + int(np.argmax(ndimage.sum(m, lab, range(1, k + 1)))))
    return np.asarray(m, bool)


def blob_tasks(image: np.ndarray, rng: np.random.Generator, n: int = 2, family: str = "synthetic") -> list[Task]:
    """``n`` tasks: a random shape painted into ``image`` with random contrast (+-0.15-0.6 of the range), texture
    and edge blur; in a colour image (x, y, channels) a random colour (each channel its own contrast, some none)."""
    img = _scaled(image)
    shape2 = img.shape[:2]
    out = []
    for _ in range(n):
        m = random_shape(shape2, rng)
        if m.sum() < 9:
            continue
        soft = ndimage.gaussian_filter(m.astype(np.float32), rng.uniform(0.3, 1.5))
        if img.ndim == 2:
            contrast = rng.uniform(0.15, 0.6) * rng.choice([-1, 1])
            texture = ndimage.gaussian_filter(rng.normal(size=shape2), rng.uniform(0.5, 2)) * rng.uniform(0, 0.1)
            mix = float(rng.uniform(0.3, 1.0))  # how much of the underlying anatomy shows through the shape
            arr = img * (1 - soft * (1 - mix)) + soft * (contrast + (1 - mix) * img.mean() + texture)
            out.append(Task(arr.astype(np.float32), m, family))
            continue
        texture = ndimage.gaussian_filter(rng.normal(size=shape2), rng.uniform(0.5, 2)) * rng.uniform(0, 0.1)
        mix = float(rng.uniform(0.3, 1.0))
        shown = int(rng.integers(img.shape[-1]))  # a colour blob shows in this channel at least
        new = []
        for c in range(img.shape[-1]):
            p = img[..., c]
            if c != shown and rng.random() < 0.3:
                new.append(p)
                continue
            contrast = rng.uniform(0.15, 0.6) * rng.choice([-1, 1])
            new.append(p * (1 - soft * (1 - mix)) + soft * (contrast + (1 - mix) * p.mean() + texture))
        arr = np.stack(new, -1)
        out.append(Task(arr.astype(np.float32), m, family))
    return out
