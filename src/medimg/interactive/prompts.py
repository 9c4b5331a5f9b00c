"""Prompts for interactive segmentation — clicks, boxes, scribbles — in voxel coordinates of the image
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


def parse_scribble(text: str, ndim: int) -> Scribble:
    """``"x,y[,z];x,y[,z];...[;neg]"`` -> :class:`Scribble` (a polyline through the points; positive unless the
    last item is ``neg``)."""
    parts = [t.strip() for t in text.split(";") if t.strip()]
    positive = True
    if parts and parts[-1].lower() in ("neg", "negative", "-"):
        positive, parts = False, parts[:-1]
    if not parts:
        raise PromptError(f"Scribble {text!r} has no points; write x,y;x,y;... (add ;neg for background).")
    pts = tuple(parse_click(p, ndim).point for p in parts)
    return Scribble(pts, positive)
