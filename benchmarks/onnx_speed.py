"""ONNX Runtime vs PyTorch for the bundled segmentation models: the same images segmented both ways.

    python benchmarks/onnx_speed.py [--repeats 5]

For each bundled model: the network is exported (`medimg models export MODEL -o FILE.onnx`, verified against
PyTorch at export), then one real image per model is segmented ``--repeats`` times with `Predictor(model)` (PyTorch,
the model's recorded precision: bf16 autocast where it trained in bf16), `Predictor(model, precision="fp32")`
(PyTorch float32) and `Predictor(model, onnx=FILE)` (ONNX Runtime, float32), in turn; the median wall time of each,
the ratios, and the share of voxels on which the ONNX and PyTorch label maps agree are reported. All use every
core of this process (torch.get_num_threads()).

Images: hippocampus tests/data/hippocampus/imagesTr/hippocampus_001; nodule tests/data/lidc/images (first);
fetal-head tests/data/hc18/338_HC.png (0.1434 mm); vessels tests/data/chasedb1/Image_06L.jpg; abdomen
../shared/data/chaos_mr chaos_08 (a held-out volume), when present.

Results: benchmarks/results/onnx_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import medimg

try:
    from _seg_common import machine
except ImportError:  # run as a module
    from benchmarks._seg_common import machine

HERE = Path(__file__).parent
ROOT = HERE.parent
TESTS = ROOT / "tests" / "data"
SHARED = HERE.parents[1] / "shared" / "data"


def inputs() -> dict[str, object]:
    out: dict[str, object] = {
        "hippocampus": medimg.read(TESTS / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"),
        "nodule": medimg.read(sorted((TESTS / "lidc" / "images").glob("*.nii.gz"))[0]),
        "fetal-head": medimg.read(TESTS / "hc18" / "338_HC.png", spacing=(0.143367443766, 0.143367443766)),
        "vessels": medimg.read(TESTS / "chasedb1" / "Image_06L.jpg"),
    }
    chaos = SHARED / "chaos_mr" / "imagesTr" / "chaos_08.nii.gz"
    if chaos.exists() and (ROOT / "src" / "medimg" / "seg" / "models" / "abdomen").is_dir():
        out["abdomen"] = medimg.read(chaos)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    from medimg.seg import Predictor, resolve_model
    from medimg.seg.onnx_export import export_onnx

    t_all = time.perf_counter()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, img in inputs().items():
            model = resolve_model(name)
            t0 = time.perf_counter()
            exp = export_onnx(model, Path(tmp) / f"{name}.onnx")
            export_s = time.perf_counter() - t0
            p_torch = Predictor(model)
            p_fp32 = Predictor(model, precision="fp32")
            p_onnx = Predictor(model, onnx=exp["path"])
            a, b = p_torch(img), p_onnx(img)  # warm-up (and the outputs compared)
            p_fp32(img)
            times: dict[str, list[float]] = {"torch": [], "torch_fp32": [], "onnx": []}
            for _ in range(args.repeats):
                for key, p in (("torch", p_torch), ("torch_fp32", p_fp32), ("onnx", p_onnx)):
                    t0 = time.perf_counter()
                    p(img)
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows[name] = {
                "image_shape": list(img.shape),
                "patch_size": exp["patch_size"],
                "torch_precision": p_torch.precision,
                "export_seconds": export_s,
                "export_relative_diff": exp["relative_diff"],
                "torch_seconds_median": med["torch"],
                "torch_fp32_seconds_median": med["torch_fp32"],
                "onnx_seconds_median": med["onnx"],
                "speedup_onnx_vs_torch": med["torch"] / med["onnx"],
                "speedup_onnx_vs_torch_fp32": med["torch_fp32"] / med["onnx"],
                "label_agreement": float(np.mean(a.array == b.array)),
                "onnx_file_mb": Path(exp["path"]).stat().st_size / 1e6,
            }
            print(name, json.dumps(rows[name]), flush=True)
    result = {
        "benchmark": "onnx_speed",
        "medimg_version": medimg.__version__,
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "repeats": args.repeats,
        "models": rows,
        "total_seconds": time.perf_counter() - t_all,
    }
    (HERE / "results" / "onnx_speed.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
