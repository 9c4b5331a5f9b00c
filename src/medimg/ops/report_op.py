"""The ``report`` operation: a measurement-grounded report of one study (HTML, Markdown or JSON).

The report is assembled ONLY from typed operation results (``info``, ``volumes`` or ``segment``,
``count_lesions``, ``volume_change``) run through :func:`medimg.ops.run`, plus the model's own record
(``model.json``) when a model made the labels. Each result gets an id (``R1``, ``R2`` ...); every sentence and
every table row carries the ids of the results its numbers come from, and the JSON form lists each result with
its operation, parameters and provenance (input SHA-256, medimg version, time). Numbers are printed from result
fields only (never derived in the text); what was not measured is said rather than guessed (no earlier visit:
no comparison sentence). The HTML embeds an overlay figure (PNG, base64) of the structures on the study; the
Markdown has the same text and tables with the figure written beside it.

Text conventions (the tests rely on them): identifiers that contain digits but are not measurements (file
names, versions, times, the domain check's own messages) are in backticks; every other number in a sentence or
table row is a field of a result (or figure) that the line cites.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from medimg.errors import GeometryError, MedimgError
from medimg.ops.base import (
    Context,
    InputRecord,
    InvalidParametersError,
    OpParams,
    OpResult,
    PathNotAllowedError,
    Provenance,
    confine,
    operation,
    sha256_of,
)

#: Report formats by output extension.
FORMATS: dict[str, Literal["html", "md", "json"]] = {".html": "html", ".htm": "html", ".md": "md", ".json": "json"}
#: Up to this many structures get a sentence each (beyond it, the table alone lists them).
MAX_STRUCTURE_SENTENCES = 12

Section = Literal["study", "labels", "findings", "lesions", "comparison", "methods", "not_measured"]
SECTION_TITLES: dict[str, str] = {
    "study": "Study",
    "labels": "Where the structures come from",
    "findings": "Structures",
    "lesions": "Lesions",
    "comparison": "Comparison with the earlier visit",
    "methods": "How it was measured",
    "not_measured": "Not measured",
}


class ReportParams(OpParams):
    study: str = Field(description="The image the report is about (image file or DICOM folder).")
    output: str = Field(
        description="Report to write: .html (overlay embedded), .md (overlay PNG beside it) or .json (every "
        "result with its provenance)."
    )
    labels: str | None = Field(None, description="An existing label map of the study (give this or model).")
    model: str | None = Field(
        None, description="Segment the study with this bundled model name or model folder (give this or labels)."
    )
    previous_labels: str | None = Field(
        None, description="Label map of an earlier visit: each structure's volume is compared with it."
    )
    lesion_label: int | None = Field(
        None, description="Label value of the lesions: count them (connected components) with each one's size."
    )
    force: bool = Field(False, description="Segment even when the study is outside the model's training domain.")
    tta: bool = Field(False, description="Mirroring test-time augmentation when segmenting.")
    labels_output: str | None = Field(
        None, description="Where to write the model's label map (default: beside the report, <name>_labels.nii.gz)."
    )


class ReportEntry(BaseModel):
    """One operation result the report cites: its id, operation, parameters, result fields and provenance."""

    id: str
    operation: str
    parameters: dict[str, Any]
    result: dict[str, Any]
    provenance: Provenance | None = None


class Sentence(BaseModel):
    """One sentence of the report and the ids of the results (or figures) its statements come from."""

    section: Section
    text: str
    refs: list[str]


class Table(BaseModel):
    """A table of the report: formatted cells, and per row the ids of the results its numbers come from."""

    section: Section
    title: str
    columns: list[str]
    rows: list[list[str]]
    refs: list[list[str]]


class Figure(BaseModel):
    """The overlay figure: which slice, its scale, and the results it draws."""

    id: str
    kind: str = "overlay"
    slice_number: int | None = Field(None, description="1-based axial slice after reorientation to LPS (3D).")
    n_slices: int | None = None
    mm_per_pixel: float
    refs: list[str]
    caption: str
    file: str | None = Field(None, description="PNG written beside a Markdown report.")


class ReportResult(OpResult):
    output: str
    format: Literal["html", "md", "json"]
    study: str
    labels: str | None = Field(None, description="The label map the structures were measured on.")
    medimg_version: str
    time: str
    parameters: dict[str, Any]
    sentences: list[Sentence]
    tables: list[Table]
    figures: list[Figure]
    results: list[ReportEntry]


# --------------------------------------------------------------------------------------------------- formatting


def fmt_ml(v: float) -> str:
    """A volume in mL: 3 decimals, more for small values so that 3 significant digits show (0.000926)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:.3f}"
    d = min(8, max(3, 2 - math.floor(math.log10(abs(v)))))
    return f"{v:.{d}f}"


