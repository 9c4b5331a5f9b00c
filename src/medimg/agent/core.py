"""``ask(request)``: plan (offline or with a language model), validate, run through :mod:`medimg.ops`, answer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from medimg.agent.answer import compose, execute
from medimg.agent.plan import Plan, validate_plan
from medimg.ops import Context


class AskOutcome(BaseModel):
    """What ``medimg ask`` prints (``--json``): the answer, the plan, the typed results, files and provenance.

    ``status`` is ``answered`` (ran), ``planned`` (``--dry-run``), ``question`` (needs something from the user)
    or ``declined`` (not something medimg can do)."""

    status: Literal["answered", "planned", "question", "declined"]
    answer: str
    plan: Plan | None = None
    results: dict[str, Any] = Field(default_factory=dict, description="Typed results by step id.")
    files: list[str] = Field(default_factory=list)
    provenance: list[dict[str, Any]] = Field(default_factory=list)


def _roots(roots: Sequence[str | Path] | None) -> list[Path]:
    out = [Path.cwd().resolve()]
    for r in roots or ():
        q = Path(r).expanduser().resolve()
        if q not in out:
            out.append(q)
    return out


def ask(
    request: str,
    roots: Sequence[str | Path] | None = None,
    dry_run: bool = False,
    llm_url: str | None = None,
    llm_model: str | None = None,
    ctx: Context | None = None,
) -> AskOutcome:
    """Answer ``request`` about files under the current folder or ``roots``.

    Without ``llm_url`` the offline planner (:mod:`medimg.agent.planner`) plans; with it, the model behind that
    OpenAI-compatible endpoint plans by calling the operations as tools (:mod:`medimg.agent.llm`). Either way the
    plan is a typed list of operations, validated (schemas, path confinement, no output over an input) before
    anything runs, and executed by :func:`medimg.ops.run`.
    """
    allowed = _roots(roots)
    context = ctx or Context(roots=allowed)
    if context.roots is None:
        context.roots = allowed
    if llm_url:
        from medimg.agent.llm import plan_with_llm

        planned = plan_with_llm(request, allowed, llm_url, llm_model or "default")
    else:
        from medimg.agent.planner import plan_request

        planned = plan_request(request, allowed)
    if not isinstance(planned, Plan):
        from medimg.agent.planner import Question

        status: Literal["question", "declined"] = "question" if isinstance(planned, Question) else "declined"
        return AskOutcome(status=status, answer=planned.text)
    validate_plan(planned, allowed)
    if dry_run:
        return AskOutcome(status="planned", answer=describe_plan(planned), plan=planned)
    results = execute(planned, context)
    files: list[str] = []
    prov: list[dict[str, Any]] = []
    for r in results.values():
        files += list(getattr(r, "files", []) or [])
        p = getattr(r, "provenance", None)
        if p is not None:
            prov.append(p.model_dump(mode="json"))
    return AskOutcome(
        status="answered",
        answer=compose(planned, results, context.notes),
        plan=planned,
        results={k: v.model_dump(mode="json", exclude={"provenance"}) for k, v in results.items()},
        files=files,
        provenance=prov,
    )


def describe_plan(plan: Plan) -> str:
    """The plan in words: one line per step."""
    lines = [
        f"Plan ({plan.planner} planner, form '{plan.intent}'"
        + (f", similarity {plan.confidence:.2f}" if plan.confidence is not None else "")
        + "):"
    ]
    for st in plan.steps:
        args = ", ".join(f"{k}={v!r}" for k, v in st.params.items())
        lines.append(f"  {st.id}: {st.op}({args})")
    if plan.structures:
        lines.append("  about: " + ", ".join(f"{s.name} (label {s.label})" for s in plan.structures))
    return "\n".join(lines)
