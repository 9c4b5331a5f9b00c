"""The self-contained HTML evaluation report: summary table, box plots per class, Dice vs volume, worst cases
with overlay pictures. Plots are inline SVG and pictures inline PNG, so the file can be mailed as it is."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medimg.io._atomic import atomic_path
from medimg.report_colors import label_color

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}h2{margin-top:1.6em}.cases img{width:260px;margin:4px;
image-rendering:pixelated;border:1px solid #999}.cases figure{display:inline-block;margin:4px}
.note{color:#666;font-size:90%}"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else ("∞" if math.isinf(v) else f"{v:.4g}")
    return html.escape(str(v))


def box_plot_svg(groups: dict[str, list[float]], title: str, width: int = 900, height: int = 260) -> str:
    """Box plots (quartiles, median, whiskers at min/max) of finite values per group, as an SVG string."""
    finite = {k: [x for x in v if math.isfinite(x)] for k, v in groups.items()}
    finite = {k: v for k, v in finite.items() if v}
    if not finite:
        return f"<p class='note'>{html.escape(title)}: no finite values.</p>"
    lo = min(min(v) for v in finite.values())
    hi = max(max(v) for v in finite.values())
    if hi == lo:
        hi = lo + 1.0
    left, bottom, top = 50, height - 60, 25
    step = (width - left - 10) / max(1, len(finite))

    def y(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>',
    ]
    for t in np.linspace(lo, hi, 5):
        parts.append(
            f'<text x="{left - 4}" y="{y(t) + 3:.1f}" text-anchor="end">{t:.3g}</text>'
            f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - 10}" y2="{y(t):.1f}" stroke="#eee"/>'
        )
    for i, (name, v) in enumerate(finite.items()):
        q0, q1, q2, q3, q4 = np.quantile(v, [0, 0.25, 0.5, 0.75, 1.0])
        cx = left + step * (i + 0.5)
        w = min(30.0, step * 0.6)
        parts.append(
            f'<line x1="{cx}" y1="{y(q0):.1f}" x2="{cx}" y2="{y(q4):.1f}" stroke="#555"/>'
            f'<rect x="{cx - w / 2:.1f}" y="{y(q3):.1f}" width="{w:.1f}" height="{max(1.0, y(q1) - y(q3)):.1f}" '
            f'fill="#9cc3e6" stroke="#345"/><line x1="{cx - w / 2:.1f}" y1="{y(q2):.1f}" x2="{cx + w / 2:.1f}" '
            f'y2="{y(q2):.1f}" stroke="#c00" stroke-width="2"/>'
            f'<text transform="translate({cx:.1f},{bottom + 8}) rotate(45)" font-size="9">'
            f"{html.escape(name[:18])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(
    xs: Sequence[float],
    ys: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 520,
    height: int = 320,
    log_x: bool = True,
) -> str:
    """A scatter plot as SVG (x on a log scale by default)."""
    pts = [
        (x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
    ]
    if not pts:
        return f"<p class='note'>{html.escape(title)}: no finite values.</p>"
    tx = [math.log10(p[0]) if log_x else p[0] for p in pts]
    x0, x1 = min(tx), max(tx)
    y0, y1 = min(0.0, min(p[1] for p in pts)), max(1.0, max(p[1] for p in pts))
    x1 = x1 if x1 > x0 else x0 + 1
    left, bottom, top, right = 50, height - 40, 25, width - 15
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#444"/>',
        f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text transform="translate(12,{(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>",
        f'<text x="{left}" y="{bottom + 12}">{10**x0 if log_x else x0:.3g}</text>',
        f'<text x="{right}" y="{bottom + 12}" text-anchor="end">{10**x1 if log_x else x1:.3g}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{y0:.2g}</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.2g}</text>',
    ]
    for x, (_, yv) in zip(tx, pts, strict=True):
        px = left + (x - x0) / (x1 - x0) * (right - left)
        py = bottom - (yv - y0) / (y1 - y0) * (bottom - top)
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="#2a6fb0" fill-opacity="0.6"/>')
    parts.append("</svg>")
    return "".join(parts)


def _png_b64(rgb: np.ndarray) -> str:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def disagreement_overlay(pred: np.ndarray, ref: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """RGB picture (rows, cols, 3) of a 2D slice: agreement yellow, reference only green, prediction only red,
    over a grey background. Inputs are (x, y) arrays; the picture has y as rows."""
    if background is None:
        grey = np.zeros(ref.shape, np.float32)
    else:
        b = background.astype(np.float32)
        lo, hi = np.percentile(b, [0.5, 99.5])
        grey = np.clip((b - lo) / (hi - lo if hi > lo else 1.0), 0, 1) * 200
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    p, r = pred > 0, ref > 0
    for mask, color in ((p & r, (230, 220, 40)), (r & ~p, (40, 200, 60)), (p & ~r, (230, 40, 40))):
        rgb[mask] = 0.35 * rgb[mask] + 0.65 * np.asarray(color, np.float32)
    return np.ascontiguousarray(np.round(rgb).astype(np.uint8).swapaxes(0, 1))


def _worst_case_figures(
    worst: list[dict[str, Any]],
    pairs: Sequence[tuple[str, Path, Path]],
    images_dir: Path | None,
    resample: bool,
    spacing_from: str | None,
) -> str:
    import medimg
    from medimg.pairing import align_to_reference, case_id
    from medimg.transforms.spatial import reorient

    by_case = {c: (p, r) for c, p, r in pairs}
    figs = []
    for w in worst:
        if w["case"] not in by_case:  # no readable prediction: nothing to draw
            figs.append(
                f"<figure><figcaption>{html.escape(w['case'])}: mean Dice {w['mean_dice']:.3f} (no readable "
                "prediction file)</figcaption></figure>"
            )
            continue
        pp, rp = by_case[w["case"]]
        ref = medimg.read_labels(rp)
        pred = align_to_reference(medimg.read_labels(pp), ref, w["case"], resample, spacing_from)
        bg = None
        if images_dir is not None:
            cand = [p for p in images_dir.iterdir() if case_id(p) in (w["case"], w["case"] + "_0000")]
            if cand:
                img = medimg.read(cand[0])
                bg = img.channel(0) if img.is_multichannel else img
                bg = bg if bg.same_geometry(ref) else None
        if ref.ndim == 3:
            ref_l, pred_l = reorient(ref, "LPS"), reorient(pred, "LPS")
            bg_l = reorient(bg, "LPS") if bg is not None else None
            wrong = ((pred_l.array > 0) != (ref_l.array > 0)).sum(axis=(0, 1))
            z = int(np.argmax(wrong)) if wrong.any() else ref_l.shape[2] // 2
            pic = disagreement_overlay(
                pred_l.array[:, :, z], ref_l.array[:, :, z], bg_l.array[:, :, z] if bg_l is not None else None
            )
            where = f"axial slice {z}"
        else:
            pic = disagreement_overlay(pred.array, ref.array, bg.array if bg is not None else None)
            where = "2D"
        figs.append(
            f"<figure><img src='data:image/png;base64,{_png_b64(pic)}'><figcaption>"
            f"{html.escape(w['case'])}: mean Dice {w['mean_dice']:.3f} ({where})</figcaption></figure>"
        )
    return "<div class='cases'>" + "".join(figs) + "</div>"


def write_report(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    path: Path,
    pairs: Sequence[tuple[str, Path, Path]] = (),
    images_dir: Path | None = None,
    resample: bool = False,
    spacing_from: str | None = None,
) -> None:
    """Write the HTML report (atomic)."""
    import medimg

    classes = summary["classes"]
    metric_cols = [
        m
        for m in (
            "dice",
            "iou",
            "hd95",
            "assd",
            "masd",
            "nsd",
            "hd",
            "lesion_f1",
            "lesion_mean_dice",
            "panoptic_quality",
        )
        if any(m in c for c in classes.values())
    ]
    head = "<th>n</th><th>failed</th><th>absent</th>" + "".join(f"<th>{m}</th>" for m in metric_cols)
    body = []
    for lab, c in classes.items():
        cells = [f"<td>{c.get('n_cases', '')}</td><td>{c.get('n_failed', '')}</td><td>{c.get('n_absent', '')}</td>"]
        for m in metric_cols:
            s = c.get(m, {})
            if "mean" in s:
                ci = f" [{s['ci95_low']:.3g}, {s['ci95_high']:.3g}]" if "ci95_low" in s else ""
                nf = f" ({s['n_nonfinite']} ∞/NaN left out)" if s.get("n_nonfinite") else ""
                n = f" <span class='note'>n={s['n']}</span>" if s.get("n") != c.get("n_cases") else ""
                cells.append(f"<td>{s['mean']:.4g} ± {s['std']:.3g}{ci}{nf}{n}</td>")
            else:
                cells.append("<td>—</td>")
        r, g, b = label_color(int(lab))
        body.append(
            f"<tr><td class='l'><span style='color:rgb({r},{g},{b})'>■</span> {html.escape(lab)} "
            f"{html.escape(c['name'])}</td>{''.join(cells)}</tr>"
        )
    fails = summary.get("failures", [])
    fail_html = ""
    if fails:
        trs = "".join(
            f"<tr><td class='l'>{html.escape(str(f['case']))}</td><td>{f['label']}</td>"
            f"<td class='l'>{html.escape(str(f['reason']))}</td>"
            f"<td>{_fmt(float(f['worst_distance_mm'])) if 'worst_distance_mm' in f else '—'}</td></tr>"
            for f in fails
        )
        fail_html = (
            f"<h2>Failures ({len(fails)})</h2><table><tr><th class='l'>case</th><th>class</th>"
            f"<th class='l'>reason</th><th>worst-case distance (mm)</th></tr>{trs}</table>"
        )
    names = {str(r["label"]): r["name"] for r in rows}
    dice_groups = {f"{k} {names.get(k, '')}": [r["dice"] for r in rows if str(r["label"]) == k] for k in classes}
    hd_groups = (
        {f"{k} {names.get(k, '')}": [r["hd95"] for r in rows if str(r["label"]) == k] for k in classes}
        if rows and "hd95" in rows[0]
        else {}
    )
    scatter = scatter_svg(
        [r.get("volume_ref_ml", math.nan) for r in rows],
        [r["dice"] for r in rows],
        "Dice vs reference volume (all classes and cases)",
        "reference volume (mL, log scale)",
        "Dice",
    )
    worst = summary.get("worst_cases", [])
    sub = ""
    if "subgroups" in summary:
        sg = summary["subgroups"]
        trs = "".join(
            f"<tr><td class='l'>{html.escape(g)}</td><td>{s.get('n', 0)}</td><td>{_fmt(s.get('mean', math.nan))}"
            f"</td></tr>"
            for g, s in sg["groups"].items()
        )
        sub = (
            f"<h2>Subgroups by {html.escape(sg['column'])}</h2><table><tr><th class='l'>group</th><th>cases</th>"
            f"<th>mean Dice</th></tr>{trs}</table><p>Fairness gap (max - min group mean Dice): "
            f"<b>{_fmt(sg['fairness_gap'])}</b>; worst group: {html.escape(str(sg['worst_group']))}</p>"
        )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>medimg evaluation</title><style>{_CSS}</style>
</head><body><h1>Segmentation evaluation</h1>
<p>{summary["n_cases"]} cases ({summary.get("n_failed_cases", 0)} with a failure); convention <b>{
        html.escape(summary["convention"])
    }</b>; NSD tolerance
{html.escape(str(summary["nsd_tolerance_mm"]))} mm; medimg {
        medimg.__version__
    }. Distances in mm, volumes in mL. Values: mean ± sd
[95 % bootstrap CI] over cases where the metric is finite; n: cases evaluated, failed: failed cases, absent:
cases where neither map has the class. Failure policy <b>{html.escape(str(summary.get("failure_policy", "")))}</b>:
{html.escape(str(summary.get("failure_policy_text", "")))}.</p>
{
        f"<p class='note'>Missing predictions: {html.escape(', '.join(summary['missing_predictions']))}</p>"
        if summary["missing_predictions"]
        else ""
    }
<h2>Per class</h2><table><tr><th class='l'>class</th>{head}</tr>{"".join(body)}</table>
{fail_html}
<h2>Distributions</h2>{box_plot_svg(dice_groups, "Dice per class")}
{box_plot_svg(hd_groups, "HD95 per class (mm)") if hd_groups else ""}
{scatter}{sub}
<h2>Worst cases (lowest mean Dice)</h2><p class='note'>Yellow: agreement, green: reference only (missed), red:
prediction only; the slice with the most disagreement, radiological display.</p>
{_worst_case_figures(worst, pairs, images_dir, resample, spacing_from) if pairs and worst else ""}
</body></html>"""
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")


