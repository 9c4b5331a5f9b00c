"""Mask-conditioned diffusion on HC18 fetal-head ultrasound: an image from a head mask, as DiffBoost does.

    python benchmarks/generate_hc18.py [--time-budget 10m] [--size 64x96] [--work /tmp/medimg_gen_hc18]

Data: ../shared/data/hc18 (300 images, 800x540 PNG, the head drawn as an ellipse outline, filled here with
scipy's binary_fill_holes). Images and masks are reduced 5x (160x108 pixels, area-averaged / nearest) and written as a
2D segmentation dataset (imagesTr/, labelsTr/, dataset.json, PNG). The first 250 (sorted by name) train the
generator (``medimg generate train``, mask mode); the last 50 are held out. For each held-out mask one image is drawn
(``medimg generate -m MODEL --mask MASKS``, DDIM 50 steps, guidance 1) and judged:

* FRD v1 of the generated images to the 50 held-out real images, against FRD of 50 real training images to them
  (the goal of issue 19 for class-conditional samples, applied here): the ratio of the Fréchet distances;
* mask fidelity: the mean intensity inside the head minus outside it (the skull and brain are brighter than the
  surrounding fluid and background in these images), per generated image and per real image of the same mask,
  and their correlation over the 50 masks;
* memorisation against the 250 training images.

Writes benchmarks/results/generate_hc18.json and docs/images/generate_hc18.png (mask, real, generated).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import medimg
from medimg.image import Image, LabelMap

HERE = Path(__file__).parent
SHARED = HERE.parents[1] / "shared" / "data" / "hc18"
RESULTS = HERE / "results" / "generate_hc18.json"
FACTOR = 5


def build(work: Path) -> tuple[Path, Path, Path, list[str]]:
    """The reduced 2D dataset (train), the held-out masks and images folders; returns the held-out names."""
    files = sorted((SHARED / "images").glob("*.png"))
    ds, masks, real = work / "train_ds", work / "heldout_masks", work / "heldout_images"
    for d in (ds / "imagesTr", ds / "labelsTr", masks, real):
        d.mkdir(parents=True)
    held = []
    for i, f in enumerate(files):
        img = np.asarray(medimg.read(f).array, np.float32)
        if img.ndim == 3:
            img = img.mean(-1)
        ann = np.asarray(medimg.read(SHARED / "annotations" / f.name.replace(".png", "_Annotation.png")).array)
        if ann.ndim == 3:
            ann = ann.max(-1)
        mask = ndimage.binary_fill_holes(ann > 0)
        h, w = (img.shape[0] // FACTOR) * FACTOR, (img.shape[1] // FACTOR) * FACTOR
        small = img[:h, :w].reshape(h // FACTOR, FACTOR, w // FACTOR, FACTOR).mean((1, 3))
        msmall = mask[FACTOR // 2 : h : FACTOR, FACTOR // 2 : w : FACTOR].astype(np.uint8)
        im = Image(np.clip(np.round(small), 0, 255).astype(np.uint8), ndim=2)
        lm = LabelMap(msmall, ndim=2, names={1: "head"})
        stem = f.stem
        if i < 250:
            medimg.write(im, ds / "imagesTr" / f"{stem}_0000.png")
            medimg.write(lm, ds / "labelsTr" / f"{stem}.png")
        else:
            medimg.write(im, real / f"{stem}.png")
            medimg.write(lm, masks / f"{stem}.png")
            held.append(stem)
    (ds / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "US"}, "labels": {"background": 0, "head": 1}, "file_ending": ".png"})
    )
    return ds, masks, real, held


def contrast(img: np.ndarray, mask: np.ndarray) -> float:
    return float(img[mask > 0].mean() - img[mask == 0].mean())


def medimg_cli(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "medimg"), *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--size", default="64x96")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medimg_gen_hc18"))
    args = ap.parse_args()
    t_all = time.perf_counter()
    shutil.rmtree(args.work, ignore_errors=True)
    ds, masks, real, held = build(args.work)
    model = args.work / "model"
    t0 = time.perf_counter()
    medimg_cli(
        "generate",
        "train",
        str(ds),
        "-o",
        str(model),
        "--time-budget",
        args.time_budget,
        "--size",
        args.size,
        "--batch-size",
        "16",
    )
    train_s = time.perf_counter() - t0
    gen = args.work / "generated"
    t1 = time.perf_counter()
    medimg_cli("generate", "-m", str(model), "--mask", str(masks), "-n", "1", "-o", str(gen))
    sample_s = time.perf_counter() - t1
    gen_imgs = args.work / "generated_images"
    gen_imgs.mkdir()
    for f in sorted((gen / "imagesTr").iterdir()):
        shutil.copy(f, gen_imgs / f.name)
    train50 = args.work / "train50"
    train50.mkdir()
    for f in sorted((ds / "imagesTr").iterdir())[::5][:50]:
        shutil.copy(f, train50 / f.name)
    from medimg.frd import compute_frd
    from medimg.memorization import memorization_folders

    f_g, _, _ = compute_frd(real, gen_imgs, "v1", workers=os.cpu_count() or 1)
    f_t, _, _ = compute_frd(real, train50, "v1", workers=os.cpu_count() or 1)
    rows = []
    for stem in held:
        m = np.asarray(medimg.read_labels(masks / f"{stem}.png").array)
        r = np.asarray(medimg.read(real / f"{stem}.png").array, np.float32)
        g = np.asarray(medimg.read(next((gen / "imagesTr").glob(f"{stem}_gen000_0000.*"))).array, np.float32)
        rows.append((contrast(r, m), contrast(g, m)))
    cr, cg = np.array(rows).T
    mem = memorization_folders(gen_imgs, ds / "imagesTr")
    info = json.loads((model / "model.json").read_text())
    res = {
        "data": str(SHARED),
        "protocol": "first 250 HC18 images (sorted) train, last 50 held out; images and masks reduced 5x",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model_size": info["size"],
        "training": info["training"],
        "train_wall_s": round(train_s, 1),
        "sampling_wall_s_50_images": round(sample_s, 1),
        "frd": {
            "generated_to_heldout": f_g.value,
            "train_to_heldout": f_t.value,
            "distance_ratio": float(np.exp((f_g.value - f_t.value) / 2)),
        },
        "mask_fidelity": {
            "head_minus_outside_real_mean": float(cr.mean()),
            "head_minus_outside_generated_mean": float(cg.mean()),
            "generated_brighter_inside_share": float(np.mean(cg > 0)),
            "correlation_real_generated": float(np.corrcoef(cr, cg)[0, 1]),
        },
        "memorization": {
            "rate": mem.n_memorized / len(mem.matches),
            "threshold": mem.calibration.threshold,
        },
    }
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    # figure: 4 held-out masks, their real images and the generated ones
    from PIL import Image as PILImage

    tiles = []
    for stem in held[:4]:
        m = np.asarray(medimg.read_labels(masks / f"{stem}.png").array).T * 255
        r = np.asarray(medimg.read(real / f"{stem}.png").array).T
        g = np.asarray(medimg.read(next((gen / "imagesTr").glob(f"{stem}_gen000_0000.*"))).array).T
        tiles.append(np.concatenate([m, r, g], axis=1).astype(np.uint8))
    fig = np.concatenate(tiles, axis=0)
    PILImage.fromarray(fig).save(HERE.parent / "docs" / "images" / "generate_hc18.png")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
