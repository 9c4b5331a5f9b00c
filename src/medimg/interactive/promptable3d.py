"""The 3D promptable model: one 3D network on a crop around the prompts, instead of slice propagation.

Conventions: arrays are indexed ``[x, y, z]`` (medimg order); prompts are voxel indices into them.

One interaction: the region of interest (:class:`Roi3`) is a box around everything known about the target — the
3D box prompt, the previous mask, the positive clicks and scribbles — enlarged by ``CONTEXT`` (x 1.5) along each
axis, each side at least ``MIN_SIDE`` voxels. A lone first click has no scale: it gets a window of ``LONE_MM``
millimetres (at most ``LONE_MAX`` voxels per axis). The crop is resampled to ``size``^3 voxels (each axis on its
own, trilinear; a box therefore always fills the same part of the network's cube), the prompts are drawn on that
grid (balls of radius ``CLICK_RADIUS`` crop voxels, the box filled), the predicted probability is resampled back
and replaces the previous mask inside the crop, and the result is clipped to the box.

Zoom-out: when the result reaches a face of the crop that is not the image border (and not a box face), the
object continues beyond it: the crop is enlarged around the result (x ``CONTEXT`` again) and the network runs
once more with the first result as its previous mask — at most ``ZOOM_OUTS`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import MedimgError
from medimg.interactive import promptable
from medimg.interactive.network import IN_CHANNELS_3D, PromptUNet, load_net, save_net
from medimg.interactive.prompts import Box, Click, Prompt, Scribble, box_slices, check_point, rasterize_scribble

SIZE = 48
CONTEXT = 1.5
MIN_SIDE = 12
LONE_MM = 40.0
LONE_MAX = 48
CLICK_RADIUS = 2.0
ZOOM_OUTS = 2
BUNDLED = "promptable3d"


@dataclass(frozen=True)
class Roi3:
    """A box ``[lo, lo + side)`` per axis of a 3D array (it may reach outside the array), resampled to a cube."""

    lo: tuple[int, int, int]
    side: tuple[int, int, int]

    def to_crop(self, pts: np.ndarray, size: int) -> np.ndarray:
        """Voxel indices (n, 3) -> crop coordinates (voxel centres, continuous)."""
        lo, side = np.asarray(self.lo, float), np.asarray(self.side, float)
        return (np.asarray(pts, float).reshape(-1, 3) - lo + 0.5) * (size / side) - 0.5

    def inside(self, shape: tuple[int, ...]) -> tuple[slice, ...]:
        """The part of the image the crop covers."""
        return tuple(slice(max(0, a), min(int(n), a + s)) for a, s, n in zip(self.lo, self.side, shape, strict=True))


def roi_around(
    lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...], context: float = CONTEXT, min_side: int = MIN_SIDE
) -> Roi3:
    """The crop around the inclusive box ``lo..hi`` enlarged by ``context`` along each axis (at least
    ``min_side`` voxels, at most the image's extent along that axis)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    ext = hi - lo + 1
    starts, sides = [], []
    for a in range(3):
        side = int(np.ceil(max(ext[a] * context, min_side)))
        side = min(side, max(int(shape[a]), int(np.ceil(ext[a]))))
        start = int(np.round((lo[a] + hi[a]) / 2 - (side - 1) / 2))
        if side <= shape[a]:
            start = int(np.clip(start, 0, shape[a] - side))
        starts.append(start)
        sides.append(max(1, side))
    return Roi3((starts[0], starts[1], starts[2]), (sides[0], sides[1], sides[2]))


def crop(arr: np.ndarray, roi: Roi3, size: int, fill: float = 0.0) -> torch.Tensor:
    """``size``^3 float tensor of ``arr`` over ``roi`` (trilinear; average-pooled first where the crop is more
    than twice the cube; outside the image = ``fill``)."""
    out = np.full(roi.side, fill, np.float32)
    src = roi.inside(arr.shape)
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, roi.lo, strict=True))
    if all(s.stop > s.start for s in src):
        out[dst] = arr[src]
    t = torch.from_numpy(out)[None, None]
    k = tuple(max(1, s // (2 * size)) for s in roi.side)
    if max(k) > 1:
        t = F.avg_pool3d(t, k, ceil_mode=True)
    if tuple(t.shape[2:]) != (size, size, size):
        t = F.interpolate(t, size=(size, size, size), mode="trilinear", align_corners=False)
    return t[0, 0]


def paste(prob: torch.Tensor, roi: Roi3, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Resample a crop's probability back to image voxels; returns the values and the image slices they cover."""
    t = prob[None, None].float()
    if tuple(t.shape[2:]) != tuple(roi.side):
        t = F.interpolate(t, size=tuple(roi.side), mode="trilinear", align_corners=False)
    full = t[0, 0].numpy()
    src = roi.inside(shape)
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, roi.lo, strict=True))
    return full[dst], src


def normalise(img: torch.Tensor) -> torch.Tensor:
    """Scale a crop to [0, 1] by its 1st and 99th percentiles (on ~8192 of its values)."""
    return promptable.normalise(img, max_samples=8192)


def draw_balls(vol: torch.Tensor, pts: np.ndarray, radius: float = CLICK_RADIUS) -> None:
    """Set balls of ``radius`` (crop voxels) around ``pts`` (n, 3 crop coordinates) to 1 in ``vol`` (in place)."""
    size = vol.shape[-1]
    r = int(np.ceil(radius))
    for p in np.asarray(pts, float).reshape(-1, 3):
        c = np.round(p).astype(int)
        lo, hi = np.maximum(0, c - r), np.minimum(size, c + r + 1)
        if np.any(hi <= lo):
            continue
        g = [torch.arange(a, b, dtype=torch.float32) - q for a, b, q in zip(lo, hi, p, strict=True)]
        d2 = g[0][:, None, None] ** 2 + g[1][None, :, None] ** 2 + g[2][None, None, :] ** 2
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][d2 <= radius**2] = 1.0


