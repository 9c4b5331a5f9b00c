"""The task bank for the promptable network: 2D targets from every labelled set in ../shared/data, grouped into
dataset families, split into training and evaluation cases, plus synthetic tasks on the same real images.

Families (evaluation cases are never used for training, by any model):

- ``brain_mri``: MSD Task04 hippocampus (labels 1, 2, 1+2; the last 20 cases by name are evaluation cases), the
  voxelmorph T1 with 30 FreeSurfer structures, the ANTs labelled MNI atlas (mnia) and nilearn's MNI152 grey / white
  matter maps (> 0.5) — training only;
- ``cardiac_mri``: ACDC (RV, myocardium, LV cavity, myocardium + cavity); patients in the last 4 files by name are
  evaluation cases;
- ``ct_mr_body``: TotalSegmentator's small CT (classes with id % 4 == 0 are evaluation targets) and MR (training);
- ``fundus``: CHASE_DB1 vessels (green channel, half resolution, 128-pixel crops; the target is the vessel
  component through a random vessel pixel); patients 09 and 10 are evaluation images;
- ``lesions``: pyradiomics brain1 (training) and breast1 (evaluation) lesion masks.

Synthetic tasks (superpixels and painted blobs) are made from the training images of each family and tagged
``synthetic:<family>`` so that a leave-one-family-out model never sees any image of the held-out family.
"""

from __future__ import annotations

import lzma
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from medimg.interactive.synthetic import blob_tasks, superpixel_tasks
from medimg.interactive.train import Task

FAMILIES = ("brain_mri", "cardiac_mri", "ct_mr_body", "fundus", "lesions")


@dataclass
class EvalTarget:
    """An evaluation target: ``image`` and ``mask`` are 2D or 3D (z last)."""

    image: np.ndarray
    mask: np.ndarray
    family: str
    name: str


def _slice_tasks(
    vol: np.ndarray,
    mask: np.ndarray,
    family: str,
    rng: np.random.Generator,
    n: int,
    axes: tuple[int, ...] = (0, 1, 2),
    min_area: int = 12,
) -> list[Task]:
    out = []
    for _ in range(n):
        ax = int(rng.choice(axes))
        v, m = np.moveaxis(vol, ax, 2), np.moveaxis(mask, ax, 2)
        area = m.sum((0, 1))
        ok = np.flatnonzero(area >= min_area)
        if len(ok) == 0:
            continue
        z = int(rng.choice(ok))
        ks = [k for k in (z - 3, z - 2, z - 1, z + 1, z + 2, z + 3) if 0 <= k < m.shape[2]]
        nbs = tuple(m[:, :, k] for k in ks)
        nbi = tuple(np.ascontiguousarray(v[:, :, k], np.float32) for k in ks)
        out.append(Task(np.ascontiguousarray(v[:, :, z], np.float32), m[:, :, z].copy(), family, nbs, nbi))
        # the slice just past an end of the structure: propagation must learn to stop there
        nz = np.flatnonzero(area > 0)
        for k in (int(nz.min()) - 1, int(nz.max()) + 1):
            if 0 <= k < m.shape[2] and rng.random() < 0.7:
                k1 = k + 1 if k < nz.min() else k - 1
                img_k = np.ascontiguousarray(v[:, :, k], np.float32)
                nbi = (np.ascontiguousarray(v[:, :, k1], np.float32),)
                out.append(Task(img_k, np.zeros_like(m[:, :, k]), family, (m[:, :, k1],), nbi))
    return out


def _add_eval(
    ev2: list[EvalTarget], ev3: list[EvalTarget], img: np.ndarray, m: np.ndarray, family: str, name: str
) -> None:
    """A 3D evaluation target and its 2D one: the slice (last axis) with the largest cross-section."""
    z = int(np.argmax(m.sum((0, 1))))
    ev2.append(EvalTarget(img[:, :, z], m[:, :, z], family, f"{name} z{z}"))
    ev3.append(EvalTarget(img, m, family, name))


