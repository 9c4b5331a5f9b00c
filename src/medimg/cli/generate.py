"""``medimg generate``: diffusion generators (operations ``generate_train`` and ``generate``).

* ``medimg generate train DATA -o MODEL [--time-budget 10m]``: class-conditional (NPZ / image folder + labels.csv)
  or mask-conditional (segmentation dataset of 2D images) model;
* ``medimg generate -m MODEL --class C -n N -o DIR`` or ``medimg generate -m MODEL --mask M -n N -o DIR``: draw
  images (``generate sample`` is the same command).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medimg.cli._common import JsonOpt, RootsOpt, _run, app, console, default_command

gen_app = typer.Typer(
    help="Diffusion generators: `medimg generate train DATA -o MODEL` trains a class- or mask-conditional model; "
    "`medimg generate -m MODEL --class C -n N -o DIR` (or --mask M) draws images. Bundled: pneumoniamnist.",
    no_args_is_help=True,
    cls=default_command("sample"),  # `generate -m M ...` = `generate sample -m M ...`
)


@gen_app.command("train")
def train_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            help="NPZ (MedMNIST layout) or image folder with labels.csv: class-conditional; segmentation dataset "
            "(imagesTr/ + labelsTr/, 2D): mask-conditional."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to create.")],
    time_budget: Annotated[str, typer.Option("--time-budget", help="Wall-clock training budget, e.g. 10m.")] = "10m",
    mode: Annotated[str, typer.Option("--mode", help="class | mask | auto (mask when DATA has imagesTr/).")] = "auto",
    split: Annotated[str, typer.Option("--split", help="NPZ split to train on.")] = "train",
    labels_csv: Annotated[Path | None, typer.Option("--labels", help="Labels CSV of an image folder.")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Model image size ROWSxCOLS, multiples of 4 (default: the data's).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 64,
    balance: Annotated[
        str, typer.Option("--balance", help="Class sampling: none | sqrt (of the counts) | equal.")
    ] = "sqrt",
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """Train a class- or mask-conditional 2D diffusion model within a time budget."""
    from medimg.errors import MedimgError
    from medimg.ops import Context, run
    from medimg.seg import parse_duration

    def body() -> None:
        sz = None
        if size:
            try:
                sz = [int(v) for v in size.lower().split("x")]
            except ValueError:
                sz = []
            if len(sz) != 2:
                raise MedimgError(f"--size {size!r}: give ROWSxCOLS, e.g. 64x96.")

        def on_event(e: dict[str, Any]) -> None:
            if not as_json and "step" in e:
                console.print(f"step {e['step']:6d}  {e['seconds'] / 60:5.1f} min  loss {e['loss']:.4f}")

        params = {
            "data": str(data),
            "output": str(out),
            "mode": mode,
            "split": split,
            "labels_csv": str(labels_csv) if labels_csv else None,
            "time_budget_s": parse_duration(time_budget),
            "max_steps": max_steps,
            "size": sz,
            "batch_size": batch_size,
            "balance": balance,
            "seed": seed,
        }
        res = run("generate_train", params, Context(roots=root or None, on_event=on_event))
        r = res.model_dump(mode="json")
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        console.print(
            f"{r['mode']}-conditional generator -> {r['output']}  ({r['n_images']} images at "
            f"{r['size'][0]}x{r['size'][1]}, {r['steps']} steps in {r['seconds'] / 60:.1f} min, {r['precision']}; "
            f"{'classes' if r['mode'] == 'class' else 'labels'}: {', '.join(r['names'])})",
            markup=False,
            highlight=False,
        )

    _run(body)


@gen_app.command("sample")
def sample_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Generator: bundled name or model folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create with the images.")],
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", help="Class-conditional: class name or index (repeatable: n split among them)."),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Mask-conditional: a 2D label map file or a folder of them.")
    ] = None,
    n: Annotated[int, typer.Option("-n", "--n", help="Images to draw (with --mask: per mask).")] = 16,
    steps: Annotated[int, typer.Option("--steps", help="DDIM sampling steps.")] = 50,
    guidance: Annotated[
        float | None, typer.Option("--guidance", help="Classifier-free guidance (default 2 for classes, 1 for masks).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same images).")] = 0,
    as_json: JsonOpt = False,
    root: RootsOpt = None,
) -> None:
    """Draw images from a generator: `--class C` (class-conditional) or `--mask M` (mask-conditioned)."""
    from medimg.ops import Context, run

    def body() -> None:
        def on_event(e: dict[str, Any]) -> None:
            if not as_json:
                what = "images" if "images" in e else "masks"
                console.print(f"{e[what]}/{e['of']} {what}", markup=False, highlight=False)

        params = {
            "model": model,
            "output": str(out),
            "n": n,
            "classes": classes,
            "mask": str(mask) if mask else None,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
        }
        res = run("generate", params, Context(roots=root or None, on_event=on_event))
        r = res.model_dump(mode="json")
        if as_json:
            sys.stdout.write(json.dumps(r, indent=2) + "\n")
            return
        what = (
            ", ".join(f"{v} {k}" for k, v in (r["per_class"] or {}).items())
            if r["mode"] == "class"
            else f"{r['masks']} mask(s)"
        )
        console.print(
            f"{r['n_images']} images ({what}) -> {r['output']}  in {r['seconds']:.1f} s; {r['layout']}",
            markup=False,
            highlight=False,
        )

    _run(body)


app.add_typer(gen_app, name="generate")
