"""Segmentation in context: segment an image from a support set of a few labelled examples, with no training run
(``medimg segment IMAGE --support DATASET -o OUT``).

Method: multi-atlas segmentation. Every support image is registered to the target (affine, then one coarse
diffeomorphic level: :func:`medimg.register.register` with ``speed="fast"``, about 0.1 s per hippocampus pair on
two CPU cores; ``speed="default"`` runs the full pyramid), its label map is carried onto the target grid (one-hot
linear interpolation), and the propagated maps are fused (:mod:`medimg.register.fusion`: locally weighted voting by
default, or majority / STAPLE). Nothing is learned, so any structure the support set labels can be segmented.

Trust: the support set is checked first (images and labels on one grid, label values declared, one dimensionality
and channel count), and the target is refused when it lies outside the support images' domain
(:class:`medimg.domain.ImageDomain`, the check a trained model applies: another dimensionality, size, spacing or
intensity range) unless ``force``. The report gives, per support case, the Dice of its propagated labels with the
fused result; ``agreement`` (their mean) below :data:`LOW_AGREEMENT` is flagged, as a sign that the support cases
disagree about this target (a poor registration or support cases unlike it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.image import Image, LabelMap, geometry_differences
from medimg.register.fusion import FUSIONS

#: The fusion rule used unless told otherwise (chosen by measurement: docs/incontext.md).
DEFAULT_FUSION = "weighted"
#: Mean Dice between each support case's propagated labels and the fused result below which the report warns.
LOW_AGREEMENT = 0.6
SPEEDS = ("fast", "default")


@dataclass
class SupportSet:
    """Labelled examples loaded from a dataset folder (``imagesTr``/``labelsTr``, optional dataset.json)."""

    root: Path
    case_ids: list[str]
    images: list[Image]
    labels: list[LabelMap]
    names: dict[int, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)


def load_support(folder: str | Path) -> SupportSet:
    """Read and check a support set; every problem case is named in one :class:`MedimgError`."""
    import medimg
    from medimg.seg.dataset import load_dataset
    from medimg.seg.plan import fingerprint

    root = Path(folder)
    if not root.is_dir():
        raise MedimgError(
            f"Support set {str(root)!r} does not exist; give a dataset folder with imagesTr/ and labelsTr/ "
            "(a few labelled examples of the structure)."
        )
    ds = load_dataset(root)
    cases = [c for c in ds.cases if c.label is not None]
    if not cases:
        raise MedimgError(f"The support set {root} has no labelled case (labelsTr/ is empty or missing).")
    if len(ds.channels) != 1:
        raise MedimgError(
            f"The support set {root} has {len(ds.channels)} channels; segmentation in context registers "
            "single-channel images. Keep one channel: only the _0000 image files in imagesTr/ and one entry in "
            "dataset.json's channel_names."
        )
    images, labels, problems = [], [], []
    for c in cases:
        img = medimg.read(c.images[0])
        lab = medimg.read_labels(c.label)  # type: ignore[arg-type]
        diffs = geometry_differences(img, lab)
        if diffs:
            problems.append(f"{c.case_id}: {diffs[0]}")
            continue
        if not lab.array.any():
            problems.append(f"{c.case_id}: the label map is empty")
            continue
        images.append(img)
        labels.append(lab)
    dims = {im.ndim for im in images}
    if len(dims) > 1:
        problems.append(f"the images mix {' and '.join(f'{d}D' for d in sorted(dims))} cases")
    if problems:
        raise MedimgError(
            f"The support set's labels do not match its images in {len(problems)} case(s): "
            + "; ".join(problems[:5])
            + ". Fix or remove those cases (resample a label onto its image with `medimg resample LABEL OUT "
            "--reference IMAGE --labels`)."
        )
    names = {int(k): v for k, v in (ds.labels or {}).items()}
    values = sorted({int(v) for lab in labels for v in np.unique(lab.array)} - {0})
    undeclared = [v for v in values if names and v not in names]
    if undeclared:
        raise MedimgError(
            f"The support set's label maps hold values {undeclared} that its dataset.json does not declare; "
            'declare them under "labels" or fix the label files.'
        )
    if not names:
        names = {0: "background", **{v: f"label_{v}" for v in values}}
    return SupportSet(
        root,
        [c.case_id for c in cases],
        images,
        labels,
        names,
        fingerprint(ds),
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a > 0, b > 0
    s = int(fa.sum()) + int(fb.sum())
    return 2.0 * int((fa & fb).sum()) / s if s else 1.0


def segment_in_context(
    image: Image,
    support: SupportSet,
    fusion: str = DEFAULT_FUSION,
    speed: str = "fast",
    force: bool = False,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
) -> tuple[LabelMap, dict[str, Any]]:
    """Segment ``image`` from the ``support`` set (see the module); returns the label map on ``image``'s grid and a
    report (per-case similarity and agreement, timings in seconds, the domain check)."""
    from medimg.domain import ImageDomain
    from medimg.register.api import register
    from medimg.register.fusion import atlas_segmentation

    if fusion not in FUSIONS:
        raise MedimgError(f"Unknown fusion {fusion!r}; choose {', '.join(FUSIONS)}.")
    if speed not in SPEEDS:
        raise MedimgError(f"Unknown speed {speed!r}; choose {', '.join(SPEEDS)}.")
    if image.n_channels != 1:
        raise MedimgError(
            f"The image has {image.n_channels} channels; segmentation in context registers single-channel images "
            "(pass --channel N, or --channel grey for a colour image)."
        )
    differences: list[str] = []
    if support.fingerprint:
        dom = ImageDomain.from_fingerprint(support.fingerprint, f"the support set {support.root.name}")
        differences = dom.differences([image])
        if differences and not force:
            raise MedimgError(
                f"The image is outside the support set's domain: {'; '.join(differences)}. Give support examples "
                "like this image, or pass --force to segment it anyway."
            )
    t0 = time.perf_counter()
    ticks = iter(progress(range(len(support.images)), "registering support") if progress else ())

    def reg(fixed: Image, moving: Image) -> Any:
        res = register(fixed, moving, method="deformable", speed=speed)
        next(ticks, None)
        return res.transform

    atlases = list(zip(support.images, support.labels, strict=True))
    fused, warped = atlas_segmentation(image, atlases, reg, fusion)
    for _ in ticks:
        pass
    seconds = time.perf_counter() - t0
    names = {k: v for k, v in support.names.items() if k != 0}
    fused = LabelMap(fused.array, image.spacing, image.origin, image.direction, names=names)
    per_case = []
    for cid, lab in zip(support.case_ids, warped, strict=True):
        per_case.append({"case": cid, "dice_with_fused": round(_dice(lab.array, fused.array), 4)})
    agreement = float(np.mean([c["dice_with_fused"] for c in per_case]))
    report = {
        "method": "multi-atlas (register each support case, fuse the propagated labels)",
        "support": str(support.root),
        "n_support": len(support.images),
        "fusion": fusion,
        "speed": speed,
        "seconds": round(seconds, 3),
        "agreement": round(agreement, 4),
        "low_agreement": agreement < LOW_AGREEMENT,
        "per_case": per_case,
        "domain": {"in_domain": not differences, "forced": bool(differences) and force, "differences": differences},
    }
    return fused, report