def _unlabelled_slices(vol: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        ax = int(rng.integers(3))
        v = np.moveaxis(vol, ax, 2)
        z = int(rng.integers(v.shape[2] // 4, max(v.shape[2] // 4 + 1, 3 * v.shape[2] // 4)))
        s = np.ascontiguousarray(v[:, :, z], np.float32)
        if s.std() > 0 and min(s.shape) >= 16:
            out.append(s)
    return out


class Sources:
    """Every array (and file listing) the bank is built from, read from ``data`` (../shared/data) — and
    recorded, so that :meth:`save` can write them to one compressed archive — or replayed from such an archive
    (``Sources(archive=path)``), so that the identical bank can be rebuilt on a machine without the data set
    or medimg's readers' dependencies (e.g. a lent GPU machine: ``interactive_train.py --export-sources``)."""

    def __init__(self, data: Path | None = None, archive: Path | None = None) -> None:
        self.data = data
        self.recorded: dict[str, np.ndarray] = {}
        self.replay: dict[str, np.ndarray] | None = None
        if archive is not None:
            with lzma.open(archive, "rb") as fh:
                self.replay = pickle.load(fh)  # our own archive, written by save()

    def get(self, key: str, read: Callable[[], np.ndarray]) -> np.ndarray:
        if self.replay is not None:
            return self.replay[key]
        arr = np.asarray(read())
        self.recorded[key] = arr
        return arr

    def listing(self, key: str, names: Callable[[], list[str]]) -> list[str]:
        return [str(v) for v in self.get(key, lambda: np.array(names(), dtype=str))]

    def image(self, rel: str) -> np.ndarray:
        import medimg

        return self.get(rel, lambda: medimg.read(Path(self.data or ".") / rel).array)

    def labels(self, rel: str) -> np.ndarray:
        import medimg

        return self.get(rel, lambda: medimg.read_labels(Path(self.data or ".") / rel).array)

    def save(self, path: Path) -> None:
        """Write the recorded arrays to one xz-compressed pickle (about 37 MB for ../shared/data); float arrays
        that hold only integers in the int16 range are stored as int16 (every reader casts to float32, so the
        rebuilt bank is identical)."""
        out = {}
        for key, arr in self.recorded.items():
            if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)) and np.abs(arr).max() < 32767:
                arr = arr.astype(np.int16)
            out[key] = arr
        tmp = path.with_name(path.name + ".tmp")
        with lzma.open(tmp, "wb", preset=6) as fh:
            pickle.dump(out, fh, protocol=5)
        tmp.replace(path)


def load_bank(
    data: Path | None, seed: int = 0, sources: Sources | None = None
) -> tuple[list[Task], list[EvalTarget], list[EvalTarget]]:
    """Training tasks (incl. synthetic), 2D evaluation targets and 3D evaluation targets, from ``data`` or from
    recorded ``sources``."""
    src = sources if sources is not None else Sources(data)
    data = Path(data or ".")  # only read from when not replaying
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    ev2: list[EvalTarget] = []
    ev3: list[EvalTarget] = []
    raw: dict[str, list[np.ndarray]] = {f: [] for f in FAMILIES}

    # brain_mri -----------------------------------------------------------------------------------------------
    ids = src.listing(
        "hippocampus ids",
        lambda: sorted(p.name.replace(".nii.gz", "") for p in (data / "hippocampus" / "imagesTr").glob("*.nii.gz")),
    )
    for i, cid in enumerate(ids):
        img = src.image(f"hippocampus/imagesTr/{cid}.nii.gz").astype(np.float32)
        lab = src.labels(f"hippocampus/labelsTr/{cid}.nii.gz")
        targets = {"anterior": lab == 1, "posterior": lab == 2, "hippocampus": lab > 0}
        if i >= len(ids) - 20:
            for name in ("anterior", "posterior"):
                _add_eval(ev2, ev3, img, targets[name], "brain_mri", f"{cid} {name}")
            continue
        for m in targets.values():
            tasks += _slice_tasks(img, m, "brain_mri", rng, 2)
        if i % 4 == 0:
            raw["brain_mri"] += _unlabelled_slices(img, rng, 1)
    vol = src.get("voxelmorph vol", lambda: np.load(data / "voxelmorph" / "test_scan.npz")["vol"].astype(np.float32))
    seg = src.get("voxelmorph seg", lambda: np.load(data / "voxelmorph" / "test_scan.npz")["seg"])
    for lab_id in src.get("voxelmorph labels", lambda: np.load(data / "voxelmorph" / "labels.npz")["labels"]):
        tasks += _slice_tasks(vol, seg == lab_id, "brain_mri", rng, 4)
    raw["brain_mri"] += _unlabelled_slices(vol, rng, 20)
    mni = src.image("ants/mni.nii.gz").astype(np.float32)
    mnia = src.labels("ants/mnia.nii.gz")
    for lab_id in rng.permutation(np.unique(mnia)[1:])[:80]:
        tasks += _slice_tasks(mni, mnia == lab_id, "brain_mri", rng, 2)
    raw["brain_mri"] += _unlabelled_slices(mni, rng, 20)
    try:
        tpl = src.get("nilearn template", partial(_nilearn, "template")).astype(np.float32)
        for name in ("gm", "wm"):
            tissue = src.get(f"nilearn {name}", partial(_nilearn, name))
            tasks += _slice_tasks(tpl, tissue, "brain_mri", rng, 8, min_area=200)
    except (ImportError, KeyError):
        print("nilearn is not installed: no MNI tissue maps in the bank (pip install nilearn==0.14.1)")

    # cardiac_mri ---------------------------------------------------------------------------------------------
    files = src.listing("acdc files", lambda: sorted(p.name for p in (data / "acdc").glob("*.h5")))
    patients = sorted({f.split("_")[0] for f in files})
    for f in files:
        img = np.moveaxis(src.get(f"acdc/{f} image", partial(_h5, data / "acdc" / f, "image")), 0, 2)
        img = img.astype(np.float32)  # (H, W, slices)
        lab = np.moveaxis(src.get(f"acdc/{f} label", partial(_h5, data / "acdc" / f, "label")), 0, 2)
        stem = f.removesuffix(".h5")
        targets = {"RV": lab == 1, "myocardium": lab == 2, "LV": lab == 3, "LV+myo": (lab == 2) | (lab == 3)}
        if f.split("_")[0] in patients[-4:]:
            for name in ("RV", "myocardium", "LV"):
                _add_eval(ev2, ev3, img, targets[name], "cardiac_mri", f"{stem} {name}")
            continue
        for m in targets.values():
            tasks += _slice_tasks(img, m, "cardiac_mri", rng, 6, axes=(2,))
        raw["cardiac_mri"].append(img[:, :, img.shape[2] // 2])

    # ct_mr_body ----------------------------------------------------------------------------------------------
    for im_name, seg_name, evaluate in (
        ("example_ct_sm.nii.gz", "example_seg.nii.gz", True),
        ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", False),
    ):
        img = src.image(f"totalsegmentator/{im_name}").astype(np.float32)
        seg = src.labels(f"totalsegmentator/{seg_name}")
        for lab_id in np.unique(seg)[1:]:
            m = seg == lab_id
            if m.sum() < 30:
                continue
            if evaluate and lab_id % 4 == 0:
                _add_eval(ev2, ev3, img, m, "ct_mr_body", f"{im_name} class {lab_id}")
                continue
            tasks += _slice_tasks(img, m, "ct_mr_body", rng, 6)
        raw["ct_mr_body"] += _unlabelled_slices(img, rng, 20)

    # fundus --------------------------------------------------------------------------------------------------

    for jpg in src.listing("chasedb1 files", lambda: sorted(p.name for p in (data / "chasedb1").glob("Image_*.jpg"))):
        stem = jpg.removesuffix(".jpg")
        green = src.get(f"chasedb1/{jpg} green", partial(_chase, data / "chasedb1" / jpg, 1)).astype(np.float32)
        ves = src.get(f"chasedb1/{stem}_1stHO.png", partial(_chase, data / "chasedb1" / f"{stem}_1stHO.png", 0)) > 0
        is_eval = stem[6:8] in ("09", "10")
        for made, (im, m, (x0, y0)) in enumerate(vessel_crops(green, ves, 6 if is_eval else 30, rng), 1):
            if is_eval:
                ev2.append(EvalTarget(im, m, "fundus", f"{stem} crop {x0},{y0}"))
            else:
                tasks.append(Task(im, m, "fundus"))
                if made % 5 == 0:
                    raw["fundus"].append(im)

    # lesions -------------------------------------------------------------------------------------------------
    for case, evaluate in (("brain1", False), ("breast1", True)):
        img = src.image(f"lesions/{case}_image.nrrd").astype(np.float32)
        m = src.labels(f"lesions/{case}_label.nrrd") > 0
        for z in np.flatnonzero(m.sum((0, 1)) >= 4):
            ks = [k for k in (z - 1, z + 1) if 0 <= k < m.shape[2]]
            if evaluate:
                ev2.append(EvalTarget(img[:, :, z], m[:, :, z], "lesions", f"{case} z{z}"))
            else:
                nbs, nbi = tuple(m[:, :, k] for k in ks), tuple(img[:, :, k].copy() for k in ks)
                tasks.append(Task(img[:, :, z].copy(), m[:, :, z].copy(), "lesions", nbs, nbi))
        if evaluate:
            ev3.append(EvalTarget(img, m, "lesions", case))
        raw["lesions"] += [img[:, :, z] for z in range(img.shape[2] // 4, 3 * img.shape[2] // 4, 3)]

    # synthetic -----------------------------------------------------------------------------------------------
    for fam, imgs in raw.items():
        for im in imgs:
            tasks += superpixel_tasks(im, rng, 4, family=f"synthetic:{fam}")
            tasks += blob_tasks(im, rng, 2, family=f"synthetic:{fam}")
    return tasks, ev2, ev3


def _h5(path: Path, key: str) -> np.ndarray:
    import h5py

    with h5py.File(path) as h:
        return np.asarray(h[key])


def vessel_crops(
    img: np.ndarray, ves: np.ndarray, n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """Up to ``n`` 128-pixel crops of ``img`` (2D, or with channels last) with the vessel component of ``ves``
    through a random vessel pixel (>= 40 pixels; at most 5 n tries): (crop, mask, crop origin)."""
    from scipy import ndimage

    out: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
    for _ in range(n * 5):
        if len(out) >= n:
            break
        cand = np.argwhere(ves)
        c = cand[rng.integers(len(cand))]
        x0 = int(np.clip(c[0] - rng.integers(16, 112), 0, img.shape[0] - 128))
        y0 = int(np.clip(c[1] - rng.integers(16, 112), 0, img.shape[1] - 128))
        lab, _ = ndimage.label(ves[x0 : x0 + 128, y0 : y0 + 128], structure=np.ones((3, 3)))
        k = lab[c[0] - x0, c[1] - y0]
        if k == 0 or (lab == k).sum() < 40:
            continue
        out.append((img[x0 : x0 + 128, y0 : y0 + 128].copy(), lab == k, (x0, y0)))
    return out


def _chase(path: Path, channel: int) -> np.ndarray:
    """One channel of a CHASE_DB1 image (green: 1; the vessel maps: 0) at half resolution."""
    import medimg

    a = medimg.read(path).array
    return np.ascontiguousarray((a[..., channel] if a.ndim == 3 else a)[::2, ::2])


def _nilearn(name: str) -> np.ndarray:
    """nilearn's MNI152 template (float32) or its grey / white matter map (probability > 0.5)."""
    from nilearn import datasets as nd

    if name == "template":
        return np.asarray(nd.load_mni152_template().get_fdata(), np.float32)
    loader = nd.load_mni152_gm_template if name == "gm" else nd.load_mni152_wm_template
    return np.asarray(loader().get_fdata()) > 0.5


def lesion_eval_all(data: Path) -> list[EvalTarget]:
    """Every lesion slice (brain1 and breast1): the held-out set for the model trained without lesions."""
    import medimg

    out = []
    les = data / "lesions"
    for case in ("brain1", "breast1"):
        img = medimg.read(les / f"{case}_image.nrrd").array.astype(np.float32)
        m = medimg.read_labels(les / f"{case}_label.nrrd").array > 0
        for z in np.flatnonzero(m.sum((0, 1)) >= 4):
            out.append(EvalTarget(img[:, :, z], m[:, :, z], "lesions", f"{case} z{z}"))
    return out


def training_tasks(tasks: list[Task], held_out: str | None) -> list[Task]:
    """The tasks a model may train on when ``held_out`` is left out (its images and its synthetic tasks);
    synthetic tasks are pooled into one ``synthetic`` family."""
    out = []
    for t in tasks:
        fam = t.family
        if held_out is not None and (fam == held_out or fam == f"synthetic:{held_out}"):
            continue
        if fam.startswith("synthetic:"):
            t = Task(t.image, t.mask, "synthetic")
        out.append(t)
    return out


if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    tr, e2, e3 = load_bank(Path(__file__).parents[2] / "shared" / "data")
    from collections import Counter

    print(Counter(t.family for t in tr), Counter(e.family for e in e2), Counter(e.family for e in e3))
    print(f"{time.perf_counter() - t0:.1f} s")
