"""``medimg deid`` against dicognito (an established PyPI DICOM de-identifier) on the same planted files.

dicognito is a benchmark-only reference, never a medimg dependency. It lives in its own environment:

    python3.11 -m venv /work/envs/deid
    /work/envs/deid/bin/pip install pydicom==3.0.2 dicognito==0.19.0

Data (real DICOM files; identifiers planted by this script into copies, the originals are not touched):
  * tests/data/ct_dicom_gap (4 CT slices) and tests/data/highdicom/ct_image.dcm;
  * when ../shared/data is present: dicom_misc (US, MR, enhanced CT, enhanced MR, DX) and the 20-slice CT series
    totalsegmentator/example_ct_dicom (read back as a volume to compare geometry).
Planted in every file: patient name, ID, birth date, institution name and address, referring / performing
physicians, operators, accession number, phone number, address, other patient IDs, a private tag holding the
patient's name, a person name inside SourceImageSequence (listed in Table E.1-1) and one inside
AnatomicRegionSequence (not listed), and a SourceImageSequence reference to another file's SOP Instance UID.

Both tools get the same input tree; dicognito runs in its venv as a subprocess (one ``Anonymizer`` for every file,
as its command line does), medimg in this process (``medimg.deid.deidentify``, basic profile). Reported per tool:
for each planted identifier, the output files whose bytes still contain it (case-insensitive); original instance
UIDs left in any output byte; whether each study / series / frame-of-reference UID maps to exactly one new UID,
none equal to an input UID; whether references (ReferencedSOPInstanceUID) follow the remapped SOP Instance UIDs;
PixelData identical; geometry attributes identical (and, for the 20-slice series, medimg.read spacing / origin /
direction); private elements left; time per file and the ratio. Writes benchmarks/results/deid_compare.json.

    python benchmarks/deid_compare.py [--deid-python /work/envs/deid/bin/python] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import medimg
from medimg.deid import deidentify
from medimg.io._atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
PLANTED = {
    "PatientName": "Smithson^Johanna",
    "PatientID": "PID884422",
    "PatientBirthDate": "19610317",
    "InstitutionName": "Riverside General Hospital",
    "InstitutionAddress": "12 Harbour Lane Springfield",
    "ReferringPhysicianName": "Okonkwo^Adaeze",
    "PerformingPhysicianName": "Valdivia^Ramon",
    "OperatorsName": "Lindqvist^Sven",
    "AccessionNumber": "ACC7781234",
    "PatientTelephoneNumbers": "+1 555 0147 2290",
    "PatientAddress": "77 Birchwood Crescent",
    "OtherPatientIDs": "MRN5550199",
}
PRIVATE_TEXT = "Note for Johanna Smithson"
NESTED = {
    "PersonName in SourceImageSequence": "Castellano^Bruno",
    "EvaluatorName in AnatomicRegionSequence": "Marchetti^Giulia",
}
#: What is searched for in the output bytes, by what it is.
PROBES = {
    **{k: v for k, v in PLANTED.items()},
    "patient family name": "Smithson",
    "private tag text": PRIVATE_TEXT,
    **NESTED,
}
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns")
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")

DICOGNITO_WORKER = r"""
import json, sys, time
from pathlib import Path
from importlib.metadata import version
import pydicom
from dicognito.anonymizer import Anonymizer
src, out = Path(sys.argv[1]), Path(sys.argv[2])
anon = Anonymizer()
times = {}
for f in sorted(p for p in src.rglob("*") if p.is_file()):
    t0 = time.perf_counter()
    ds = pydicom.dcmread(f)
    anon.anonymize(ds)
    dest = out / f.relative_to(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=False)
    times[f.relative_to(src).as_posix()] = time.perf_counter() - t0
