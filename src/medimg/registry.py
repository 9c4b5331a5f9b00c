"""One model registry for every engine: bundled models and model folders, by kind.

A model folder's kind is told by the file that describes it: ``plan.json`` (segmentation), ``model.json`` with
``"task": "classification"`` (classification) or ``"task": "generation"`` (diffusion generators), ``flow.json``
(learned registration), ``promptable.json`` (interactive). Bundled models live in
``medimg/<engine>/models/<name>/``. :func:`find` resolves a name or folder for one kind and, when it names a model
of another kind, says which command takes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medimg.errors import MedimgError

PACKAGE = Path(__file__).parent
#: kind -> (engine package folder, the command that uses such a model; {name} is filled in)
KINDS: dict[str, tuple[str, str]] = {
    "segmentation": ("seg", "medimg segment IMAGE -m {name} -o MASK"),
    "classification": ("classify", "medimg classify predict DATA -m {name} -o probs.csv"),
    "registration": ("register", "medimg register FIXED MOVING -o OUT --method learned --model {name}"),
    "interactive": ("interactive", "medimg interact IMAGE --click X,Y[,Z] -o MASK"),
    "generation": ("generate", "medimg generate -m {name} --class CLASS -n 16 -o DIR"),
}
#: How each kind is named in messages ("a classification model", "a promptable (interactive) model").
LABEL = {
    "segmentation": "segmentation",
    "classification": "classification",
    "registration": "registration",
    "interactive": "promptable (interactive)",
    "generation": "generative (diffusion)",
}


@dataclass(frozen=True)
class ModelRef:
    """A model: its name, kind and folder."""

    name: str
    kind: str
    path: Path


def kind_of(folder: Path) -> str | None:
    """The kind of model in ``folder`` (None when it is not a model folder)."""
    if (folder / "plan.json").is_file():
        return "segmentation"
    if (folder / "flow.json").is_file():
        return "registration"
    if (folder / "promptable.json").is_file():
        return "interactive"
    info = folder / "model.json"
    if info.is_file():
        try:
            task = json.loads(info.read_text()).get("task")
        except ValueError:
            return None
        return task if task in ("classification", "generation") else None
    return None


def bundled_dir(kind: str) -> Path:
    """The folder of the bundled models of ``kind``."""
    return PACKAGE / KINDS[kind][0] / "models"


def bundled(kind: str | None = None) -> list[ModelRef]:
    """The bundled models (of one kind, or all), sorted by kind then name."""
    out = []
    for k in [kind] if kind else list(KINDS):
        base = bundled_dir(k)
        if base.is_dir():
            out += [ModelRef(d.name, k, d) for d in sorted(base.iterdir()) if d.is_dir() and kind_of(d) == k]
    return out


def usage(ref: ModelRef) -> str:
    """The command that takes this model."""
    text = KINDS[ref.kind][1].format(name=ref.name)
    if ref.kind == "interactive" and ref.path.parent != bundled_dir("interactive"):
        text += f" --model {ref.path}"
    return text


def find(name_or_path: str | Path, kind: str) -> Path:
    """The folder of a ``kind`` model given as a folder or a bundled name. A model of another kind raises an
    error naming its kind and the command that takes it; an unknown name lists the models of ``kind``."""
    p = Path(name_or_path)
    key = str(name_or_path)
    if kind_of(p) == kind:
        return p
    own = [m for m in bundled(kind) if m.name == key]
    if own:
        return own[0].path
    names = ", ".join(m.name for m in bundled(kind)) or "none bundled"
    other = [ModelRef(p.name, k, p) for k in [kind_of(p)] if k] + [m for m in bundled() if m.name == key]
    noun = "a classifier" if kind == "classification" else f"a {LABEL[kind]} model"
    if other:
        o = other[0]
        raise MedimgError(
            f"{key!r} is a {LABEL[o.kind]} model, not {noun}: use `{usage(ModelRef(key, o.kind, o.path))}`. "
            f"{LABEL[kind].capitalize()} models: {names}"
            + (" (or a model folder from `medimg train`)." if kind == "segmentation" else ".")
        )
    what = "classifier" if kind == "classification" else f"{LABEL[kind]} model"
    raise MedimgError(f"No {what} {key!r}: give a model folder or a bundled {what} name ({names}).")
