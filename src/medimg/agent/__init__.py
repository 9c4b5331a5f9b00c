"""``medimg ask``: plain-language requests planned as typed operations of :mod:`medimg.ops` and answered with
the measured numbers. Offline by default (intent matching with the bundled sentence-embedding model plus slot
filling); optionally planned by a language model behind an OpenAI-compatible endpoint (tool calling). Plans are
lists of operations, validated before they run; no generated code is ever run.
"""

from medimg.agent.core import AskOutcome, ask, describe_plan
from medimg.agent.plan import CompareParams, CompareResult, Plan, Step, StructureRef, validate_plan

__all__ = [
    "AskOutcome",
    "CompareParams",
    "CompareResult",
    "Plan",
    "Step",
    "StructureRef",
    "ask",
    "describe_plan",
    "validate_plan",
]
