"""Model folders and the model registry, plus the end-to-end ``train_model`` used by ``medimg train``.

A model folder holds: ``plan.json`` (editable), ``fingerprint.json``, ``model.pt`` (weights), ``model.json``
(name, labels, channels, medimg version, training settings, validation metrics), ``split.json``,
``training_log.csv`` + ``training_curve.svg``, ``validation.json`` and ``model_card.md``. Bundled models live in
``medimg/seg/models/<name>/`` (weights stored as float16 to stay small).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.errors import MedimgError
from medimg.seg.dataset import SegDataset
from medimg.seg.plan import fingerprint, make_plan, save_json

BUNDLED_DIR = Path(__file__).parent / "models"


def list_models(extra_dirs: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Bundled models — segmentation, classification and diffusion generators — (and model folders inside
    ``extra_dirs``) with their model.json summaries."""
    from medimg.registry import bundled_dir

    out = []
    for base in [BUNDLED_DIR, bundled_dir("classification"), bundled_dir("generation"), *extra_dirs]:
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if (d / "model.json").exists() and (d / "model.pt").exists():
                info = json.loads((d / "model.json").read_text())
                info["path"] = str(d)
                info.setdefault("name", d.name)
                out.append(info)
    return out


def resolve_model(name_or_path: str | Path) -> Path:
    """A segmentation model folder path, or the name of a bundled segmentation model (see :mod:`medimg.registry`)."""
    from medimg.registry import find

    return find(name_or_path, "segmentation")


def validate(
    model_dir: Path, ds: SegDataset, val_ids: Sequence[str], progress: Callable[[Sequence[Any], str], Any] | None = None
) -> dict[str, Any]:
    """Predict the validation cases, compute Dice per class (with and without largest-component post-processing),
    enable post-processing for the classes where it helps, and write validation.json.

    Voxels of the plan's ``ignore_label`` are left out of every metric (set to background in both the prediction
    and the reference before measuring, as nnU-Net does)."""
    import medimg
    from medimg.metrics import segmentation_metrics
    from medimg.seg.predict import Predictor, largest_component

    pred = Predictor(model_dir)
    plan = pred.plan
    pred.plan = {**plan, "postprocessing": {"largest_component": []}}
    classes = sorted(pred.names)
    raw: dict[int, list[float]] = {c: [] for c in classes}
    lcc: dict[int, list[float]] = {c: [] for c in classes}
    per_case = {}
    ignore = plan.get("ignore_label")
    ignored_voxels: dict[str, int] = {}
    t0 = time.perf_counter()
    for cid in progress(list(val_ids), "validating") if progress else val_ids:
        case = ds.case(cid)
        images = [medimg.read(p) for p in case.images]
        ref = medimg.read_labels(case.label)  # type: ignore[arg-type]
        out = pred(images)
        post = out.with_array(largest_component(out.array, classes))
        if ignore is not None:
            mask = ref.array == int(ignore)
            ignored_voxels[cid] = int(mask.sum())
            if mask.any():
                ref = ref.with_array(np.where(mask, 0, ref.array).astype(ref.array.dtype))
                out = out.with_array(np.where(mask, 0, out.array).astype(out.array.dtype))
                post = post.with_array(np.where(mask, 0, post.array).astype(post.array.dtype))
        m = segmentation_metrics(out, ref, labels=classes, metrics=("dice", "hd95"))
        m_lcc = segmentation_metrics(post, ref, labels=classes, metrics=("dice",))
        per_case[cid] = {str(c): {"dice": m[c]["dice"], "hd95": m[c]["hd95"]} for c in classes}
        for c in classes:
            raw[c].append(m[c]["dice"])
            lcc[c].append(m_lcc[c]["dice"])
    seconds = (time.perf_counter() - t0) / max(1, len(val_ids))
    chosen = [c for c in classes if np.nanmean(lcc[c]) > np.nanmean(raw[c]) + 1e-3]
    plan["postprocessing"] = {"largest_component": chosen}
    save_json(plan, model_dir / "plan.json")
    final = {c: (lcc[c] if c in chosen else raw[c]) for c in classes}
    result = {
        "n_cases": len(val_ids),
        "dice": {str(c): float(np.nanmean(final[c])) for c in classes},
        "mean_dice": float(np.nanmean([np.nanmean(final[c]) for c in classes])),
        "dice_without_postprocessing": {str(c): float(np.nanmean(raw[c])) for c in classes},
        "largest_component_classes": chosen,
        "seconds_per_case": seconds,
        **({"ignore_label": int(ignore), "ignored_voxels": ignored_voxels} if ignore is not None else {}),
        "per_case": per_case,
    }
    save_json(result, model_dir / "validation.json")
    return result


