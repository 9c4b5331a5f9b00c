"""Explanations of a classifier's prediction: Grad-CAM and integrated gradients, and overlay figures.

- Grad-CAM (Selvaraju et al., 2017) on the encoder's last feature map: channel weights are the spatially averaged
  gradients of the class logit; the map is ``ReLU(sum_k w_k A_k)``, upsampled (linear) to the input size and scaled
  to [0, 1].
- Integrated gradients (Sundararajan et al., 2017) of the class logit along the straight path from a baseline
  (default: zeros in normalised space, i.e. the image's mean intensity) to the normalised input, with a
  ``steps``-point trapezoid rule. Completeness holds up to the quadrature error: the attributions sum to
  ``logit(x) - logit(baseline)``; :func:`integrated_gradients` returns that gap too.

Maps are in the model's input grid (numpy order), resized back to the image's own size for the overlays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.classify.augment import normalize, resize
from medimg.errors import MedimgError


def _prepare(model: Any, image: np.ndarray) -> torch.Tensor:
    x = model.check(image)
    if len(x) != 1:
        raise MedimgError(f"Explain one image at a time; got {len(x)}.")
    return normalize(resize(torch.from_numpy(x), model.input_size))


def grad_cam(model: Any, image: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM map in [0, 1] (the model's input size) and the class explained (default: the predicted one)."""
    net = model.net.eval()
    x = _prepare(model, image)
    feats: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        feats["a"] = out

    h = net.encoder.stages[-1].register_forward_hook(hook)
    try:
        logits = net(x)
    finally:
        h.remove()
    cls = int(logits.argmax(1)) if target is None else int(target)
    if not 0 <= cls < logits.shape[1]:
        raise MedimgError(f"Class index {cls} is outside the model's {logits.shape[1]} classes.")
    net.zero_grad()
    logits[0, cls].backward()
    a, g = feats["a"], feats["a"].grad
    assert g is not None
    w = g.mean(dim=tuple(range(2, g.ndim)), keepdim=True)
    cam_t = F.relu((w * a).sum(1, keepdim=True)).detach()
    cam = resize(cam_t, x.shape[2:])[0, 0].numpy()
    return (cam / cam.max() if cam.max() > 0 else cam), cls


def integrated_gradients(
    model: Any, image: np.ndarray, target: int | None = None, steps: int = 64, baseline: np.ndarray | None = None
) -> tuple[np.ndarray, int, float]:
    """Attributions (same shape as the normalised input ``(c, *spatial)``), the class explained, and the
    completeness gap ``|sum(attr) - (logit(x) - logit(baseline))|``."""
    net = model.net.eval()
    x = _prepare(model, image)
    b = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype).reshape(x.shape)
    with torch.no_grad():
        lx = net(x)
        lb = net(b)
    cls = int(lx.argmax(1)) if target is None else int(target)
    alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
    path = b + alphas.view(-1, *[1] * (x.ndim - 1)) * (x - b)
    grads = []
    for i in range(0, len(path), 32):
        p = path[i : i + 32].clone().requires_grad_(True)
        net(p)[:, cls].sum().backward()
        assert p.grad is not None
        grads.append(p.grad.detach())
    g = torch.cat(grads)
    avg = (g[:-1] + g[1:]).mean(0) / 2  # trapezoid rule
    attr = ((x - b)[0] * avg).numpy()
    gap = abs(float(attr.sum()) - float(lx[0, cls] - lb[0, cls]))
    return attr, cls, gap


def _heat_rgb(v: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB with a perceptually ordered dark-blue/red/yellow ramp."""
    stops = np.array([[0.0, 0, 0, 0.35], [0.35, 0.55, 0.0, 0.55], [0.7, 0.95, 0.25, 0.1], [1.0, 1.0, 0.95, 0.3]])
    out = np.stack([np.interp(v, stops[:, 0], stops[:, k]) for k in (1, 2, 3)], -1)
    return out


def overlay_rgb(image2d: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """8-bit RGB: the grey image (1st-99th percentile window) with ``heat`` in [0, 1] blended on top."""
    lo, hi = np.percentile(image2d, [1, 99])
    g = np.clip((image2d - lo) / (hi - lo + 1e-6), 0, 1)[..., None].repeat(3, -1)
    h = np.clip(heat, 0, 1)
    a = alpha * h[..., None] ** 0.5
    return (255 * ((1 - a) * g + a * _heat_rgb(h))).round().astype(np.uint8)


def explanation_figure(
    model: Any, image: np.ndarray, out_png: str | Path, target: int | None = None, scale: int | None = None
) -> dict[str, Any]:
    """Write a PNG figure — image | Grad-CAM overlay | integrated-gradients overlay (absolute attributions,
    99th-percentile scaled) — for one 2D image (3D: the middle slice of the maps and image), with a title
    (predicted and explained class, probabilities), panel captions and a colour bar. Panels are upsampled by
    ``scale`` (default: at least 512 px on the shorter side; the image smoothly, the maps bilinearly). Returns
    the class, probabilities and completeness gap."""
    from PIL import Image

    from medimg.io._atomic import atomic_path
    from medimg.report.overlay import MIN_PANEL_PX, compose_figure

    x = model.check(image)
    probs = model.predict_proba(x)[0]
    cam, cls = grad_cam(model, x, target)
    attr, _, gap = integrated_gradients(model, x, cls)
    ig = np.abs(attr).sum(0)
    ig = ig / (np.percentile(ig, 99) + 1e-12)
    raw = resize(torch.from_numpy(x), model.input_size)[0, 0].numpy()
    note = ""
    if raw.ndim == 3:
        mid = raw.shape[0] // 2
        raw, cam, ig = raw[mid], cam[mid], ig[mid]
        note = f", middle slice {mid + 1}"
    s = scale or max(1, int(np.ceil(MIN_PANEL_PX / min(raw.shape))))
    size = (raw.shape[1] * s, raw.shape[0] * s)

    def up(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # mode F
        return np.asarray(img.resize(size, Image.Resampling.BILINEAR))

    raw_big, cam_big, ig_big = up(raw), np.clip(up(cam), 0, 1), np.clip(up(ig), 0, 1)
    predicted = int(np.argmax(probs))
    title = f"predicted: {model.classes[predicted]} (p = {probs[predicted]:.2f})" + (
        f"; explaining class {model.classes[cls]}" if cls != predicted else ""
    )
    title += " | " + ", ".join(f"{c} {p:.2f}" for c, p in zip(model.classes, probs, strict=True)) + note
    panels = [
        (overlay_rgb(raw_big, np.zeros_like(raw_big), 0), "input"),
        (overlay_rgb(raw_big, cam_big), f"Grad-CAM: {model.classes[cls]}"),
        (overlay_rgb(raw_big, ig_big), f"integrated gradients (gap {gap:.2g})"),
    ]
    ramp = (255 * _heat_rgb(np.linspace(0, 1, 256))).round().astype(np.uint8)
    figure = compose_figure(panels, title=title, colorbar=(ramp, "low", "high", "relevance"))
    with atomic_path(out_png) as tmp:
        Image.fromarray(figure).save(tmp, format="PNG")
    return {
        "class": model.classes[cls],
        "class_index": cls,
        "probabilities": {c: float(p) for c, p in zip(model.classes, probs, strict=True)},
        "ig_completeness_gap": gap,
        "png": str(out_png),
        "size": [int(figure.shape[1]), int(figure.shape[0])],
    }
