"""Fit the bundled `pneumoniamnist` classifier's domain density (domain.json + domain.npz) on its training images.

Usage: python benchmarks/classify_fit_domain.py [--data ../shared/data/pneumoniamnist/pneumoniamnist.npz]
       [--model src/medimg/classify/models/pneumoniamnist]

Uses only the `train` split (the images the model was trained on); the val split stays untouched for the
domain-guard benchmark (benchmarks/domain_guard.py). Takes a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from medimg.classify import ClassifierModel
    from medimg.classify.data import load_npz
    from medimg.classify.train import fit_domain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/pneumoniamnist/pneumoniamnist.npz")
    ap.add_argument("--model", type=Path, default=ROOT / "src/medimg/classify/models/pneumoniamnist")
    args = ap.parse_args()
    t0 = time.perf_counter()
    m = ClassifierModel(args.model)
    train = load_npz(args.data, "train")
    dom = fit_domain(m.net, train.images, m.input_size, args.model, "chest X-rays (PneumoniaMNIST, 28 x 28)")
    print(f"fitted on {dom.n_train} training images in {time.perf_counter() - t0:.1f} s; thresholds {dom.thresholds}")


if __name__ == "__main__":
    main()
