"""Reading speed: medimg vs SimpleITK vs nibabel, in one run on the same files.

Times (median of --repeat runs, after one warm-up) reading
  * the TotalSegmentator 20-slice CT DICOM series (JPEG 2000, 512x512x20) -- medimg.read(folder) vs SimpleITK's
    ImageSeriesReader (GDCM file listing + read);
  * the largest NIfTI file in the data folder -- medimg.read vs SimpleITK.ReadImage vs nibabel (to a numpy array).
Each timing includes producing a numpy array of the voxels. Results go to stdout and
benchmarks/results/io_speed.json with the machine description.

    python benchmarks/io_speed.py [--data ../shared/data] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

import medimg


def timeit(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (file cache, imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sitk_series(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "io_speed.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dicom_dir = args.data / "totalsegmentator" / "example_ct_dicom"
    niftis = sorted(args.data.rglob("*.nii*"), key=lambda p: p.stat().st_size)
    largest = niftis[-1]

    # correctness first: the three readers must agree
    ours = medimg.read(dicom_dir)
    assert np.array_equal(ours.array, sitk_series(dicom_dir).T)
    nii = medimg.read(largest)
    assert np.array_equal(nii.array, sitk.GetArrayFromImage(sitk.ReadImage(str(largest))).T)

    rows: list[dict[str, Any]] = []

    def bench(case: str, contenders: dict[str, Callable[[], Any]]) -> None:
        times = {name: timeit(fn, args.repeat) for name, fn in contenders.items()}
        base = times["medimg"]
        for name, t in times.items():
            rows.append({"case": case, "reader": name, "median_s": t, "ratio_vs_medimg": t / base})

    bench(
        f"DICOM series {dicom_dir.name} ({len(list(dicom_dir.iterdir()))} files, {ours.shape})",
        {
            "medimg": lambda: medimg.read(dicom_dir).array,
            "SimpleITK": lambda: sitk_series(dicom_dir),
        },
    )
    bench(
        f"NIfTI {largest.relative_to(args.data)} ({largest.stat().st_size / 1e6:.1f} MB, {nii.shape} {nii.dtype})",
        {
            "medimg": lambda: medimg.read(largest).array,
            "SimpleITK": lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(largest))),
            "nibabel": lambda: np.asanyarray(nib.load(str(largest)).dataobj),
        },
    )
    elapsed = time.perf_counter() - t_start
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"medimg {medimg.__version__} I/O benchmark on {machine}; median of {args.repeat} runs")
    print(f"{'case':78s} {'reader':10s} {'median':>9s} {'x medimg':>9s}")
    for r in rows:
        print(f"{r['case']:78s} {r['reader']:10s} {r['median_s'] * 1000:7.1f}ms {r['ratio_vs_medimg']:8.2f}x")
    print(f"(ratio > 1: slower than medimg)  total benchmark time {elapsed:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "io_speed",
                "medimg_version": medimg.__version__,
                "machine": machine,
                "simpleitk": sitk.Version_VersionString(),
                "nibabel": nib.__version__,
                "repeat": args.repeat,
                "date": time.strftime("%Y-%m-%d"),
                "total_seconds": elapsed,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
