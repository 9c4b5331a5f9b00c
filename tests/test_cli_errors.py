"""Every option an error message suggests exists where the user would type it.

Two checks: (1) statically, every ``--option`` named by a message in ``src/medimg`` exists in the ``--help`` of a
command that reaches the module the message is in (options after ``medimg <command>`` in the message: in that
command's help); (2) dynamically, each command given a broken input (NaN voxels, two channels, a DICOM series with
missing slices, a model of another kind) fails with exit code 2, and every option its message suggests is in that
same command's ``--help`` (or in the help of the ``medimg <command>`` the message tells to run).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from medimg.cli import _common, app
from medimg.data import sample

from conftest import DATA

runner = CliRunner()
SRC = Path(__file__).parent.parent / "src" / "medimg"
# An option token; one running into "_" (nnU-Net's --verify_dataset_integrity) belongs to another tool.
OPTION = re.compile(r"(?<![\w-])--?[a-zA-Z][a-zA-Z0-9-]*(?![\w])")
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w])")


# -- the command tree -----------------------------------------------------------------------------------------------
def _commands() -> dict[tuple[str, ...], typer.models.CommandInfo]:
    out: dict[tuple[str, ...], typer.models.CommandInfo] = {}

    def walk(t: typer.Typer, path: tuple[str, ...]) -> None:
        for c in t.registered_commands:
            assert c.callback is not None
            out[(*path, c.name or typer.main.get_command_name(c.callback.__name__))] = c
        for g in t.registered_groups:
            assert g.typer_instance is not None
            walk(g.typer_instance, (*path, g.name or str(g.typer_instance.info.name)))

    walk(app, ())
    return out


COMMANDS = _commands()


def help_options(path: tuple[str, ...]) -> set[str]:
    """The options ``medimg PATH --help`` lists (long and short forms of every visible parameter), plus the global
    ones; checked against the rendered help text too."""
    cmd = typer.main.get_command(app)
    for word in path:
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    opts = {o for p in cmd.params if not getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)}
    opts = {o for o in opts if o.startswith("-")}
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert all(o in r.output for o in opts), (path, opts)
    return opts | set(getattr(_common, "GLOBAL_OPTIONS", {"--debug": False})) | {"--help"}


_HELP: dict[tuple[str, ...], set[str]] = {}


def options_of(path: tuple[str, ...]) -> set[str]:
    if path not in _HELP:
        _HELP[path] = help_options(path)
    return _HELP[path]


def command_at(words: list[str]) -> tuple[str, ...] | None:
    """The longest command path that ``words`` start with (``["classify", "predict", "X"]`` -> classify predict)."""
    for n in (2, 1):
        if tuple(words[:n]) in COMMANDS:
            return tuple(words[:n])
    return None


def split_suggestions(text: str) -> Iterator[tuple[tuple[str, ...] | None, list[str]]]:
    """``(command, options)`` pairs: options written after ``medimg <command>`` in ``text`` (up to the closing
    backtick or the end of the sentence) belong to that command; all other options to ``None`` (the caller)."""
    rest: list[str] = []
    pos = 0
    for m in re.finditer(r"`?medimg ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text):
        cmd = command_at([w for w in m.groups() if w])
        if cmd is None:
            continue
        rest += LONG_OPTION.findall(text[pos : m.start()])
        end = text.find("`", m.end()) if m.group(0).startswith("`") else -1
        if end < 0:
            stop = re.search(r"[;)]|\. |\.$", text[m.end() :])
            end = m.end() + stop.start() if stop else len(text)
        yield cmd, OPTION.findall(text[m.end() : end])
        pos = end
    rest += LONG_OPTION.findall(text[pos:])
    yield None, rest


# -- (1) static: messages in the source -----------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str) -> Path | None:
    p = SRC.parent.joinpath(*name.split("."))
    for cand in (p.with_suffix(".py"), p / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(node: ast.AST, module: str) -> set[str]:
    """medimg modules imported anywhere under ``node`` (``from pkg import sub`` counts ``pkg.sub`` when it is a
    module), with their parent packages."""
    out: set[str] = set()
    for n in ast.walk(node):
        names: list[str] = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                pkg = module.split(".")[: -n.level] if not module.endswith("__init__") else module.split(".")
                base = ".".join([*pkg, base] if base else pkg)
            names = [base] + [f"{base}.{a.name}" for a in n.names]
        for name in names:
            if name.startswith("medimg") and _module_file(name):
                parts = name.split(".")
                out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(f): _imports(ast.parse(f.read_text()), _module_name(f)) for f in SRC.rglob("*.py")}


def reach() -> dict[tuple[str, ...], set[str]]:
    """For each command, the medimg modules it can reach: its CLI module's top-level imports and the imports in
    its own function, then everything those import (transitively, imports inside functions included)."""
    graph = _graph()
    out: dict[tuple[str, ...], set[str]] = {}
    for path, info in COMMANDS.items():
        fn = info.callback
        assert fn is not None
        mod = fn.__module__
        tree = ast.parse(Path(_module_file(mod)).read_text())  # type: ignore[arg-type]
        top = set()
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                top |= _imports(stmt, mod)
        func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fn.__name__)
        todo, seen = {mod, *top, *_imports(func, mod)}, set()
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo |= graph.get(m, set()) if not m.startswith("medimg.cli.") else set()
        out[path] = seen
    return out


def messages() -> Iterator[tuple[str, int, str]]:
    """``(module, line, text)`` for every string in src/medimg that names a ``--option``, except docstrings and the
    option declarations themselves (``typer.Option(...)``, ``help=``); an f-string is one text."""
    for f in sorted(SRC.rglob("*.py")):
        tree = ast.parse(f.read_text())
        skip: set[int] = set()
        for n in ast.walk(tree):
            body = getattr(n, "body", None)
            if (
                isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
            ):
                skip.add(id(body[0].value))
            if isinstance(n, ast.Call):
                name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                if name in ("Option", "Argument"):
                    skip |= {id(s) for s in ast.walk(n)}
                for kw in n.keywords:
                    if kw.arg == "help":
                        skip |= {id(s) for s in ast.walk(kw.value)}
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "GLOBAL_OPTIONS" for t in n.targets):
                skip |= {id(s) for s in ast.walk(n)}
            if isinstance(n, ast.JoinedStr):
                skip |= {id(s) for s in n.values}
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                text = n.value
            elif isinstance(n, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)  # type: ignore[misc]
            else:
                continue
            if LONG_OPTION.search(text):
                yield _module_name(f), n.lineno, text


def test_every_suggested_option_exists_in_a_command_that_reaches_the_message() -> None:
    """Static scan of src/medimg: a message suggesting ``--x`` must sit in a module that some command with ``--x``
    reaches (or, after ``medimg CMD``, CMD must have it). Lists every broken suggestion at once."""
    # the parser the check relies on: options after `medimg CMD` go to CMD, the rest to the caller
    got = list(split_suggestions("use `medimg classify predict DATA -m x -o p.csv`, or pass --force (force=True)."))
    assert got == [(("classify", "predict"), ["-m", "-o"]), (None, ["--force"])]
    got = list(split_suggestions("first (medimg resample IN OUT --reference OTHER, or python); --channel 0"))
    assert got == [(("resample",), ["--reference"]), (None, ["--channel"])]
    assert "--output" in options_of(("segment",)) and "-o" in options_of(("segment",))
    assert "--tta" not in options_of(("info",)) and "--debug" in options_of(("info",))
    reached = reach()
    missing = []
    n_checked = 0
    for module, line, text in messages():
        users = [c for c, mods in reached.items() if module in mods]
        for cmd, opts in split_suggestions(text):
            for opt in opts:
                n_checked += 1
                where = [cmd] if cmd else users
                if not any(opt in options_of(c) for c in where):
                    shown = " | ".join(" ".join(c) for c in where) or "no command"
                    missing.append(f"{module}:{line}: {opt} (not in --help of: {shown})")
    assert n_checked > 40  # the scan found the messages (about 80 suggestions today)
    assert not missing, "error messages suggest options that do not exist:\n" + "\n".join(missing)


# -- (2) dynamic: real broken inputs through each command -------------------------------------------------------------
@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A hippocampus MRI with one NaN voxel, the same MRI as two channels, a 2D 28x28 image with a NaN."""
    d = tmp_path_factory.mktemp("broken")
    img: Any = nib.load(str(sample("hippocampus")[0]))
    a = np.asarray(img.dataobj).astype(np.float32)
    nan3d = a.copy()
    nan3d[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan3d, img.affine), d / "nan3d.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([a, a], -1), img.affine), d / "two_channel.nii.gz")
    nan2d = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    nan2d[3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan2d, np.eye(4)), d / "nan2d.nii.gz")
    return {"nan3d": d / "nan3d.nii.gz", "two_channel": d / "two_channel.nii.gz", "nan2d": d / "nan2d.nii.gz", "out": d}


