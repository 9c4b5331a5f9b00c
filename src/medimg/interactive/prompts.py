"""Prompts for interactive segmentation — clicks, boxes, scribbles, lassos — in voxel coordinates of the image
(``x`` = column, ``y`` = row, ``z`` = slice; medimg arrays are indexed ``[x, y(, z)]``), and their JSON form.

JSON: ``{"prompts": [{"type": "click", "point": [x, y(, z)], "positive": true},
{"type": "box", "min": [x0, y0(, z0)], "max": [x1, y1(, z1)]},
{"type": "scribble", "points": [[x, y(, z)], ...], "positive": false}]}`` — applied in order.

Documented behaviour for awkward prompts: a click outside the image raises :class:`PromptError`; a box with zero
extent along an axis of a 2D image, or inverted corners, raises; a 2D box on a 3D image (no z extent given) spans
all slices; a one-point scribble is a click; positive and negative clicks at the same voxel: the later one wins.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError


class PromptError(MedimgError):
    """A prompt cannot be applied to this image (outside it, empty, wrong dimensionality)."""


@dataclass(frozen=True)
class Click:
    point: tuple[int, ...]
    positive: bool = True


@dataclass(frozen=True)
class Box:
    lo: tuple[int, ...]
    hi: tuple[int, ...]


@dataclass(frozen=True)
class Scribble:
    points: tuple[tuple[int, ...], ...]
    positive: bool = True


Prompt = Click | Box | Scribble


@dataclass
class PromptList:
    items: list[Prompt] = field(default_factory=list)

    def to_json(self) -> str:
        out: list[dict[str, Any]] = []
        for p in self.items:
            if isinstance(p, Click):
                out.append({"type": "click", "point": list(p.point), "positive": p.positive})
            elif isinstance(p, Box):
                out.append({"type": "box", "min": list(p.lo), "max": list(p.hi)})
            else:
                out.append({"type": "scribble", "points": [list(q) for q in p.points], "positive": p.positive})
        return json.dumps({"prompts": out}, indent=2)

    @staticmethod
    def from_json(text: str) -> PromptList:
        try:
            d = json.loads(text)
            items: list[Prompt] = []
            for i, p in enumerate(d["prompts"]):
                kind = p.get("type")
                if kind == "click":
                    items.append(Click(tuple(int(v) for v in p["point"]), bool(p.get("positive", True))))
                elif kind == "box":
                    items.append(Box(tuple(int(v) for v in p["min"]), tuple(int(v) for v in p["max"])))
                elif kind == "scribble":
                    pts = tuple(tuple(int(v) for v in q) for q in p["points"])
                    items.append(Scribble(pts, bool(p.get("positive", True))))
                else:
                    raise PromptError(f"Prompt {i}: unknown type {kind!r} (click, box or scribble).")
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise PromptError(
                f"Cannot read the prompts JSON ({e}); see medimg.interactive.prompts for the format."
            ) from None
        return PromptList(items)

    @staticmethod
    def load(path: str | Path) -> PromptList:
        return PromptList.from_json(Path(path).read_text())


def parse_click(text: str, ndim: int) -> Click:
    """``"x,y[,z][,neg]"`` -> :class:`Click` (positive unless tagged ``neg``)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    positive = True
    if parts and parts[-1].lower() in ("neg", "negative", "-"):
        positive = False
        parts = parts[:-1]
    elif parts and parts[-1].lower() in ("pos", "positive", "+"):
        parts = parts[:-1]
    try:
        pt = tuple(round(float(v)) for v in parts)
    except ValueError:
        raise PromptError(f"Cannot read click {text!r}; write x,y[,z][,neg].") from None
    if len(pt) != ndim:
        raise PromptError(f"Click {text!r} has {len(pt)} coordinates; this image has {ndim} dimensions.")
    return Click(pt, positive)


