"""The 3D task bank for the 3D promptable network and the held-out 3D targets of the challenge benchmark.

Training families (3D structures, each cut to the part of its volume a session can reach):

- ``brain_mri``: MSD hippocampus (anterior, posterior, whole; the last 20 cases by name are held out — the same
  split as the 2D bank, :mod:`interactive_data`), voxelmorph's 30 FreeSurfer structures, 60 structures of the
  ANTs labelled MNI atlas;
- ``abdomen_mr``: CHAOS T2 (liver, kidneys, spleen; the last 4 volumes by name are held out) and
  TotalSegmentator's small MR;
- ``ct``: TotalSegmentator's small CT (classes with id % 4 == 0 are held out, as in the 2D bank);
- ``nodules``: LIDC-IDRI lung nodules (patients in the last 10 % by id are held out; 300 training nodules);
- ``synthetic``: blobs painted into real training volumes (a smooth random shape, its intensity shifted), so that
  "the structure" is whatever the box and clicks say.

Held-out targets (never trained on): the 20 hippocampus cases (whole hippocampus), the 4 CHAOS volumes' organs,
20 LIDC nodules, both pyradiomics lesions (brain1: a brain lesion; breast1), TotalSegmentator CT classes with
id % 4 == 0, and ACDC cardiac MRI (a family never trained on; research-use data, evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

import medimg
from medimg.interactive.train3d import Task3, cut_around


@dataclass
class Target3:
    image: np.ndarray
    mask: np.ndarray
    family: str
    name: str
    spacing: tuple[float, float, float]


def _sp(im: medimg.Image) -> tuple[float, float, float]:
    s = [float(v) for v in im.spacing]
    return (s[0], s[1], s[2])


def _add(tasks: list[Task3], img: np.ndarray, m: np.ndarray, fam: str, sp: tuple[float, ...]) -> None:
    t = cut_around(img, m, fam, sp)
    if t is not None:
        tasks.append(t)


def synthetic_blob(task: Task3, rng: np.random.Generator) -> Task3 | None:
    """A blob painted into ``task``'s volume: a smoothed random field thresholded inside an ellipsoid of 4-15
    voxels radius, the image shifted there by 0.5-1.5 of the volume's intensity spread (edges smoothed)."""
    img = task.image
    shape = np.array(img.shape)
    radii = rng.uniform(4, 15, 3) / np.asarray(task.spacing) * min(task.spacing)
    radii = np.minimum(radii, (shape - 4) / 2.5)
    if np.any(radii < 2):
        return None
    c = np.array([rng.uniform(r + 1, n - r - 1) for r, n in zip(radii, shape, strict=True)])
    g = np.ogrid[tuple(slice(0, int(n)) for n in shape)]
    ell = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, radii, strict=True))
    noise = ndimage.gaussian_filter(rng.standard_normal(img.shape), 2.0)
    noise /= noise.std() + 1e-6
    m = (ell + 0.25 * noise) < 1.0
    lab, n = ndimage.label(m)
    if n == 0:
        return None
    m = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    if m.sum() < 20:
        return None
    lo, hi = np.percentile(img, [1, 99])
    soft = ndimage.gaussian_filter(m.astype(np.float32), 0.8)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out = img + sign * float(rng.uniform(0.5, 1.5)) * float(hi - lo) * soft
    out = out + ndimage.gaussian_filter(rng.standard_normal(img.shape), 1.0).astype(np.float32) * 0.05 * (hi - lo)
    return Task3(out.astype(np.float32), m, "synthetic", task.spacing)


