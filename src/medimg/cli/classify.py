"""``medimg classify train|predict|explain|robustness``, ``medimg pretrain`` and ``medimg probe``: thin CLI layers
over :mod:`medimg.classify`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from medimg.cli._common import _floats, _run, console, err_console
from medimg.cli.predict import ChannelOpt, ForceOpt

classify_app = typer.Typer(
    help="Image classification: train, predict (CSV of probabilities), explain, robustness.", no_args_is_help=True
)

DataArg = Annotated[Path, typer.Argument(help="NPZ (MedMNIST layout) or folder of images with labels.csv.")]
SplitOpt = Annotated[str, typer.Option("--split", help="NPZ split to use (train, val, test ...).")]
CsvOpt = Annotated[Path | None, typer.Option("--labels-csv", help="Labels CSV (default: FOLDER/labels.csv).")]
ClassesOpt = Annotated[str | None, typer.Option("--classes", help="Class names in label order, e.g. normal,pneumonia.")]


def _load_for_model(
    data: Path, split: str, labels_csv: Path | None, channel: str | None, grid: dict[str, Any] | None = None
) -> Any:
    """Images to classify, with ``--channel`` applied (an index, or 'grey' for RGB(A) -> luminance); image files
    are resampled onto the model's physical ``grid`` when it has one."""
    from medimg.classify.data import load_images
    from medimg.transforms.intensity import select_channel_array

    d = load_images(data, split, labels_csv, grid)
    if channel is not None:
        d.images = select_channel_array(d.images, channel, axis=1)
    return d


def _named(data: Any, classes: str | None) -> Any:
    if classes:
        names = [c.strip() for c in classes.split(",")]
        if not data.multilabel and len(names) < len(data.classes):
            from medimg.classify.data import DatasetError

            raise DatasetError(f"{len(names)} class names given for {len(data.classes)} classes.")
        data.classes = names
    return data


