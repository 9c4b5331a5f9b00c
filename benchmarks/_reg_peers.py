"""Runs ANTs SyN / SyNOnly (antspyx) and FireANTs (affine + greedy diffeomorphic) on a list of jobs, inside the peer
benchmark environment (it does not import medimg: FireANTs pins SimpleITK 2.2.1, so it lives in its own venv).
Called by ``benchmarks/register_fast.py``; not a public tool.

    PEER_PYTHON benchmarks/_reg_peers.py jobs.json results.json

``jobs.json``: a list of ``{"method", "fixed", "moving", "moving_labels", "out_labels"}`` (NIfTI paths). For each job
the moving labels are warped onto the fixed grid (nearest label) and written to ``out_labels``; ``results.json``
gets the wall-clock seconds of the registration itself (images already in memory, label warping excluded — the
same rule as medimg's rows) and the % of voxels with a non-positive Jacobian determinant of the deformation.
The first job of each method is run twice and only the second time is kept (PyTorch / ITK warm-up).

Settings: ANTs ``ants.registration(type_of_transform="SyN" | "SyNOnly")`` with its defaults (antspyx 0.6.1).
FireANTs 1.5.0 as in its README's example pipeline, on the CPU: ``MomentsRegistration`` (centres of mass; with the
principal axes too, ``moments=2``, 4 of 4 hippocampus pairs tried failed), ``AffineRegistration([4, 2, 1],
[200, 100, 50], loss cc, Adam lr 3e-3)`` initialised by it, then ``GreedyRegistration(scales [4, 2, 1],
iterations [200, 100, 50], cc kernel 5, Adam lr 0.5, compositive, smooth_grad_sigma 1)``; ``fireants_fast`` is the
greedy stage alone at scales [4, 2] with [100, 50] iterations (its cheapest sensible setting; aligned frames).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

os.environ.setdefault("TQDM_DISABLE", "1")  # FireANTs prints a progress bar per level (tqdm reads this at import)
logging.disable(logging.WARNING)


def _ants(job: dict[str, Any], kind: str) -> tuple[float, float | None]:
    import ants

    f, m = ants.image_read(job["fixed"]), ants.image_read(job["moving"])
    t0 = time.perf_counter()
    r = ants.registration(f, m, kind)
    secs = time.perf_counter() - t0
    warp = next(t for t in r["fwdtransforms"] if t.endswith("Warp.nii.gz"))
    jac = ants.create_jacobian_determinant_image(f, warp).numpy()
    fold = float(100.0 * np.mean(jac <= 0))
    w = ants.apply_transforms(f, ants.image_read(job["moving_labels"]), r["fwdtransforms"], interpolator="genericLabel")
    ants.image_write(w, job["out_labels"])
    return secs, fold


MOMENTS = int(os.environ.get("FIREANTS_MOMENTS", "1"))
"""FireANTs' moments initialisation before its affine stage (1: centres of mass, 2: also the principal axes)."""
GREEDY: dict[str, Any] = {
    "cc_kernel_size": 5,
    "deformation_type": "compositive",
    "smooth_grad_sigma": 1,
    "optimizer": "Adam",
    "optimizer_lr": 0.5,
}
"""FireANTs' greedy diffeomorphic settings shared by ``fireants`` and ``fireants_fast`` (its README's example)."""
MIN_AXIS = 32
"""FireANTs 1.5.0 fails on an axis shorter than 32 voxels (ACDC's 10 slices: its multi-scale warp keeps 32 there and
the loss then sees mismatched shapes), so such axes are padded by edge replication for it, and cropped afterwards."""


