"""Typed plans: what ``medimg ask`` will do, as a list of operations (never code).

A :class:`Plan` is a list of :class:`Step` s. Each step is either a registered operation of :mod:`medimg.ops`
(``op`` is its name, ``params`` its parameters, validated by the operation's pydantic model) or the one built-in
comparison step ``compare`` (:class:`CompareParams`), done in Python over the typed results of earlier
``volumes`` steps. :func:`validate_plan` checks every step before anything runs: known operation, parameters that
validate, every path inside the allowed folders, no output that is also an input of the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from medimg.errors import MedimgError
from medimg.ops.base import InvalidParametersError, OpParams, PathNotAllowedError, _paths, confine, get

COMPARE = "compare"


class StructureRef(BaseModel):
    """A structure the request is about: its label value and name."""

    label: int
    name: str


class CompareParams(OpParams):
    """Which case has the largest (or smallest) volume of a structure, over the results of earlier steps."""

    steps: list[str] = Field(description="Ids of earlier 'volumes' steps whose cases are compared.")
    labels: list[int] | None = Field(
        None, description="Labels summed per case (default: every non-zero label, i.e. the whole structure)."
    )
    structure: str = Field("all labels", description="The structure's name, for the answer.")
    direction: Literal["largest", "smallest"] = "largest"


class CaseValue(BaseModel):
    """One case's size of the compared structure."""

    case: str
    path: str
    value: float
    unit: str


class CompareResult(BaseModel):
    """The winner and the full ranking (winner first)."""

    structure: str
    direction: str
    winner: CaseValue
    ranking: list[CaseValue]


class Step(BaseModel):
    """One step of a plan: an operation of :mod:`medimg.ops` or ``compare``."""

    id: str
    op: str
    params: dict[str, Any]


class Plan(BaseModel):
    """What the planner decided: the intent, the steps and the structures the answer focuses on."""

    request: str
    intent: str
    planner: Literal["offline", "llm"] = "offline"
    confidence: float | None = Field(None, description="Offline planner: cosine similarity of the best intent.")
    steps: list[Step] = Field(default_factory=list)
    structures: list[StructureRef] = Field(
        default_factory=list, description="Structures the answer is about (empty: every structure)."
    )


def params_model(op: str) -> type[OpParams]:
    """The parameter model of step ``op`` (an operation or ``compare``)."""
    return CompareParams if op == COMPARE else get(op).params


def validate_plan(plan: Plan, roots: Sequence[Path] | None) -> None:
    """Check every step before running any: a known operation, parameters that validate against its schema,
    every path confined to ``roots``, no output that is also an input, ``compare`` only over earlier ``volumes``
    steps. Raises :class:`InvalidParametersError` / :class:`PathNotAllowedError` / :class:`MedimgError`."""
    inputs: set[Path] = set()
    outputs: list[tuple[str, Path]] = []
    seen: dict[str, str] = {}
    for step in plan.steps:
        if step.id in seen:
            raise InvalidParametersError(f"Plan: the step id {step.id!r} is used twice.")
        model = params_model(step.op)
        try:
            p = model.model_validate(step.params)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'parameters'}: {err['msg']}" for err in e.errors()
            )
            raise InvalidParametersError(f"Plan step {step.id} ({step.op}): {problems}.") from None
        if isinstance(p, CompareParams):
            for ref in p.steps:
                if seen.get(ref) != "volumes":
                    raise InvalidParametersError(
                        f"Plan step {step.id} (compare): {ref!r} is not an earlier 'volumes' step."
                    )
        else:
            op = get(step.op)
            for key in op.reads:
                for v in _paths(getattr(p, key)):
                    q = confine(v, roots).resolve()
                    if not q.exists():
                        raise MedimgError(f"Plan step {step.id} ({step.op}): {v!r} does not exist.")
                    inputs.add(q)
            for key in op.writes:
                outputs += [(v, confine(v, roots).resolve()) for v in _paths(getattr(p, key))]
        seen[step.id] = step.op
    for v, q in outputs:
        if q in inputs:
            raise PathNotAllowedError(f"The output {v!r} is also an input; choose another output path.")
