"""Quick-look overlay figures: one slice of an image with a label map blended on top, at a readable size.

A figure is drawn at least :data:`MIN_PANEL_PX` pixels on its shorter side whatever the voxel grid (a 35 x 51
hippocampus slice becomes ~512 x 746 px): the grey image is upsampled smoothly, labels with nearest neighbour
(class ids are never blended between voxels), with the physical aspect ratio kept. A title line names the
slice and the display convention, the edges carry orientation letters and a legend lists each class shown
with its colour. The helpers here (:func:`compose_figure`, :func:`draw_text`) also lay out the classifier
explanation panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap, check_same_geometry
from medimg.report_colors import label_color
from medimg.transforms.intensity import to_uint8
from medimg.transforms.spatial import reorient

#: Shorter side of an image panel in pixels (small grids are upsampled to at least this).
MIN_PANEL_PX = 512
#: Longer side limit of an image panel (large grids are not upsampled beyond it).
MAX_PANEL_PX = 2048
#: At most this many classes are listed in a legend (the rest are counted).
MAX_LEGEND_ROWS = 40
_BG = (255, 255, 255)
_FG = (20, 20, 20)


def font(size: int = 16) -> Any:
    """Pillow's bundled scalable font at ``size`` px (a bitmap font when FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType support
        return ImageFont.load_default()


def draw_text(canvas: Any, xy: tuple[int, int], text: str, size: int = 16, fill: Sequence[int] = _FG) -> int:
    """Draw ``text`` on a Pillow image at ``xy``; returns the text height in pixels."""
    from PIL import ImageDraw

    f = font(size)
    draw = ImageDraw.Draw(canvas)
    draw.text(xy, text, font=f, fill=tuple(fill))
    box = draw.textbbox(xy, text, font=f)
    return int(box[3] - xy[1])


def _text_width(text: str, size: int) -> int:
    from PIL import Image as PILImage
    from PIL import ImageDraw

    box = ImageDraw.Draw(PILImage.new("RGB", (1, 1))).textbbox((0, 0), text, font=font(size))
    return int(box[2] - box[0])