def load_bank3(data: Path, seed: int = 0, eval_only: bool = False) -> tuple[list[Task3], list[Target3]]:
    """Training tasks and held-out targets (see the module docstring). ``eval_only`` skips the training tasks."""
    rng = np.random.default_rng(seed)
    tasks: list[Task3] = []
    ev: list[Target3] = []

    # brain_mri ------------------------------------------------------------------------------------------------
    ids = sorted(p.name.replace(".nii.gz", "") for p in (data / "hippocampus" / "imagesTr").glob("*.nii.gz"))
    for i, cid in enumerate(ids):
        held = i >= len(ids) - 20
        if eval_only and not held:
            continue
        im = medimg.read(data / "hippocampus" / "imagesTr" / f"{cid}.nii.gz")
        lab = medimg.read_labels(data / "hippocampus" / "labelsTr" / f"{cid}.nii.gz").array
        img = im.array.astype(np.float32)
        if held:
            ev.append(Target3(img, lab > 0, "hippocampus", f"{cid} hippocampus", _sp(im)))
            continue
        for m in (lab == 1, lab == 2, lab > 0):
            _add(tasks, img, m, "brain_mri", _sp(im))
    if not eval_only:
        vm = np.load(data / "voxelmorph" / "test_scan.npz")
        vol, seg = vm["vol"].astype(np.float32), vm["seg"]
        for lab_id in np.load(data / "voxelmorph" / "labels.npz")["labels"]:
            _add(tasks, vol, seg == lab_id, "brain_mri", (1.0, 1.0, 1.0))
        mni = medimg.read(data / "ants" / "mni.nii.gz")
        mnia = medimg.read_labels(data / "ants" / "mnia.nii.gz").array
        for lab_id in rng.permutation(np.unique(mnia)[1:])[:60]:
            _add(tasks, mni.array.astype(np.float32), mnia == lab_id, "brain_mri", _sp(mni))

    # abdomen_mr -----------------------------------------------------------------------------------------------
    names = sorted(p.name for p in (data / "chaos_mr" / "imagesTr").glob("*.nii.gz"))
    organs = {1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen"}
    for i, name in enumerate(names):
        held = i >= len(names) - 4
        if eval_only and not held:
            continue
        im = medimg.read(data / "chaos_mr" / "imagesTr" / name)
        lab = medimg.read_labels(data / "chaos_mr" / "labelsTr" / name).array
        img = im.array.astype(np.float32)
        for k, organ in organs.items():
            m = lab == k
            if m.sum() < 50:
                continue
            if held:
                ev.append(Target3(img, m, "chaos_mr", f"{name.removesuffix('.nii.gz')} {organ}", _sp(im)))
            else:
                _add(tasks, img, m, "abdomen_mr", _sp(im))

    # TotalSegmentator CT (held-out classes) and MR (training) --------------------------------------------------
    for im_name, seg_name, fam in (
        ("example_ct_sm.nii.gz", "example_seg.nii.gz", "ct"),
        ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "abdomen_mr"),
    ):
        im = medimg.read(data / "totalsegmentator" / im_name)
        seg = medimg.read_labels(data / "totalsegmentator" / seg_name).array
        img = im.array.astype(np.float32)
        for lab_id in np.unique(seg)[1:]:
            m = seg == lab_id
            if m.sum() < 30:
                continue
            if fam == "ct" and lab_id % 4 == 0:
                lab_cc, _ = ndimage.label(m)
                big = lab_cc == (int(np.argmax(np.bincount(lab_cc.ravel())[1:])) + 1)
                ev.append(Target3(img, big, "totalseg_ct", f"class {lab_id}", _sp(im)))
            elif not eval_only:
                _add(tasks, img, m, fam, _sp(im))

    # nodules --------------------------------------------------------------------------------------------------
    files = sorted(p.name for p in (data / "lidc_nodules" / "images").glob("*.nii.gz"))
    patients = sorted({f.split("_")[0] for f in files})
    held_p = set(patients[-max(1, len(patients) // 10) :])
    held_files = [f for f in files if f.split("_")[0] in held_p]
    train_files = [f for f in files if f.split("_")[0] not in held_p]
    picks = [held_files[int(i)] for i in np.linspace(0, len(held_files) - 1, min(20, len(held_files)))]
    if not eval_only:
        picks += [train_files[int(i)] for i in rng.permutation(len(train_files))[:300]]
    for f in picks:
        im = medimg.read(data / "lidc_nodules" / "images" / f)
        m = medimg.read_labels(data / "lidc_nodules" / "masks" / f).array > 0
        if m.sum() < 8:
            continue
        if f in held_files:
            ev.append(Target3(im.array.astype(np.float32), m, "lidc", f.removesuffix(".nii.gz"), _sp(im)))
        else:
            _add(tasks, im.array.astype(np.float32), m, "nodules", _sp(im))

    # lesions (held out) ---------------------------------------------------------------------------------------
    for case in ("brain1", "breast1"):
        im = medimg.read(data / "lesions" / f"{case}_image.nrrd")
        m = medimg.read_labels(data / "lesions" / f"{case}_label.nrrd").array > 0
        ev.append(Target3(im.array.astype(np.float32), m, "lesions", case, _sp(im)))

    # ACDC (evaluation only: research-use data; a family never trained on) ---------------------------------------
    import h5py

    acdc = sorted((data / "acdc").glob("*.h5"))
    pats = sorted({p.name.split("_")[0] for p in acdc})[-4:]
    for p in acdc:
        if p.name.split("_")[0] not in pats:
            continue
        with h5py.File(p) as h:
            img = np.moveaxis(np.asarray(h["image"]), 0, 2).astype(np.float32)
            lab = np.moveaxis(np.asarray(h["label"]), 0, 2)
        for k, s in ((1, "RV"), (2, "myocardium"), (3, "LV")):
            if (lab == k).sum() >= 50:
                ev.append(Target3(img, lab == k, "acdc", f"{p.stem} {s}", (1.5, 1.5, 10.0)))

    # synthetic ------------------------------------------------------------------------------------------------
    if not eval_only:
        real = [t for t in tasks if t.family != "nodules"]
        made = 0
        for _ in range(600):
            if made >= 200:
                break
            t = synthetic_blob(real[int(rng.integers(len(real)))], rng)
            if t is not None:
                tasks.append(t)
                made += 1
    return tasks, ev
