"""Do other tools apply medimg's saved transforms the way medimg does? For real pairs: ``medimg``'s deformable
registration (default settings, as ``medimg register``) writes ``transform/``; the moving labels are then warped
from those files alone by SimpleITK and by ANTs (antspyx), and compared voxel by voxel with medimg's own warps.

    python benchmarks/register_interop.py [--ants-python /path/to/python-with-antspyx] [--brain]

- Nearest neighbour: ``medimg warp --labels --interpolation nearest`` vs SimpleITK ``Resample(...,
  sitkNearestNeighbor)`` with ``CompositeTransform([linear.tfm, DisplacementFieldTransform(displacement.nii.gz)])``
  vs ``ants.apply_transforms(..., transformlist=["displacement.nii.gz", "linear.tfm"], interpolator=
  "nearestNeighbor")``.
- Label interpolation: medimg's ``warped_labels`` (one-hot linear) vs SimpleITK one-hot linear vs ANTs
  ``genericLabel`` (the same rule).
- Controls: the linear part alone, and ANTs with the list reversed — what a reader ignoring the field (as ANTs did
  with the earlier 4D scalar file) or composing in the wrong order gets.

Pairs: MSD hippocampus 006 -> 004 and 008 -> 001 (tests/data, 2 labels), the 2D CT head moving -> fixed
(tests/data; no labels: 3 intensity classes of the moving image, split at its 40 % / 85 % quantiles, serve as labels),
and with ``--brain`` the 1 mm MNI template with its 116-label atlas -> ch2 (../shared/data/ants).

ANTs: antspyx 0.6.3 requires numpy < 2.4 and scipy < 1.16 (medimg pins newer ones), so it lives in its own
environment (``python -m venv /tmp/antsvenv && /tmp/antsvenv/bin/pip install antspyx``) and runs in a subprocess
through ``--ants-python``; without it (and without ``import ants`` working here) the ANTs columns are null.
Results: benchmarks/results/register_interop.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import medimg
from medimg.image import Image, LabelMap
from medimg.register import Transform
from medimg.register.api import register, write_outputs

HERE = Path(__file__).parent
ROOT = HERE.parent
TESTS = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"

ANTS_SNIPPET = """
import json, sys
import ants
for job in json.loads(sys.stdin.read()):
    fx, mv = ants.image_read(job["fixed"]), ants.image_read(job["moving"])
    out = ants.apply_transforms(fx, mv, transformlist=job["transforms"], interpolator=job["interp"],
                                whichtoinvert=[False] * len(job["transforms"]))
    ants.image_write(out, job["out"])