def compose_figure(
    panels: Sequence[tuple[np.ndarray, str]],
    title: str = "",
    legend: Sequence[tuple[Sequence[int], str]] = (),
    colorbar: tuple[np.ndarray, str, str, str] | None = None,
    edge_letters: tuple[str, str, str, str] | None = None,
) -> np.ndarray:
    """Lay out RGB ``panels`` (``(rows, cols, 3)`` uint8, each with a caption) side by side under a ``title``,
    with an optional ``legend`` (colour, text rows), ``colorbar`` (``(256, 3)`` uint8 ramp, low label, high
    label, caption) and orientation ``edge_letters`` (left, right, top, bottom) around the first panel.
    Returns the figure as a ``(rows, cols, 3)`` uint8 array."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    pad, gap, title_size, cap_size, small = 12, 16, 20, 16, 14
    title_h = (title_size + 10) if title else 0
    cap_h = cap_size + 8 if any(c for _, c in panels) else 0
    letter_w = small + 6 if edge_letters else 0
    ph = max(p.shape[0] for p, _ in panels)
    widths = [p.shape[1] for p, _ in panels]
    body_w = sum(widths) + gap * (len(panels) - 1) + 2 * letter_w
    side_w = 0
    rows = list(legend[:MAX_LEGEND_ROWS])
    if len(legend) > MAX_LEGEND_ROWS:
        rows.append(((255, 255, 255), f"... and {len(legend) - MAX_LEGEND_ROWS} more"))
    if rows:
        side_w = gap + 22 + max(_text_width(t, small) for _, t in rows) + 4
    if colorbar is not None:
        side_w = max(side_w, gap + 24 + max(_text_width(t, small) for t in colorbar[1:3]) + 8)
    legend_h = len(rows) * (small + 8) + 4
    body_h = max(ph + 2 * letter_w, legend_h)
    width = pad * 2 + body_w + side_w
    width = max(width, pad * 2 + _text_width(title, title_size)) if title else width
    height = pad * 2 + title_h + cap_h + body_h
    canvas = PILImage.new("RGB", (width, height), _BG)
    if title:
        draw_text(canvas, (pad, pad), title, title_size)
    y0 = pad + title_h
    x = pad + letter_w
    for i, (p, cap) in enumerate(panels):
        if cap:
            draw_text(canvas, (x, y0), cap, cap_size)
        canvas.paste(PILImage.fromarray(np.ascontiguousarray(p)), (x, y0 + cap_h + letter_w))
        if i == 0 and edge_letters:
            left, right, top, bottom = edge_letters
            yc = y0 + cap_h + letter_w + p.shape[0] // 2 - small // 2
            xc = x + p.shape[1] // 2 - small // 3
            draw_text(canvas, (x - letter_w + 2, yc), left, small)
            draw_text(canvas, (x + p.shape[1] + 3, yc), right, small)
            draw_text(canvas, (xc, y0 + cap_h), top, small)
            draw_text(canvas, (xc, y0 + cap_h + letter_w + p.shape[0] + 2), bottom, small)
        x += p.shape[1] + gap + (letter_w if i == 0 else 0)
    sx = pad + body_w + gap
    y = y0 + cap_h + letter_w
    draw = ImageDraw.Draw(canvas)
    for rgb, text in rows:
        draw.rectangle([sx, y + 1, sx + 16, y + small + 1], fill=tuple(int(c) for c in rgb), outline=_FG)
        draw_text(canvas, (sx + 22, y), text, small)
        y += small + 8
    if colorbar is not None:
        ramp, lo, hi, cap = colorbar
        bar_h = max(64, ph - (y - (y0 + cap_h + letter_w)) - 2 * small - 20)
        top_y = y + (small + 8 if rows else 0)
        if cap:
            draw_text(canvas, (sx, top_y - small - 4), cap, small)
        column = np.asarray(
            PILImage.fromarray(ramp[::-1][:, None, :].repeat(16, axis=1)).resize(
                (16, bar_h), PILImage.Resampling.BILINEAR
            )
        )
        canvas.paste(PILImage.fromarray(column), (sx, top_y))
        draw.rectangle([sx, top_y, sx + 16, top_y + bar_h], outline=_FG)
        draw_text(canvas, (sx + 22, top_y - 2), hi, small)
        draw_text(canvas, (sx + 22, top_y + bar_h - small), lo, small)
    return np.asarray(canvas)


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize a (rows, cols[, 3]) uint8 array to ``size`` = (cols, rows)."""
    from PIL import Image as PILImage

    if (a.shape[1], a.shape[0]) == size:
        return a
    method = PILImage.Resampling.NEAREST if nearest else PILImage.Resampling.BILINEAR
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(a)).resize(size, method))


