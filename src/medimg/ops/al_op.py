"""The ``al_next`` operation: propose the next cases to label (active learning; engine: :mod:`medimg.active`).

Ranks the unlabelled cases of a dataset (images in ``imagesTr`` without a label in ``labelsTr``, or the images of
a given folder) by a strategy's informativeness score for a segmentation model, returns the top ``n`` (and
optionally writes the whole ranking as CSV or JSON, atomically). Unlabelled images outside the model's training
domain are refused and listed, not ranked. Bad input (no unlabelled case, ``n < 1``, an unknown strategy, an
output that is not .csv/.json) is refused before any file is written.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from medimg.errors import MedimgError
from medimg.ops.base import Context, OpParams, OpResult, operation

Strategy = Literal["random", "entropy", "tta", "mc-dropout", "coreset", "hybrid"]


class AlNextParams(OpParams):
    dataset: str = Field(description="Dataset folder (imagesTr/ + labelsTr/, MSD or nnU-Net layout).")
    model: str = Field("hippocampus", description="Segmentation model folder, or a bundled model's name.")
    strategy: Strategy = Field(
        "entropy",
        description="random (seeded) | entropy (mean predictive entropy near the predicted foreground) | tta "
        "(disagreement across mirrored passes) | mc-dropout (test-time feature dropout: the networks have no "
        "dropout layers) | coreset (k-center greedy on pooled bottleneck features) | hybrid (most uncertain, "
        "then k-center among them).",
    )
    n: int = Field(10, description="How many cases to propose (at least 1).")
    unlabeled: str | None = Field(
        None, description="Folder of unlabelled images to rank instead of the dataset's unlabelled imagesTr cases."
    )
    output: str | None = Field(None, description="Write the whole ranking here (.csv or .json).")
    seed: int = Field(0, description="Seed of random and of mc-dropout's masks.")
    passes: int | None = Field(
        None, description="tta: mirror combinations (default all, 8 in 3D); mc-dropout: stochastic passes (default 8)."
    )
    dropout_rate: float = Field(0.1, description="mc-dropout: channel dropout rate on the decoder features.")
    hybrid_factor: int = Field(3, description="hybrid: k-center among the factor x n most uncertain cases.")


class RankedCase(BaseModel):
    rank: int
    case_id: str
    score: float = Field(description="Higher = more informative (meaning depends on the strategy).")
    images: list[str]
    details: dict[str, float] = Field(default_factory=dict)


class RefusedCase(BaseModel):
    case_id: str
    images: list[str]
    reasons: list[str] = Field(description="Why it is outside the model's domain (or could not be read).")


class AlNextResult(OpResult):
    dataset: str
    model: str
    strategy: str
    n: int
    proposed: list[RankedCase] = Field(description="The top n cases to label next, most informative first.")
    n_unlabelled: int = Field(description="Unlabelled cases found (ranked + refused).")
    n_ranked: int
    n_labelled: int = Field(description="Labelled cases of the dataset (coreset/hybrid centres).")
    refused: list[RefusedCase] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def _table(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["rank", "case_id", "score", "images"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@operation(
    "al_next",
    "Active learning: rank a dataset's unlabelled cases by how informative they are for a segmentation model "
    "(random, entropy, tta, mc-dropout, coreset or hybrid) and propose the top n to label next; out-of-domain "
    "images are refused and listed.",
    reads=("dataset", "unlabeled"),
    writes=("output",),
)
def al_next(p: AlNextParams, ctx: Context) -> AlNextResult:
    from medimg.active import find_candidates, rank_cases, ranking_rows
    from medimg.io._atomic import atomic_path, check_output_path
    from medimg.seg import Predictor, resolve_model

    if p.n < 1:
        raise MedimgError(f"n = {p.n}: give the number of cases to propose, at least 1 (e.g. -n 10).")
    if p.output is not None:
        if not p.output.lower().endswith((".csv", ".json")):
            raise MedimgError(f"{Path(p.output).name!r}: write the ranking as .csv or .json.")
        check_output_path(p.output)
    pool, labelled = find_candidates(p.dataset, p.unlabeled)
    pred = Predictor(resolve_model(p.model))
    r = rank_cases(
        pred,
        pool,
        p.strategy,
        p.n,
        labelled=labelled,
        seed=p.seed,
        passes=p.passes,
        dropout_rate=p.dropout_rate,
        hybrid_factor=p.hybrid_factor,
        progress=ctx.progress,
    )
    ranked = [
        RankedCase(rank=c.rank, case_id=c.case_id, score=c.score, images=[str(x) for x in c.images], details=c.details)
        for c in r.ranked
    ]
    refused = [RefusedCase(case_id=c.case_id, images=[str(x) for x in c.images], reasons=c.reasons) for c in r.refused]
    model_name = str(pred.info.get("name", p.model))
    files = []
    if p.output is not None:
        with atomic_path(p.output) as tmp:
            if p.output.lower().endswith(".json"):
                doc = {
                    "dataset": p.dataset,
                    "model": model_name,
                    "strategy": p.strategy,
                    "settings": r.settings,
                    "ranking": [c.model_dump() for c in ranked],
                    "refused": [c.model_dump() for c in refused],
                    "notes": r.notes,
                }
                tmp.write_text(json.dumps(doc, indent=1) + "\n")
            else:
                tmp.write_text(_table(ranking_rows(r)))
        files.append(p.output)
    ctx.notes.extend(r.notes)
    return AlNextResult(
        dataset=p.dataset,
        model=model_name,
        strategy=p.strategy,
        n=p.n,
        proposed=ranked[: p.n],
        n_unlabelled=r.n_candidates,
        n_ranked=len(ranked),
        n_labelled=r.n_labelled,
        refused=refused,
        settings=r.settings,
        notes=r.notes,
        files=files,
    )