def fmt_mm(values: list[float]) -> str:
    """Spacings or extents: ``1 x 1 x 3`` (6 significant digits)."""
    return " x ".join(f"{v:g}" for v in values)


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------------------- assembly


class _Report:
    """Collects results (with ids), sentences, tables and figures while the report is measured."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.entries: list[ReportEntry] = []
        self.sentences: list[Sentence] = []
        self.tables: list[Table] = []
        self.figures: list[Figure] = []

    def run(self, name: str, params: dict[str, Any]) -> tuple[str, Any]:
        """Run operation ``name`` through the operations layer; returns its id and typed result."""
        from medimg.ops.base import run

        res = run(name, params, self.ctx)
        rid = f"R{len(self.entries) + 1}"
        prov = res.provenance
        self.entries.append(
            ReportEntry(
                id=rid,
                operation=name,
                parameters=prov.parameters if prov else params,
                result=res.model_dump(mode="json", exclude={"provenance"}),
                provenance=prov,
            )
        )
        return rid, res

    def record(self, name: str, params: dict[str, Any], result: dict[str, Any], inputs: list[Path]) -> str:
        """Add a record that is read, not computed (a model's own ``model.json``), with its inputs' SHA-256."""
        import medimg

        rid = f"R{len(self.entries) + 1}"
        prov = Provenance(
            operation=name,
            parameters=params,
            inputs=[InputRecord(path=str(q), sha256=sha256_of(q)) for q in inputs],
            medimg_version=medimg.__version__,
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=0.0,
        )
        self.entries.append(ReportEntry(id=rid, operation=name, parameters=params, result=result, provenance=prov))
        return rid

    def say(self, section: Section, text: str, *refs: str) -> None:
        self.sentences.append(Sentence(section=section, text=text, refs=list(refs)))


def _study_sentences(rep: _Report, rid: str, info: Any) -> None:
    dims = len(info.shape)
    what = "label map" if info.kind == "label map" else "image"
    text = (
        f"The study {_code(Path(info.path).name)} is a {dims}D {what} of {fmt_mm(info.shape)} voxels of "
        f"{fmt_mm(info.spacing_mm)} mm (extent {fmt_mm(info.extent_mm)} mm, orientation {info.orientation}"
        + (f", modality {info.modality}" if info.modality else "")
        + ")."
    )
    rep.say("study", text, rid)
    if not info.spacing_known:
        rep.say(
            "study",
            "Its voxel spacing is not stored in the file, so 1 mm was assumed and the volumes below are not "
            "physical volumes.",
            rid,
        )


def _structure_findings(rep: _Report, rid: str, structures: list[Any], dims: int) -> None:
    if not structures:
        rep.say("findings", "The label map holds no labelled voxels: no structure was found.", rid)
        return
    unit = "mL" if dims == 3 else "mm²"

    def size(s: Any) -> str:
        return fmt_ml(s.volume_ml or 0.0) if dims == 3 else f"{(s.area_mm2 or 0.0):.2f}"

    if len(structures) <= MAX_STRUCTURE_SENTENCES:
        for s in structures:
            if s.voxels == 0:
                rep.say("findings", f"{s.name} (label {s.label}) was not found: {s.voxels} voxels.", rid)
            else:
                kind = "volume" if dims == 3 else "area"
                rep.say("findings", f"{s.name} (label {s.label}): {kind} {size(s)} {unit} ({s.voxels} voxels).", rid)
    else:
        rep.say("findings", "The size of every structure is in the table below.", rid)
    rep.tables.append(
        Table(
            section="findings",
            title="Structures",
            columns=["Structure", "Label", "Voxels", f"{'Volume' if dims == 3 else 'Area'} ({unit})"],
            rows=[[s.name, str(s.label), str(s.voxels), size(s)] for s in structures],
            refs=[[rid] for _ in structures],
        )
    )


def _model_sentences(rep: _Report, rid: str, seg: Any, model_dir: Path | None) -> None:
    rep.say("labels", f"The structures were segmented from the study by the model {_code(seg.model)}.", rid)
    d = seg.domain or {}
    diffs = "; ".join(_code(x) for x in d.get("differences", []))
    if not d.get("checked", False):
        rep.say("labels", "The model records no training domain, so the study could not be checked against it.", rid)
    elif d.get("in_domain", False):
        rep.say("labels", "The study lies within the model's training domain (checked before segmenting).", rid)
    elif d.get("forced", False):
        rep.say(
            "findings",
            "Caution: the study is outside the model's training domain (segmented only because force was given), "
            "so the structures below may not mean anything.",
            rid,
        )
        rep.say(
            "labels",
            "The study lies OUTSIDE the model's training domain and was segmented only because force was given, "
            f"so its structures may not mean anything: {diffs}.",
            rid,
        )
    used = seg.provenance.parameters if seg.provenance else {}
    rep.say(
        "methods",
        f"Segmentation parameters: mirroring test-time augmentation {'on' if used.get('tta') else 'off'}"
        f", force {'on' if used.get('force') else 'off'}; the label map was written to "
        f"{_code(Path(seg.output).name)}.",
        rid,
    )
    if model_dir is None or not (model_dir / "model.json").is_file():
        rep.say("methods", "The model folder has no model.json, so its training is not described here.", rid)
        return
    card = json.loads((model_dir / "model.json").read_text())
    keys = ("name", "dataset", "n_train", "n_val", "medimg_version", "validation_mean_dice", "time_budget_s")
    result = {k: card[k] for k in keys if k in card}
    inputs = [model_dir / f for f in ("model.json", "model.pt", "plan.json") if (model_dir / f).is_file()]
    mid = rep.record("model_info", {"model": str(model_dir)}, result, inputs)
    bits = []
    if "n_train" in result:
        bits.append(
            f"trained on {result['n_train']} cases" + (f" of {_code(result['dataset'])}" if "dataset" in result else "")
        )
    if "n_val" in result:
        val = f"validated on {result['n_val']} held-out cases"
        if "validation_mean_dice" in result:
            val += f" (mean Dice {result['validation_mean_dice']:.3f} on those cases, not on this study)"
        bits.append(val)
    if "medimg_version" in result:
        bits.append(f"with medimg {_code(str(result['medimg_version']))}")
    rep.say(
        "methods",
        f"Model {_code(str(result.get('name', model_dir.name)))} was "
        + ", ".join(bits or ["bundled without a record"])
        + "; its files are identified by their `SHA-256` in the results.",
        mid,
    )


#: What each connectivity joins, in 2D (False) and 3D (True).
_NEIGHBOURS = {
    False: {1: "sharing an edge", 2: "sharing an edge or a corner", 3: "sharing an edge or a corner"},
    True: {1: "sharing a face", 2: "sharing a face or an edge", 3: "sharing a face, an edge or a corner"},
}


def _lesion_unit(dims: int) -> str:
    """The unit of count_lesions' ``volume_ml`` fields: mL in 3D; in 2D (pixel areas / 1000) cm²."""
    return "mL" if dims == 3 else "cm²"


def _lesion_sentences(rep: _Report, rid: str, les: Any, label: int, name: str, when: str, dims: int) -> None:
    what = f"label {label} ({name})" if name else f"label {label}"
    if les.count == 0:
        rep.say("lesions", f"{when}: no lesion of {what} was found.", rid)
        return
    unit = _lesion_unit(dims)
    text = f"{when}: {_plural(les.count, 'lesion')} of {what}, {fmt_ml(les.total_volume_ml)} {unit} in total"
    if les.count > 1:
        text += f"; the largest is {fmt_ml(les.lesions[0].volume_ml)} {unit}"
    rep.say("lesions", text + ".", rid)


def _lesion_table(rep: _Report, rid: str, les: Any, title: str, dims: int) -> None:
    if not les.lesions:
        return
    rep.tables.append(
        Table(
            section="lesions",
            title=title,
            columns=[
                "Lesion",
                f"{'Volume' if dims == 3 else 'Area'} ({_lesion_unit(dims)})",
                "Voxels",
                "Centre (LPS, mm)",
            ],
            rows=[
                [str(x.index), fmt_ml(x.volume_ml), str(x.voxels), ", ".join(f"{c:.1f}" for c in x.centroid_mm)]
                for x in les.lesions
            ],
            refs=[[rid] for _ in les.lesions],
        )
    )


def _comparison(rep: _Report, rid: str, change: Any, names: dict[int, str]) -> None:
    """A sentence and a table row per structure of a ``volume_change`` result; structures are named as measured
    now (``names``) when the earlier label map has other (or no) names for the same label value."""
    rows, refs = [], []
    for s in change.structures:
        name = names.get(s.label, s.name)
        before, after = fmt_ml(s.before_ml), fmt_ml(s.after_ml)
        pct = f"{abs(s.change_pct):.1f} %" if s.change_pct is not None else "n/a"
        if s.before_ml == 0 and s.after_ml == 0:
            text = f"{name} (label {s.label}) was absent at both visits."
        elif s.before_ml == 0:
            text = f"{name} (label {s.label}) was absent at the earlier visit and measures {after} mL now."
        elif s.after_ml == 0:
            text = f"{name} (label {s.label}) measured {before} mL at the earlier visit and is absent now."
        elif s.change_ml == 0:
            text = f"{name} (label {s.label}) is unchanged: {before} mL at both visits."
        else:
            direction = "larger" if s.change_ml > 0 else "smaller"
            text = (
                f"{name} (label {s.label}): {before} mL at the earlier visit, {after} mL now, "
                f"{fmt_ml(abs(s.change_ml))} mL {direction} ({pct})."
            )
        rep.say("comparison", text, rid)
        sign = "+" if s.change_ml > 0 else ("-" if s.change_ml < 0 else "")
        rows.append(
            [
                name,
                str(s.label),
                before,
                after,
                sign + fmt_ml(abs(s.change_ml)),
                (sign + pct) if s.change_pct is not None else pct,
            ]
        )
        refs.append([rid])
    rep.tables.append(
        Table(
            section="comparison",
            title="Volume change",
            columns=["Structure", "Label", "Earlier (mL)", "Now (mL)", "Change (mL)", "Change (%)"],
            rows=rows,
            refs=refs,
        )
    )


def _overlay_png(study: str, labels: str | None, names: dict[int, str] | None = None) -> tuple[bytes, dict[str, Any]]:
    """The overlay figure as PNG bytes and its slice / scale (raises MedimgError when the grids differ); the
    legend names the labels by ``names`` (the measured structures' names)."""
    from PIL import Image as PILImage

    import medimg
    from medimg.report.overlay import overlay_slice
    from medimg.transforms.spatial import reorient

    img = medimg.read(study)
    lab = medimg.read_labels(labels, names=names or None) if labels else None
    fig = overlay_slice(img, lab)
    buf = io.BytesIO()
    PILImage.fromarray(fig.array.swapaxes(0, 1)).save(buf, format="PNG", optimize=True)
    n = reorient(img, "LPS").shape[2] if img.ndim == 3 else None
    return buf.getvalue(), {"slice": fig.meta.get("slice"), "n_slices": n, "mm_per_pixel": fig.meta["mm_per_pixel"]}


# ------------------------------------------------------------------------------------------------------ render


def _refs_md(refs: list[str]) -> str:
    return f" [{', '.join(refs)}]" if refs else ""


def _figure_section(r: ReportResult) -> str:
    """The overlay goes with the structures; with none measured, with the study."""
    return "findings" if r.labels else "study"


def render_markdown(r: ReportResult, figure_file: str | None) -> str:
    """The report as Markdown: sections of sentences (each ending with its result ids), tables, the figure and
    an appendix with every result's parameters, fields and provenance."""
    out = [f"# medimg report: {_code(Path(r.study).name)}", ""]
    for sec, title in SECTION_TITLES.items():
        sents = [s for s in r.sentences if s.section == sec]
        tabs = [t for t in r.tables if t.section == sec]
        figs = r.figures if sec == _figure_section(r) else []
        if not (sents or tabs or figs):
            continue
        out += [f"## {title}", ""]
        out += [f"- {s.text}{_refs_md(s.refs)}" for s in sents]
        out.append("")
        for t in tabs:
            out += [f"**{t.title}**", "", "| " + " | ".join([*t.columns, "Source"]) + " |"]
            out.append("|" + "---|" * (len(t.columns) + 1))
            for row, refs in zip(t.rows, t.refs, strict=True):
                out.append("| " + " | ".join([*row, ", ".join(refs)]) + " |")
            out.append("")
        for f in figs:
            if figure_file:
                out += [f"![overlay]({figure_file})", ""]
            out += [f"*{f.caption}* [{f.id}]", ""]
    out += ["## Results and provenance", ""]
    out.append(
        f"Report made by medimg {_code(r.medimg_version)} at {_code(r.time)}; each result below lists the "
        "operation, its parameters, its fields and its provenance (inputs with `SHA-256`)."
    )
    out.append("")
    for e in r.results:
        out += [f"### {e.id}: {_code(e.operation)}", "", "```json"]
        out.append(json.dumps(e.model_dump(mode="json", exclude={"id"}), indent=1))
        out += ["```", ""]
    return "\n".join(out)


def _inline_html(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _refs_html(refs: list[str]) -> str:
    if not refs:
        return ""
    return ' <span class="ref">[' + ", ".join(f'<a href="#{x}">{x}</a>' for x in refs) + "]</span>"


def render_html(r: ReportResult, png: bytes | None) -> str:
    """The report as one self-contained HTML page: the same sentences and tables as the Markdown, the overlay
    embedded as a base64 PNG, and the results with their provenance."""
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>medimg report: {html.escape(Path(r.study).name)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:.25em .6em}"
        "td.num{text-align:right}.ref{color:#666;font-size:.85em}pre{background:#f6f6f6;padding:.6em;"
        "overflow-x:auto;font-size:.8em}img{max-width:100%}</style></head><body>",
        f"<h1>medimg report: <code>{html.escape(Path(r.study).name)}</code></h1>",
    ]
    for sec, title in SECTION_TITLES.items():
        sents = [s for s in r.sentences if s.section == sec]
        tabs = [t for t in r.tables if t.section == sec]
        figs = r.figures if sec == _figure_section(r) else []
        if not (sents or tabs or figs):
            continue
        h.append(f'<section id="{sec}"><h2>{html.escape(title)}</h2><ul>')
        h += [f"<li>{_inline_html(s.text)}{_refs_html(s.refs)}</li>" for s in sents]
        h.append("</ul>")
        for t in tabs:
            h.append(f"<table><caption>{html.escape(t.title)}</caption><tr>")
            h += [f"<th>{html.escape(c)}</th>" for c in [*t.columns, "Source"]]
            h.append("</tr>")
            for row, refs in zip(t.rows, t.refs, strict=True):
                cells = "".join(
                    f'<td class="num">{html.escape(c)}</td>'
                    if i and re.fullmatch(r"[-+]?[0-9][-0-9., %]*", c)
                    else f"<td>{html.escape(c)}</td>"
                    for i, c in enumerate(row)
                )
                h.append(f"<tr>{cells}<td>{_refs_html(refs).strip()}</td></tr>")
            h.append("</table>")
        for f in figs:
            h.append(f'<figure id="{f.id}">')
            if png is not None:
                b64 = base64.b64encode(png).decode("ascii")
                h.append(f'<img alt="overlay of the structures on the study" src="data:image/png;base64,{b64}">')
            h.append(f"<figcaption>{_inline_html(f.caption)}{_refs_html([f.id, *f.refs])}</figcaption></figure>")
        h.append("</section>")
    h.append('<section id="results"><h2>Results and provenance</h2>')
    h.append(
        f"<p>Report made by medimg <code>{html.escape(r.medimg_version)}</code> at "
        f"<code>{html.escape(r.time)}</code>.</p>"
    )
    for e in r.results:
        h.append(f'<h3 id="{e.id}">{e.id}: <code>{html.escape(e.operation)}</code></h3>')
        h.append(f"<pre>{html.escape(json.dumps(e.model_dump(mode='json', exclude={'id'}), indent=1))}</pre>")
    h.append("</section></body></html>")
    return "\n".join(h)


def _write_text(path: Path, text: str) -> None:
    from medimg.io._atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    from medimg.io._atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------------- operation


@operation(
    "report",
    "Write a measurement-grounded report of a study (.html with an overlay, .md or .json): structure volumes "
    "(from a label map or a model), lesion counts and sizes, volume change against an earlier visit, with every "
    "sentence citing the operation result (and provenance) its numbers come from.",
    reads=("study", "labels", "previous_labels"),
    writes=("output", "labels_output"),
)
def report(p: ReportParams, ctx: Context) -> ReportResult:
    import medimg
    from medimg.io._atomic import check_output_path, split_ext

    out = Path(p.output)
    fmt = FORMATS.get(split_ext(out)[1].lower())
    if fmt is None:
        raise InvalidParametersError(
            f"Report output {out.name!r}: give a .html, .md or .json file name (e.g. report.html)."
        )
    if p.labels and p.model:
        raise InvalidParametersError("Give either labels (an existing label map) or model (to segment), not both.")
    if p.labels and Path(p.labels).is_dir():
        raise InvalidParametersError(
            f"labels {p.labels!r} is a folder; give the one label map file of this study (e.g. seg.nii.gz)."
        )
    check_output_path(out)
    inputs = {Path(x).resolve() for x in (p.study, p.labels, p.previous_labels) if x}
    stem = split_ext(out)[0]
    labels_out = (
        Path(p.labels_output) if p.labels_output else confine(out.with_name(f"{stem}_labels.nii.gz"), ctx.roots)
    )
    figure_out = out.with_name(f"{stem}_overlay.png") if fmt == "md" else None
    for derived in (labels_out if p.model else None, figure_out):
        if derived is not None and derived.resolve() in inputs | {out.resolve()}:
            raise PathNotAllowedError(
                f"The report would write {str(derived)!r}, which is an input or the report itself; choose another "
                "output name."
            )

    rep = _Report(ctx)
    rid_info, info = rep.run("info", {"path": p.study})
    _study_sentences(rep, rid_info, info)
    dims = len(info.shape)

    labels_path: str | None = None
    rid_struct: str | None = None
    if p.model:
        from medimg.seg import resolve_model

        rid_struct, seg = rep.run(
            "segment",
            {"image": p.study, "output": str(labels_out), "model": p.model, "tta": p.tta, "force": p.force},
        )
        labels_path = seg.output
        try:
            model_dir: Path | None = resolve_model(p.model)
        except MedimgError:
            model_dir = None
        _model_sentences(rep, rid_struct, seg, model_dir)
        _structure_findings(rep, rid_struct, seg.structures, dims)
    elif p.labels:
        rid_struct, vol = rep.run("volumes", {"path": p.labels})
        labels_path = p.labels
        rep.say(
            "labels",
            f"The structures come from the label map {_code(Path(p.labels).name)} given with the study; "
            "medimg measured it but did not make it.",
            rid_struct,
        )
        case = vol.cases[0]
        _structure_findings(rep, rid_struct, case.structures, case.dims)
        how = (
            "Volumes are voxel counts times the voxel volume"
            if case.dims == 3
            else "Areas are pixel counts times the pixel area"
        )
        rep.say(
            "methods",
            f"{how} of the label map ({fmt_mm(case.spacing_mm)} mm {'voxels' if case.dims == 3 else 'pixels'}).",
            rid_struct,
        )
    else:
        rep.say("not_measured", "No label map was given and no model was run, so no structure was measured.")

    rid_les: str | None = None
    if p.lesion_label is not None and labels_path:
        rid_les, les = rep.run("count_lesions", {"label_map": labels_path, "label": p.lesion_label})
        name = _structure_names(rep).get(p.lesion_label, "")
        _lesion_sentences(rep, rid_les, les, p.lesion_label, name, "Now", dims)
        _lesion_table(rep, rid_les, les, "Lesions now", dims)
        conn, minimum = les.provenance.parameters["connectivity"], les.provenance.parameters["min_volume_ml"]
        rep.say(
            "methods",
            f"Lesions are the connected components of label {p.lesion_label} (connectivity {conn}: voxels "
            f"{_NEIGHBOURS[dims == 3][conn]}), "
            + (f"ignoring those below {fmt_ml(minimum)} {_lesion_unit(dims)}" if minimum else "with no minimum size")
            + "; centres are in LPS world coordinates.",
            rid_les,
        )
        if p.previous_labels:
            rid_prev, prev = rep.run("count_lesions", {"label_map": p.previous_labels, "label": p.lesion_label})
            _lesion_sentences(rep, rid_prev, prev, p.lesion_label, name, "Earlier visit", dims)
            _lesion_table(rep, rid_prev, prev, "Lesions at the earlier visit", dims)
            if prev.count != les.count:
                rep.say(
                    "lesions",
                    f"The lesion count went from {prev.count} at the earlier visit to {les.count} now.",
                    rid_prev,
                    rid_les,
                )
    elif p.lesion_label is not None:
        rep.say("not_measured", "Lesions were not counted: there is no label map to count them in.")
    else:
        rep.say("not_measured", "Lesions were not counted (no lesion label was given).")

    if p.previous_labels and labels_path:
        rid_chg, chg = rep.run("volume_change", {"before": p.previous_labels, "after": labels_path})
        rep.say(
            "comparison",
            f"The earlier visit is the label map {_code(Path(p.previous_labels).name)}; volumes are compared "
            "structure by structure (same label values).",
            rid_chg,
        )
        _comparison(rep, rid_chg, chg, _structure_names(rep))
        if p.model:
            rep.say(
                "comparison",
                "The current structures were segmented by the model while the earlier label map was given, so part "
                "of any change may come from the different way they were made.",
                rid_struct or rid_chg,
                rid_chg,
            )
    elif p.previous_labels:
        rep.say("not_measured", "An earlier visit was given, but there are no structures now to compare with it.")
    else:
        rep.say("not_measured", "No earlier visit was given, so nothing is compared over time.")

    if p.model:
        rep.say(
            "not_measured",
            "The segmentation was not compared with a reference segmentation of this study; the model's validation "
            "figures describe other images.",
        )
    rep.say(
        "not_measured",
        "Nothing else (diameters, intensities, texture, a diagnosis) was measured, and the report implies none.",
    )

    png: bytes | None = None
    try:
        png, fig = _overlay_png(p.study, labels_path, _structure_names(rep))
    except GeometryError as e:
        if labels_path is None:  # not expected: the study alone has one grid
            raise MedimgError(f"The study's overlay could not be drawn: {e}") from e
        rid_linfo, linfo = rep.run("info", {"path": labels_path})
        rep.say(
            "labels",
            f"The label map is not on the study's voxel grid (it has {fmt_mm(linfo.shape)} voxels of "
            f"{fmt_mm(linfo.spacing_mm)} mm, the study {fmt_mm(info.shape)} voxels of {fmt_mm(info.spacing_mm)} mm, "
            "or they differ in position or direction); its structures were measured on its own grid.",
            rid_info,
            rid_linfo,
        )
        rep.say(
            "not_measured",
            "No overlay was drawn: the label map is not on the study's voxel grid (resample it onto the study "
            "first: `medimg resample LABELS OUT --reference STUDY --labels`).",
            rid_info,
            rid_linfo,
        )
    except MedimgError as e:
        rep.say("not_measured", f"No overlay was drawn: {_code(str(e))}.")
    else:
        refs = [rid_info] + ([rid_struct] if rid_struct else [])
        scale = f"{fig['mm_per_pixel']:.3g} mm per pixel"
        if fig["n_slices"] is not None:
            what = "Structures on axial slice" if labels_path else "Axial slice"
            chosen = "the slice with the most labelled voxels" if labels_path else "the middle slice"
            caption = (
                f"{what} {fig['slice'] + 1} of {fig['n_slices']} ({chosen}), radiological view (patient right on "
                f"the left), {scale}."
            )
        else:
            caption = f"{'Structures on the' if labels_path else 'The'} 2D image, {scale}."
        rep.figures.append(
            Figure(
                id="F1",
                slice_number=fig["slice"] + 1 if fig["slice"] is not None else None,
                n_slices=fig["n_slices"],
                mm_per_pixel=float(fig["mm_per_pixel"]),
                refs=refs,
                caption=caption,
                file=str(figure_out) if figure_out else None,
            )
        )

    written = [str(out)]
    if p.model:
        written.insert(0, str(labels_out))
    result = ReportResult(
        output=str(out),
        format=fmt,
        study=p.study,
        labels=labels_path,
        medimg_version=medimg.__version__,
        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        parameters=p.model_dump(mode="json"),
        sentences=rep.sentences,
        tables=rep.tables,
        figures=rep.figures,
        results=rep.entries,
    )
    if fmt == "md" and png is not None and figure_out is not None:
        _write_bytes(figure_out, png)
        written.append(str(figure_out))
    result.files = written
    if fmt == "json":
        _write_text(out, result.model_dump_json(indent=1, exclude={"provenance"}) + "\n")
    elif fmt == "md":
        _write_text(out, render_markdown(result, figure_out.name if (figure_out and png) else None) + "\n")
    else:
        _write_text(out, render_html(result, png) + "\n")
    return result


def _structure_names(rep: _Report) -> dict[int, str]:
    """Label value -> name of the structures measured so far (segment or volumes results)."""
    names: dict[int, str] = {}
    for e in rep.entries:
        if e.operation not in ("segment", "volumes"):
            continue
        structs = e.result.get("structures") or [s for c in e.result.get("cases", []) for s in c["structures"]]
        for st in structs:
            names.setdefault(int(st["label"]), str(st["name"]))
    return names