def _fireants(job: dict[str, Any], fast: bool) -> tuple[float, float | None]:
    import torch
    from fireants.io.image import BatchedImages, Image
    from fireants.registration.affine import AffineRegistration
    from fireants.registration.greedy import GreedyRegistration
    from fireants.registration.moments import MomentsRegistration

    f_itk = sitk.ReadImage(job["fixed"], sitk.sitkFloat32)
    pad = [max(0, MIN_AXIS - n) for n in f_itk.GetSize()]
    lo, hi = [p // 2 for p in pad], [p - p // 2 for p in pad]

    def load(path: str, kind: int) -> Any:  # padded by edge replication to >= MIN_AXIS voxels per axis
        img = sitk.ReadImage(path, kind)
        return sitk.ZeroFluxNeumannPad(img, lo, hi) if any(pad) else img

    fixed = BatchedImages([Image(load(job["fixed"], sitk.sitkFloat32), device="cpu")])
    moving = BatchedImages([Image(load(job["moving"], sitk.sitkFloat32), device="cpu")])
    t0 = time.perf_counter()
    if fast:
        reg = GreedyRegistration(
            scales=[4, 2], iterations=[100, 50], fixed_images=fixed, moving_images=moving, **GREEDY
        )
    else:
        mom = MomentsRegistration(1, fixed, moving, moments=MOMENTS)
        mom.optimize()
        aff = AffineRegistration(
            [4, 2, 1],
            [200, 100, 50],
            fixed,
            moving,
            loss_type="cc",
            optimizer="Adam",
            optimizer_lr=3e-3,
            init_rigid=mom.get_affine_init(),
        )
        aff.optimize()
        reg = GreedyRegistration(
            scales=[4, 2, 1],
            iterations=[200, 100, 50],
            fixed_images=fixed,
            moving_images=moving,
            init_affine=aff.get_affine_matrix().detach(),
            **GREEDY,
        )
    reg.optimize()
    secs = time.perf_counter() - t0
    with torch.no_grad():
        phi = reg.get_warped_coordinates(fixed, moving)[0].numpy().astype(np.float64)  # (*grid, nd), normalised
    phi = phi[..., ::-1]  # grid_sample order (last array axis first) -> array-axis order, so identity has det > 0
    nd = phi.shape[-1]
    grads = [np.gradient(phi[..., i], axis=tuple(range(nd))) for i in range(nd)]  # sign of det J is scale-free
    jmat = np.stack([np.stack(g, -1) for g in grads], -2)
    # the fixed image's own voxels (array order z, y, x): the padding (if any) is left out of every figure
    crop = tuple(slice(a, a + n) for a, n in zip(lo[::-1], f_itk.GetSize()[::-1], strict=True))
    fold = float(100.0 * np.mean(np.linalg.det(jmat)[crop] <= 0))
    lab_itk = load(job["moving_labels"], sitk.sitkUInt8)
    lab = sitk.GetArrayFromImage(lab_itk)
    values = [int(v) for v in np.unique(lab)]
    onehot = []
    for v in values:  # warp each label's indicator linearly, then take the most likely label per voxel
        ind = sitk.Cast(lab_itk == v, sitk.sitkFloat32)
        onehot.append(BatchedImages([Image(ind, device="cpu")])())
    with torch.no_grad():
        warped = [reg.evaluate(fixed, o)[0, 0].numpy() for o in onehot]
    out = np.asarray(values, np.uint8)[np.argmax(np.stack(warped), axis=0)][crop]
    out_itk = sitk.GetImageFromArray(out)
    out_itk.CopyInformation(f_itk)
    sitk.WriteImage(out_itk, job["out_labels"])
    return secs, fold


def run(job: dict[str, Any]) -> tuple[float, float | None]:
    meth = job["method"]
    if meth in ("ants_syn", "ants_synonly"):
        return _ants(job, "SyN" if meth == "ants_syn" else "SyNOnly")
    if meth in ("fireants", "fireants_fast"):
        return _fireants(job, meth == "fireants_fast")
    raise SystemExit(f"unknown peer method {meth!r}")


def main() -> None:
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    results = []
    seen: set[str] = set()
    for job in jobs:
        if job["method"] not in seen:  # warm-up run, not kept
            run(job)
            seen.add(job["method"])
        secs, fold = run(job)
        results.append({**job, "seconds": secs, "folding_percent": fold})
        print(job["method"], job["moving"].rsplit("/", 1)[-1], f"{secs:.2f}s", flush=True, file=sys.stderr)
    with open(sys.argv[2], "w") as fh:
        json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
