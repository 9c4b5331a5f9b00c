"""``medimg ask`` offline planner: natural-language requests over ../shared/data, scored against the library.

Usage: python benchmarks/agent_requests.py [--shared ../shared/data] [--out benchmarks/results/agent_requests.json]

Every documented request form, several phrasings each, plus requests that must be asked back (a file or a
structure missing, a structure the label map does not have) and requests that must be declined. Each request runs
through :func:`medimg.agent.ask` (offline planner, no language model) in a fresh working folder that holds copies
of ten hippocampus label maps and two images with the MSD ``dataset.json`` label names (anterior, posterior); the
other files are read from the shared data folder, allowed as a second root (``--root``).

The expected answer of every request is computed by the library itself (``medimg.read_labels(...).volumes_ml()``,
``medimg.read``, ``medimg.ops.run`` of the operation a correct plan would use, ``scipy.ndimage`` for lesion counts)
and compared with the numbers in the agent's typed results. A request is **right** when the answer matches (or,
for the ask-back / decline cases, when it asks back / declines), **asked** or **declined** when an answerable
request was asked back or declined instead (not wrong, but not answered), and **wrong** otherwise (a wrong
number, a wrong plan, an error). Writes benchmarks/results/agent_requests.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MSD_LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}


@dataclass
class Case:
    """One request: its form, the text, what a right outcome is, and a check of the answered results."""

    form: str
    request: str
    expect: str = "answered"  # or "question" / "declined"
    check: Callable[[Any], bool] | None = None
    held_out: int = 0  # 0: the suite the planner was tuned on; 1: written after tuning (then tuned once);
    # 2: written after that, run once, never tuned on


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


def build_cases(ws: Path, shared: Path) -> list[Case]:
    """The request suite, with the expected results computed by the library."""
    import medimg
    from medimg.ops import run

    lab = ws / "labels"
    files = sorted(lab.glob("*.nii.gz"))

    def v(path: Path, label: int | None = None) -> float:
        vols = medimg.read_labels(path).volumes_ml()
        return sum(vols.values()) if label is None else vols.get(label, 0.0)

    def volumes_is(path: Path, label: int) -> Callable[[Any], bool]:
        def check(out: Any) -> bool:
            steps = out.plan.steps
            if [s.op for s in steps] != ["volumes"] or label not in [x.label for x in out.plan.structures]:
                return False
            sizes = {s["label"]: s["volume_ml"] for s in out.results["s1"]["cases"][0]["structures"]}
            return close(sizes[label], v(path, label))

        return check

    def all_volumes(path: Path) -> Callable[[Any], bool]:
        def check(out: Any) -> bool:
            got = {s["label"]: s["volume_ml"] for s in out.results["s1"]["cases"][0]["structures"]}
            want = medimg.read_labels(path).volumes_ml()
            return [s.op for s in out.plan.steps] == ["volumes"] and all(close(got[k], want[k]) for k in want)

        return check

    def largest(paths: list[Path], label: int | None, direction: str = "largest") -> Callable[[Any], bool]:
        from medimg.io._atomic import split_ext

        vals = {split_ext(p)[0]: v(p, label) for p in paths}
        best = (max if direction == "largest" else min)(vals, key=lambda k: vals[k])

        def check(out: Any) -> bool:
            last = out.plan.steps[-1]
            res = out.results[last.id]
            ops = [s.op for s in out.plan.steps]
            return (
                last.op == "compare"
                and set(ops[:-1]) == {"volumes"}
                and res["winner"]["case"] == best
                and close(res["winner"]["value"], vals[best])
            )

        return check

    def change(a: Path, b: Path, label: int) -> Callable[[Any], bool]:
        x, y = v(a, label), v(b, label)

        def check(out: Any) -> bool:
            rows = {r["label"]: r for r in out.results["s1"]["structures"]}
            r = rows.get(label)
            return (
                [s.op for s in out.plan.steps] == ["volume_change"]
                and r is not None
                and close(r["change_ml"], y - x)
                and close(r["change_pct"], 100 * (y - x) / x)
                and out.plan.steps[0].params["before"] == str(a)
            )

        return check

    def overlap(a: Path, b: Path) -> Callable[[Any], bool]:
        direct = run("overlap", {"prediction": str(a), "reference": str(b)})

        def check(out: Any) -> bool:
            got = out.results["s1"]["labels"]
            return [s.op for s in out.plan.steps] == ["overlap"] and all(
                close(g["dice"], w.dice) and close(g["hd95_mm"], w.hd95_mm)
                for g, w in zip(got, direct.labels, strict=True)  # type: ignore[attr-defined]
            )

        return check

    def info(path: Path) -> Callable[[Any], bool]:
        img = medimg.read(path)

        def check(out: Any) -> bool:
            r = out.results["s1"]
            return (
                [s.op for s in out.plan.steps] == ["info"]
                and r["shape"] == list(img.shape)
                and np.allclose(r["spacing_mm"], img.spacing)
            )

        return check

    def lesions(path: Path) -> Callable[[Any], bool]:
        from scipy import ndimage

        m = medimg.read_labels(path)
        n = ndimage.label(m.array > 0, np.ones((3,) * m.ndim))[1]
        total = sum(m.volumes_ml().values())

        def check(out: Any) -> bool:
            r = out.results["s1"]
            return (
                [s.op for s in out.plan.steps] == ["count_lesions"]
                and r["count"] == n
                and close(r["total_volume_ml"], total)
            )

        return check

    def segment(image: Path) -> Callable[[Any], bool]:
        def check(out: Any) -> bool:
            (step,) = out.plan.steps
            seg = Path(out.results["s1"]["output"])
            want = medimg.read_labels(seg).volumes_ml()
            got = {s["label"]: s["volume_ml"] for s in out.results["s1"]["structures"]}
            return (
                step.op == "segment"
                and step.params["image"] == str(image)
                and seg.is_file()
                and all(close(got[k], want.get(k, 0.0)) for k in got)
            )

        return check

    def convert(src: Path, ext: str) -> Callable[[Any], bool]:
        shape = medimg.read(src).shape

        def check(out: Any) -> bool:
            dst = Path(out.results["s1"]["output"])
            return dst.name.endswith(ext) and dst.is_file() and medimg.read(dst).shape == shape

        return check

    def classify(npz: Path) -> Callable[[Any], bool]:
        direct = run("classify", {"images": str(npz)})

        def check(out: Any) -> bool:
            got = [im["predicted"] for im in out.results["s1"]["images"]]
            return got == [im.predicted for im in direct.images]  # type: ignore[attr-defined]

        return check

    def register(moving: Path, fixed: Path) -> Callable[[Any], bool]:
        def check(out: Any) -> bool:
            (step,) = out.plan.steps
            metrics = json.loads((Path(out.results["s1"]["output_dir"]) / "metrics.json").read_text())
            return (
                step.op == "register"
                and step.params["moving"] == str(moving)
                and step.params["fixed"] == str(fixed)
                and "labels" in metrics
                and out.results["s1"]["metrics"] == metrics
                and "Dice" in out.answer
            )

        return check

    def spreadsheet(folder: Path, n: int) -> Callable[[Any], bool]:
        def check(out: Any) -> bool:
            csv = Path(out.plan.steps[0].params["output_csv"])
            rows = csv.read_text().splitlines()
            first = rows[1].split(",")
            want = medimg.read_labels(sorted(folder.glob("*.nii.gz"))[0]).volumes_ml()
            return len(rows) == n + 1 and close(float(first[4]), want[1], 1e-5) and rows[0].endswith("Posterior_mL")

        return check

    f0, f1, f2, f3 = files[0], files[1], files[2], files[3]
    r = lambda p: f"labels/{p.name}"  # noqa: E731
    les, brain = shared / "lesions/breast1_label.nrrd", shared / "lesions/brain1_label.nrrd"
    chase1, chase2 = shared / "chasedb1/Image_01L_1stHO.png", shared / "chasedb1/Image_01L_2ndHO.png"
    img1, img3 = ws / "images/hippocampus_001.nii.gz", ws / "images/hippocampus_003.nii.gz"
    pred = ws / "pred_001.nii.gz"
    run("segment", {"image": str(img1), "output": str(pred)})
    ref1 = ws / "labels/hippocampus_001.nii.gz"
    ms = shared / "ms_longitudinal/patient01/gt.nii.gz"
    npz = shared / "pneumoniamnist/pneumoniamnist.npz"
    three = [f0, f1, f2]
    return (
        [
            # volumes of the structures in a label map
            Case("volumes", f"how big is the posterior hippocampus in {r(f0)}?", check=volumes_is(f0, 2)),
            Case("volumes", f"What's the volume of the anterior part of {r(f1)}", check=volumes_is(f1, 1)),
            Case("volumes", f"tell me the size of the posterior in {r(f2)}", check=volumes_is(f2, 2)),
            Case("volumes", f"volumes of the structures in {r(f3)}", check=all_volumes(f3)),
            Case("volumes", f"how many mL is the tumour in {les}?", check=volumes_is(les, 1)),
            Case("volumes", f"measure every label in {brain}", check=all_volumes(brain)),
            # segment and report
            Case("segment", "segment images/hippocampus_001.nii.gz and report the volumes", check=segment(img1)),
            Case(
                "segment",
                "run the hippocampus model on images/hippocampus_003.nii.gz and tell me how big each part is",
                check=segment(img3),
            ),
            Case("segment", "delineate the hippocampus in images/hippocampus_001.nii.gz", check=segment(img1)),
            # overlap
            Case("overlap", f"what is the Dice between {pred.name} and {r(ref1)}?", check=overlap(pred, ref1)),
            Case("overlap", f"compute Dice and HD95 per label for {pred.name} vs {r(ref1)}", check=overlap(pred, ref1)),
            Case("overlap", f"how well do {chase1} and {chase2} agree?", check=overlap(chase1, chase2)),
            Case(
                "overlap",
                f"compare the segmentation {pred.name} with the ground truth {r(ref1)}",
                check=overlap(pred, ref1),
            ),
            # volume change between visits
            Case(
                "volume_change",
                f"how much did the posterior hippocampus change between {r(f0)} and {r(f1)}?",
                check=change(f0, f1, 2),
            ),
            Case(
                "volume_change",
                f"volume change of the anterior part from baseline {r(f1)} to follow-up {r(f2)}, in mL and percent",
                check=change(f1, f2, 1),
            ),
            Case(
                "volume_change",
                f"did the posterior hippocampus shrink between visit 1 ({r(f2)}) and visit 2 ({r(f3)})?",
                check=change(f2, f3, 2),
            ),
            Case(
                "volume_change",
                f"percent growth of label 1 from {r(f3)} to {r(f0)}",
                check=change(f3, f0, 1),
            ),
            # which has the largest
            Case(
                "largest",
                "which of " + ", ".join(r(p) for p in three) + " has the largest posterior hippocampus?",
                check=largest(three, 2),
            ),
            Case("largest", "which case in labels/ has the biggest anterior part", check=largest(files, 1)),
            Case("largest", "find the case with the largest hippocampus in labels/", check=largest(files, None)),
            Case(
                "largest",
                f"which label map has the smallest posterior volume: {r(f0)} or {r(f3)}?",
                check=largest([f0, f3], 2, "smallest"),
            ),
            Case(
                "largest",
                f"between {brain} and {les}, which has the larger lesion?",
                check=largest([brain, les], None),
            ),
            # register and report overlap
            Case(
                "register",
                f"register {img1.relative_to(ws)} (labels {r(ref1)}) to {img3.relative_to(ws)} "
                f"(labels labels/hippocampus_003.nii.gz) and report the label overlap",
                check=register(img1, img3),
            ),
            Case(
                "register",
                "align images/hippocampus_003.nii.gz to images/hippocampus_001.nii.gz, carry "
                f"labels/hippocampus_003.nii.gz onto it and give the Dice against {r(ref1)}",
                check=register(img3, img1),
            ),
            # classify
            Case("classify", f"classify the chest X-rays in {npz}", check=classify(npz)),
            Case("classify", f"do the images in {npz} show pneumonia?", check=classify(npz)),
            Case("classify", f"normal or pneumonia? {npz}", check=classify(npz)),
            # convert
            Case(
                "convert",
                f"convert the DICOM series in {shared / 'totalsegmentator/example_ct_dicom'} to NIfTI",
                check=convert(shared / "totalsegmentator/example_ct_dicom", ".nii.gz"),
            ),
            Case(
                "convert",
                f"save {shared / 'dicom_seg_ct3slice/ct-3slice'} as nrrd",
                check=convert(shared / "dicom_seg_ct3slice/ct-3slice", ".nrrd"),
            ),
            Case(
                "convert",
                f"turn {shared / 'lesions/brain1_image.nrrd'} into brain1.mha",
                check=convert(shared / "lesions/brain1_image.nrrd", "brain1.mha"),
            ),
            # size and spacing
            Case("info", f"what is the size and spacing of {img1.relative_to(ws)}?", check=info(img1)),
            Case(
                "info",
                f"dimensions and voxel size of {shared / 'totalsegmentator/example_ct_sm.nii.gz'}",
                check=info(shared / "totalsegmentator/example_ct_sm.nii.gz"),
            ),
            Case(
                "info",
                f"tell me the resolution of {shared / 'lesions/brain1_image.nrrd'}",
                check=info(shared / "lesions/brain1_image.nrrd"),
            ),
            Case(
                "info",
                f"what's the matrix size of {shared / 'dicom_seg_ct3slice/ct-3slice'}",
                check=info(shared / "dicom_seg_ct3slice/ct-3slice"),
            ),
            # count lesions
            Case("count_lesions", f"how many lesions are in {ms} and how big are they?", check=lesions(ms)),
            Case("count_lesions", f"count the lesions in {brain}", check=lesions(brain)),
            Case("count_lesions", f"number of separate tumours in {les} with their volumes", check=lesions(les)),
            # volumes spreadsheet
            Case(
                "spreadsheet",
                "make a spreadsheet of the volumes for every label map in labels/",
                check=spreadsheet(lab, len(files)),
            ),
            Case(
                "spreadsheet",
                "export a CSV with the structure volumes of all cases in ./labels",
                check=spreadsheet(lab, len(files)),
            ),
            Case(
                "spreadsheet",
                "write a table of volumes per case for labels/ to vols.csv",
                check=spreadsheet(lab, len(files)),
            ),
            # must ask back
            Case("ask back", "what's the volume of the hippocampus in my scan?", "question"),
            Case("ask back", "which case in labels/ has the largest volume?", "question"),
            Case("ask back", f"how big is the liver in {r(f0)}?", "question"),
            Case(
                "ask back",
                "register images/hippocampus_001.nii.gz to images/hippocampus_003.nii.gz and report "
                "the Dice of the labels",
                "question",
            ),
            Case("ask back", "count the lesions please", "question"),
            # must decline
            Case("decline", "train a new segmentation model on labels/", "declined"),
            Case("decline", "delete every file in labels/", "declined"),
            Case("decline", "email these results to my radiologist", "declined"),
            Case("decline", "what's the weather in Boston tomorrow?", "declined"),
        ]
        + [
            Case(c.form, c.request, c.expect, c.check, held_out=1)
            for c in [
                Case("volumes", f"posterior hippocampus volume for {r(f3)} please", check=volumes_is(f3, 2)),
                Case("volumes", f"I need the anterior volume in {r(f0)}", check=volumes_is(f0, 1)),
                Case("volumes", f"could you measure the lesion in {brain}?", check=volumes_is(brain, 1)),
                Case("volumes", f"size of each label in {r(f2)}", check=all_volumes(f2)),
                Case("segment", "please segment images/hippocampus_003.nii.gz for me", check=segment(img3)),
                Case(
                    "segment",
                    "get me anterior and posterior volumes by segmenting images/hippocampus_001.nii.gz",
                    check=segment(img1),
                ),
                Case("overlap", f"Hausdorff 95 and Dice of {pred.name} against {r(ref1)}", check=overlap(pred, ref1)),
                Case(
                    "overlap",
                    f"agreement between the two annotators {chase1} and {chase2}",
                    check=overlap(chase1, chase2),
                ),
                Case("volume_change", f"did the anterior part grow from {r(f0)} to {r(f2)}?", check=change(f0, f2, 1)),
                Case(
                    "volume_change",
                    f"posterior volume difference, first visit {r(f1)}, second visit {r(f3)}",
                    check=change(f1, f3, 2),
                ),
                Case(
                    "largest",
                    "which case in labels/ has the smallest posterior hippocampus?",
                    check=largest(files, 2, "smallest"),
                ),
                Case("largest", f"who has more anterior hippocampus, {r(f1)} or {r(f2)}?", check=largest([f1, f2], 1)),
                Case(
                    "register",
                    f"affinely register images/hippocampus_001.nii.gz to images/hippocampus_003.nii.gz "
                    f"using labels {r(ref1)} and labels/hippocampus_003.nii.gz and tell me the Dice",
                    check=register(img1, img3),
                ),
                Case("classify", f"is there pneumonia in the X-rays of {npz}", check=classify(npz)),
                Case("classify", f"run the pneumonia classifier on {npz}", check=classify(npz)),
                Case(
                    "convert",
                    f"I want {shared / 'lesions/breast1_image.nrrd'} in NIfTI format",
                    check=convert(shared / "lesions/breast1_image.nrrd", ".nii.gz"),
                ),
                Case(
                    "info",
                    f"voxel spacing of {shared / 'ms_longitudinal/patient01/study1_FLAIR.nii.gz'}?",
                    check=info(shared / "ms_longitudinal/patient01/study1_FLAIR.nii.gz"),
                ),
                Case(
                    "info",
                    f"how many slices does {shared / 'totalsegmentator/example_mr_sm.nii.gz'} have and "
                    "what is the pixel size",
                    check=info(shared / "totalsegmentator/example_mr_sm.nii.gz"),
                ),
                Case(
                    "count_lesions",
                    f"how many new lesions in {shared / 'ms_longitudinal/patient03/gt.nii.gz'}?",
                    check=lesions(shared / "ms_longitudinal/patient03/gt.nii.gz"),
                ),
                Case("count_lesions", f"list the lesions in {brain} with their sizes", check=lesions(brain)),
                Case(
                    "spreadsheet",
                    "put the volumes of all cases in labels/ into an Excel-friendly file",
                    check=spreadsheet(lab, len(files)),
                ),
                Case("ask back", "segment the hippocampus", "question"),
                Case("ask back", f"how big is the kidney in {r(f1)}", "question"),
                Case("decline", "make the image sharper", "declined"),
                Case("decline", "book an MRI appointment for next week", "declined"),
            ]
        ]
        + [
            Case(c.form, c.request, c.expect, c.check, held_out=2)
            for c in [
                Case("volumes", f"what volume does the posterior segment occupy in {r(f1)}?", check=volumes_is(f1, 2)),
                Case("volumes", f"give me the mL of every structure in {r(f0)}", check=all_volumes(f0)),
                Case(
                    "segment",
                    "can you auto-segment images/hippocampus_003.nii.gz and give me the volumes?",
                    check=segment(img3),
                ),
                Case("overlap", f"DSC per class for {pred.name} compared to {r(ref1)}", check=overlap(pred, ref1)),
                Case(
                    "volume_change",
                    f"percentage increase of the posterior volume from {r(f2)} to {r(f0)}",
                    check=change(f2, f0, 2),
                ),
                Case(
                    "largest",
                    f"rank {r(f0)}, {r(f1)} and {r(f3)} by anterior volume; which is on top?",
                    check=largest([f0, f1, f3], 1),
                ),
                Case("classify", f"predict normal vs pneumonia for the chest films in {npz}", check=classify(npz)),
                Case(
                    "convert",
                    f"export {shared / 'totalsegmentator/example_ct_dicom'} as a .nii.gz volume",
                    check=convert(shared / "totalsegmentator/example_ct_dicom", ".nii.gz"),
                ),
                Case(
                    "info",
                    f"what orientation and spacing has {shared / 'lesions/breast1_image.nrrd'}",
                    check=info(shared / "lesions/breast1_image.nrrd"),
                ),
                Case("count_lesions", f"how many distinct lesions does {ms} contain?", check=lesions(ms)),
                Case(
                    "spreadsheet",
                    "tabulate the volumes of all the label maps in labels/ as csv",
                    check=spreadsheet(lab, len(files)),
                ),
                Case("ask back", "compare the two segmentations", "question"),
                Case("decline", "write me a discharge letter for this patient", "declined"),
            ]
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "agent_requests.json")
    args = ap.parse_args()
    shared = args.shared.resolve()
    if not shared.is_dir():
        sys.exit(f"{shared} not found: pass --shared PATH to the shared data folder.")
    from medimg.agent import ask
    from medimg.agent.planner import embedding_model, intent_scores

    t0 = time.perf_counter()
    embedding_model()
    intent_scores("warm up")
    load_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agent_requests_") as tmp:
        ws = Path(tmp)
        (ws / "labels").mkdir()
        (ws / "images").mkdir()
        for f in sorted((shared / "hippocampus/labelsTr").glob("*.nii.gz"))[:10]:
            shutil.copy(f, ws / "labels" / f.name)
        for name in ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz"):
            shutil.copy(shared / "hippocampus/imagesTr" / name, ws / "images" / name)
        (ws / "dataset.json").write_text(json.dumps({"name": "Hippocampus", "labels": MSD_LABELS}))
        cwd = Path.cwd()
        os.chdir(ws)
        try:
            cases = build_cases(ws, shared)
            for c in cases:
                t = time.perf_counter()
                status, err = "error", ""
                try:
                    out = ask(c.request, roots=[shared])
                    status = out.status
                    if c.expect == "answered" and status == "answered":
                        ok = bool(c.check(out)) if c.check else True
                        verdict = "right" if ok else "wrong"
                    elif status == c.expect:
                        verdict = "right"
                    elif status in ("question", "declined") and c.expect != "question":
                        verdict = "asked" if status == "question" else "declined"  # not answered, no harm
                    else:
                        verdict = "wrong"
                    answer = out.answer
                except Exception as e:
                    verdict, answer, err = "wrong", "", f"{type(e).__name__}: {e}"
                rows.append(
                    {
                        "form": c.form,
                        "request": c.request.replace(str(shared), "<shared>").replace(str(ws), "<ws>"),
                        "expect": c.expect,
                        "status": status,
                        "verdict": verdict,
                        "seconds": round(time.perf_counter() - t, 2),
                        "answer": answer.replace(str(shared), "<shared>").replace(str(ws), "<ws>")[:400],
                        "error": err[:300],
                    }
                )
                print(f"[{verdict:8s}] {c.form:13s} {rows[-1]['request'][:90]}" + (f"  -- {err[:120]}" if err else ""))
        finally:
            os.chdir(cwd)
    for row, c in zip(rows, cases, strict=True):
        row["held_out"] = c.held_out
    groups = {
        name: {
            k: sum(1 for row in rows if row["held_out"] == ho and row["verdict"] == k)
            for k in ("right", "asked", "declined", "wrong")
        }
        | {"n": sum(1 for row in rows if row["held_out"] == ho)}
        for name, ho in (("tuned", 0), ("held_out_1", 1), ("held_out_2", 2))
    }
    forms: dict[str, dict[str, int]] = {}
    for row in rows:
        d = forms.setdefault(row["form"], {"n": 0, "right": 0, "asked": 0, "declined": 0, "wrong": 0})
        d["n"] += 1
        d[row["verdict"]] += 1
    n = len(rows)
    total = {k: sum(d[k] for d in forms.values()) for k in ("right", "asked", "declined", "wrong")}
    summary = {
        "n": n,
        **total,
        "right_pct": round(100 * total["right"] / n, 1),
        "wrong_pct": round(100 * total["wrong"] / n, 1),
        "model_load_s": round(load_s, 2),
        **groups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "agent_requests",
                "planner": "offline (all-MiniLM-L6-v2 intent matching + slot filling)",
                "data": "../shared/data (hippocampus, lesions, chasedb1, ms_longitudinal, pneumoniamnist, "
                "totalsegmentator, monai_testing)",
                "platform": platform.platform(),
                "summary": summary,
                "forms": forms,
                "requests": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print("\n| form | n | right | asked back | declined | wrong |\n|---|---|---|---|---|---|")
    for k, d in forms.items():
        print(f"| {k} | {d['n']} | {d['right']} | {d['asked']} | {d['declined']} | {d['wrong']} |")
    print(
        f"| **all** | {n} | {total['right']} ({summary['right_pct']} %) | {total['asked']} | {total['declined']} | "
        f"{total['wrong']} |"
    )
    for name, g in groups.items():
        print(
            f"{name}: {g['right']}/{g['n']} right, {g['asked']} asked back, {g['declined']} declined, "
            f"{g['wrong']} wrong"
        )
    print(f"\nembedding model loaded in {load_s:.2f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