def parse_box(text: str, ndim: int) -> Box:
    """``"x0,y0,x1,y1"`` (2D, or a 2D box spanning every slice of a 3D image) or ``"x0,y0,z0,x1,y1,z1"``."""
    try:
        v = [round(float(t)) for t in text.split(",")]
    except ValueError:
        raise PromptError(f"Cannot read box {text!r}; write x0,y0,x1,y1 or x0,y0,z0,x1,y1,z1.") from None
    if len(v) == 4:
        return Box((v[0], v[1]), (v[2], v[3]))
    if len(v) == 6 and ndim == 3:
        return Box((v[0], v[1], v[2]), (v[3], v[4], v[5]))
    raise PromptError(f"Box {text!r}: give 4 numbers (or 6 for a 3D box on a 3D image).")


def check_point(pt: tuple[int, ...], shape: tuple[int, ...]) -> None:
    if len(pt) != len(shape):
        raise PromptError(f"Point {pt} has {len(pt)} coordinates; the image has {len(shape)} dimensions.")
    for a, (v, s) in enumerate(zip(pt, shape, strict=True)):
        if not 0 <= v < s:
            raise PromptError(f"Point {pt} is outside the image (axis {a}: {v} not in 0..{s - 1}).")


def box_slices(box: Box, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index slices of a box (inclusive corners, clipped to the image); errors for empty or outside boxes."""
    lo, hi = list(box.lo), list(box.hi)
    if len(lo) == 2 and len(shape) == 3:
        lo, hi = [*lo, 0], [*hi, shape[2] - 1]
    if len(lo) != len(shape):
        raise PromptError(f"Box {box.lo}-{box.hi} does not match a {len(shape)}D image.")
    out = []
    for a, (l0, h0, s) in enumerate(zip(lo, hi, shape, strict=True)):
        if h0 < l0:
            raise PromptError(f"Box corners are inverted along axis {a} ({l0} > {h0}); give min then max.")
        lc, hc = max(0, l0), min(s - 1, h0)
        if hc < lc:
            raise PromptError(f"Box {box.lo}-{box.hi} lies outside the image along axis {a}.")
        out.append(slice(lc, hc + 1))
    if len(shape) == 2 and any(sl.stop - sl.start < 2 for sl in out):
        raise PromptError(f"Box {box.lo}-{box.hi} is empty (less than 2 pixels along an axis).")
    return tuple(out)


def rasterize_scribble(s: Scribble, shape: tuple[int, ...]) -> np.ndarray:
    """Voxel indices ``(n, ndim)`` along the polyline of a scribble (straight segments between its points)."""
    for p in s.points:
        check_point(p, shape)
    pts = np.asarray(s.points, dtype=np.float64)
    if len(pts) == 1:
        return pts.astype(np.int64)
    out = []
    for a, b in itertools.pairwise(pts):
        n = int(np.abs(b - a).max()) + 1
        out.append(np.round(a + (b - a) * np.linspace(0, 1, n)[:, None]).astype(np.int64))
    return np.unique(np.concatenate(out), axis=0)


def _point_items(text: str) -> tuple[list[str], bool]:
    """Split ``"x,y[,z];x,y[,z];...[;neg]"`` into its point items and whether it is positive (no ``neg`` tag)."""
    parts = [t.strip() for t in text.split(";") if t.strip()]
    if parts and parts[-1].lower() in ("neg", "negative", "-"):
        return parts[:-1], False
    return parts, True


def parse_scribble(text: str, ndim: int) -> Scribble:
    """``"x,y[,z];x,y[,z];...[;neg]"`` -> :class:`Scribble` (a polyline through the points; positive unless the
    last item is ``neg``)."""
    parts, positive = _point_items(text)
    if not parts:
        raise PromptError(f"Scribble {text!r} has no points; write x,y;x,y;... (add ;neg for background).")
    pts = tuple(parse_click(p, ndim).point for p in parts)
    return Scribble(pts, positive)


def parse_lasso(text: str, ndim: int) -> tuple[list[tuple[int, ...]], bool]:
    """``"x,y[,z];x,y[,z];...[;neg]"`` -> a lasso's outline points (at least 3, closed implicitly) and whether it is
    positive; :func:`lasso_prompts` and :func:`lasso_constraint` take them."""
    parts, positive = _point_items(text)
    if len(parts) < 3:
        raise PromptError(f"Lasso {text!r} needs at least 3 points x,y[,z];x,y[,z];... (add ;neg for background).")
    return [parse_click(p, ndim).point for p in parts], positive


def lasso_slice_axis(points: np.ndarray, shape: tuple[int, ...]) -> int | None:
    """The axis a lasso was drawn across (all its points share that coordinate): ``None`` for a 2D image; for a 3D
    image z (2) first, then y, then x when several are constant."""
    if len(shape) == 2:
        return None
    for axis in (2, 1, 0):
        if np.all(points[:, axis] == points[0, axis]):
            return axis
    raise PromptError(
        "A lasso is drawn on one slice: all its points must share one coordinate (x, y or z); "
        "draw it on a single 2D view."
    )


def self_intersection(pts: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges (indices) of the closed polygon ``pts`` ``(N, 2)`` that intersect, or
    None. Repeated consecutive points are dropped first; touching counts as crossing."""
    p = np.asarray(pts, np.float64)
    keep = np.r_[True, np.any(np.diff(p, axis=0) != 0, axis=1)]
    p = p[keep]
    if len(p) > 1 and np.all(p[0] == p[-1]):
        p = p[:-1]
    n = len(p)
    if n < 4:
        return None
    a, b = p, np.roll(p, -1, axis=0)  # edge i: a[i] -> b[i]

    def orient(p0: np.ndarray, p1: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.sign(
            (p1[..., 0] - p0[..., 0]) * (q[..., 1] - p0[..., 1]) - (p1[..., 1] - p0[..., 1]) * (q[..., 0] - p0[..., 0])
        )

    def on_segment(p0: np.ndarray, p1: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (
            (np.minimum(p0[..., 0], p1[..., 0]) <= q[..., 0])
            & (q[..., 0] <= np.maximum(p0[..., 0], p1[..., 0]))
            & (np.minimum(p0[..., 1], p1[..., 1]) <= q[..., 1])
            & (q[..., 1] <= np.maximum(p0[..., 1], p1[..., 1]))
        )

    A, B = a[:, None], b[:, None]
    C, D = a[None], b[None]
    o1, o2, o3, o4 = orient(A, B, C), orient(A, B, D), orient(C, D, A), orient(C, D, B)
    cross = (o1 * o2 < 0) & (o3 * o4 < 0)
    cross |= (o1 == 0) & on_segment(A, B, C)
    cross |= (o2 == 0) & on_segment(A, B, D)
    cross |= (o3 == 0) & on_segment(C, D, A)
    cross |= (o4 == 0) & on_segment(C, D, B)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    adjacent = (np.abs(i - j) <= 1) | (np.abs(i - j) == n - 1)
    hits = np.argwhere(cross & ~adjacent & (i < j))
    return (int(hits[0][0]), int(hits[0][1])) if len(hits) else None


def lasso_region(points: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, int | None]:
    """The voxels inside a lasso (a closed polygon through ``points``, outline included) as a boolean mask of the
    lasso's slice (the in-plane axes in index order), and the slice axis (``None`` in 2D)."""
    from skimage.draw import line, polygon

    pts = np.asarray(points, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] != len(shape):
        raise PromptError(f"A lasso's points need {len(shape)} coordinates each (this image is {len(shape)}D).")
    if len(pts) < 3:
        raise PromptError("A lasso needs at least 3 points (a closed outline).")
    for p in pts:
        check_point(tuple(int(v) for v in p), shape)
    axis = lasso_slice_axis(pts, shape)
    plane = [a for a in range(len(shape)) if a != axis]
    crossing = self_intersection(pts[:, plane])
    if crossing is not None:
        raise PromptError(
            f"The lasso crosses itself (its edges {crossing[0] + 1} and {crossing[1] + 1} intersect), so its inside is "
            "ambiguous; draw one closed outline that does not cross itself, or several lassos."
        )
    size = tuple(shape[a] for a in plane)
    region = np.zeros(size, bool)
    r, c = polygon(pts[:, plane[0]], pts[:, plane[1]], shape=size)
    region[r, c] = True
    ring = np.vstack([pts, pts[:1]])[:, plane]
    for (i0, j0), (i1, j1) in itertools.pairwise(ring):  # the outline itself
        r, c = line(int(i0), int(j0), int(i1), int(j1))
        region[r, c] = True
    return region, axis


def _runs(mask2d: np.ndarray, step: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Horizontal runs ``((i, j0), (i, j1))`` of ``mask2d`` on every ``step``-th row (and the row through the
    region's centre, so a thin region still gets one)."""
    rows = np.flatnonzero(mask2d.any(1))
    if rows.size == 0:
        return []
    chosen = set(range(int(rows[0]) + step // 2, int(rows[-1]) + 1, step)) | {int(rows[rows.size // 2])}
    out = []
    for i in sorted(chosen):
        line = np.concatenate([[False], mask2d[i], [False]]).astype(np.int8)
        d = np.diff(line)
        for j0, j1 in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1, strict=True):
            out.append(((i, int(j0)), (i, int(j1))))
    return out


def lasso_prompts(points: Any, shape: tuple[int, ...], positive: bool = True, step: int = 3) -> list[Prompt]:
    """A lasso — a closed outline drawn on one slice — as prompts the engines take.

    Positive: "the object on this slice is what the outline encloses": positive scribbles fill its interior (runs
    every ``step`` rows, kept 2 voxels inside the outline so the seeds' disks do not cross it) and a negative
    scribble follows the outline 2 voxels outside it. The learned engine carries the object to the neighbouring
    slices as for any prompt. Negative: "none of this": negative scribbles fill the interior. Pair it with
    :func:`lasso_constraint` as the interaction's ``within`` to make the outline exact on its slice.
    ``points``: voxel indices ``(x, y[, z])``; on a 3D image all share the slice's coordinate."""
    from scipy import ndimage
    from skimage.measure import find_contours

    region, axis = lasso_region(points, shape)
    plane = [a for a in range(len(shape)) if a != axis]
    fixed = int(np.asarray(points)[0][axis]) if axis is not None else None

    def voxel(i: int, j: int) -> tuple[int, ...]:
        v = [0] * len(shape)
        v[plane[0]], v[plane[1]] = i, j
        if axis is not None and fixed is not None:
            v[axis] = fixed
        return tuple(v)

    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    inner = depth >= 3
    if not inner.any():  # a thin outline: its medial voxels
        inner = depth >= depth.max()
    out: list[Prompt] = [Scribble((voxel(*a), voxel(*b)), positive) for a, b in _runs(inner, step)]
    if positive:
        grown = ndimage.binary_dilation(region, ndimage.generate_binary_structure(2, 1), iterations=2)
        for contour in find_contours(np.pad(grown, 1).astype(np.float32), 0.5):
            q = np.clip(np.round(contour).astype(int) - 1, 0, np.array(region.shape) - 1)
            q = q[np.r_[True, np.any(np.diff(q, axis=0) != 0, axis=1)]]  # no repeated points
            keep = ~region[q[:, 0], q[:, 1]]  # clipped at the image border onto the region: leave those out
            if keep.sum() >= 2:
                pts = tuple(voxel(int(i), int(j)) for i, j in q[keep])
                out.append(Scribble(pts, False))
    return out


def lasso_constraint(points: Any, shape: tuple[int, ...], positive: bool = True) -> np.ndarray:
    """Where an object may be after a lasso (``InteractiveSession.add_many(..., within=)``): on the lasso's slice,
    inside the outline (positive) or outside it (negative); everywhere else, unconstrained."""
    region, axis = lasso_region(points, shape)
    allowed = region if positive else ~region
    out = np.ones(shape, bool)
    if axis is None:
        return allowed
    index: list[Any] = [slice(None)] * len(shape)
    index[axis] = int(np.asarray(points)[0][axis])
    out[tuple(index)] = allowed
    return out