print(ants.__version__)
"""


def pairs(brain: bool) -> list[dict[str, Any]]:
    """Name, fixed path, moving path and moving-label path (None: intensity classes) of each pair."""
    h = TESTS / "hippocampus"
    out: list[dict[str, Any]] = [
        {
            "name": f"hippocampus_{m}->{f}",
            "fixed": h / "imagesTr" / f"hippocampus_{f}.nii.gz",
            "moving": h / "imagesTr" / f"hippocampus_{m}.nii.gz",
            "moving_labels": h / "labelsTr" / f"hippocampus_{m}.nii.gz",
        }
        for m, f in (("006", "004"), ("008", "001"))
    ]
    out.append(
        {
            "name": "CT_2D_head moving->fixed",
            "fixed": TESTS / "CT_2D_head_fixed.mha",
            "moving": TESTS / "CT_2D_head_moving.mha",
            "moving_labels": None,
        }
    )
    if brain:
        a = SHARED / "ants"
        out.append(
            {
                "name": "mni(+mnia)->ch2",
                "fixed": a / "ch2.nii.gz",
                "moving": a / "mni.nii.gz",
                "moving_labels": a / "mnia.nii.gz",
            }
        )
    return out


def intensity_classes(img: Image) -> LabelMap:
    """A 3-label map of a real image without labels: below its 40 % quantile, up to 85 %, above."""
    a = np.asarray(img.array, np.float64)
    lab = np.digitize(a, np.percentile(a, [40, 85])).astype(np.uint8)
    return LabelMap(lab, img.spacing, img.origin, img.direction)


def sitk_transform(folder: Path, dim: int, parts: tuple[str, ...] = ("linear", "displacement_field")) -> Any:
    """The transform built by SimpleITK from the files (transform.json order; ITK applies the last added first)."""
    desc = json.loads((folder / "transform.json").read_text())
    comp = sitk.CompositeTransform(dim)
    for part in reversed(desc["order"]):
        if part["type"] not in parts:
            continue
        if part["type"] == "linear":
            comp.AddTransform(sitk.ReadTransform(str(folder / part["file"])))
        else:
            fld = sitk.ReadImage(str(folder / part["file"]))
            comp.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(fld, sitk.sitkVectorFloat64)))
    return comp


def sitk_warp_labels(labels: Path, fixed: Path, tx: Any, one_hot: bool) -> np.ndarray:
    """Nearest-neighbour or one-hot linear label warping with SimpleITK alone; array in medimg (x, y[, z]) order."""
    mv, fx = sitk.ReadImage(str(labels)), sitk.ReadImage(str(fixed))
    if not one_hot:
        return sitk.GetArrayFromImage(sitk.Resample(mv, fx, tx, sitk.sitkNearestNeighbor, 0)).T
    values = np.unique(sitk.GetArrayFromImage(mv))
    best = None
    arg = None
    for v in values:  # the largest interpolated indicator wins (first label on ties), as medimg does
        w = sitk.GetArrayFromImage(
            sitk.Resample(sitk.Cast(mv == int(v), sitk.sitkFloat32), fx, tx, sitk.sitkLinear, float(v == 0))
        )
        if best is None:
            best, arg = w, np.full(w.shape, v)
        else:
            upd = w > best
            best[upd] = w[upd]
            assert arg is not None
            arg[upd] = v
    assert arg is not None
    return arg.T


def run_ants(python: str | None, jobs: list[dict[str, Any]]) -> str | None:
    """Run ``ants.apply_transforms`` jobs in-process when antspyx imports here, else with ``python``; returns the
    antspyx version, or None when ANTs is not available."""
    try:
        import ants  # noqa: F401

        exe = sys.executable
    except ImportError:
        if python is None:
            return None
        exe = python
    proc = subprocess.run(
        [exe, "-c", ANTS_SNIPPET], input=json.dumps(jobs), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ANTs failed: {proc.stderr.strip().splitlines()[-1]}")
    return proc.stdout.strip().splitlines()[-1]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(100.0 * float(np.mean(a == b)), 3)


def one_pair(p: dict[str, Any], ants_python: str | None, tmp: Path) -> dict[str, Any]:
    fixed, moving = medimg.read(p["fixed"]), medimg.read(p["moving"])
    if p["moving_labels"] is None:
        mlab = intensity_classes(moving)
        mlab_path = medimg.write(mlab, tmp / "moving_labels.nii.gz")
    else:
        mlab, mlab_path = medimg.read_labels(p["moving_labels"]), Path(p["moving_labels"])
    t0 = time.perf_counter()
    res = register(fixed, moving, "deformable", moving_labels=mlab)
    seconds = time.perf_counter() - t0
    out = tmp / "out"
    write_outputs(res, fixed, out)
    tdir = out / "transform"
    ours_lin = medimg.read_labels(out / "warped_labels.nii.gz").array  # medimg's one-hot linear warp
    ours_nn = Transform.load(tdir).apply_labels(mlab, fixed, "nearest").array
    dim = fixed.ndim
    full = sitk_transform(tdir, dim)
    lin_only = sitk_transform(tdir, dim, ("linear",))
    row: dict[str, Any] = {
        "pair": p["name"],
        "grid": list(fixed.shape[:dim]),
        "labels": int(len(np.unique(mlab.array)) - 1),
        "register_seconds": round(seconds, 1),
        "levels_run": res.report["levels_run"],
        "field_bytes": (tdir / "displacement.nii.gz").stat().st_size,
        "sitk_nearest_pct": agreement(sitk_warp_labels(mlab_path, p["fixed"], full, False), ours_nn),
        "sitk_one_hot_pct": agreement(sitk_warp_labels(mlab_path, p["fixed"], full, True), ours_lin),
        "linear_only_nearest_pct": agreement(sitk_warp_labels(mlab_path, p["fixed"], lin_only, False), ours_nn),
    }
    files = json.loads((tdir / "transform.json").read_text())["ants_transformlist"]
    cases = {
        "ants_nearest_pct": (files, "nearestNeighbor", ours_nn),
        "ants_generic_label_pct": (files, "genericLabel", ours_lin),
        "ants_reversed_order_pct": (files[::-1], "genericLabel", ours_lin),
        "ants_linear_only_pct": (["linear.tfm"], "genericLabel", ours_lin),
    }
    jobs = [
        {
            "fixed": str(p["fixed"]),
            "moving": str(mlab_path),
            "transforms": [str(tdir / f) for f in order],
            "interp": interp,
            "out": str(tmp / f"{key}.nii.gz"),
        }
        for key, (order, interp, _) in cases.items()
    ]
    version = run_ants(ants_python, jobs)
    row["antspyx"] = version
    for key, (_, _, ref) in cases.items():
        row[key] = agreement(medimg.read_labels(tmp / f"{key}.nii.gz").array, ref) if version else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ants-python", default=None, help="A Python with antspyx (ANTs runs in a subprocess).")
    ap.add_argument("--brain", action="store_true", help="Also the 1 mm MNI -> ch2 brain pair (minutes).")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "register_interop.json")
    args = ap.parse_args()
    rows = []
    for p in pairs(args.brain):
        with tempfile.TemporaryDirectory() as d:
            row = one_pair(p, args.ants_python, Path(d))
        print(json.dumps(row))
        rows.append(row)
    keys = ("sitk_nearest_pct", "sitk_one_hot_pct", "ants_nearest_pct", "ants_generic_label_pct")
    summary = {k: min((r[k] for r in rows if r[k] is not None), default=None) for k in keys}
    result = {
        "what": "agreement (% of fixed-grid voxels) of labels warped by SimpleITK / ANTs from medimg's transform/ "
        "files with medimg's own warps; controls: linear part only, ANTs list reversed",
        "ants_transformlist": ["displacement.nii.gz", "linear.tfm"],
        "min_agreement_pct": summary,
        "pairs": rows,
        "platform": platform.platform(),
        "simpleitk": sitk.Version_VersionString(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