def train_model(
    dataset: SegDataset,
    out_dir: Path,
    *,
    time_budget_s: float,
    split: dict[str, list[str]],
    plan: dict[str, Any] | None = None,
    max_iterations: int | None = None,
    name: str | None = None,
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = True,
    on_note: Callable[[str], None] | None = None,
    devices: int = 1,
    oversubscribe: bool = False,
    unlabeled: Path | None = None,
    method: str = "mean-teacher",
) -> dict[str, Any]:
    """Fingerprint, plan (unless given), train, validate and write the complete model folder. Returns model.json,
    plus ``note`` (not stored) when an existing checkpoint was resumed or continued to a new budget.

    ``devices`` > 1 trains data-parallel in that many processes (:mod:`medimg.seg.distributed`; effective batch
    ``devices`` x the plan's batch size; model.json then records ``devices``, ``effective_batch_size`` and the
    ``weights_sha256`` all processes agreed on); more processes than CPU cores are refused unless ``oversubscribe``.

    If the run fails before its first checkpoint (e.g. a case whose image and label sizes differ), whatever it
    created is removed again -- the model folder itself when this run made it -- so no half-made model is left.
    Rerunning on a finished model folder with the same budget retrains nothing and returns the stored model.json.

    ``unlabeled`` (a folder of images without labels) trains semi-supervised (:mod:`medimg.seg.semi`, ``method``
    ``mean-teacher``) in the same budget; its images are checked against the labelled data's domain first."""
    import medimg
    from medimg.seg.train import Trainer, write_training_log

    if devices != 1:
        from medimg.seg.distributed import check_devices

        check_devices(devices, oversubscribe)  # before anything is written
    u_cases = None
    if unlabeled is not None:
        from medimg.seg.semi import METHODS, unlabeled_images

        if method not in METHODS:
            raise MedimgError(f"Unknown semi-supervised method {method!r}; use {' or '.join(METHODS)}.")
        if devices != 1:
            raise MedimgError("--unlabeled trains in one process; drop --devices (or train without --unlabeled).")
        u_cases = unlabeled_images(unlabeled, len(dataset.channels))
    created = _new_dirs(out_dir)
    before = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if plan is None:
            if (out_dir / "plan.json").exists() and resume:
                plan = json.loads((out_dir / "plan.json").read_text())
            else:
                fp = fingerprint(dataset, progress)
                save_json(fp, out_dir / "fingerprint.json")
                plan = make_plan(fp)
        save_json(plan, out_dir / "plan.json")
        save_json(split, out_dir / "split.json")
        if u_cases is not None:
            from medimg.seg.semi import check_unlabeled_domain

            fp_path = out_dir / "fingerprint.json"
            if not fp_path.exists():
                save_json(fingerprint(dataset, progress), fp_path)
            check_unlabeled_domain(json.loads(fp_path.read_text()), u_cases, dataset.name)
        t0 = time.perf_counter()
        if u_cases is not None:
            from medimg.seg.semi import MeanTeacherTrainer

            mt = MeanTeacherTrainer(
                dataset, plan, out_dir, split, time_budget_s, max_iterations, progress, on_epoch, unlabeled=u_cases
            )
            mt.on_note = on_note
            res = mt.run(resume=resume)
        elif devices > 1:
            from medimg.seg.distributed import train_distributed

            res = train_distributed(
                dataset,
                plan,
                out_dir,
                split,
                time_budget_s,
                devices=devices,
                max_iterations=max_iterations,
                resume=resume,
                progress=progress,
                on_epoch=on_epoch,
                on_note=on_note,
            )
        else:
            trainer = Trainer(dataset, plan, out_dir, split, time_budget_s, max_iterations, progress, on_epoch)
            trainer.on_note = on_note  # told what resuming means (continue to a new budget, nothing to do) up front
            res = trainer.run(resume=resume)
    except BaseException:
        _remove_unless_checkpointed(out_dir, before, created)
        raise
    if res["iterations_this_run"] == 0 and (out_dir / "model.json").exists() and (out_dir / "validation.json").exists():
        stored: dict[str, Any] = json.loads((out_dir / "model.json").read_text())
        return {**stored, "note": res["note"]}
    write_training_log(res["log"], out_dir)
    val = validate(out_dir, dataset, split["val"], progress)
    info = {
        "name": name or out_dir.name,
        "task": "segmentation",
        "labels": plan["labels"],
        "channels": plan["channels"],
        "dims": plan["dims"],
        "medimg_version": medimg.__version__,
        "dataset": dataset.name,
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "time_budget_s": time_budget_s,
        "training_seconds": round(res["elapsed_s"], 1),
        "iterations": res["iterations"],
        "precision": res["precision"],
        "seed": plan["training"]["seed"],
        **(
            {"semi_supervised": {"method": method, "n_unlabeled": len(u_cases), "unlabeled": str(unlabeled)}}
            if u_cases is not None
            else {}
        ),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "validation_mean_dice": val["mean_dice"],
        "validation_dice": val["dice"],
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    if devices > 1:
        # every process ended with these weights (train_distributed compares the ranks' digests)
        info.update(
            devices=devices,
            effective_batch_size=devices * int(plan["batch_size"]),
            weights_sha256=res["weight_digests"][0],
        )
    save_json(info, out_dir / "model.json")
    write_domain(out_dir, dataset)
    return {**info, "note": res["note"]} if res["note"] else info


def write_domain(model_dir: Path, dataset: SegDataset) -> None:
    """Write the model's training domain (``domain.json``) from its fingerprint: what predict/segment check every
    input against before predicting (see :mod:`medimg.domain`)."""
    from medimg.domain import ImageDomain

    fp_path = model_dir / "fingerprint.json"
    fp = json.loads(fp_path.read_text()) if fp_path.exists() else {}
    mods = {str(c).upper() for c in fp.get("channels", dataset.channels)}
    modality = (
        "CT" if mods == {"CT"} else ("MR" if mods and mods <= {"MR", "MRI", "T1", "T2", "FLAIR", "ADC"} else None)
    )
    # trained from a given plan, or a fingerprint from before CT models recorded per-case intensity percentiles:
    # fingerprint the training data now (reads every case once)
    if not fp or (modality == "CT" and "case_percentiles" not in fp):
        fp = fingerprint(dataset)
        save_json(fp, fp_path)
    if "spacings" not in fp or "shapes" not in fp:
        return
    ImageDomain.from_fingerprint(fp, f"images of the {dataset.name} dataset", modality).save(model_dir / "domain.json")


def _new_dirs(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, deepest first."""
    out = []
    p = path.absolute()
    while not p.exists():
        out.append(p)
        if p.parent == p:
            break
        p = p.parent
    return out


def _remove_unless_checkpointed(out_dir: Path, before: set[str], created: list[Path]) -> None:
    """Undo a failed ``train_model`` run: unless a checkpoint exists (then the run can resume), remove the entries
    it added to ``out_dir`` and the folders it created."""
    import shutil

    if (out_dir / "checkpoint.pt").exists() or not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        if p.name not in before:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for d in created:  # deepest first; only folders this run made, and only when empty
        try:
            d.rmdir()
        except OSError:
            break


def package_model(model_dir: Path, dest: Path, card: str) -> Path:
    """Copy a trained model's essentials into ``dest`` (weights as float16, no checkpoint or cache) with a model
    card; used to bundle models with the package."""
    import shutil

    import torch

    dest.mkdir(parents=True, exist_ok=True)
    for f in (
        "plan.json",
        "model.json",
        "fingerprint.json",
        "domain.json",
        "split.json",
        "training_log.csv",
        "training_curve.svg",
    ):
        if (model_dir / f).exists():
            shutil.copy(model_dir / f, dest / f)
    val = json.loads((model_dir / "validation.json").read_text())
    val.pop("per_case", None)
    save_json(val, dest / "validation.json")
    state = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, dest / "model.pt")
    (dest / "model_card.md").write_text(card)
    return dest
