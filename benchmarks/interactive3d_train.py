"""Train the 3D promptable network on the 3D task bank (interactive3d_data.py) on this CPU, for a wall-clock budget.

    python benchmarks/interactive3d_train.py --minutes 35                      # writes the bundled model folder
    python benchmarks/interactive3d_train.py --minutes 2 --out /tmp/p3d        # a quick try

Run it alone: the budget is wall clock, so anything else on the CPU costs training steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _seg_common import machine
from interactive3d_data import load_bank3
from medimg.interactive.promptable3d import Promptable3DModel, bundled_path
from medimg.interactive.train3d import train_promptable3d

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--minutes", type=float, default=35.0)
    ap.add_argument("--out", type=Path, default=bundled_path())
    ap.add_argument("--init", type=Path, default=None, help="continue from this 3D model folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument(
        "--family-weights", default="", help="e.g. brain_mri=2,ct=1 (families not named: 1; drawn in proportion)"
    )
    a = ap.parse_args()
    t0 = time.time()
    tasks, targets = load_bank3(a.data, seed=a.seed)
    print(f"bank: {len(tasks)} training tasks, {len(targets)} held-out targets ({time.time() - t0:.0f} s)")
    init = Promptable3DModel.load(a.init) if a.init else None

    def progress(e: dict) -> None:
        print(f"step {e['step']:5d}  {e['seconds']:7.1f} s  loss {e['loss']:.4f}  lr {e['lr']:.5f}", flush=True)

    weights = {k: float(v) for k, v in (kv.split("=") for kv in a.family_weights.split(",") if kv)}
    model, summary = train_promptable3d(
        tasks,
        time_budget=a.minutes * 60,
        out_dir=a.out,
        seed=a.seed,
        threads=2,
        init=init,
        lr=a.lr,
        family_weights=weights or None,
        progress=progress,
    )
    if init is not None:
        summary["first_run"] = init.meta.get("training")
    summary["machine"] = machine()
    summary["date"] = time.strftime("%Y-%m-%d")
    summary["command"] = " ".join(sys.argv)
    model.save(a.out, extra={"training": summary})
    print(summary)


if __name__ == "__main__":
    main()
