"""``medimg models list | info | export``."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medimg.cli._common import (
    _run,
    console,
)
from medimg.cli.seg import models_app
from medimg.errors import MedimgError

#: A licence as model cards state it (Creative Commons, Apache, MIT, BSD).
_LICENCE = re.compile(r"CC0(?: 1\.0)?|CC BY(?:-(?:NC|SA|ND))* \d\.\d|Apache(?: License)?[- ]2\.0|MIT|BSD-\d-Clause")


def model_licence(folder: Path, info: dict[str, Any] | None = None) -> str:
    """The licence of a model's weights: ``licence`` in its JSON, else the one its model_card.md says the weights
    are "shared under" (else the first licence the card names); ``"not stated"`` when neither says."""
    for key in ("licence", "license"):
        if info and info.get(key):
            return str(info[key])
    card = folder / "model_card.md"
    if not card.is_file():
        return "not stated"
    text = " ".join(card.read_text(encoding="utf-8").split())
    for m in re.finditer(r"shared under", text):
        lic = _LICENCE.search(text, m.end(), m.end() + 80)
        if lic:
            return lic.group(0)
    first = re.search(r"[Ll]icen[cs]e", text)
    lic = _LICENCE.search(text, first.start()) if first else None
    return lic.group(0) if lic else "see model_card.md"


def all_models(extra: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Every bundled model -- segmentation, classification, generation, registration and promptable -- plus model
    folders inside ``extra``: dicts with name, task, labels, validation, trained, licence, usage (the command that
    takes it), path and info (the model's JSON)."""
    from medimg.interactive.promptable import bundled_models
    from medimg.registry import bundled_dir
    from medimg.seg import list_models

    rows: list[dict[str, Any]] = []
    for m in list_models(extra):
        d = Path(m["path"])
        if m.get("task") == "generation":
            labels = ", ".join(m["names"])
            val = "see model card"
            task = f"generation ({m['mode']}-conditional diffusion, 2D, {'x'.join(str(v) for v in m['size'])})"
            ref = d.name if d.parent == bundled_dir("generation") else str(d)
            usage = f"medimg generate -m {ref} " + (
                "--class CLASS -n 16 -o DIR" if m["mode"] == "class" else "--mask MASK -n 4 -o DIR"
            )
            tr = m.get("training", {})
            rows.append(
                dict(
                    name=m.get("name", d.name),
                    task=task,
                    labels=labels,
                    validation=val,
                    trained=f"{tr.get('seconds', 0) / 60:.1f} min, {tr.get('n_images', '?')} images",
                    usage=usage,
                    info={**m, "name": m.get("name", d.name)},
                )
            )
            continue
        if m.get("task") == "classification":
            labels = ", ".join(m["classes"])
            val = f"AUROC {m['validation']['auroc']:.4f}" if "validation" in m else "-"
            task = f"classification ({m['dims']}D, {'x'.join(str(v) for v in m['input_size'])})"
            usage = f"medimg classify predict DATA -m {m['name']} -o probs.csv"
        else:
            labels = ", ".join(v for k, v in m.get("labels", {}).items() if k != "0")
            val = f"Dice {m.get('validation_mean_dice', float('nan')):.4f}"
            task = m.get("task", "segmentation")
            usage = f"medimg segment IMAGE -m {m['name']} -o MASK"
        trained = f"{m.get('training_seconds', 0) / 60:.1f} min, {m.get('n_train', '?')} cases"
        rows.append(
            dict(name=m["name"], task=task, labels=labels, validation=val, trained=trained, usage=usage, info=m)
        )
    flows = [d for base in (bundled_dir("registration"), *extra) if base.is_dir() for d in sorted(base.iterdir())]
    for d in flows:
        if (d / "flow.json").is_file() and (d / "flow.pt").is_file():
            info = json.loads((d / "flow.json").read_text())
            name = d.name
            rows.append(
                dict(
                    name=name,
                    task=f"registration (learned, {info.get('dims', 3)}D diffeomorphic)",
                    labels="any pair of hippocampus MRI crops" if name == "hippocampus_flow" else "image pairs",
                    validation="see model card",
                    trained=f"{info.get('seconds', 0) / 60:.1f} min, {info.get('n_images', '?')} images",
                    usage=f"medimg register FIXED MOVING -o OUT --method learned --model {name}",
                    info={**info, "name": name, "path": str(d)},
                )
            )
    prompt = bundled_models() + [
        {**json.loads((d / "promptable.json").read_text()), "name": d.name, "path": str(d)}
        for base in extra
        if base.is_dir()
        for d in sorted(base.iterdir())
        if (d / "promptable.json").is_file()
    ]
    for m in prompt:
        tr = m.get("training", {})
        bundled = Path(m["path"]).parent.parent.name == "interactive"
        rows.append(
            dict(
                name=m["name"],
                task="interactive (clicks, boxes, scribbles; 2D, 3D by propagation"
                + ("; any number of image channels)" if m.get("stem") else ")"),
                labels="any prompted structure",
                validation="see model card",
                trained=f"{tr.get('seconds', 0) / 60:.1f} min, {sum(tr.get('families', {}).values())} 2D tasks",
                usage="medimg interact IMAGE --click X,Y[,Z] -o MASK" + ("" if bundled else f" --model {m['path']}"),
                info=m,
            )
        )
    for r in rows:
        r["path"] = r["info"]["path"]
        r["licence"] = model_licence(Path(r["path"]), r["info"])
    return rows


