"""Multi-channel tasks and evaluation targets for the promptable network's channel stem (issue 16).

Training tasks (added to the grey bank of ``interactive_data.py``):

- ``fundus_rgb``: CHASE_DB1 colour fundus photographs, patients 01-08 (the grey bank's training patients), half
  resolution, 128-pixel crops, the target the vessel component through a random vessel pixel (1st annotator);
- ``synthetic:colour``: SLIC colour superpixels and colour-painted blobs on the RGB photographs that ship with
  scikit-image (astronaut, chelsea, coffee, ihc — an immunohistochemistry slide —, rocket, motorcycle, hubble),
  random 96-256 pixel crops.

Evaluation targets (never trained on):

- ``fundus_rgb``: CHASE_DB1 patients 09 and 10 in colour, 12 crops per image (the same kind of crop as training);
- ``ms_new_lesions``: the MS longitudinal set (two FLAIR visits per patient, each resampled onto the common grid of
  ``gt.nii.gz`` with its ITK affine), one target per new/enlarging lesion (3D connected component with >= 20
  voxels on its largest axial slice): that slice, as a 2-channel image (visit 1, visit 2), in a 96-pixel window
  around the lesion. A family no model trained on; a new lesion shows in the second channel only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interactive_data import EvalTarget, _chase, vessel_crops
from medimg.interactive.promptable import PromptableModel
from medimg.interactive.synthetic import blob_tasks, superpixel_tasks
from medimg.interactive.train import Task

GREY_COMMIT = "037ced8"  # the last commit whose bundled 2D promptable model was the grey one this model came from


def load_model(spec: str | Path | None) -> PromptableModel:
    """A 2D promptable model: None / ``"bundled"`` (the package's), a model folder, or ``"git:<commit>"`` — the
    bundled model as committed then, extracted from this clone's history into benchmarks/models/ (e.g.
    ``git:037ced8``: the grey model the multi-channel one was fine-tuned from)."""
    import subprocess

    if spec is None or str(spec) == "bundled":
        return PromptableModel.load(None)
    text = str(spec)
    if not text.startswith("git:"):
        return PromptableModel.load(Path(text))
    commit = text.removeprefix("git:")
    dest = Path(__file__).parent / "models" / f"promptable_git_{commit}"
    if not (dest / "promptable.pt").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).parents[1]
        for name in ("promptable.json", "promptable.pt"):
            blob = subprocess.run(
                ["git", "show", f"{commit}:src/medimg/interactive/models/promptable/{name}"],
                cwd=root,
                capture_output=True,
                check=True,
            ).stdout
            (dest / name).write_bytes(blob)
    return PromptableModel.load(dest)


SKIMAGE_RGB = ("astronaut", "chelsea", "coffee", "ihc", "rocket", "motorcycle_left", "hubble_deep_field")
MS_MIN_AREA = 20


def _chase_rgb(path: Path) -> np.ndarray:
    """A CHASE_DB1 colour photograph (x, y, 3) at half resolution, float32."""
    import medimg

    return np.ascontiguousarray(medimg.read(path).array[::2, ::2].astype(np.float32))


def colour_tasks(data: Path, seed: int = 0) -> tuple[list[Task], list[EvalTarget]]:
    """Training tasks with colour images and the colour fundus evaluation targets."""
    from skimage import data as skdata
    from skimage import io

    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    ev: list[EvalTarget] = []
    for jpg in sorted((data / "chasedb1").glob("Image_*.jpg")):
        stem = jpg.name.removesuffix(".jpg")
        img = _chase_rgb(jpg)
        ves = _chase(data / "chasedb1" / f"{stem}_1stHO.png", 0) > 0
        is_eval = stem[6:8] in ("09", "10")
        for im, m, _ in vessel_crops(img, ves, 12 if is_eval else 30, rng):
            if is_eval:
                ev.append(EvalTarget(im, m, "fundus_rgb", stem))
            else:
                tasks.append(Task(im, m, "fundus_rgb"))
    base = Path(skdata.__file__).parent
    for name in SKIMAGE_RGB:
        path = next(base.glob(f"{name}.*"))
        photo = io.imread(path)[..., :3].astype(np.float32)
        for _ in range(12):
            side = int(rng.integers(96, 257))
            side = min(side, photo.shape[0], photo.shape[1])
            x0 = int(rng.integers(0, photo.shape[0] - side + 1))
            y0 = int(rng.integers(0, photo.shape[1] - side + 1))
            crop = photo[x0 : x0 + side, y0 : y0 + side]
            tasks += superpixel_tasks(crop, rng, 4, "synthetic:colour")
            tasks += blob_tasks(crop, rng, 2, "synthetic:colour")
    return tasks, ev


def _ms_pair(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z, 2) float32: the two FLAIR visits on the common grid of gt.nii.gz, and the new-lesion mask."""
    import SimpleITK as sitk

    from medimg.io import read

    gt = sitk.ReadImage(str(folder / "gt.nii.gz"))
    chans = []
    for study in ("study1", "study2"):
        im = sitk.Cast(sitk.ReadImage(str(folder / f"{study}_FLAIR.nii.gz")), sitk.sitkFloat32)
        tr = sitk.ReadTransform(str(folder / f"{study}_FLAIR_to_common_space.txt"))
        # the file maps common-space points to the study's (ITK's resampling direction): measured, the visits then
        # correlate at 0.96 / 0.87 inside the brain (its inverse: 0.35 / -0.02)
        arr = sitk.GetArrayFromImage(sitk.Resample(im, gt, tr, sitk.sitkLinear, 0.0))
        chans.append(np.transpose(arr, (2, 1, 0)))  # SimpleITK z, y, x -> medimg x, y, z
    mask = read(folder / "gt.nii.gz").array > 0
    return np.stack(chans, -1).astype(np.float32), np.asarray(mask, bool)


def ms_targets(data: Path, window: int = 96) -> list[EvalTarget]:
    """One 2-channel target per new/enlarging MS lesion (see the module docstring)."""
    from scipy import ndimage

    out = []
    for folder in sorted((data / "ms_longitudinal").glob("patient*")):
        vol, mask = _ms_pair(folder)
        assert vol.shape[:3] == mask.shape, (vol.shape, mask.shape)
        lab, k = ndimage.label(mask, np.ones((3, 3, 3)))
        for i in range(1, k + 1):
            comp = lab == i
            areas = comp.sum((0, 1))
            z = int(np.argmax(areas))
            if areas[z] < MS_MIN_AREA:
                continue
            m2 = comp[:, :, z]
            c = np.argwhere(m2).mean(0).round().astype(int)
            lo = np.clip(c - window // 2, 0, np.array(m2.shape) - window)
            sl = (slice(lo[0], lo[0] + window), slice(lo[1], lo[1] + window))
            out.append(
                EvalTarget(
                    vol[sl[0], sl[1], z].copy(), m2[sl].copy(), "ms_new_lesions", f"{folder.name} lesion {i} z{z}"
                )
            )
    return out
