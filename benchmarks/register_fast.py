"""medimg's fast registration preset against ANTs SyN and FireANTs, in one script, on the same pairs.

    python benchmarks/register_fast.py [--task hippocampus|acdc|both] [--peers-python PATH] [--methods M,...]
        [--markdown]

Pairs: those of ``register_benchmark.py`` — 10 inter-subject hippocampus pairs (MSD Task04, 1 mm MRI crops) and 6
ACDC end-diastole <-> end-systole pairs (3 patients, both directions, voxel units: the HDF5 copy has no spacing).
Per method: mean Dice of the warped moving labels vs the fixed labels (hippocampus: anterior/posterior; ACDC:
RV/MYO/LV), % folding voxels (Jacobian determinant <= 0 of the deformation), and the wall-clock seconds of the
registration per pair (images in memory; label warping and metrics excluded, the same for every tool; the first
pair of each tool is run once more before, untimed, for PyTorch / ITK warm-up).

Methods:
- ``medimg_fast``: ``register(..., speed="fast")`` — affine at 4x-2x (30 iterations) then one coarse diffeomorphic
  level (``medimg.register.deformable.fast_options``: 8 Adam steps); ``medimg_fast_nolinear`` (ACDC): the same with
  ``linear_kind="none"`` (cine frames of one acquisition are already aligned).
- ``medimg_default``: ``register(...)`` with its defaults (affine, then 4-2-1 pyramid, 60-40-20 steps).
- ``ants_syn``: antspyx 0.6.1 ``ants.registration(type_of_transform="SyN")`` (affine + SyN, its defaults);
  ``ants_synonly`` (ACDC): ``"SyNOnly"`` (no affine stage, the like-for-like peer of ``medimg_fast_nolinear``).
- ``fireants``: FireANTs 1.5.0 moments + affine + greedy diffeomorphic on the CPU (``benchmarks/_reg_peers.py``);
  ``fireants_fast`` (ACDC): the greedy stage alone at scales 4-2.

ANTs and FireANTs run in a separate environment (FireANTs pins SimpleITK 2.2.1, which medimg does not use):

    python3.11 -m venv ~/reg-peers && ~/reg-peers/bin/pip install torch==2.13.0 fireants==1.5.0 antspyx==0.6.1

then ``--peers-python ~/reg-peers/bin/python`` (default: ``$MEDIMG_REG_PEERS_PYTHON`` or
``/work/envs/reg/bin/python``). Results: ``benchmarks/results/register_fast.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import medimg
from medimg.register.api import register

try:
    from _seg_common import machine
    from register_benchmark import acdc_pairs, evaluate, hippocampus_pairs
except ImportError:  # run as a module
    from benchmarks._seg_common import machine
    from benchmarks.register_benchmark import acdc_pairs, evaluate, hippocampus_pairs

HERE = Path(__file__).parent
SHARED = HERE.parents[1] / "shared" / "data"
MEDIMG = {
    "medimg_fast": {"speed": "fast"},
    "medimg_fast_nolinear": {"speed": "fast", "linear_kind": "none"},
    "medimg_default": {},
}
METHODS = {
    "hippocampus": ["medimg_fast", "medimg_default", "ants_syn", "fireants"],
    "acdc": [
        "medimg_fast",
        "medimg_fast_nolinear",
        "medimg_default",
        "ants_syn",
        "ants_synonly",
        "fireants",
        "fireants_fast",
    ],
}


def run_task(task: str, peers_python: str, only: list[str] | None, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Every method of ``task`` (or only those in ``only``: the other rows are kept from ``previous``, the last
    result of the same task)."""
    pairs = hippocampus_pairs(SHARED / "hippocampus", 10) if task == "hippocampus" else acdc_pairs(SHARED / "acdc", 6)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS[task]}
    methods = METHODS[task]
    if only is not None:
        if previous is None:
            raise SystemExit(f"--methods reruns some rows of an earlier {task} result; run all methods first")
        methods = [m for m in methods if m in only]
        rows.update({m: previous["per_pair"][m] for m in rows if m not in methods})
    # medimg, in this process (warm-up: the first pair once, untimed)
    for meth in [m for m in methods if m in MEDIMG]:
        _, f, _, m, _ = pairs[0]
        register(f, m, "deformable", **MEDIMG[meth])
        for name, f, f_lab, m, m_lab in pairs:
            t0 = time.perf_counter()
            res = register(f, m, "deformable", **MEDIMG[meth])
            secs = time.perf_counter() - t0
            warped = res.transform.apply_labels(m_lab, f, "nearest")
            ev = evaluate(f_lab, warped, None, f.spacing)
            rows[meth].append({"pair": name, "seconds": secs, "folding_percent": res.report["folding_percent"], **ev})
            print(f"{task} {meth:22s} {name:22s} Dice {ev['mean_dice']:.3f} {secs:6.2f} s", flush=True)
    # peers, in their own environment
    peers = [m for m in methods if m not in MEDIMG]
    if peers:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            jobs = []
            for i, (_, f, _, m, m_lab) in enumerate(pairs):
                medimg.write(f, tmp / f"f{i}.nii.gz")
                medimg.write(m, tmp / f"m{i}.nii.gz")
                medimg.write(m_lab, tmp / f"ml{i}.nii.gz")
                for meth in peers:
                    jobs.append(
                        {
                            "method": meth,
                            "pair": i,
                            "fixed": str(tmp / f"f{i}.nii.gz"),
                            "moving": str(tmp / f"m{i}.nii.gz"),
                            "moving_labels": str(tmp / f"ml{i}.nii.gz"),
                            "out_labels": str(tmp / f"{meth}_{i}.nii.gz"),
                        }
                    )
            jobs.sort(key=lambda j: (peers.index(j["method"]), j["pair"]))
            (tmp / "jobs.json").write_text(json.dumps(jobs))
            subprocess.run(
                [peers_python, str(HERE / "_reg_peers.py"), str(tmp / "jobs.json"), str(tmp / "out.json")], check=True
            )
            for r in json.loads((tmp / "out.json").read_text()):
                name, f, f_lab, _, _ = pairs[r["pair"]]
                warped = medimg.read_labels(r["out_labels"])
                if warped.shape != f_lab.shape or not np.allclose(warped.spacing, f_lab.spacing):
                    raise SystemExit(f"{r['method']}: warped labels {warped.shape} not on the fixed grid {f_lab.shape}")
                ev = evaluate(f_lab, warped, None, f.spacing)
                rows[r["method"]].append(
                    {"pair": name, "seconds": r["seconds"], "folding_percent": r["folding_percent"], **ev}
                )
                print(f"{task} {r['method']:22s} {name:22s} Dice {ev['mean_dice']:.3f} {r['seconds']:6.2f} s")
    summary = {
        meth: {
            "mean_dice": float(np.mean([r["mean_dice"] for r in rs])),
            "mean_hd95": float(np.nanmean([r["mean_hd95"] for r in rs])),
            "seconds_per_pair": float(np.mean([r["seconds"] for r in rs])),
            "max_folding_percent": float(np.max([r["folding_percent"] for r in rs])),
        }
        for meth, rs in rows.items()
    }
    syn = summary["ants_syn"]["seconds_per_pair"]
    for s in summary.values():
        s["speedup_vs_ants_syn"] = syn / s["seconds_per_pair"]
    if "ants_synonly" in summary:
        for meth in ("medimg_fast_nolinear", "fireants_fast"):
            summary[meth]["speedup_vs_ants_synonly"] = (
                summary["ants_synonly"]["seconds_per_pair"] / summary[meth]["seconds_per_pair"]
            )
    print(f"\n{task}: method                 Dice    HD95   s/pair  x SyN  %fold")
    for meth, s in summary.items():
        print(
            f"{meth:30s} {s['mean_dice']:.4f} {s['mean_hd95']:6.2f} {s['seconds_per_pair']:7.3f} "
            f"{s['speedup_vs_ants_syn']:6.1f} {s['max_folding_percent']:.4f}"
        )
    return {"pairs": len(pairs), "summary": summary, "per_pair": rows}


