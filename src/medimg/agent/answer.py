"""Run a validated :class:`~medimg.agent.plan.Plan` through :func:`medimg.ops.run` and answer in one paragraph.

Every number in the answer is read from the operations' typed results (with units), never invented; the
``compare`` step is plain Python over the ``volumes`` results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from medimg.agent.plan import COMPARE, CaseValue, CompareParams, CompareResult, Plan, StructureRef
from medimg.errors import MedimgError
from medimg.ops import Context, run
from medimg.ops.catalog import (
    ChangeResult,
    ClassifyResult,
    EvaluateResult,
    InfoResult,
    LesionResult,
    OverlapResult,
    RegisterResult,
    SegmentResult,
    StructureSize,
    VolumesResult,
    WrittenImage,
)


def execute(plan: Plan, ctx: Context) -> dict[str, BaseModel]:
    """Run the steps in order; results by step id."""
    results: dict[str, BaseModel] = {}
    for step in plan.steps:
        if step.op == COMPARE:
            results[step.id] = compare(CompareParams.model_validate(step.params), results)
        else:
            results[step.id] = run(step.op, step.params, ctx)
    return results


def _size(s: StructureSize) -> float:
    return float(s.volume_ml if s.volume_ml is not None else (s.area_mm2 or 0.0))


def compare(p: CompareParams, results: dict[str, BaseModel]) -> CompareResult:
    """Rank every case of the referenced ``volumes`` results by the summed size of ``p.labels``."""
    rows: list[CaseValue] = []
    for ref in p.steps:
        r = results.get(ref)
        if not isinstance(r, VolumesResult):
            raise MedimgError(f"compare: step {ref!r} has no volumes result.")
        for c in r.cases:
            chosen = [s for s in c.structures if p.labels is None or s.label in p.labels]
            rows.append(
                CaseValue(
                    case=c.case, path=c.path, value=sum(_size(s) for s in chosen), unit="mL" if c.dims == 3 else "mm²"
                )
            )
    if not rows:
        raise MedimgError("compare: no cases to compare.")
    rows.sort(key=lambda r: r.value, reverse=p.direction == "largest")
    return CompareResult(structure=p.structure, direction=p.direction, winner=rows[0], ranking=rows)


# ----------------------------------------------------------------------------------------------------- wording


def ml(v: float | None) -> str:
    """A volume in mL with sensible precision."""
    if v is None:
        return "n/a"
    return f"{v:.2f} mL" if abs(v) >= 1 else f"{v:.3f} mL"


def _size_text(s: StructureSize) -> str:
    return ml(s.volume_ml) if s.volume_ml is not None else f"{s.area_mm2 or 0.0:.1f} mm²"


def _focus(structures: Sequence[StructureSize], focus: Sequence[StructureRef]) -> list[StructureSize]:
    if not focus:
        return list(structures)
    want = {f.label for f in focus}
    names = {f.name.lower() for f in focus}
    return [s for s in structures if s.label in want or s.name.lower() in names]


def _name(s: StructureSize | StructureRef, focus: Sequence[StructureRef]) -> str:
    for f in focus:
        if f.label == s.label and not f.name.startswith("label"):
            return f.name
    return s.name


def _describe(op: str, r: BaseModel, focus: Sequence[StructureRef]) -> str:
    if isinstance(r, VolumesResult):
        parts = []
        for c in r.cases[:12]:
            chosen = _focus(c.structures, focus)
            if focus and not chosen:
                sizes = "; ".join(f"{s.name} (label {s.label})" for s in c.structures) or "no labels"
                parts.append(f"{c.case} has no {', '.join(f.name for f in focus)} (present: {sizes})")
                continue
            sizes = ", ".join(f"{_name(s, focus)} (label {s.label}) {_size_text(s)}" for s in chosen)
            sp = "x".join(f"{v:g}" for v in c.spacing_mm)
            parts.append(
                f"{c.case}: {sizes or 'no structures (empty label map)'} (voxel spacing {sp} mm"
                f"{'' if c.spacing_known else ', unknown: assumed'})"
            )
        more = f"; and {len(r.cases) - 12} more cases" if len(r.cases) > 12 else ""
        head = "Volumes" if all(c.dims == 3 for c in r.cases) else "Sizes"
        text = f"{head} of {len(r.cases)} case{'s' if len(r.cases) != 1 else ''}: " if len(r.cases) > 1 else ""
        out = text + "; ".join(parts) + more + "."
        if r.files:
            out += f" The table is written to {', '.join(r.files)} (a row per case, a column per structure)."
        return out
    if isinstance(r, SegmentResult):
        chosen = _focus(r.structures, focus) or r.structures
        sizes = ", ".join(f"{s.name} {_size_text(s)}" for s in chosen)
        dom = r.domain or {}
        forced = " (forced outside the model's training domain)" if dom.get("forced") else ""
        return f"Segmented with the {r.model} model{forced} into {r.output}: {sizes}."
    if isinstance(r, OverlapResult):
        ov = [x for x in r.labels if not focus or x.label in {f.label for f in focus}] or r.labels
        return (
            "Overlap per label: "
            + "; ".join(
                f"{x.name} (label {x.label}) Dice {x.dice:.3f}, HD95 {x.hd95_mm:.2f} mm, ASSD {x.assd_mm:.2f} mm"
                for x in ov
            )
            + "."
        )
    if isinstance(r, ChangeResult):
        ch = [x for x in r.structures if not focus or x.label in {f.label for f in focus}] or r.structures
        return (
            "Volume change between the visits: "
            + "; ".join(
                f"{x.name} (label {x.label}) {ml(x.before_ml)} -> {ml(x.after_ml)}, {x.change_ml:+.3f} mL"
                + (f" ({x.change_pct:+.1f} %)" if x.change_pct is not None else " (absent at the first visit)")
                for x in ch
            )
            + "."
        )
    if isinstance(r, LesionResult):
        sizes = ", ".join(ml(les.volume_ml) for les in r.lesions[:10])
        more = f" and {len(r.lesions) - 10} more" if len(r.lesions) > 10 else ""
        return (
            f"{r.count} lesion{'s' if r.count != 1 else ''} (connected components), {ml(r.total_volume_ml)} in total"
            + (f"; largest first: {sizes}{more}" if r.lesions else "")
            + "."
        )
    if isinstance(r, InfoResult):
        shape = "x".join(str(v) for v in r.shape)
        sp = "x".join(f"{v:g}" for v in r.spacing_mm)
        ext = "x".join(f"{v:.1f}" for v in r.extent_mm)
        known = "" if r.spacing_known else " (spacing not stored in the file: assumed)"
        art = "an" if r.kind[:1] in "aeiou" else "a"
        return (
            f"{r.path} is {art} {r.kind} of {shape} voxels ({r.dtype}) at {sp} mm spacing{known}, covering {ext} mm, "
            f"orientation {r.orientation}" + (f", modality {r.modality}" if r.modality else "") + "."
        )
    if isinstance(r, WrittenImage):
        shape = "x".join(str(v) for v in r.shape)
        sp = "x".join(f"{v:g}" for v in r.spacing_mm)
        return f"Wrote {r.output}: {shape} voxels at {sp} mm, orientation {r.orientation}."
    if isinstance(r, ClassifyResult):
        rows: list[str] = []
        for im in r.images[:8]:
            p = max(im.probabilities.values())
            outside = "" if im.in_domain else " (outside the model's domain)"
            rows.append(f"{im.id}: {im.predicted} (probability {p:.3f}){outside}")
        more = f"; and {len(r.images) - 8} more" if len(r.images) > 8 else ""
        counts: dict[str, int] = {}
        for im in r.images:
            counts[im.predicted] = counts.get(im.predicted, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if len(r.images) > 1 else ""
        return (
            f"Classified with the {r.model} model"
            + (f" ({summary})" if summary else "")
            + ": "
            + "; ".join(rows)
            + more
            + "."
        )
    if isinstance(r, RegisterResult):
        m = r.metrics
        bits = [f"Registered into {r.output_dir}"]
        dice = _find_dice(m)
        if dice:
            bits.append(
                "label overlap after registration: "
                + ", ".join(
                    f"{k} Dice {d:.3f}"
                    + (f" (before {b:.3f})" if isinstance(b, (int, float)) else "")
                    + (f", HD95 {h:.2f} mm" if isinstance(h, (int, float)) else "")
                    for k, d, b, h in dice
                )
            )
        return "; ".join(bits) + "."
    if isinstance(r, EvaluateResult):
        parts = []
        for k, c in r.classes.items():
            d = c.get("dice", {}) if isinstance(c, dict) else {}
            mean = d.get("mean") if isinstance(d, dict) else None
            parts.append(
                f"{c.get('name', k) if isinstance(c, dict) else k}: mean Dice "
                + (f"{mean:.3f}" if isinstance(mean, (int, float)) else "n/a")
            )
        return f"Evaluated {r.n_cases} cases: " + "; ".join(parts) + f". Reports: {', '.join(r.files)}."
    if isinstance(r, CompareResult):
        w = r.winner
        others = ", ".join(f"{c.case} {c.value:.3f} {c.unit}" for c in r.ranking[1:6])
        more = f" and {len(r.ranking) - 6} more" if len(r.ranking) > 6 else ""
        return (
            f"The {r.direction} {r.structure} is in {w.case} ({w.value:.3f} {w.unit})"
            + (f", then {others}{more}" if others else "")
            + "."
        )
    return f"{op} done."


def _find_dice(m: dict[str, Any]) -> list[tuple[str, float, float | None, float | None]]:
    """Per label of a registration's metrics.json: (label, Dice after, Dice before, HD95 mm after)."""
    labels = m.get("labels")
    if not isinstance(labels, dict):
        return []
    return [
        (f"label {k}", float(v["dice"]), v.get("dice_before"), v.get("hd95_mm"))
        for k, v in labels.items()
        if isinstance(v, dict) and isinstance(v.get("dice"), (int, float))
    ]


def compose(plan: Plan, results: dict[str, BaseModel], notes: Sequence[str] = ()) -> str:
    """One paragraph: a sentence per step (the comparison last, as the answer to the question)."""
    focus = plan.structures
    sentences = []
    compares = [s for s in plan.steps if s.op == COMPARE]
    for step in plan.steps:
        if step.op == COMPARE:
            continue
        if compares and isinstance(results[step.id], VolumesResult):
            continue  # the comparison sentence lists every case
        sentences.append(_describe(step.op, results[step.id], focus))
    for step in compares:
        sentences.insert(0, _describe(step.op, results[step.id], focus))
    sentences += list(notes)
    return " ".join(sentences)
