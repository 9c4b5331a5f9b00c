"""Model folders and the model registry, plus the end-to-end ``train_model`` used by ``medimg train``.

A model folder holds: ``plan.json`` (editable), ``fingerprint.json``, ``model.pt`` (weights), ``model.json``
(name, labels, channels, medimg version, training settings, validation metrics), ``split.json``,
``training_log.csv`` + ``training_curve.svg``, ``validation.json`` and ``model_card.md``. Bundled models live in
``medimg/seg/models/<name>/`` (weights stored as float16 to stay small).

When several configurations are trained (``configurations=["3d_fullres", "2d"]``, nnU-Net's names; see
:mod:`medimg.seg.plan`), each is a complete model folder under ``configurations/<name>/`` trained on an equal share
of the budget, and the folder itself holds a copy of the one with the higher validation mean Dice; ``model.json``
then records every candidate's validation Dice under ``"configurations"`` and the winner under ``"configuration"``.
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
from medimg.seg.plan import CONFIGURATIONS, configurations_for, fingerprint, make_plan, save_json

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
    model_dir: Path,
    ds: SegDataset,
    val_ids: Sequence[str],
    progress: Callable[[Sequence[Any], str], Any] | None = None,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Predict the validation cases, compute Dice per class (with and without largest-component post-processing),
    enable post-processing for the classes where it helps, and write validation.json.

    Voxels of the plan's ``ignore_label`` are left out of every metric (set to background in both the prediction
    and the reference before measuring, as nnU-Net does)."""
    import medimg
    from medimg.metrics import segmentation_metrics
    from medimg.seg.predict import Predictor, largest_component

    pred = Predictor(model_dir, device=device)
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
    method: str | None = None,
    configurations: Sequence[str] | None = None,
    device: str | None = "auto",
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
    :data:`~medimg.seg.semi.DEFAULT_METHOD` unless given) in the same budget; its images are checked against the
    labelled data's domain first. A pseudo-label ``method`` (``self-training``, ``copy-paste``) without
    ``unlabeled`` is allowed on a sparse dataset (an ``ignore`` label): it fills the ignored voxels (with
    ``unlabeled`` they stay ignored).

    ``configurations`` (``"auto"``, ``"3d_fullres"``, ``"2d"``, or several; default: the single plan of
    :func:`make_plan`) chooses what is planned when no ``plan`` is given; ``"auto"`` means
    :func:`medimg.seg.plan.configurations_for`. Several are trained one after the other, each on an equal share of
    ``time_budget_s``, and the better one by validation mean Dice is kept (see the module docstring).

    ``device`` (``auto``, ``cpu``, ``cuda[:N]``; :func:`medimg.device.resolve_device`) is where a single training
    process runs (``auto``: a GPU when PyTorch sees one); data-parallel runs (``devices`` > 1) train on CPU cores."""
    import medimg
    from medimg.device import resolve_device
    from medimg.seg.train import Trainer, write_training_log

    dev = resolve_device(device)  # an unavailable GPU is refused before anything is written
    if devices != 1 and dev.type != "cpu":
        if device not in (None, "auto"):
            raise MedimgError("--devices N trains in N CPU processes; drop --device, or train with --devices 1.")
        dev = resolve_device("cpu")

    if devices != 1:
        from medimg.seg.distributed import check_devices

        check_devices(devices, oversubscribe)  # before anything is written
    u_cases = None
    if unlabeled is not None or method is not None:
        from medimg.seg.semi import DEFAULT_METHOD, METHODS, PSEUDO_LABEL_METHODS, unlabeled_images

        method = method or DEFAULT_METHOD
        if method not in METHODS:
            raise MedimgError(f"Unknown semi-supervised method {method!r}; use one of {', '.join(METHODS)}.")
        if unlabeled is None and (method not in PSEUDO_LABEL_METHODS or dataset.ignore_label is None):
            raise MedimgError(
                f"--method {method} needs --unlabeled DIR (a folder of unlabelled images)"
                + (
                    ""
                    if method not in PSEUDO_LABEL_METHODS
                    else ", or a sparse dataset (an 'ignore' label in dataset.json) whose ignored voxels it fills"
                )
                + "; drop --method to train on the labels alone."
            )
        if devices != 1:
            raise MedimgError("Semi-supervised training (--unlabeled / --method) runs in one process; drop --devices.")
        u_cases = unlabeled_images(unlabeled, len(dataset.channels)) if unlabeled is not None else []
    # what this run adds to out_dir is removed again if it fails before its first checkpoint
    created = _new_dirs(out_dir)
    before = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else set()
    if configurations is not None and plan is None:
        try:
            confs, fp = _resolve_configurations(dataset, out_dir, configurations, progress)
        except BaseException:
            _remove_unless_checkpointed(out_dir, before, created)
            raise
        if len(confs) > 1:
            return _train_configurations(
                dataset,
                out_dir,
                confs,
                fp,
                time_budget_s=time_budget_s,
                split=split,
                max_iterations=max_iterations,
                name=name,
                progress=progress,
                on_epoch=on_epoch,
                resume=resume,
                on_note=on_note,
                devices=devices,
                oversubscribe=oversubscribe,
                unlabeled=unlabeled,
                method=method,
                undo=(before, created),
                device=str(dev),
            )
        stored_plan = out_dir / "plan.json"
        if resume and stored_plan.exists():
            have = json.loads(stored_plan.read_text()).get("configuration", "3d_fullres")
            if have != confs[0]:
                raise MedimgError(
                    f"{out_dir} holds a {have} model; --configurations {confs[0]} would train another. Use a new "
                    f"--out folder, or --configurations {have} to continue this one."
                )
        else:
            plan = make_plan(fp, configuration=confs[0])
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
        if u_cases:
            from medimg.seg.semi import check_unlabeled_domain

            fp_path = out_dir / "fingerprint.json"
            if not fp_path.exists():
                save_json(fingerprint(dataset, progress), fp_path)
            check_unlabeled_domain(json.loads(fp_path.read_text()), u_cases, dataset.name)
        t0 = time.perf_counter()
        if u_cases is not None:
            from medimg.seg.semi import MeanTeacherTrainer, PseudoLabelTrainer

            args = (dataset, plan, out_dir, split, time_budget_s, max_iterations, progress, on_epoch)
            semi: Trainer = (
                MeanTeacherTrainer(*args, device=str(dev), unlabeled=u_cases)
                if method == "mean-teacher"
                else PseudoLabelTrainer(
                    *args,
                    device=str(dev),
                    unlabeled=u_cases,
                    copy_paste=method == "copy-paste",
                    fill_ignored=unlabeled is None,  # a sparse dataset's holes: only when asked for on their own
                )
            )
            semi.on_note = on_note
            res = semi.run(resume=resume)
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
            trainer = Trainer(
                dataset, plan, out_dir, split, time_budget_s, max_iterations, progress, on_epoch, device=str(dev)
            )
            trainer.on_note = on_note  # told what resuming means (continue to a new budget, nothing to do) up front
            res = trainer.run(resume=resume)
    except BaseException:
        _remove_unless_checkpointed(out_dir, before, created)
        raise
    if res["iterations_this_run"] == 0 and (out_dir / "model.json").exists() and (out_dir / "validation.json").exists():
        stored: dict[str, Any] = json.loads((out_dir / "model.json").read_text())
        return {**stored, "note": res["note"]}
    write_training_log(res["log"], out_dir)
    val = validate(out_dir, dataset, split["val"], progress, device=str(dev))
    info = {
        "name": name or out_dir.name,
        "task": "segmentation",
        "labels": plan["labels"],
        "channels": plan["channels"],
        "dims": plan["dims"],
        "configuration": plan.get("configuration", "3d_fullres"),
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
            {
                "semi_supervised": {
                    "method": method,
                    "n_unlabeled": len(u_cases),
                    "unlabeled": str(unlabeled) if unlabeled is not None else None,
                    **({"pseudo_label_rounds": res["pseudo_label_rounds"]} if "pseudo_label_rounds" in res else {}),
                }
            }
            if u_cases is not None
            else {}
        ),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "device": str(dev),
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


def _resolve_configurations(
    dataset: SegDataset, out_dir: Path, requested: Sequence[str], progress: Any
) -> tuple[list[str], dict[str, Any]]:
    """Validate the requested configuration names (``auto`` expands); returns them and the dataset's fingerprint,
    left in ``out_dir/fingerprint.json`` (computed once, reused by every configuration)."""
    names = [c.strip() for c in requested if c.strip()]
    bad = [c for c in names if c not in (*CONFIGURATIONS, "auto")]
    if bad or not names:
        raise MedimgError(
            f"Unknown configuration(s) {', '.join(bad) or '(none given)'}; use auto, {', '.join(CONFIGURATIONS)} "
            "or several separated by commas (e.g. 3d_fullres,2d)."
        )
    fp_path = out_dir / "fingerprint.json"
    if fp_path.exists():
        fp = json.loads(fp_path.read_text())
    else:
        fp = fingerprint(dataset, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_json(fp, fp_path)
    out: list[str] = []
    for c in names:
        for x in configurations_for(fp) if c == "auto" else [c]:
            if x not in out:
                out.append(x)
    if len(fp["median_spacing"]) == 2:  # on 2D data both configurations are the same 2D network
        out = ["2d"]
    return out, fp


#: The files of a model folder besides its weights (``model.pt``) and ``validation.json``: copied as they are by
#: :func:`package_model` and from the winning configuration by :func:`_train_configurations`.
MODEL_FILES = (
    "plan.json",
    "model.json",
    "fingerprint.json",
    "domain.json",
    "split.json",
    "training_log.csv",
    "training_curve.svg",
)


def _train_configurations(
    dataset: SegDataset,
    out_dir: Path,
    confs: list[str],
    fp: dict[str, Any],
    *,
    time_budget_s: float,
    split: dict[str, list[str]],
    undo: tuple[set[str], list[Path]],
    **kw: Any,
) -> dict[str, Any]:
    """Train each configuration in ``out_dir/configurations/<name>`` on ``time_budget_s / len(confs)``, then copy
    the one with the highest validation mean Dice into ``out_dir`` (model.json lists all)."""
    import shutil

    from medimg.io._atomic import atomic_path

    share = time_budget_s / len(confs)
    results: dict[str, dict[str, Any]] = {}
    notes = []
    for i, c in enumerate(confs):
        if kw.get("on_note"):
            kw["on_note"](f"configuration {c} ({i + 1} of {len(confs)}): {share / 60:.1f} min of the budget")
        sub = out_dir / "configurations" / c
        if not (sub / "fingerprint.json").exists():  # the shared fingerprint: the domain record is written from it
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy(out_dir / "fingerprint.json", sub / "fingerprint.json")
        stored_plan = sub / "plan.json"
        plan = (
            json.loads(stored_plan.read_text())
            if kw.get("resume", True) and stored_plan.exists()
            else make_plan(fp, configuration=c)
        )
        try:
            info = train_model(dataset, sub, time_budget_s=share, split=split, plan=plan, **kw)
        except BaseException:
            if not any((out_dir / "configurations").glob("*/checkpoint.pt")):  # nothing to resume: no leftovers
                _remove_unless_checkpointed(out_dir, *undo)
            raise
        if info.get("note"):
            notes.append(f"{c}: {info['note']}")
        results[c] = info
    best = max(confs, key=lambda c: (results[c]["validation_mean_dice"], -confs.index(c)))
    src = out_dir / "configurations" / best
    for f in (*MODEL_FILES, "model.pt", "validation.json"):
        if (src / f).exists():
            with atomic_path(out_dir / f) as tmp:
                shutil.copy(src / f, tmp)
    info = {
        **{k: v for k, v in results[best].items() if k != "note"},
        "name": kw.get("name") or out_dir.name,
        "configuration": best,
        "configurations": {
            c: {
                "validation_mean_dice": r["validation_mean_dice"],
                "validation_dice": r["validation_dice"],
                "training_seconds": r["training_seconds"],
                "iterations": r["iterations"],
            }
            for c, r in results.items()
        },
        "time_budget_s": time_budget_s,
        "training_seconds": round(sum(r["training_seconds"] for r in results.values()), 1),
        "total_seconds": round(sum(r["total_seconds"] for r in results.values()), 1),
    }
    save_json(info, out_dir / "model.json")
    return {**info, "note": "; ".join(notes)} if notes else info


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
    for f in MODEL_FILES:
        if (model_dir / f).exists():
            shutil.copy(model_dir / f, dest / f)
    val = json.loads((model_dir / "validation.json").read_text())
    val.pop("per_case", None)
    save_json(val, dest / "validation.json")
    state = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, dest / "model.pt")
    (dest / "model_card.md").write_text(card)
    return dest