LABELS = {
    "medimg_fast": "**medimg `--speed fast`** (affine 4x-2x + one coarse diffeomorphic level)",
    "medimg_fast_nolinear": "**medimg `--speed fast --linear none`** (frames already aligned)",
    "medimg_default": "medimg default (affine + 4-2-1 pyramid)",
    "ants_syn": "ANTs SyN (antspyx 0.6.1 default: affine + SyN)",
    "ants_synonly": "ANTs SyNOnly (no affine)",
    "fireants": "FireANTs 1.5.0 (moments + affine + greedy, CPU)",
    "fireants_fast": "FireANTs greedy 4-2 only (CPU)",
}


def markdown(result: dict[str, Any]) -> str:
    """The README/docs tables of a result file."""
    out = []
    for task in ("hippocampus", "acdc"):
        if task not in result:
            continue
        r = result[task]
        head = f"{task} ({r['pairs']} pairs, {r['date']}, {result['machine']}, {r['total_seconds'] / 60:.1f} min"
        if "rerun" in r:
            head += f"; {', '.join(r['rerun']['methods'])} rerun alone in {r['rerun']['rerun_seconds']:.0f} s"
        head += "):"
        out.append(head + "\n")
        out.append("| method | mean Dice | mean HD95 | max % folding | s / pair | speed-up vs SyN |")
        out.append("|---|---|---|---|---|---|")
        for meth, s in r["summary"].items():
            extra = f" ({s['speedup_vs_ants_synonly']:.1f}x vs SyNOnly)" if "speedup_vs_ants_synonly" in s else ""
            out.append(
                f"| {LABELS.get(meth, meth)} | {s['mean_dice']:.3f} | {s['mean_hd95']:.2f} | "
                f"{s['max_folding_percent']:.4f} | {s['seconds_per_pair']:.3f} | "
                f"{s['speedup_vs_ants_syn']:.1f}x{extra} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=("hippocampus", "acdc", "both"), default="both")
    ap.add_argument("--peers-python", default=os.environ.get("MEDIMG_REG_PEERS_PYTHON", "/work/envs/reg/bin/python"))
    ap.add_argument("--markdown", action="store_true", help="print the tables of the last result file and stop")
    ap.add_argument("--methods", default=None, help="rerun only these methods (comma-separated); keep the other rows")
    args = ap.parse_args()
    out_path = HERE / "results" / "register_fast.json"
    if args.markdown:
        print(markdown(json.loads(out_path.read_text())))
        return
    result: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    for task in ("hippocampus", "acdc") if args.task == "both" else (args.task,):
        t0 = time.perf_counter()
        only = args.methods.split(",") if args.methods else None
        previous = result.get(task)
        result[task] = run_task(task, args.peers_python, only, previous)
        result[task]["total_seconds"] = time.perf_counter() - t0
        if only is not None and previous is not None:  # the kept rows come from the earlier run
            result[task]["rerun"] = {
                "methods": only,
                "rerun_seconds": result[task]["total_seconds"],
                "kept_rows_from_run_of_seconds": previous.get("rerun", {}).get(
                    "kept_rows_from_run_of_seconds", previous["total_seconds"]
                ),
            }
            result[task]["total_seconds"] = result[task]["rerun"]["kept_rows_from_run_of_seconds"]
        result[task]["date"] = time.strftime("%Y-%m-%d")
        result["machine"] = machine()
        out_path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
