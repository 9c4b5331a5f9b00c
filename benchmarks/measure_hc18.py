"""Head circumference from HC18 annotations: `medimg measure ellipse` against the challenge's own values.

    python benchmarks/measure_hc18.py

Data: ../shared/data/hc18 (300 training images): each annotation is the head's ellipse drawn as an outline;
pixel_size_and_HC.csv gives the pixel size (mm) and the head circumference (HC, mm) the organisers computed from the
ellipse they drew. For every annotation the `measure_ellipse` operation (the command's engine) is run with that pixel
size; reported: the difference to the CSV's HC (mean, mean absolute, max), for the outline as drawn and for the
filled head (what a segmentation model outputs), and the time per image. Results:
benchmarks/results/measure_hc18.json.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import medimg
from medimg.image import LabelMap
from medimg.measure import fit_ellipse
from medimg.ops import run

HERE = Path(__file__).parent
DATA = HERE.parents[1] / "shared" / "data" / "hc18"


def main() -> None:
    rows = list(csv.DictReader((DATA / "pixel_size_and_HC.csv").open()))
    d_outline, d_filled, secs = [], [], []
    for r in rows:
        path = DATA / "annotations" / r["filename"].replace(".png", "_Annotation.png")
        ps, hc = float(r["pixel size(mm)"]), float(r["head circumference (mm)"])
        t0 = time.perf_counter()
        res = run("measure_ellipse", {"mask": str(path), "spacing": [ps]})
        secs.append(time.perf_counter() - t0)
        d_outline.append(res.circumference_mm - hc)  # type: ignore[attr-defined]
        a = np.asarray(medimg.read(path).array)
        filled = LabelMap(ndimage.binary_fill_holes(a > 0).astype(np.uint8), spacing=(ps, ps))
        d_filled.append(fit_ellipse(filled).circumference_mm - hc)

    def stats(d: list[float]) -> dict[str, float]:
        x = np.asarray(d)
        return {
            "mean_mm": float(x.mean()),
            "mean_abs_mm": float(np.abs(x).mean()),
            "max_abs_mm": float(np.abs(x).max()),
        }

    out = {
        "data": str(DATA),
        "n": len(rows),
        "outline_as_drawn": stats(d_outline),
        "filled_head": stats(d_filled),
        "seconds_per_image": float(np.mean(secs)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results" / "measure_hc18.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
