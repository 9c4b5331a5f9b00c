"""The ``frd`` operation: Fréchet Radiomic Distance between two image folders (:mod:`medimg.frd`)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class FRDParams(OpParams):
    set_a: str = Field(description="Reference image folder (real images): 2D PNG/JPEG/TIFF or 3D NIfTI/NRRD/MHA.")
    set_b: str = Field(description="Folder of the images judged against it (e.g. generated), same kind as set_a.")
    version: Literal["v0", "v1"] = Field("v1", description="FRD version (v1: frd-score's default).")
    masks_a: str | None = Field(None, description="Masks of set_a (matched by sorted name, nonzero = region).")
    masks_b: str | None = Field(None, description="Masks of set_b (matched by sorted name, nonzero = region).")
    bootstrap: int = Field(0, ge=0, le=5000, description="Bootstrap resamples for a 95 % CI (0: none).")
    seed: int = Field(0, description="Seed of the bootstrap.")
    ood: bool = Field(False, description="Also score every image of set_b as in/out of set_a's distribution.")
    workers: int = Field(1, ge=1, le=64, description="Processes for the feature extraction.")
    drop_degenerate: bool = Field(
        False,
        description="v1: leave out features constant in set_a up to rounding (frd-score keeps them; they can "
        "dominate the value when the sets' image sizes differ in parity).",
    )


class OODRow(BaseModel):
    image: str
    distance: float = Field(description="Distance to set_a's mean in set_a's z-scored feature space.")
    z: float = Field(description="(distance - mean) / SD of set_a's own distances.")
    p_value: float = Field(description="One-sided Gaussian p-value of z.")
    outlier: bool = Field(description="distance above the threshold (set_a mean + 1.645 SD).")


class FRDResult(OpResult):
    value: float | None = Field(
        description="FRD: v1 = log of the squared Fréchet distance (null when it is 0: identical sets); v0 = the "
        "squared distance."
    )
    squared_distance: float = Field(description="Squared Fréchet distance of the normalised features.")
    version: str
    reference: str = Field(description="The reference set (set_a): v1 z-scores both sets with its statistics.")
    n_a: int
    n_b: int
    n_features: int = Field(description="Features used (after dropping those NaN/constant in set_a for v1).")
    dims: int
    ci_low: float | None = None
    ci_high: float | None = None
    bootstrap: int = 0
    dropped_images: dict[str, list[str]] = Field(
        default_factory=dict, description="Images left out (v1: a feature was NaN), per set."
    )
    degenerate_features: list[str] = Field(
        default_factory=list,
        description="v1 features constant in set_a up to rounding (z-scores of rounding noise); dropped only with "
        "drop_degenerate.",
    )
    ood: list[OODRow] | None = None
    ood_threshold: float | None = None
    seconds: float


@operation(
    "frd",
    "Fréchet Radiomic Distance (FRD v1/v0, frd-score compatible) between two image folders with medimg's own "
    "radiomics; optional bootstrap CI and per-image out-of-distribution scores.",
    reads=("set_a", "set_b", "masks_a", "masks_b"),
)
def frd(p: FRDParams, ctx: Context) -> FRDResult:
    from medimg.frd import compute_frd, ood_scores

    res, fa, fb = compute_frd(
        p.set_a,
        p.set_b,
        p.version,
        p.masks_a,
        p.masks_b,
        bootstrap=p.bootstrap,
        seed=p.seed,
        workers=p.workers,
        progress=ctx.progress,
        drop_degenerate=p.drop_degenerate,
    )
    d2 = res.squared_distance
    rows, thr = None, None
    if p.ood:
        scores, thr = ood_scores(fa.values, fb.values, fb.images)
        rows = [OODRow(image=s.image, distance=s.distance, z=s.z, p_value=s.p_value, outlier=s.outlier) for s in scores]
    return FRDResult(
        value=res.value if math.isfinite(res.value) else None,
        squared_distance=d2,
        version=res.version,
        reference=p.set_a,
        n_a=res.n_a,
        n_b=res.n_b,
        n_features=res.n_features,
        dims=res.dims,
        ci_low=res.ci[0] if res.ci else None,
        ci_high=res.ci[1] if res.ci else None,
        bootstrap=res.bootstrap,
        dropped_images=res.dropped_images,
        degenerate_features=res.degenerate,
        ood=rows,
        ood_threshold=thr,
        seconds=round(res.seconds, 3),
    )
