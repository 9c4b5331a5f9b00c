"""The ``generate_train`` and ``generate`` operations: train a class- or mask-conditional 2D diffusion model within a
time budget, and draw images from one (engine: :mod:`medimg.generate`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from medimg.ops.base import Context, OpParams, OpResult, operation


class GenerateTrainParams(OpParams):
    data: str = Field(
        description="Training data: a classification NPZ (MedMNIST layout) or image folder with labels.csv "
        "(class-conditional), or a segmentation dataset folder with imagesTr/ + labelsTr/ of 2D images "
        "(mask-conditional)."
    )
    output: str = Field(description="Model folder to create (must not exist or be empty).")
    mode: Literal["auto", "class", "mask"] = Field(
        "auto", description="class, mask, or auto (mask when data has imagesTr/, else class)."
    )
    split: str = Field("train", description="NPZ split to train on.")
    labels_csv: str | None = Field(None, description="Image folder: its labels CSV (default DATA/labels.csv).")
    time_budget_s: float = Field(600.0, gt=0, description="Wall-clock training budget in seconds.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps (default: budget).")
    size: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="Model image size [rows, cols], multiples of 4 (default: the data's, longer side <= 128).",
    )
    widths: list[int] = Field([32, 64, 128], min_length=2, max_length=5, description="U-Net channels per level.")
    batch_size: int = Field(64, ge=2, le=1024, description="Images per optimiser step.")
    lr: float = Field(5e-4, gt=0, le=0.1, description="Peak learning rate (AdamW, warm-up then cosine).")
    balance: Literal["none", "sqrt", "equal"] = Field(
        "sqrt", description="Class-conditional: sample classes uniformly (none), by sqrt of their counts, or equally."
    )
    seed: int = Field(0, description="Random seed.")


class GenerateTrainResult(OpResult):
    output: str
    mode: str
    names: list[str] = Field(description="Class names (class mode) or label names, 0 first (mask mode).")
    size: list[int] = Field(description="Model image size [rows, cols].")
    n_images: int
    steps: int
    seconds: float
    precision: str
    final_loss: float | None


@operation(
    "generate_train",
    "Train a class- or mask-conditional 2D diffusion model (DDPM, v-prediction, small U-Net) within a CPU time "
    "budget; writes a model folder for `generate`.",
    reads=("data", "labels_csv"),
    writes=("output",),
)
def generate_train(p: GenerateTrainParams, ctx: Context) -> GenerateTrainResult:
    from medimg.generate import GeneratorError, load_class_data, load_mask_data, train_generator
    from medimg.generate.write import check_new_folder, staged_folder

    out = check_new_folder(p.output)
    mode = p.mode
    if mode == "auto":
        mode = "mask" if (Path(p.data) / "imagesTr").is_dir() else "class"
    if mode == "mask" and not (Path(p.data) / "imagesTr").is_dir():
        raise GeneratorError(
            f"{p.data}: mask-conditional training needs a segmentation dataset (imagesTr/, labelsTr/)."
        )
    size = (p.size[0], p.size[1]) if p.size else None
    if mode == "mask":
        data = load_mask_data(p.data, ctx.progress, size)
    else:
        data = load_class_data(p.data, p.split, p.labels_csv)
    with staged_folder(out) as tmp:
        info = train_generator(
            data,
            tmp,
            time_budget_s=p.time_budget_s,
            max_steps=p.max_steps,
            size=size,
            widths=tuple(p.widths),
            batch_size=p.batch_size,
            lr=p.lr,
            balance=p.balance,
            seed=p.seed,
            on_log=ctx.log,
            source=str(p.data),
        )
    tr = info["training"]
    return GenerateTrainResult(
        output=str(out),
        mode=mode,
        names=info["names"],
        size=info["size"],
        n_images=tr["n_images"],
        steps=tr["steps"],
        seconds=tr["seconds"],
        precision=tr["precision"],
        final_loss=tr["final_loss"],
    )


class GenerateParams(OpParams):
    model: str = Field(description="Generator: a bundled name (e.g. 'pneumoniamnist') or a model folder.")
    output: str = Field(description="Folder to create with the images (must not exist or be empty).")
    n: int = Field(16, ge=1, le=100000, description="Images to draw (mask mode: per mask).")
    classes: list[str] | None = Field(
        None, description="Class-conditional: class names or indices; the n images are split evenly among them."
    )
    mask: str | None = Field(None, description="Mask-conditional: a 2D label map file, or a folder of them.")
    steps: int = Field(50, ge=1, le=1000, description="DDIM sampling steps.")
    guidance: float | None = Field(
        None, ge=0, le=20, description="Classifier-free guidance scale (default: 2 for classes, 1 for masks)."
    )
    seed: int = Field(0, description="Random seed (same seed, same images).")


class GenerateResult(OpResult):
    output: str
    mode: str
    n_images: int = Field(description="Images written.")
    per_class: dict[str, int] | None = None
    masks: int | None = None
    layout: str = Field(description="What the output folder holds and which command reads it.")
    seconds: float


@operation(
    "generate",
    "Draw images from a diffusion generator: n per class (class-conditional) or n per mask (mask-conditioned); "
    "writes a classification folder (images + labels.csv) or a segmentation dataset (imagesTr/labelsTr).",
    reads=("mask",),
    writes=("output",),
)
def generate(p: GenerateParams, ctx: Context) -> GenerateResult:
    import numpy as np

    from medimg.generate import GeneratorError, class_index, load_generator, sample
    from medimg.generate.write import check_new_folder, generate_from_masks, mask_files, write_class_samples

    t0 = time.perf_counter()
    check_new_folder(p.output)
    net, info = load_generator(p.model)
    if info["mode"] == "class":
        if p.mask:
            raise GeneratorError("This model is class-conditional; give --class, not --mask.")
        wanted = [class_index(info, c) for c in (p.classes or [])]
        if not wanted:
            raise GeneratorError(f"Choose the class(es) to draw with --class: {', '.join(info['names'])}.")
        ys = np.asarray([wanted[i * len(wanted) // p.n] for i in range(p.n)], np.int64)
        guidance = 2.0 if p.guidance is None else p.guidance
        done = {"n": 0}

        def on_batch(d: int, n: int) -> None:
            done["n"] = d
            ctx.log({"images": d, "of": n})

        imgs = sample(net, info, p.n, ys, steps=p.steps, guidance=guidance, seed=p.seed, on_batch=on_batch)
        write_class_samples(imgs, ys.tolist(), info, p.output)
        counts = {info["names"][c]: int((ys == c).sum()) for c in sorted(set(wanted))}
        return GenerateResult(
            output=p.output,
            mode="class",
            n_images=p.n,
            per_class=counts,
            layout="images + labels.csv (a classification folder: medimg classify train DIR)",
            seconds=round(time.perf_counter() - t0, 2),
        )
    if p.classes:
        raise GeneratorError("This model is mask-conditional; give --mask, not --class.")
    if not p.mask:
        raise GeneratorError("This model is mask-conditional: give --mask MASK (a label map file or folder).")
    files = mask_files(p.mask)
    ids = generate_from_masks(
        net,
        info,
        files,
        p.n,
        p.output,
        p.steps,
        1.0 if p.guidance is None else p.guidance,
        p.seed,
        on_mask=lambda k, n: ctx.log({"masks": k, "of": n}),
    )
    return GenerateResult(
        output=p.output,
        mode="mask",
        n_images=len(ids),
        masks=len(files),
        layout="imagesTr/ + labelsTr/ + dataset.json (a segmentation dataset: medimg train DIR)",
        seconds=round(time.perf_counter() - t0, 2),
    )