def line_plot_svg(
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    width: int = 640,
    height: int = 300,
) -> str:
    """Several lines over a shared x axis as SVG (each series scaled to the common y range)."""
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    if not xs or not vals:
        return f"<svg xmlns='http://www.w3.org/2000/svg'><text y='20'>{html.escape(title)}: no data</text></svg>"
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = min(0.0, min(vals)), max(1.0, max(vals))
    left, bottom, top, right = 45, height - 40, 25, width - 150
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">',
        f'<text x="{(left + right) / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#444"/>',
        f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{y0:.2g}</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.2g}</text>',
        f'<text x="{left}" y="{bottom + 12}">{x0:.3g}</text>',
        f'<text x="{right}" y="{bottom + 12}" text-anchor="end">{x1:.3g}</text>',
    ]
    for k, (name, ys) in enumerate(series.items()):
        pts = [
            (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))
            for x, y in zip(xs, ys, strict=True)
            if math.isfinite(y)
        ]
        c = colors[k % len(colors)]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
                + '"/>'
            )
        parts.append(f'<text x="{right + 8}" y="{top + 14 * (k + 1)}" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_comparison_report(result: dict[str, Any], path: Path) -> None:
    """Write the HTML page of ``medimg compare`` (atomic): one row per class and metric with both means, the
    paired difference, its bootstrap CI and p, the Wilcoxon p, wins and failures per method."""
    import medimg

    a, b = list(result["methods"])
    trs = []
    for e in result["comparisons"]:
        ci = f"[{e['ci95_low']:.4g}, {e['ci95_high']:.4g}]" if "ci95_low" in e else "—"
        trs.append(
            f"<tr><td class='l'>{html.escape(e['class'])} {html.escape(e['name'])}</td>"
            f"<td class='l'>{html.escape(e['metric'])} ({'higher' if e['higher_is_better'] else 'lower'} is better)"
            f"</td><td>{e['n']}</td><td>{e[f'n_failed_{a}']}</td><td>{e[f'n_failed_{b}']}</td>"
            f"<td>{_fmt(e[f'mean_{a}'])}</td><td>{_fmt(e[f'mean_{b}'])}</td>"
            f"<td>{_fmt(e.get('mean_difference', math.nan))}</td><td>{ci}</td>"
            f"<td>{html.escape(e.get('bootstrap_p_text', '—'))}</td><td>{html.escape(e.get('wilcoxon_p_text', '—'))}"
            f"</td><td>{e.get(f'{a}_better', '—')} / {e.get(f'{b}_better', '—')} / {e.get('ties', '—')}</td></tr>"
        )
    head = (
        "<tr><th class='l'>class</th><th class='l'>metric</th><th>n</th>"
        f"<th>failed {html.escape(a)}</th><th>failed {html.escape(b)}</th><th>mean {html.escape(a)}</th>"
        f"<th>mean {html.escape(b)}</th><th>{html.escape(a)} - {html.escape(b)}</th><th>95 % CI</th>"
        f"<th>bootstrap p</th><th>Wilcoxon p</th><th>wins {html.escape(a)} / {html.escape(b)} / ties</th></tr>"
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>medimg comparison</title><style>{_CSS}</style>
</head><body><h1>{html.escape(a)} vs {html.escape(b)}</h1>
<p>{len(result["cases"])} paired cases against {html.escape(result["reference"])}; convention
<b>{html.escape(result["convention"])}</b>; failure policy <b>{html.escape(result["failure_policy"])}</b>:
{html.escape(result["failure_policy_text"])}. Difference {html.escape(a)} - {html.escape(b)}: mean over cases
with a paired-bootstrap 95 % CI ({result["n_boot"]} resamples, seed {result["seed"]}); two-sided bootstrap p and
Wilcoxon signed-rank p; medimg {medimg.__version__}. Full evaluations: <a href="{html.escape(a)}/report.html">
{html.escape(a)}</a>, <a href="{html.escape(b)}/report.html">{html.escape(b)}</a>.</p>
<table>{head}{"".join(trs)}</table></body></html>"""
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
