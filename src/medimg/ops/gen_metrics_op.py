"""The ``gen_metrics`` operation: FRD, KID, precision/recall/density/coverage and MS-SSIM diversity of two image
folders (:mod:`medimg.frd`, :mod:`medimg.distribution`), each saying which feature space it uses."""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from medimg.ops.base import Context, OpParams, OpResult, operation

Space = Literal["radiomics", "pixels"]


def _default_spaces() -> list[Space]:
    return ["radiomics", "pixels"]


class GenMetricsParams(OpParams):
    set_a: str = Field(description="Reference image folder (real images): 2D PNG/JPEG/TIFF or 3D NIfTI/NRRD/MHA.")
    set_b: str = Field(description="Folder of the images judged (e.g. generated), same kind as set_a.")
    spaces: list[Literal["radiomics", "pixels"]] = Field(
        default_factory=_default_spaces, description="Feature spaces for KID and PRDC."
    )
    k: int = Field(5, ge=1, le=50, description="Neighbours of the k-NN manifolds (precision/recall/density/coverage).")
    kid_subsets: int = Field(100, ge=1, le=1000, description="Random subsets for KID's mean and SD.")
    kid_subset_size: int = Field(1000, ge=2, description="Rows per KID subset (capped at the smaller set).")
    pairs: int = Field(200, ge=1, le=100000, description="Random image pairs for the MS-SSIM diversity.")
    seed: int = Field(0, description="Seed of the random subsets and pairs.")
    workers: int = Field(1, ge=1, le=64, description="Processes for the radiomics extraction.")
    encoder: str | None = Field(
        None,
        description="A medimg classifier (bundled name, e.g. 'pneumoniamnist', or model folder) whose encoder "
        "features add an 'encoder' space with FID: FID/KID on a network medimg trained on the domain.",
    )


class SpaceMetrics(BaseModel):
    space: str = Field(
        description="Feature space: 'radiomics' (FRD v1 features, z-scored against set_a), "
        "'pixels' (images on a 32^2 / 16^3 grid, each z-scored) or 'encoder:<model>' (a medimg classifier's "
        "pooled encoder features)."
    )
    n_features: int
    fid: float | None = Field(
        None, description="Encoder space only: Fréchet distance squared of Gaussians fitted to the features."
    )
    kid: float = Field(description="Unbiased MMD^2, cubic polynomial kernel, mean over subsets (0: same).")
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float


class GenMetricsResult(OpResult):
    frd: float | None = Field(description="FRD v1 (log squared Fréchet distance of radiomic features; null = 0).")
    frd_space: str = "radiomics (FRD v1 features, z-scored against set_a)"
    spaces: list[SpaceMetrics]
    k: int
    diversity_a: float = Field(description="Mean MS-SSIM of random pairs within set_a (lower = more diverse).")
    diversity_b: float = Field(description="Mean MS-SSIM of random pairs within set_b.")
    diversity_pairs: int
    diversity_space: str = "pixels (MS-SSIM on the set's median image shape, each image min-max scaled to [0, 1])"
    n_a: int
    n_b: int
    dims: int
    seconds: float


def encoder_features(model: str, arrays: list[np.ndarray]) -> np.ndarray:
    """Pooled encoder features ``(n, d)`` of grey images under a medimg classifier (resampled to its input size);
    refuses a model of other dimensionality or channels."""
    from medimg.classify import ClassifierModel
    from medimg.distribution import DistributionInputError, to_common

    m = ClassifierModel(model)
    if int(m.info["dims"]) != arrays[0].ndim or int(m.info["channels"]) != 1:
        raise DistributionInputError(
            f"Classifier {model!r} takes {m.info['dims']}D images with {m.info['channels']} channel(s); these are "
            f"{arrays[0].ndim}D grey images. Choose an encoder trained on images like these."
        )
    return m.embed(to_common(arrays, m.input_size)[:, None])


@operation(
    "gen_metrics",
    "Judge a generated image set against a real one: FRD, KID, precision/recall/density/coverage (radiomics and "
    "pixel feature spaces; optionally FID/KID on a medimg classifier's encoder) and MS-SSIM diversity, with no "
    "downloaded weights.",
    reads=("set_a", "set_b"),
)
def gen_metrics(p: GenMetricsParams, ctx: Context) -> GenMetricsResult:
    from medimg.distribution import fid, kid, ms_ssim_diversity, pixel_features, prdc, zscore_against
    from medimg.frd import FRDInputError, features, load_set, squared_frechet

    t0 = time.perf_counter()
    sa = load_set(p.set_a, None, "v1")
    sb = load_set(p.set_b, None, "v1")
    if sa[0].dims != sb[0].dims:
        raise FRDInputError(
            f"{p.set_a} holds {sa[0].dims}D images and {p.set_b} {sb[0].dims}D; compare like with like."
        )
    arr_a = [s.array[0] if s.dims == 2 else s.array for s in sa]
    arr_b = [s.array[0] if s.dims == 2 else s.array for s in sb]
    fa = features(sa, "v1", p.workers, ctx.progress)
    fb = features(sb, "v1", p.workers, ctx.progress)
    if fa.names != fb.names:
        raise FRDInputError("The two sets give different feature lists (images of very different sizes); resize them.")
    d2, _ = squared_frechet(fa.values, fb.values, "v1")
    rows = []
    spaces: list[str] = list(p.spaces) + ([f"encoder:{p.encoder}"] if p.encoder else [])
    for space in spaces:
        fd = None
        if space == "radiomics":
            xa, xb = zscore_against(
                fa.values.astype(np.float32).astype(np.float64), fb.values.astype(np.float32).astype(np.float64)
            )
        elif space == "pixels":
            xa, xb = pixel_features(arr_a), pixel_features(arr_b)
        else:
            xa, xb = encoder_features(str(p.encoder), arr_a), encoder_features(str(p.encoder), arr_b)
            fd = fid(xa, xb)
        km, ks = kid(xa, xb, p.kid_subsets, p.kid_subset_size, p.seed)
        pr = prdc(xa, xb, p.k)
        rows.append(
            SpaceMetrics(
                space=space,
                n_features=xa.shape[1],
                fid=fd,
                kid=km,
                kid_std=ks,
                precision=pr.precision,
                recall=pr.recall,
                density=pr.density,
                coverage=pr.coverage,
            )
        )
    shape = tuple(int(v) for v in np.median([a.shape for a in arr_a], axis=0).astype(int))
    da, _, npairs = ms_ssim_diversity(arr_a, p.pairs, p.seed, shape)
    db, _, _ = ms_ssim_diversity(arr_b, p.pairs, p.seed, shape)
    return GenMetricsResult(
        frd=math.log(d2) if d2 > 0 else None,
        spaces=rows,
        k=p.k,
        diversity_a=da,
        diversity_b=db,
        diversity_pairs=npairs,
        n_a=len(sa),
        n_b=len(sb),
        dims=sa[0].dims,
        seconds=round(time.perf_counter() - t0, 3),
    )
