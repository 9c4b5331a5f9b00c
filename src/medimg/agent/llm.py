"""Planning with a language model behind any OpenAI-compatible ``/v1/chat/completions`` endpoint (tool calling).

The operations of :mod:`medimg.ops` are offered as tools with their JSON Schemas, plus ``compare`` (which of
several ``volumes`` results is largest / smallest), ``ask_user`` and ``cannot_do``. The model's tool calls become a
typed :class:`~medimg.agent.plan.Plan`; medimg validates every argument (the operation's schema, path
confinement, no output over an input) and, when that fails, sends the errors back for one corrected plan. The
model never runs anything itself and no generated code is run. Standard library only (``urllib``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from medimg.agent.plan import COMPARE, CompareParams, Plan, Step, StructureRef, validate_plan
from medimg.agent.planner import Declined, Question
from medimg.errors import MedimgError
from medimg.ops import operations

MAX_ROUNDS = 2  #: the first plan and one correction after validation errors
API_KEY_ENV = "MEDIMG_LLM_API_KEY"  #: sent as a bearer token when set

SYSTEM = """You plan requests about medical images for medimg. Answer ONLY by calling tools, all calls in one reply:
- the operations (info, volumes, segment, overlap, volume_change, count_lesions, register, classify, convert, ...)
  run in the order you call them; use their parameter schemas exactly;
- "compare" picks which case has the largest or smallest structure over earlier "volumes" calls (refer to them by
  their tool call ids);
- "ask_user" when a needed file or detail is missing or ambiguous (do not guess);
- "cannot_do" when the request is not something these operations can do.
Paths are relative to {cwd}; only files under {roots} may be used. Outputs must be new files under {cwd}, never an
input. Volumes are in mL."""


def chat_url(url: str) -> str:
    """The chat-completions address for a base URL (``http://host:port``, ``.../v1`` or the full address)."""
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return u
    return u + ("/chat/completions" if u.endswith("/v1") else "/v1/chat/completions")


def tools() -> list[dict[str, Any]]:
    """The tools offered to the model: every operation with its JSON Schema, plus compare / ask_user / cannot_do."""
    out = [
        {
            "type": "function",
            "function": {"name": op.name, "description": op.summary, "parameters": op.params.model_json_schema()},
        }
        for op in operations().values()
    ]
    out.append(
        {
            "type": "function",
            "function": {
                "name": COMPARE,
                "description": "Which case has the largest (or smallest) structure, over earlier 'volumes' calls "
                "(their tool call ids in 'steps').",
                "parameters": CompareParams.model_json_schema(),
            },
        }
    )
    for name, key, what in (
        ("ask_user", "question", "Ask the user for a missing or ambiguous detail instead of guessing."),
        ("cannot_do", "reason", "Say that the request is not something medimg can do, and why."),
    ):
        out.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": what,
                    "parameters": {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]},
                },
            }
        )
    return out


def post(url: str, payload: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """POST JSON to ``url``; the decoded JSON reply (a clear MedimgError when the endpoint fails)."""
    headers = {"Content-Type": "application/json"}
    if os.environ.get(API_KEY_ENV):
        headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return dict(json.loads(r.read().decode()))
    except urllib.error.HTTPError as e:
        raise MedimgError(f"The language model endpoint {url} answered HTTP {e.code}: {e.read()[:300]!r}.") from None
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
        raise MedimgError(f"Cannot use the language model endpoint {url}: {e}.") from None


def _calls(message: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | str]]:
    """(id, name, arguments or the undecodable text) of each tool call in an assistant message."""
    out = []
    for i, c in enumerate(message.get("tool_calls") or [], 1):
        fn = c.get("function", {})
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except json.JSONDecodeError:
            args = raw
        out.append((str(c.get("id") or f"call_{i}"), str(fn.get("name", "")), args))
    return out


def _to_plan(request: str, calls: list[tuple[str, str, dict[str, Any] | str]]) -> Plan | Question | Declined:
    """The tool calls as a plan (step ids s1, s2 ...; compare's references mapped from call ids)."""
    ids: dict[str, str] = {}
    steps: list[Step] = []
    structures: list[StructureRef] = []
    for call_id, name, args in calls:
        if not isinstance(args, dict):
            raise MedimgError(f"Tool call {call_id} ({name}): the arguments are not a JSON object: {args!r}.")
        if name == "ask_user":
            return Question(str(args.get("question", "Could you say more?")))
        if name == "cannot_do":
            return Declined(str(args.get("reason", "The model says this cannot be done.")))
        sid = f"s{len(steps) + 1}"
        ids[call_id] = sid
        if name == COMPARE and isinstance(args.get("steps"), list):
            args = {**args, "steps": [ids.get(str(x), str(x)) for x in args["steps"]]}
            structures += [
                StructureRef(label=int(k), name=str(args.get("structure", f"label {k}")))
                for k in args.get("labels") or []
                if isinstance(k, int)
            ]
        elif name not in operations() and name != COMPARE:
            raise MedimgError(f"Tool call {call_id}: there is no operation {name!r}.")
        steps.append(Step(id=sid, op=name, params=args))
    if not steps:
        raise MedimgError("The language model called no operation.")
    intent = next((s.op for s in steps if s.op == COMPARE), steps[0].op)
    return Plan(
        request=request,
        intent="largest" if intent == COMPARE else intent,
        planner="llm",
        confidence=None,
        steps=steps,
        structures=structures,
    )


def plan_with_llm(request: str, roots: list[Path], url: str, model: str) -> Plan | Question | Declined:
    """Ask the model at ``url`` to plan ``request`` with the operations as tools; validate its plan (one
    correction round with the errors sent back). Raises MedimgError when it never gives a valid plan."""
    endpoint = chat_url(url)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM.format(cwd=roots[0], roots=", ".join(str(r) for r in roots))},
        {"role": "user", "content": request},
    ]
    offered = tools()
    last_error = ""
    for _ in range(MAX_ROUNDS):
        reply = post(
            endpoint, {"model": model, "messages": messages, "tools": offered, "tool_choice": "auto", "temperature": 0}
        )
        try:
            message = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise MedimgError(f"The endpoint {endpoint} did not answer in the chat-completions format.") from None
        calls = _calls(message)
        if not calls:
            text = (message.get("content") or "").strip()
            return Question(text or "The language model gave no plan; could you rephrase the request?")
        try:
            planned = _to_plan(request, calls)
            if isinstance(planned, Plan):
                validate_plan(planned, roots)
            return planned
        except MedimgError as e:
            last_error = str(e)
            messages.append(
                {"role": "assistant", "content": message.get("content"), "tool_calls": message.get("tool_calls")}
            )
            for call_id, _name, _args in calls:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "content": f"Not run: the plan is invalid: {last_error} Call the tools again "
                        "with corrected arguments.",
                    }
                )
    raise MedimgError(f"The language model's plan is invalid: {last_error}")
