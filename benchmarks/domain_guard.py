"""Domain guard: how often the bundled models refuse in-domain and out-of-domain inputs from ../shared/data.

Usage: python benchmarks/domain_guard.py [--shared ../shared/data] [--out benchmarks/results/domain_guard.json]

* `hippocampus` segmentation model: every hippocampus image (in domain) and real volumes / pictures of other
  body parts, modalities and sizes (out of domain). Only the domain check runs (the same call `medimg segment`
  makes before predicting), so the whole set takes seconds.
* `pneumoniamnist` classifier: the official validation split (in domain; never used to fit the domain) and 2D
  slices / pictures of everything else: brain, abdominal and cardiac MR slices, CT slices, fundus photographs,
  fetal and musculoskeletal ultrasound, a lateral (veterinary) chest radiograph.

Writes a JSON with one row per family (n, refused, example reason) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _read(f: Path) -> Any:
    import medimg

    return medimg.read(f, **({"key": "image"} if f.suffix == ".h5" else {}))


def _slices2d(img: Any, fractions: tuple[float, ...] = (0.3, 0.5, 0.7)) -> list[np.ndarray]:
    """Grey 2D arrays (rows, cols): axial slices at the given fractions of a volume, or the picture itself."""
    from medimg.transforms import select_channel

    a = np.asarray(select_channel(img, "grey").array, dtype=np.float32)  # RGB(A) -> luma; grey stays
    if img.ndim == 2 or a.ndim == 2:
        return [np.ascontiguousarray(a.reshape(a.shape[:2]).T)]
    if a.shape[2] == 1:
        return [np.ascontiguousarray(a[:, :, 0].T)]
    return [np.ascontiguousarray(a[:, :, int(a.shape[2] * f)].T) for f in fractions]


def families(shared: Path) -> dict[str, list[Path]]:
    """Out-of-domain inputs per family from ../shared/data (a few to 40 files each)."""

    def g(pat: str, n: int) -> list[Path]:
        return [Path(p) for p in sorted(glob.glob(str(shared / pat)))[:n]]

    return {
        "CT, abdomen/thorax (TotalSegmentator)": g("totalsegmentator/example_ct*.nii.gz", 5),
        "CT, lung-nodule crops (LIDC-IDRI)": g("lidc_nodules/**/*.nii.gz", 40) or g("lidc_nodules/*.nii.gz", 40),
        "brain MR, whole head (MNI, ch2, OASIS)": g("ants/*.nii.gz", 6),
        "brain FLAIR (MS longitudinal)": g("ms_longitudinal/*/study*_FLAIR.nii.gz", 8),
        "abdominal MR (CHAOS T2-SPIR)": g("chaos_mr/imagesTr/*.nii.gz", 16),
        "abdominal MR (TotalSegmentator)": g("totalsegmentator/example_mr_sm.nii.gz", 1),
        "head MR, 2 mm (MONAI testing)": g("monai_testing/anatomical.nii", 1),
        "cardiac cine MR (ACDC; spacing unknown)": g("acdc/*.h5", 10),
        "tumour MR (brain1, breast1)": g("lesions/*image*.nrrd", 2),
        "CT / MR / US / X-ray DICOM (pydicom, highdicom)": [
            *g("dicom_misc/highdicom/ct_image.dcm", 1),
            *g("dicom_misc/highdicom/dx_image.dcm", 1),
            *g("dicom_misc/pydicom_data/MR2_UNCR.dcm", 1),
            *g("dicom_misc/pydicom_data/US1_UNCR.dcm", 1),
        ],
        "fundus photographs, RGB (CHASE_DB1)": g("chasedb1/*.jpg", 20),
        "fetal ultrasound (HC18)": g("hc18/images/*.png", 40),
        "ultrasound (MONAI testing)": g("monai_testing/ultrasound_confidence_map/*.png", 2),
        "CT head slice pair (MONAI testing, 2D)": g("monai_testing/CT_2D_head_*.mha", 2),
    }


def segmentation_rows(shared: Path) -> tuple[list[dict[str, Any]], float]:
    from medimg.seg import Predictor, resolve_model

    t0 = time.perf_counter()
    dom = Predictor(resolve_model("hippocampus")).domain
    assert dom is not None
    rows = []
    hippo = sorted((shared / "hippocampus" / "imagesTr").glob("*.nii.gz"))
    refused = [f.name for f in hippo if dom.differences([_read(f)])]
    rows.append(
        {
            "family": "hippocampus crops, T1 MR (MSD Task04) — in domain",
            "in_domain": True,
            "n": len(hippo),
            "refused": len(refused),
            "example": ", ".join(refused[:3]),
        }
    )
    for fam, files in families(shared).items():
        reasons = [dom.differences([_read(f)]) for f in files]
        rows.append(
            {
                "family": fam,
                "in_domain": False,
                "n": len(files),
                "refused": sum(bool(r) for r in reasons),
                "example": next((r[0] for r in reasons if r), ""),
            }
        )
    return rows, time.perf_counter() - t0


def classifier_rows(shared: Path) -> tuple[list[dict[str, Any]], float]:
    from medimg.classify import ClassifierModel
    from medimg.classify.data import load_npz

    t0 = time.perf_counter()
    m = ClassifierModel("pneumoniamnist")
    npz = shared / "pneumoniamnist" / "pneumoniamnist.npz"
    rows = []
    for split, note in (
        ("val", "in domain (official val split, not used to fit)"),
        ("train", "in domain (training split, used to fit)"),
    ):
        d = load_npz(npz, split)
        recs = m.check_domain(d.images, force=True)
        rows.append(
            {
                "family": f"PneumoniaMNIST chest X-rays, {split} — {note}",
                "in_domain": True,
                "n": len(recs),
                "refused": sum(not r["in_domain"] for r in recs),
                "max_score": round(max(r["score"] for r in recs), 3),
            }
        )
    fams = dict(families(shared))
    fams["brain MR slices (hippocampus crops)"] = sorted((shared / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:20]
    for fam, files in fams.items():
        scores = []
        for f in files:
            for a in _slices2d(_read(f)):
                scores += [r["score"] for r in m.check_domain(a[None, None].astype(np.float32), force=True)]
        rows.append(
            {
                "family": fam,
                "in_domain": False,
                "n": len(scores),
                "refused": int(np.sum(np.array(scores) > 1)),
                "min_score": round(float(min(scores)), 3) if scores else None,
            }
        )
    return rows, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "domain_guard.json")
    args = ap.parse_args()
    seg, t_seg = segmentation_rows(args.shared)
    cls, t_cls = classifier_rows(args.shared)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "data": str(args.shared),
        "segmentation_model": "hippocampus",
        "segmentation_seconds": round(t_seg, 1),
        "segmentation": seg,
        "classifier": "pneumoniamnist",
        "classifier_seconds": round(t_cls, 1),
        "classification": cls,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for title, rows in (("hippocampus (segmentation)", seg), ("pneumoniamnist (classifier)", cls)):
        print(f"\n### {title}\n\n| input | in domain? | n | refused |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['family']} | {'yes' if r['in_domain'] else 'no'} | {r['n']} | {r['refused']} |")
    print(f"\nsegmentation check {t_seg:.1f} s, classifier check {t_cls:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