@models_app.command("list")
def models_list(
    extra: Annotated[
        list[Path] | None, typer.Option("--dir", help="Also list model folders inside this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every bundled model (segmentation, classification, registration, interactive) with its task, licence
    and the command that uses it (and model folders in --dir)."""
    rows = all_models(extra or [])
    if as_json:
        cols = ("name", "task", "labels", "validation", "trained", "licence", "usage", "path")
        sys.stdout.write(json.dumps([{k: r[k] for k in cols} for r in rows], indent=2) + "\n")
        return
    t = Table()
    for c in ("name", "task", "classes / labels", "validation", "trained", "licence", "use with"):
        t.add_column(c, no_wrap=c in ("name", "validation", "licence"))
    for r in rows:
        t.add_row(r["name"], r["task"], r["labels"], r["validation"], r["trained"], r["licence"], r["usage"])
    console.print(t)


@models_app.command("info")
def models_info(
    name: Annotated[str, typer.Argument(help="Bundled model name or model folder.")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="When several bundled models share the name (pneumoniamnist: a classifier and a generator): "
            "segmentation | classification | generation | registration | interactive.",
        ),
    ] = None,
) -> None:
    """Show a model's JSON (model.json, flow.json or promptable.json; segmentation: plus a plan summary), its
    licence and the command that uses it."""

    def body() -> None:
        rows: dict[str, dict[str, Any]] = {}
        for r in all_models():  # the first model of a name wins, unless --kind picks another
            if kind is None or r["task"].startswith(kind):
                rows.setdefault(r["name"], r)
        p = Path(name)
        if name not in rows and p.is_dir():  # a folder of your own
            rows = {r["name"]: r for r in all_models([p.parent]) if Path(r["path"]).resolve() == p.resolve()}
            name_ = next(iter(rows), name)
        else:
            name_ = name
        if name_ not in rows:
            raise MedimgError(
                f"No model {name!r}: give a model folder or a bundled model name ({', '.join(rows)}); "
                "`medimg models list` shows them."
            )
        r = rows[name_]
        info = {k: v for k, v in r["info"].items() if k != "log"}
        info.update(licence=r["licence"], usage=r["usage"])
        plan_path = Path(r["path"]) / "plan.json"
        if plan_path.is_file():
            plan = json.loads(plan_path.read_text())
            info["plan"] = {
                k: plan[k]
                for k in ("target_spacing", "patch_size", "batch_size", "normalization", "postprocessing")
                if k in plan
            }
        sys.stdout.write(json.dumps(info, indent=2) + "\n")

    _run(body)


@models_app.command("export")
def models_export(
    name: Annotated[str, typer.Argument(help="Bundled model name or model folder.")],
    out: Annotated[
        Path, typer.Option("--output", "-o", help="File to write: .onnx (ONNX) or .pt / .ts (TorchScript).")
    ],
) -> None:
    """Export the network to ONNX (checked against PyTorch; `medimg segment --onnx FILE` runs it in ONNX Runtime)
    or to TorchScript (traced; `medimg.seg.predict.Predictor(model, torchscript=FILE)` uses it)."""
    from medimg.seg import resolve_model
    from medimg.seg.predict import export_torchscript

    def body() -> None:
        if out.suffix == ".onnx":
            from medimg.seg.onnx_export import export_onnx

            r = export_onnx(resolve_model(name), out)
            console.print(
                f"wrote {out}: windows of {'x'.join(map(str, r['patch_size']))} voxels; ONNX Runtime matches PyTorch "
                f"to {r['relative_diff']:.1e} of the logits' range. Use: medimg segment IMAGE -m {name} --onnx {out}"
            )
            return
        if out.suffix not in (".pt", ".ts"):
            raise MedimgError(f"Export to .onnx, .pt or .ts (got {out.name!r}).")
        export_torchscript(resolve_model(name), out)
        console.print(f"wrote {out}")

    _run(body)