def _scenarios(b: dict[str, Path]) -> list[list[str]]:
    o = b["out"]
    gap = str(DATA / "ct_dicom_gap")
    hip = str(sample("hippocampus")[0])
    runs: list[list[str]] = []
    for key in ("nan3d", "two_channel"):
        f = str(b[key])
        runs += [
            ["segment", f, "-o", str(o / "s.nii.gz")],
            ["predict", "-m", "hippocampus", "-i", f, "-o", str(o / "pred")],
            # two channels: the slice engine reads both; the 3D network reads one (refused, saying what to do)
            ["interact", f, "--click", "10,10,10", "--engine", "3d", "-o", str(o / "m.nii.gz")],
            ["register", f, f, "-o", str(o / "reg"), "--method", "rigid"],
        ]
    runs += [
        ["convert", str(b["nan3d"]), str(o / "c.nii.gz")],
        ["resample", str(b["nan3d"]), str(o / "r.nii.gz"), "--spacing", "2"],
        ["classify", "predict", str(b["nan2d"]), "-m", "pneumoniamnist", "-o", str(o / "p.csv")],
        ["info", gap],
        ["convert", gap, str(o / "g.nii.gz")],
        ["resample", gap, str(o / "g.nii.gz"), "--spacing", "2"],
        ["segment", gap, "-o", str(o / "g.nii.gz")],
        ["interact", gap, "--click", "10,10,1", "-o", str(o / "g.nii.gz")],
        ["segment", hip, "-m", "pneumoniamnist", "-o", str(o / "k.nii.gz")],
        ["segment", hip, "-m", "hippocampus_flow", "-o", str(o / "k.nii.gz")],
        ["segment", hip, "-m", "promptable", "-o", str(o / "k.nii.gz")],
        ["predict", "-m", "pneumoniamnist", "-i", hip, "-o", str(o / "k")],
        ["classify", "predict", str(b["nan2d"]), "-m", "hippocampus", "-o", str(o / "k.csv")],
        ["classify", "predict", str(b["nan2d"]), "-m", "hippocampus_flow", "-o", str(o / "k.csv")],
        ["classify", "predict", str(b["nan2d"]), "-m", "promptable", "-o", str(o / "k.csv")],
        ["models", "info", "nonesuch"],
    ]
    return runs