print(json.dumps({"version": version("dicognito"), "pydicom": pydicom.__version__, "times": times}))
"""


def sources(shared: Path) -> list[Path]:
    files = [ROOT / "tests/data/ct_dicom_gap" / n for n in ("7106", "7136", "7166", "7196")]
    files.append(ROOT / "tests/data/highdicom/ct_image.dcm")
    misc = shared / "dicom_misc"
    for rel in (
        "pydicom_data/US1_UNCR.dcm",
        "pydicom_data/MR2_UNCR.dcm",
        "pydicom_data/eCT_Supplemental.dcm",
        "pydicom_data/emri_small.dcm",
        "highdicom/dx_image.dcm",
    ):
        if (misc / rel).is_file():
            files.append(misc / rel)
    series = shared / "totalsegmentator" / "example_ct_dicom"
    if series.is_dir():
        files += sorted(series.iterdir())
    return files


def plant(src_files: list[Path], dest: Path) -> None:
    """Copy the files into ``dest/<folder>/<name>`` with identifiers planted (see the module docstring)."""
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in src_files]
    for i, f in enumerate(src_files):
        ds = pydicom.dcmread(f)
        for kw, v in PLANTED.items():
            setattr(ds, kw, v)
        ds.StudyDate, ds.AcquisitionDate = "20210405", "20210406"
        ds.private_block(0x0011, "ACME HOSPITAL", create=True).add_new(0x01, "LO", PRIVATE_TEXT)
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = sops[(i + 1) % len(sops)]
        ref.PersonName = NESTED["PersonName in SourceImageSequence"]
        ds.SourceImageSequence = Sequence([ref])
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
        region.EvaluatorName = NESTED["EvaluatorName in AnatomicRegionSequence"]
        ds.AnatomicRegionSequence = Sequence([region])
        out = dest / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=False)


def evaluate(src: Path, out: Path) -> dict[str, Any]:
    """Compare one tool's output tree with the planted input tree."""
    rels = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    ins = {r: pydicom.dcmread(src / r) for r in rels}
    outs = {r: pydicom.dcmread(out / r) for r in rels if (out / r).is_file()}
    blobs = {r: (out / r).read_bytes().lower() for r in outs}
    left = {name: sum(s.lower().encode() in b for b in blobs.values()) for name, s in PROBES.items()}
    # (the TotalSegmentator series ships with empty UIDs: empty values are not UIDs and are left out)
    in_uids = {str(d[k].value) for d in ins.values() for k in UID_KEYS if k in d and d[k].value}
    uids_left = sum(any(u.encode() in b for u in in_uids) for b in blobs.values())
    uid_report = {}
    for k in UID_KEYS:
        pairs = {
            (str(ins[r][k].value), str(outs[r][k].value))
            for r in outs
            if k in ins[r] and k in outs[r] and ins[r][k].value
        }
        olds, news = {a for a, _ in pairs}, {b for _, b in pairs}
        uid_report[k] = {
            "originals": len(olds),
            "new": len(news),
            "one_new_per_original": len(olds) == len(news) == len(pairs),
            "none_equal_to_an_input_uid": not (news & in_uids),
        }
    new_sop = {str(ins[r].SOPInstanceUID): str(outs[r].SOPInstanceUID) for r in outs if ins[r].SOPInstanceUID}
    refs_ok = sum(
        str(outs[r].SourceImageSequence[0].ReferencedSOPInstanceUID)
        == new_sop.get(str(ins[r].SourceImageSequence[0].ReferencedSOPInstanceUID))
        for r in outs
        if "SourceImageSequence" in outs[r] and ins[r].SourceImageSequence[0].ReferencedSOPInstanceUID
    )
    n_refs = sum(bool(ins[r].SourceImageSequence[0].ReferencedSOPInstanceUID) for r in outs)
    pixels = sum(ins[r].get("PixelData") == outs[r].get("PixelData") for r in outs)
    geometry = sum(all(ins[r].get(k) == outs[r].get(k) for k in GEOMETRY) for r in outs)
    private = sum(1 for d in outs.values() for e in d.iterall() if e.tag.is_private and e.tag.element > 0xFF)
    shift = {
        r: (str(outs[r].get("StudyDate", "")), str(outs[r].get("AcquisitionDate", ""))) for r in outs
    }  # kept or not
    dates_removed = sum(not a for a, _ in shift.values())
    vol = None
    series = "example_ct_dicom"
    if (src / series).is_dir() and (out / series).is_dir():
        a, b = medimg.read(src / series), medimg.read(out / series)
        vol = {
            "spacing_equal": a.spacing == b.spacing,
            "origin_equal": a.origin == b.origin,
            "direction_equal": bool(np.array_equal(a.direction, b.direction)),
            "voxels_equal": bool(np.array_equal(a.array, b.array)),
        }
    return {
        "files_in": len(rels),
        "files_out": len(outs),
        "planted_left_files": left,
        "planted_left_total": int(sum(left.values())),
        "files_with_an_original_instance_uid": uids_left,
        "uids": uid_report,
        "references_follow_new_sop_uids": f"{refs_ok}/{n_refs}",
        "pixel_data_identical": f"{pixels}/{len(outs)}",
        "geometry_attributes_identical": f"{geometry}/{len(outs)}",
        "volume_geometry_medimg_read": vol,
        "private_elements_left": private,
        "files_with_study_date_removed": dates_removed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deid-python", default="/work/envs/deid/bin/python", help="python of the dicognito venv")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=5, help="runs per tool; the median time is reported")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deid_compare.json"))
    args = ap.parse_args()
    files = sources(Path(args.shared))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        plant(files, t / "in")
        n = len(files)
        t_medimg_runs: list[float] = []
        t_dicog_runs: list[float] = []
        t_dicog_sub: list[float] = []
        rep = None
        for k in range(args.repeats):  # fresh output trees each time; the first run's outputs are evaluated
            t0 = time.perf_counter()
            run_rep = deidentify(t / "in", t / ("medimg" if k == 0 else f"medimg{k}"), mapping=t / "map.json")
            rep = rep or run_rep
            t_medimg_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dest = t / ("dicognito" if k == 0 else f"dicognito{k}")
            proc = subprocess.run(
                [args.deid_python, "-c", DICOGNITO_WORKER, str(t / "in"), str(dest)], capture_output=True, text=True
            )
            t_dicog_sub.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"dicognito failed (is it installed in {args.deid_python}?):\n{proc.stderr[-3000:]}")
            dg = json.loads(proc.stdout.strip().splitlines()[-1])
            t_dicog_runs.append(float(sum(dg["times"].values())))
        t_medimg, t_dicog, t_dicog_total = (float(np.median(x)) for x in (t_medimg_runs, t_dicog_runs, t_dicog_sub))
        assert rep is not None
        results = {"medimg": evaluate(t / "in", t / "medimg"), "dicognito": evaluate(t / "in", t / "dicognito")}
        results["medimg"]["burned_in_flagged"] = [r["path"] for r in rep.review]
    per = {"medimg": t_medimg / n, "dicognito": t_dicog / n}
    out = {
        "what": "medimg deid (PS3.15 basic profile) vs dicognito on the same real DICOM files with planted identifiers",
        "data": [*sorted({f"{f.parent.name}/" for f in files}), f"{n} files"],
        "planted": {**PROBES},
        "results": results,
        "seconds": {
            "repeats": args.repeats,
            "medimg_runs": [round(x, 4) for x in t_medimg_runs],
            "dicognito_runs_in_worker": [round(x, 4) for x in t_dicog_runs],
            "medimg_total": round(t_medimg, 4),
            "dicognito_total_in_worker": round(t_dicog, 4),
            "dicognito_subprocess_total": round(t_dicog_total, 4),
            "medimg_ms_per_file": round(1000 * per["medimg"], 3),
            "dicognito_ms_per_file": round(1000 * per["dicognito"], 3),
            "ratio_medimg_over_dicognito": round(per["medimg"] / per["dicognito"], 3),
            "note": "medians of the runs on a 2-core machine shared with other jobs (measured under load); both "
            "include reading, de-identifying and writing each file; dicognito's time excludes its interpreter start",
        },
        "versions": {
            "medimg": medimg.__version__,
            "pydicom": pydicom.__version__,
            "dicognito": dg["version"],
            "dicognito_pydicom": dg["pydicom"],
            "python": sys.version.split()[0],
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python benchmarks/deid_compare.py",
    }
    with atomic_path(args.out) as p:
        p.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("results", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