def _labels_resize(lab: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (rows, cols) integer label slice of any value range."""
    rows = (np.arange(size[1]) * lab.shape[0] // size[1]).clip(0, lab.shape[0] - 1)
    cols = (np.arange(size[0]) * lab.shape[1] // size[0]).clip(0, lab.shape[1] - 1)
    return lab[np.ix_(rows, cols)]


def panel_size(shape_xy: Sequence[int], spacing_xy: Sequence[float]) -> tuple[int, int]:
    """Display size (cols, rows) for a slice of ``shape_xy`` voxels: physical aspect kept, the shorter side at
    least :data:`MIN_PANEL_PX` and the longer at most :data:`MAX_PANEL_PX` (never below the voxel grid)."""
    ex, ey = shape_xy[0] * spacing_xy[0], shape_xy[1] * spacing_xy[1]
    f = max(MIN_PANEL_PX / min(ex, ey), max(shape_xy[0] / ex, shape_xy[1] / ey))
    f = min(f, MAX_PANEL_PX / max(ex, ey)) if max(ex, ey) * f > MAX_PANEL_PX else f
    return max(1, round(ex * f)), max(1, round(ey * f))


def overlay_slice(image: Image, labels: LabelMap | None = None, z: int | None = None, alpha: float = 0.45) -> Image:
    """An RGB 2D :class:`Image` figure of an axial slice in radiological display (patient right on the left).

    The volume is reoriented to LPS so that columns run right->left and rows anterior->posterior. ``z`` is
    the slice index after reorientation; by default the slice with the most labelled voxels (or the middle).
    2D images are used as they are (RGB pictures in colour). The figure is at least :data:`MIN_PANEL_PX`
    pixels on its shorter side (labels upsampled with nearest neighbour, outlined), with a title, orientation
    letters and a legend of the classes shown. Its pixels are not voxels: the returned image has no spacing
    (``meta["mm_per_pixel"]`` gives the panel's scale).
    """
    if labels is not None:
        check_same_geometry(image, labels, what="image and label map")
    colour_picture = image.ndim == 2 and image.is_multichannel and image.n_channels in (3, 4)
    scalar = image if not image.is_multichannel else image.channel(0)
    title_bits = []
    if image.ndim == 3:
        scalar = reorient(scalar, "LPS")
        labels = reorient(labels, "LPS") if labels is not None else None  # type: ignore[assignment]
        if z is None:
            if labels is not None and labels.array.any():
                z = int(np.argmax((labels.array > 0).sum(axis=(0, 1))))
            else:
                z = scalar.shape[2] // 2
        if not 0 <= z < scalar.shape[2]:
            raise MedimgError(f"Slice {z} is outside the volume (0..{scalar.shape[2] - 1}).")
        grey = to_uint8(Image(scalar.array[:, :, z], scalar.spacing[:2]), 0.5, 99.5).array
        lab = labels.array[:, :, z] if labels is not None else None
        title_bits.append(f"axial slice {z + 1} of {scalar.shape[2]}")
        letters = ("R", "L", "A", "P")
    else:
        grey = to_uint8(scalar, 0.5, 99.5).array
        lab = labels.array if labels is not None else None
        title_bits.append("2D image")
        letters = ("", "", "", "")
    spacing = scalar.spacing[:2]
    size = panel_size(grey.shape, spacing)
    if colour_picture:
        rgb_small = image.array[..., :3]
        rgb_small = rgb_small if rgb_small.dtype == np.uint8 else to_uint8(image.with_array(rgb_small)).array
        base = _resize(np.swapaxes(rgb_small, 0, 1), size, nearest=False).astype(np.float32)
    else:
        g = _resize(grey.T, size, nearest=False)
        base = np.repeat(g[..., None], 3, axis=-1).astype(np.float32)
    legend: list[tuple[Sequence[int], str]] = []
    if lab is not None:
        big = _labels_resize(lab.T, size)
        edge = np.zeros(big.shape, bool)
        edge[1:, :] |= big[1:, :] != big[:-1, :]
        edge[:-1, :] |= big[1:, :] != big[:-1, :]
        edge[:, 1:] |= big[:, 1:] != big[:, :-1]
        edge[:, :-1] |= big[:, 1:] != big[:, :-1]
        counts = np.bincount(lab.ravel().astype(np.int64)) if lab.size else np.zeros(1, np.int64)
        for v in np.flatnonzero(counts):
            if v == 0:
                continue
            color = np.asarray(labels.colors.get(int(v), label_color(int(v))) if labels else label_color(int(v)))
            m = big == v
            base[m] = (1 - alpha) * base[m] + alpha * color
            base[m & edge] = color
            name = labels.name_of(int(v)) if labels is not None else f"label_{int(v)}"
            legend.append((tuple(int(c) for c in color), f"{int(v)}  {name}"))
        if not legend:
            legend.append(((0, 0, 0), "no labels on this slice"))
    mm_per_px = spacing[0] * grey.shape[0] / size[0]
    title_bits.append("radiological view (patient right on the left)" if image.ndim == 3 else "")
    title_bits.append(f"{mm_per_px:.3g} mm/pixel" if image.spacing_known else "spacing unknown")
    title = ", ".join(b for b in title_bits if b)
    fig = compose_figure(
        [(np.round(base).astype(np.uint8), "")],
        title=title,
        legend=legend,
        edge_letters=letters if image.ndim == 3 else None,
    )
    meta = {"note": "overlay figure", "mm_per_pixel": mm_per_px, "slice": z}
    return Image(np.ascontiguousarray(np.swapaxes(fig, 0, 1)), None, None, None, meta, ndim=2)