def test_each_command_suggests_only_its_own_options(broken: dict[str, Path]) -> None:
    """Run every command on inputs it must refuse; each exits 2 with a message whose options exist in that command's
    --help (or in the --help of the ``medimg <command>`` it tells the user to run)."""
    problems = []
    for args in _scenarios(broken):
        cmd = command_at(args)
        assert cmd is not None
        r = runner.invoke(app, args)
        text = " ".join(r.output.split())
        if r.exit_code != 2 or "error:" not in text:
            problems.append(f"medimg {' '.join(cmd)}: exit {r.exit_code}, no clean error ({text[-160:]!r})")
            continue
        for target, opts in split_suggestions(text):
            for opt in opts:
                if opt not in options_of(target or cmd):
                    problems.append(
                        f"medimg {' '.join(cmd)}: suggests {opt} for `medimg {' '.join(target or cmd)}`, whose "
                        f"--help has no such option ({text[text.find('error:') :][:200]!r})"
                    )
    assert not problems, "\n".join(problems)


def test_model_of_another_kind_names_the_command_that_takes_it() -> None:
    """`segment -m pneumoniamnist` says it is a classifier for `classify predict` (and does not list it among the
    segmentation models); the reverse and the registration / promptable models likewise."""
    hip = str(sample("hippocampus")[0])
    r = runner.invoke(app, ["segment", hip, "-m", "pneumoniamnist", "-o", "x.nii.gz"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "classification model" in text and "medimg classify predict" in text
    assert "Segmentation models: abdomen, fetal-head, hippocampus, nodule, vessels " in text
    assert "pneumoniamnist)" not in text
    r = runner.invoke(app, ["classify", "predict", hip, "-m", "hippocampus", "-o", "x.csv"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "segmentation model, not a classifier" in text and "medimg segment" in text
    r = runner.invoke(app, ["segment", hip, "-m", "hippocampus_flow", "-o", "x.nii.gz"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "registration model" in text and "--method learned --model hippocampus_flow" in text
    r = runner.invoke(app, ["classify", "predict", hip, "-m", "promptable", "-o", "x.csv"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "promptable (interactive) model" in text and "medimg interact" in text