@dataclass
class Prompts3:
    """Prompts in voxel indices: positive / negative points (clicks and scribble voxels, (n, 3)), a box (inclusive
    corners) or None."""

    pos: np.ndarray
    neg: np.ndarray
    box: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def from_prompts(prompts: list[Prompt], shape: tuple[int, ...]) -> Prompts3:
        pos: list[np.ndarray] = []
        neg: list[np.ndarray] = []
        box = None
        for p in prompts:
            if isinstance(p, Click):
                check_point(p.point, shape)
                (pos if p.positive else neg).append(np.asarray(p.point, float)[None])
            elif isinstance(p, Scribble):
                pts = rasterize_scribble(p, shape).astype(float)
                (pos if p.positive else neg).append(pts[:: max(1, len(pts) // 24)])  # a ball every few voxels
            elif isinstance(p, Box):
                sl = box_slices(p, shape)
                box = (np.array([s.start for s in sl], float), np.array([s.stop - 1 for s in sl], float))
        z = np.zeros((0, 3))
        return Prompts3(np.concatenate(pos) if pos else z, np.concatenate(neg) if neg else z, box)


def encode(image: torch.Tensor, prompts: Prompts3, prev: torch.Tensor | None, roi: Roi3, size: int) -> torch.Tensor:
    """The network input (IN_CHANNELS_3D, size, size, size): normalised image crop, positive points, negative
    points, the box, the previous mask crop."""
    x = torch.zeros(IN_CHANNELS_3D, size, size, size)
    x[0] = image
    draw_balls(x[1], roi.to_crop(prompts.pos, size))
    draw_balls(x[2], roi.to_crop(prompts.neg, size))
    if prompts.box is not None:
        b = roi.to_crop(np.stack(prompts.box), size)
        lo = np.clip(np.floor(b.min(0)), 0, size - 1).astype(int)
        hi = np.clip(np.ceil(b.max(0)), 0, size - 1).astype(int)
        x[3, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 1.0
    if prev is not None:
        x[4] = prev
    return x


def choose_roi(
    shape: tuple[int, ...], prompts: Prompts3, prev: np.ndarray | None, spacing: tuple[float, ...]
) -> Roi3 | None:
    """Inference crop: around the box, the previous mask and the positive points (x ``CONTEXT``); a lone click:
    a ``LONE_MM`` window. None when there is nothing positive to segment (only negative clicks, no mask)."""
    boxes = []
    if prompts.box is not None:
        boxes.append(prompts.box)
    if prev is not None and prev.any():
        idx = np.argwhere(prev)
        boxes.append((idx.min(0).astype(float), idx.max(0).astype(float)))
    if len(prompts.pos):
        boxes.append((prompts.pos.min(0), prompts.pos.max(0)))
    if not boxes:
        return None
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    if prompts.box is None and (prev is None or not prev.any()):  # clicks / scribbles only: no scale yet
        sp = np.asarray(spacing, float)
        win = np.clip(np.round(LONE_MM / sp), MIN_SIDE, LONE_MAX)
        c = (lo + hi) / 2
        lo, hi = np.minimum(lo, c - (win - 1) / 2), np.maximum(hi, c + (win - 1) / 2)
        return roi_around(lo, hi, shape, context=1.0)
    return roi_around(lo, hi, shape)


def _touches_open_face(mask: np.ndarray, roi: Roi3, shape: tuple[int, ...], box: Any) -> bool:
    """Whether ``mask`` (image grid) reaches a face of ``roi`` that is inside the image and not a box face."""
    sl = roi.inside(shape)
    sub = mask[sl]
    if not sub.any():
        return False
    for a in range(3):
        for end in (0, -1):
            face_at = sl[a].start if end == 0 else sl[a].stop - 1
            if face_at in (0, shape[a] - 1):
                continue  # the image border
            if box is not None and face_at == int(box[0 if end == 0 else 1][a]):
                continue
            if np.take(sub, end, axis=a).any():
                return True
    return False


def bundled_path() -> Path:
    return Path(str(resources.files("medimg.interactive") / "models" / BUNDLED))


class Promptable3DModel:
    """A trained 3D promptable network with its cube size; :meth:`segment` runs one interaction."""

    def __init__(self, net: PromptUNet, size: int = SIZE, meta: dict[str, Any] | None = None) -> None:
        if getattr(net, "dims", 2) != 3:
            raise MedimgError("Promptable3DModel needs a 3D PromptUNet (dims=3).")
        self.net = net.eval()
        self.size = int(size)
        self.meta = meta or {}
        self.tta = True  # average with the prediction on the crop mirrored along x
        self.last_crops: list[Roi3] = []  # the crops the last interaction used (zoom-outs included)

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None, half: bool = True) -> Path:
        return save_net(self.net, folder, "promptable3d", self.size, {**self.meta, **(extra or {})}, half)

    @staticmethod
    def available(folder: str | Path | None = None) -> bool:
        return ((Path(folder) if folder is not None else bundled_path()) / "promptable3d.json").is_file()

    @staticmethod
    def load(folder: str | Path | None = None) -> Promptable3DModel:
        """Load a model folder (``promptable3d.json`` + ``promptable3d.pt``); None = the bundled model."""
        folder = Path(folder) if folder is not None else bundled_path()
        net, meta = load_net(folder, "promptable3d", "a 3D promptable model")
        return Promptable3DModel(net, int(meta["size"]), meta)

    @torch.no_grad()
    def predict(self, volume: np.ndarray, prompts: Prompts3, prev: np.ndarray | None, roi: Roi3) -> np.ndarray:
        """The network's result on ``roi`` pasted into ``prev`` (boolean, image grid)."""
        fill = float(np.min(volume[roi.inside(volume.shape)])) if volume.size else 0.0
        img = normalise(crop(volume, roi, self.size, fill=fill))
        prev_t = crop(prev.astype(np.float32), roi, self.size) if prev is not None else None
        x = encode(img, prompts, prev_t, roi, self.size)[None]
        logits = self.net(x)
        if self.tta:
            logits = (logits + self.net(x.flip(2)).flip(2)) / 2
        vals, sl = paste(torch.sigmoid(logits[0, 0]), roi, volume.shape)
        out = np.zeros(volume.shape, bool) if prev is None else prev.astype(bool).copy()
        out[sl] = vals > 0.5
        return out

    def segment(
        self,
        volume: np.ndarray,
        prompts: list[Prompt] | Prompts3,
        prev: np.ndarray | None = None,
        spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    ) -> np.ndarray:
        """Boolean mask of the prompted structure in ``volume`` (3D) from all the session's ``prompts`` and the
        previous mask ``prev`` (same shape, or None); ``spacing`` in mm (sizes the lone-click window)."""
        if volume.ndim != 3:
            raise MedimgError(f"The 3D promptable model needs a 3D volume, not {volume.ndim}D.")
        shape = tuple(int(n) for n in volume.shape)
        p3 = prompts if isinstance(prompts, Prompts3) else Prompts3.from_prompts(prompts, shape)
        roi = choose_roi(shape, p3, prev, spacing)
        self.last_crops = []
        if roi is None:
            return np.zeros(shape, bool)
        out = self.predict(volume, p3, prev, roi)
        self.last_crops.append(roi)
        for _ in range(ZOOM_OUTS):
            if not _touches_open_face(out, roi, shape, p3.box):
                break
            idx = np.argwhere(out)
            bigger = roi_around(idx.min(0), idx.max(0), shape)
            if bigger == roi:
                break
            roi = bigger
            out = self.predict(volume, p3, out, roi)
            self.last_crops.append(roi)
        if p3.box is not None:
            lo, hi = p3.box[0].astype(int), p3.box[1].astype(int)
            keep = np.zeros(shape, bool)
            keep[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
            out &= keep
        return out
