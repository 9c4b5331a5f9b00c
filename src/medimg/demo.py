"""``medimg demo``: the main job on the bundled samples, runnable on a fresh clone with no other data."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError


def run_demo(
    out: Path, console: Any = None, print_summary: Callable[[dict[str, Any]], None] | None = None
) -> list[Path]:
    """Inspect both bundled samples, convert them to other formats, write overlays, and verify that every
    written file reads back with identical voxels and geometry. Returns the written paths."""
    import medimg
    from medimg.data import sample, sample_label_names
    from medimg.image import check_same_geometry
    from medimg.info import image_summary
    from medimg.report import overlay_slice
    from medimg.transforms import reorient, resample_to_spacing

    def say(msg: str) -> None:
        if console is not None:
            console.print(msg)

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in ("hippocampus", "ct"):
        img_path, lab_path = sample(name)
        image = medimg.read(img_path)
        labels = medimg.read_labels(lab_path, names=sample_label_names(name) or None)
        check_same_geometry(image, labels, what=f"{name} image and labels")
        say(f"\n[bold]sample {name!r}[/]")
        for obj, path in ((image, img_path), (labels, lab_path)):
            summary = {"path": str(path), **image_summary(obj)}
            if print_summary is not None:
                print_summary(summary)
        targets = [
            (image, out / f"{name}_image.nrrd"),
            (image, out / f"{name}_image.mha"),
            (labels, out / f"{name}_labels.seg.nrrd"),
            (reorient(image, "LPS"), out / f"{name}_image_LPS.nii.gz"),
        ]
        for obj, path in targets:
            medimg.write(obj, path)
            back = medimg.read(path)
            check_same_geometry(obj, back, what=f"written and re-read {path.name}")
            if not np.array_equal(obj.array, back.array):
                raise MedimgError(f"Round trip of {path.name} changed voxel values.")
            written.append(path)
        if name == "ct":
            iso = resample_to_spacing(image, 1.5)
            medimg.write(iso, out / "ct_image_1.5mm.nii.gz")
            written.append(out / "ct_image_1.5mm.nii.gz")
            say(f"resampled CT {image.shape} @ 3 mm -> {iso.shape} @ 1.5 mm")
        png = out / f"{name}_overlay.png"
        medimg.write(overlay_slice(image, labels), png)
        written.append(png)
        say(f"{name}: wrote {len(targets) + 1 + (name == 'ct')} files; all re-read with identical voxels and geometry")
    written += _demo_segmentation(out, say)
    written += _demo_classification(out, say)
    written += _demo_interactive(out, say)
    return written


def _demo_interactive(out: Path, say: Callable[[str], None]) -> list[Path]:
    """Segment the posterior hippocampus of the bundled MRI from one click, then simulated corrective clicks,
    with the bundled promptable model; write the mask and an overlay."""
    import medimg
    from medimg.data import sample
    from medimg.interactive import InteractiveSession
    from medimg.interactive.promptable import bundled_models
    from medimg.interactive.simulate import dice, next_click
    from medimg.report import overlay_slice

    if not bundled_models():
        say("(no bundled promptable model in this build: interactive demo skipped)")
        return []
    img_path, lab_path = sample("hippocampus")
    image = medimg.read(img_path)
    gt = medimg.read_labels(lab_path).array == 2
    s = InteractiveSession(image, "learned")
    say("\n[bold]interactive[/] (bundled promptable model; target: posterior hippocampus, clicks simulated):")
    for i in range(3):
        c = next_click(s.mask, gt)
        if c is None:
            break
        t0 = time.perf_counter()
        m = s.add(c)
        kind = "positive" if c.positive else "negative"
        say(
            f"  click {i + 1} ({kind} at {c.point}): Dice {dice(m, gt):.3f}, "
            f"{int(np.any(m, axis=(0, 1)).sum())} slices, {1000 * (time.perf_counter() - t0):.0f} ms"
        )
    lab = s.label_map()
    mask = medimg.write(lab, out / "interactive_mask.nii.gz")
    png = medimg.write(overlay_slice(image, lab), out / "interactive_overlay.png")
    return [mask, png]


def _demo_segmentation(out: Path, say: Callable[[str], None]) -> list[Path]:
    """Segment the bundled hippocampus MRI with the bundled model: mask, volumes (mL), overlay, Dice."""
    import medimg
    from medimg.data import sample
    from medimg.metrics import segmentation_metrics
    from medimg.report import overlay_slice
    from medimg.seg import Predictor, list_models

    bundled = [m for m in list_models() if m["name"] == "hippocampus"]
    if not bundled:
        say("(no bundled hippocampus model in this build: segmentation demo skipped)")
        return []
    img_path, lab_path = sample("hippocampus")
    image = medimg.read(img_path)
    pred = Predictor(bundled[0]["path"])
    seg = pred(image)
    mask = medimg.write(seg, out / "hippocampus_segmentation.nii.gz")
    png = medimg.write(overlay_slice(image, seg), out / "hippocampus_segmentation_overlay.png")
    ref = medimg.read_labels(lab_path)
    dice = segmentation_metrics(seg, ref, labels=[1, 2], metrics=("dice",))
    vols = seg.volumes_ml()
    say("\n[bold]segmentation[/] (bundled model 'hippocampus', trained by medimg on MSD Task04):")
    for k, name in seg.names.items():
        say(f"  {name:10s} {vols.get(k, 0.0):7.3f} mL   Dice vs the manual label {dice[k]['dice']:.3f}")
    return [mask, png]


def _demo_classification(out: Path, say: Callable[[str], None]) -> list[Path]:
    """Classify 16 bundled PneumoniaMNIST validation X-rays with the bundled model: CSV of probabilities,
    accuracy against their labels, and a Grad-CAM / integrated-gradients figure for the first one."""
    from medimg.classify import ClassifierModel, load_npz, write_probabilities_csv
    from medimg.classify.explain import explanation_figure
    from medimg.registry import bundled_dir

    if not (bundled_dir("classification") / "pneumoniamnist" / "model.pt").exists():
        say("(no bundled pneumoniamnist model in this build: classification demo skipped)")
        return []
    data = load_npz(Path(__file__).parent / "data" / "samples" / "pneumoniamnist_val16.npz", "val")
    model = ClassifierModel("pneumoniamnist")
    probs = model.predict_proba(data.images)
    data.classes = model.classes
    csv_path = out / "pneumoniamnist_probabilities.csv"
    write_probabilities_csv(csv_path, data.ids, probs, model.classes, False, data.labels)
    png = out / "pneumoniamnist_explain.png"
    res = explanation_figure(model, data.images[0], png)
    acc = float(np.mean(probs.argmax(1) == data.labels))
    say("\n[bold]classification[/] (bundled model 'pneumoniamnist', trained by medimg on PneumoniaMNIST):")
    say(f"  16 validation chest X-rays: accuracy {acc:.3f}; probabilities in {csv_path.name}")
    say(f"  image 0: {res['class']} (p = {res['probabilities'][res['class']]:.3f}); Grad-CAM + IG in {png.name}")
    return [csv_path, png]
