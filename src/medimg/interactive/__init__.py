"""Interactive (prompt-driven) segmentation: prompts, sessions with the learned promptable network (default) and
zero-training baselines, an interaction simulator. See docs/interactive.md."""

from medimg.interactive.prompts import Box, Click, PromptError, PromptList, Scribble, lasso_prompts
from medimg.interactive.session import InteractiveSession
from medimg.interactive.simulate import next_click, simulate

__all__ = [
    "Box",
    "Click",
    "InteractiveSession",
    "PromptError",
    "PromptList",
    "Scribble",
    "lasso_prompts",
    "next_click",
    "simulate",
]
