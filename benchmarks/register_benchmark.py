"""Registration accuracy and CPU time: medimg (affine; affine + diffeomorphic instance optimisation) vs ANTs SyN
(antspyx, its default ``SyN`` settings) and SimpleITK B-spline (affine + cubic B-spline FFD with a control point
every 16 voxels, correlation on 10 % of the voxels, L-BFGS-B 50 iterations per level, 2 levels), on
the same pairs in the same script.

    python benchmarks/register_benchmark.py --task hippocampus [--pairs 10]
    python benchmarks/register_benchmark.py --task acdc [--pairs 10]
    python benchmarks/register_benchmark.py --task 2d

- ``--methods ...,medimg_learned,medimg_learned_refined`` adds the bundled learned network ``hippocampus_flow``
  (one forward pass, no affine stage; trained by ``benchmarks/register_learned.py`` on other cases) and the same
  refined by instance optimisation started from its velocity (2-1 levels, 30-15 iterations, smoothness 0.5).
- ``hippocampus``: inter-subject pairs of MSD Task04 (1 mm MRI crops, 2 labels); pair i registers case 2i+1 (moving)
  to case 2i (fixed) in sorted order. Labels are propagated from moving to fixed and compared with the fixed labels.
- ``acdc``: end-diastole <-> end-systole of each patient (frame01 <-> frame02; both directions; 3 labels: RV, MYO,
  LV). The HDF5 copy has **no spacing**: everything runs in voxel units (spacing 1 along each axis), so HD95 is in
  voxels and the through-plane axis (10 slices) is treated like the in-plane ones — the same for every method.

- ``2d``: the ANTs brain slices r16 -> r64 (``../shared/data/ants``) and MONAI's CT_2D_head moving -> fixed
  (``../shared/data/monai_testing``): no labels, so the image NCC before/after, folding and time; overlay PNGs
  before/after (fixed magenta, warped green) go to docs/images/register_2d_*.png.

Per method: Dice per label (mean), HD95, % folding voxels (Jacobian determinant <= 0 of the deformable part) and
SDlogJ, and wall-clock seconds per pair (2-core CPU; ANTs and SimpleITK use all cores through ITK's threads).
``antspyx`` is an optional benchmark dependency (``pip install antspyx==0.6.1``; it pins an older SciPy, reinstall
``scipy==1.17.1`` afterwards — it runs with it). Results: benchmarks/results/register_<task>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.image import Image, LabelMap
from medimg.metrics import segmentation_metrics
from medimg.metrics.registration import registration_metrics
from medimg.register import Transform, register_deformable, register_linear

HERE = Path(__file__).parent


def hippocampus_pairs(data: Path, n: int) -> list[tuple[str, Image, LabelMap, Image, LabelMap]]:
    ids = sorted(p.name.replace(".nii.gz", "") for p in (data / "imagesTr").glob("*.nii.gz"))
    out = []
    for i in range(n):
        a, b = ids[2 * i], ids[2 * i + 1]
        out.append(
            (
                f"{b}->{a}",
                medimg.read(data / "imagesTr" / f"{a}.nii.gz"),
                medimg.read_labels(data / "labelsTr" / f"{a}.nii.gz"),
                medimg.read(data / "imagesTr" / f"{b}.nii.gz"),
                medimg.read_labels(data / "labelsTr" / f"{b}.nii.gz"),
            )
        )
    return out


def _acdc(path: Path) -> tuple[Image, LabelMap]:
    import h5py

    with h5py.File(path) as f:
        img = np.asarray(f["image"], np.float32).T  # stored (z, y, x) -> medimg (x, y, z)
        lab = np.asarray(f["label"]).astype(np.uint8).T
    return Image(img, (1.0, 1.0, 1.0)), LabelMap(lab, (1.0, 1.0, 1.0))


def acdc_pairs(data: Path, n: int) -> list[tuple[str, Image, LabelMap, Image, LabelMap]]:
    patients = sorted({p.name.split("_")[0] for p in data.glob("patient*_frame01.h5")})
    out = []
    for pid in patients[: max(1, (n + 1) // 2)]:
        ed, ed_lab = _acdc(data / f"{pid}_frame01.h5")
        es, es_lab = _acdc(data / f"{pid}_frame02.h5")
        out.append((f"{pid} ES->ED", ed, ed_lab, es, es_lab))
        out.append((f"{pid} ED->ES", es, es_lab, ed, ed_lab))
    return out[:n]


def medimg_affine(f: Image, m: Image) -> tuple[Transform, None]:
    tr, _ = register_linear(f, m, "affine", "mi", iterations=100)
    return tr, None


def medimg_deformable(opts: dict[str, Any]) -> Callable[[Image, Image], tuple[Transform, np.ndarray]]:
    def run(f: Image, m: Image) -> tuple[Transform, np.ndarray]:
        tr, _ = register_linear(f, m, "affine", "mi", iterations=100)
        tr, _ = register_deformable(f, m, tr, **opts)
        return tr, tr.field_index_mm()

    return run


def medimg_learned(refine: bool) -> Callable[[Image, Image], tuple[Transform, np.ndarray]]:
    from medimg.register.learned import LearnedRegistration, register_learned

    net = LearnedRegistration("hippocampus_flow")

    def run(f: Image, m: Image) -> tuple[Transform, np.ndarray]:
        tr, _ = register_learned(f, m, net, refine=refine)
        return tr, tr.field_index_mm()

    return run


def sitk_bspline(f: Image, m: Image) -> tuple[Transform, np.ndarray]:
    import SimpleITK as sitk

    from medimg.interop import to_sitk

    lin, _ = register_linear(f, m, "affine", "mi", iterations=100)
    fi = sitk.Cast(to_sitk(f), sitk.sitkFloat32)
    mi = sitk.Resample(sitk.Cast(to_sitk(m), sitk.sitkFloat32), fi, lin.linear, sitk.sitkLinear, 0.0)
    mesh = [max(2, s // 16) for s in fi.GetSize()]
    bs = sitk.BSplineTransformInitializer(fi, mesh, 3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, 0)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=50)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetInitialTransform(bs, inPlace=True)
    reg.Execute(fi, mi)
    disp = sitk.TransformToDisplacementField(
        bs, sitk.sitkVectorFloat64, fi.GetSize(), fi.GetOrigin(), fi.GetSpacing(), fi.GetDirection()
    )
    field = medimg.interop.from_sitk(disp)
    tr = Transform(lin.linear, field)
    return tr, tr.field_index_mm()


def ants_syn(f: Image, m: Image, tmp: Path) -> tuple[Callable[[LabelMap], LabelMap], np.ndarray]:
    import ants

    medimg.write(f, tmp / "f.nii.gz")
    medimg.write(m, tmp / "m.nii.gz")
    fa, ma = ants.image_read(str(tmp / "f.nii.gz")), ants.image_read(str(tmp / "m.nii.gz"))
    r = ants.registration(fa, ma, "SyN", outprefix=str(tmp / "syn_"))
    warp_file = next(t for t in r["fwdtransforms"] if t.endswith(".nii.gz"))
    field = medimg.read(warp_file)  # ITK displacement field, LPS mm, on the fixed grid

    def warp_labels(lab: LabelMap) -> LabelMap:
        medimg.write(lab, tmp / "ml.nii.gz")
        w = ants.apply_transforms(
            fa, ants.image_read(str(tmp / "ml.nii.gz")), r["fwdtransforms"], interpolator="genericLabel"
        )
        ants.image_write(w, str(tmp / "wl.nii.gz"))
        return medimg.read_labels(tmp / "wl.nii.gz")

    return warp_labels, np.asarray(field.array).reshape(*f.shape[: f.ndim], f.ndim) @ np.asarray(f.direction)


def evaluate(f_lab: LabelMap, warped: LabelMap, disp_index_mm: np.ndarray | None, spacing: Any) -> dict[str, Any]:
    labels = sorted(int(v) for v in np.unique(f_lab.array) if v)
    m = segmentation_metrics(warped, f_lab, labels=labels, metrics=("dice", "hd95"))
    out: dict[str, Any] = {
        "dice": {str(k): m[k]["dice"] for k in labels},
        "mean_dice": float(np.mean([m[k]["dice"] for k in labels])),
        "mean_hd95": float(np.nanmean([m[k]["hd95"] for k in labels])),
    }
    if disp_index_mm is not None:
        q = registration_metrics(disp_index_mm, spacing)
        out.update(folding_percent=q["folding_percent"], sdlogj=q["sdlogj"])
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def run_2d(shared: Path) -> None:
    from PIL import Image as PILImage

    from medimg.register.api import quicklook_png, register

    pairs = {
        "ants_r16_to_r64": (shared / "ants" / "r64slice.jpg", shared / "ants" / "r16slice.jpg"),
        "ct_2d_head": (
            shared / "monai_testing" / "CT_2D_head_fixed.mha",
            shared / "monai_testing" / "CT_2D_head_moving.mha",
        ),
    }
    out: dict[str, Any] = {}
    docs = HERE.parent / "docs" / "images"
    docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        for name, (fp, mp) in pairs.items():
            f = medimg.read(fp)
            m = medimg.read(mp)
            f = f.with_array(np.asarray(f.array, np.float32))
            m = Image(np.asarray(m.array, np.float32), f.spacing, f.origin, f.direction) if fp.suffix == ".jpg" else m
            fa = np.asarray(f.array, np.float64)
            row: dict[str, Any] = {"size": list(f.shape), "ncc_before": _ncc(fa, Transform().apply(m, f).array)}
            t0 = time.perf_counter()
            res = register(f, m, "deformable")
            row["medimg_deformable"] = {
                "seconds": time.perf_counter() - t0,
                "ncc_after": _ncc(fa, res.warped.array),
                "folding_percent": res.report["folding_percent"],
                "sdlogj": res.report["sdlogj"],
            }
            t0 = time.perf_counter()
            aff = register(f, m, "affine")
            row["medimg_affine"] = {"seconds": time.perf_counter() - t0, "ncc_after": _ncc(fa, aff.warped.array)}
            t0 = time.perf_counter()
            try:
                import ants

                tmp = Path(td)
                medimg.write(f, tmp / "f.nii.gz")
                medimg.write(m, tmp / "m.nii.gz")
                fa_, ma_ = ants.image_read(str(tmp / "f.nii.gz")), ants.image_read(str(tmp / "m.nii.gz"))
                r = ants.registration(fa_, ma_, "SyN")
                secs = time.perf_counter() - t0
                warped = r["warpedmovout"].numpy()
                row["ants_syn"] = {"seconds": secs, "ncc_after": _ncc(fa, warped)}
            except ImportError:
                row["ants_syn"] = "antspyx not installed"
            before = quicklook_png(f, Transform().apply(m, f), "overlay")
            after = quicklook_png(f, res.warped, "overlay")
            gap = np.full((before.shape[0], 6, 3), 255, np.uint8)
            panel = np.concatenate([before, gap, after], axis=1)
            scale = max(1, 300 // max(panel.shape[:2]))
            png = docs / f"register_2d_{name}.png"
            PILImage.fromarray(panel).resize((panel.shape[1] * scale, panel.shape[0] * scale)).save(png)
            row["figure"] = str(png.relative_to(HERE.parent))
            out[name] = row
            print(name, json.dumps(row, indent=1, default=float), flush=True)
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (HERE / "results" / "register_2d.json").write_text(json.dumps(out, indent=2, default=float) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("hippocampus", "acdc", "2d"), default="hippocampus")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--methods", default="identity,medimg_affine,medimg_deformable,sitk_bspline,ants_syn")
    ap.add_argument("--deformable", default="{}", help="JSON options for register_deformable.")
    args = ap.parse_args()
    shared = HERE.parents[1] / "shared" / "data"
    if args.task == "2d":
        run_2d(args.data or shared)
        return
    data = args.data or shared / args.task
    pairs = (hippocampus_pairs if args.task == "hippocampus" else acdc_pairs)(data, args.pairs)
    opts = json.loads(args.deformable)
    methods = args.methods.split(",")
    per_pair: list[dict[str, Any]] = []
    learned = {}
    if "medimg_learned" in methods:
        learned["medimg_learned"] = medimg_learned(False)
    if "medimg_learned_refined" in methods:
        learned["medimg_learned_refined"] = medimg_learned(True)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name, f, f_lab, m, m_lab in pairs:
            row: dict[str, Any] = {"pair": name}
            for meth in methods:
                t0 = time.perf_counter()
                disp = None
                if meth == "identity":
                    warped = Transform().apply_labels(m_lab, f, "nearest")
                elif meth == "ants_syn":
                    warp_labels, disp = ants_syn(f, m, tmp)
                    secs = time.perf_counter() - t0
                    warped = warp_labels(m_lab)
                else:
                    fn = (
                        learned.get(meth)
                        or {
                            "medimg_affine": medimg_affine,
                            "medimg_deformable": medimg_deformable(opts),
                            "sitk_bspline": sitk_bspline,
                        }[meth]
                    )
                    tr, disp = fn(f, m)
                    secs = time.perf_counter() - t0
                    warped = tr.apply_labels(m_lab, f, "nearest")
                if meth == "identity":
                    secs = 0.0
                row[meth] = {"seconds": secs, **evaluate(f_lab, warped, disp, f.spacing)}
            per_pair.append(row)
            print(
                name,
                "  ".join(f"{k}: Dice {row[k]['mean_dice']:.3f} {row[k]['seconds']:.2f}s" for k in methods),
                flush=True,
            )
    summary = {}
    for meth in methods:
        rows = [r[meth] for r in per_pair]
        summary[meth] = {
            "mean_dice": float(np.mean([r["mean_dice"] for r in rows])),
            "mean_hd95": float(np.nanmean([r["mean_hd95"] for r in rows])),
            "seconds_per_pair": float(np.mean([r["seconds"] for r in rows])),
            "folding_percent": float(np.mean([r.get("folding_percent", 0.0) for r in rows])),
            "max_folding_percent": float(np.max([r.get("folding_percent", 0.0) for r in rows])),
            "sdlogj": float(np.mean([r.get("sdlogj", 0.0) for r in rows])),
        }
    if "ants_syn" in summary and "medimg_deformable" in summary:
        summary["time_ratio_ants_over_medimg_deformable"] = (
            summary["ants_syn"]["seconds_per_pair"] / summary["medimg_deformable"]["seconds_per_pair"]
        )
    print("\nmethod              Dice    HD95    s/pair   %fold   SDlogJ")
    for meth in methods:
        s = summary[meth]
        print(
            f"{meth:18s} {s['mean_dice']:.4f} {s['mean_hd95']:7.2f} {s['seconds_per_pair']:8.2f} "
            f"{s['folding_percent']:7.4f} {s['sdlogj']:.3f}"
        )
    result = {
        "task": args.task,
        "data": str(data),
        "pairs": len(per_pair),
        "deformable_options": opts,
        "summary": summary,
        "per_pair": per_pair,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    (HERE / "results" / f"register_{args.task}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