def _load_training(
    path: Path,
    split: str,
    labels_csv: Path | None,
    classes: str | None,
    keep_dups: bool,
    val_split: str | None,
    grid: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    from medimg.classify.data import drop_duplicates, load, load_npz, npz_splits

    train = _named(load(path, split, labels_csv, grid), classes)
    val = _named(load_npz(path, val_split), classes) if val_split else None
    if keep_dups:
        return train, val
    held = []
    if path.suffix.lower() == ".npz":
        held = [load_npz(path, s) for s in npz_splits(path) if s != split]
    train, rep = drop_duplicates(train, held)
    dropped = rep["n_before"] - rep["n_after"]
    if dropped:
        err_console.print(
            f"[yellow]note[/]: dropped {dropped} training image(s): {rep['duplicates_dropped']} exact duplicate(s), "
            f"{rep['leaked_into_held_out_dropped']} also present in another split (leakage), "
            f"{rep['conflicting_label_groups']} duplicate group(s) with conflicting labels "
            "(--keep-duplicates keeps them)."
        )
    return train, val


@classify_app.command("train")
def classify_train(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    split: SplitOpt = "train",
    val_split: Annotated[
        str | None,
        typer.Option(
            "--val-split",
            help="NPZ split for early stopping/calibration "
            "(default: a stratified --val-fraction of the training split).",
        ),
    ] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held-out share of the training split.")] = 0.1,
    labels_csv: CsvOpt = None,
    classes: ClassesOpt = None,
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock budget, e.g. 15m.")] = "15m",
    init_encoder: Annotated[
        Path | None,
        typer.Option(
            "--init-encoder", help="Encoder folder from `medimg pretrain` (or a classifier folder) to start from."
        ),
    ] = None,
    freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="Train the head only.")] = False,
    input_size: Annotated[str | None, typer.Option("--input-size", help="Resize inputs, e.g. 64,64.")] = None,
    keep_duplicates: Annotated[
        bool, typer.Option("--keep-duplicates", help="Do not drop duplicate/leaked training images.")
    ] = False,
    grid_spacing: Annotated[
        str | None,
        typer.Option(
            "--grid-spacing",
            help="Resample every image file to this spacing in mm (x,y[,z]) on a --grid-size grid centred on the "
            "image (where physical size matters, e.g. nodule crops); prediction does the same.",
        ),
    ] = None,
    grid_size: Annotated[
        str | None, typer.Option("--grid-size", help="Voxels of the --grid-spacing grid (x,y[,z]), e.g. 32,32,32.")
    ] = None,
    grid_pad: Annotated[
        float, typer.Option("--grid-pad", help="Value outside the image on the grid (e.g. -1000 for CT air).")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train a 2D/3D classifier within a time budget; writes a model folder (model.pt, model.json, logs)."""
    from medimg.classify import train_classifier
    from medimg.classify.grid import make_grid
    from medimg.errors import MedimgError
    from medimg.seg.train import parse_duration

    def body() -> None:
        grid = None
        if (grid_spacing is None) != (grid_size is None):
            raise MedimgError(
                "--grid-spacing and --grid-size go together (e.g. --grid-spacing 1,1,1 --grid-size 32,32,32)."
            )
        if grid_spacing is not None and grid_size is not None:
            grid = make_grid(
                _floats(grid_spacing, "--grid-spacing") or [],
                [int(v) for v in _floats(grid_size, "--grid-size") or []],
                grid_pad,
            )
        train, val = _load_training(data, split, labels_csv, classes, keep_duplicates, val_split, grid)
        cfg: dict[str, Any] = {"val_fraction": val_fraction, "seed": seed, "freeze_encoder": freeze_encoder}
        if grid is not None:
            cfg["grid"] = grid
        size = _floats(input_size, "--input-size")
        if size:
            cfg["input_size"] = [int(v) for v in size]
        console.print(
            f"{len(train)} training images {tuple(train.images.shape[1:])}, classes {train.classes}, "
            f"counts {train.class_counts()}"
        )

        def on_epoch(e: dict[str, Any]) -> None:
            console.print(
                f"epoch {e['epoch']:3d}  step {e['step']:5d}/{e['total_steps']}  "
                f"{e['elapsed_s'] / 60:5.1f} min  loss {e['train_loss']:.4f}  "
                f"val AUROC {e['val_auroc']:.4f}  acc {e['val_accuracy']:.4f}"
            )

        info = train_classifier(
            train, out, parse_duration(time_budget), val=val, config=cfg, init_encoder=init_encoder, on_epoch=on_epoch
        )
        v, c = info["validation"], info["validation_calibrated"]
        console.print(
            f"[green]model ready[/] in {out}: validation AUROC {v['auroc']:.4f}, accuracy "
            f"{v['accuracy']:.4f}; temperature {info['temperature']:.3f} (ECE {v.get('ece', float('nan')):.4f}"
            f" -> {c.get('ece', float('nan')):.4f}); {info['steps']} steps, "
            f"{info['training_seconds'] / 60:.1f} min, {info['precision']}"
        )

    _run(body)


@classify_app.command("predict")
def classify_predict(
    data: Annotated[Path, typer.Argument(help="NPZ, folder of images (labels.csv optional) or one image file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV of probabilities to write.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or bundled name (pneumoniamnist).")],
    split: SplitOpt = "val",
    labels_csv: CsvOpt = None,
    uncalibrated: Annotated[bool, typer.Option("--uncalibrated", help="Skip temperature scaling.")] = False,
    force: ForceOpt = False,
    channel: ChannelOpt = None,
) -> None:
    """Write a CSV with one row per image: id, p_<class>..., predicted class (and the label when known).

    Images outside the classifier's training domain (other modalities or body parts) are refused unless --force;
    with --force the CSV gets 'in_domain' and 'domain_score' columns."""
    from medimg.classify import ClassifierModel, write_probabilities_csv
    from medimg.classify.train import evaluate_probabilities

    def body() -> None:
        m = ClassifierModel(model)
        d = _load_for_model(data, split, labels_csv, channel, m.grid)
        probs = m.predict_proba(d.images, calibrated=not uncalibrated, force=force, ids=d.ids)
        known = bool(np.all(d.labels >= 0)) and (d.multilabel or int(d.labels.max()) < len(m.classes))
        write_probabilities_csv(
            out,
            d.ids,
            probs,
            m.classes,
            m.multilabel,
            d.labels if known else None,
            domain=m.last_domain if force and m.domain is not None else None,
        )
        n_out = sum(not r["in_domain"] for r in m.last_domain)
        console.print(f"wrote {out}: {len(d)} image(s)" + (f", {n_out} forced outside the domain" if n_out else ""))
        if known and len(d) > 1:
            met = evaluate_probabilities(d.labels, probs, m.multilabel)
            console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in met.items()))

    _run(body)


@classify_app.command("explain")
def classify_explain(
    data: Annotated[Path, typer.Argument(help="NPZ, folder of images or one image file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write (image | Grad-CAM | integrated gradients).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or bundled name.")],
    index: Annotated[int, typer.Option("--index", help="Which image of the NPZ split / folder.")] = 0,
    split: SplitOpt = "val",
    target: Annotated[
        str | None, typer.Option("--class", help="Class to explain (default: the predicted one).")
    ] = None,
    force: ForceOpt = False,
    channel: ChannelOpt = None,
) -> None:
    """Explain one prediction with Grad-CAM and integrated gradients (overlay PNG)."""
    from medimg.classify import ClassifierModel
    from medimg.classify.data import DatasetError
    from medimg.classify.explain import explanation_figure

    def body() -> None:
        m = ClassifierModel(model)
        d = _load_for_model(data, split, None, channel, m.grid)
        if not 0 <= index < len(d):
            raise DatasetError(f"--index {index} is outside the {len(d)} image(s).")
        m.check_domain(d.images[index : index + 1], force, [d.ids[index]])
        m.force = force
        cls = None
        if target is not None:
            if target not in m.classes:
                raise DatasetError(f"Unknown class {target!r}; the model's classes are {m.classes}.")
            cls = m.classes.index(target)
        res = explanation_figure(m, d.images[index], out, cls)
        probs = ", ".join(f"{k} {v:.3f}" for k, v in res["probabilities"].items())
        console.print(f"{d.ids[index]}: {probs}; explained class {res['class']!r}; wrote {out}")

    _run(body)


@classify_app.command("robustness")
def classify_robustness(
    data: Annotated[Path, typer.Argument(help="Labelled NPZ or folder with labels.csv.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or bundled name.")],
    split: SplitOpt = "val",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSON to write.")] = None,
) -> None:
    """AUROC/accuracy under noise, blur, contrast, bias field, JPEG and resolution corruptions (severities 1-5)."""
    from rich.table import Table

    from medimg.classify import ClassifierModel
    from medimg.classify.data import load
    from medimg.classify.robustness import robustness_table

    def body() -> None:
        m = ClassifierModel(model)
        d = load(data, split)
        rows = robustness_table(lambda x: m.predict_proba(x, force=True), d.images, d.labels)
        t = Table("corruption", "severity", "AUROC", "accuracy", "AUROC drop")
        for r in rows:
            t.add_row(
                r["corruption"],
                str(r["severity"]),
                f"{r['auroc']:.4f}",
                f"{r['accuracy']:.4f}",
                f"{r['auroc_drop']:+.4f}",
            )
        console.print(t)
        if out:
            out.write_text(json.dumps(rows, indent=2) + "\n")

    _run(body)


def pretrain_cmd(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Encoder folder to write.")],
    method: Annotated[str, typer.Option("--method", help="simclr, mae or genesis.")] = "simclr",
    split: SplitOpt = "train",
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock budget, e.g. 10m.")] = "10m",
    labels_csv: CsvOpt = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Self-supervised pre-training of an encoder on the images (labels are ignored)."""
    from medimg.classify.data import load_images
    from medimg.classify.ssl import pretrain
    from medimg.seg.train import parse_duration

    def body() -> None:
        d = load_images(data, split, labels_csv)

        def on_log(e: dict[str, Any]) -> None:
            if e["step"] % 100 == 0:
                console.print(
                    f"step {e['step']:5d}/{e['total_steps']}  {e['elapsed_s'] / 60:5.1f} min  loss {e['loss']:.4f}"
                )

        info = pretrain(d.images, out, method, parse_duration(time_budget), seed=seed, on_log=on_log)
        console.print(
            f"[green]encoder ready[/] in {out}: {method}, {info['steps']} steps, "
            f"{info['seconds'] / 60:.1f} min, final loss {info['final_loss']:.4f}"
        )

    _run(body)


def probe_cmd(
    encoder: Annotated[Path, typer.Argument(help="Encoder folder (medimg pretrain) or classifier model folder.")],
    data: DataArg,
    split: SplitOpt = "train",
    test_split: Annotated[str, typer.Option("--test-split", help="NPZ split to evaluate on.")] = "val",
    fractions: Annotated[str, typer.Option("--fractions", help="Label fractions, e.g. 0.01,0.1,1.")] = "0.01,0.1,1",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSON to write.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Linear probe and k-NN on frozen encoder features at several label fractions (AUROC, ACC, ECE, 95 % CIs)."""
    from rich.table import Table

    from medimg.classify.data import drop_duplicates, load, load_npz
    from medimg.classify.networks import build_encoder
    from medimg.classify.probe import probe_encoder
    from medimg.classify.train import load_encoder

    def body() -> None:
        cfg, state = load_encoder(encoder)
        enc = build_encoder(cfg)
        enc.load_state_dict(state)
        meta = encoder / ("encoder.json" if (encoder / "encoder.json").exists() else "model.json")
        size = json.loads(meta.read_text())["input_size"]
        test = load_npz(data, test_split) if data.suffix.lower() == ".npz" else load(data, test_split)
        train, rep = drop_duplicates(load(data, split), [test])
        if rep["n_before"] != rep["n_after"]:
            err_console.print(f"[yellow]note[/]: dropped {rep['n_before'] - rep['n_after']} duplicate/leaked image(s)")
        fr = [float(v) for v in fractions.split(",")]
        rows = probe_encoder(enc, size, train, test, fr, seed)
        t = Table("labels", "probe", "AUROC [95% CI]", "accuracy [95% CI]", "ECE")
        for r in rows:
            t.add_row(
                f"{r['fraction']:g} ({r['n_labels']})",
                r["probe"],
                f"{r['auroc']:.4f} [{r['auroc_ci95'][0]:.3f}, {r['auroc_ci95'][1]:.3f}]",
                f"{r['accuracy']:.4f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}]",
                f"{r['ece']:.4f}",
            )
        console.print(t)
        if out:
            out.write_text(json.dumps(rows, indent=2) + "\n")
        else:
            sys.stdout.flush()

    _run(body)
