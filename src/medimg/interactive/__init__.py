"""Interactive (prompt-driven) segmentation: prompts, sessions with zero-training baselines, an interaction
simulator. A learned promptable network is the next step (see the issue notes)."""

from medimg.interactive.prompts import Box, Click, PromptError, PromptList, Scribble
from medimg.interactive.session import InteractiveSession
from medimg.interactive.simulate import next_click, simulate

__all__ = ["Box", "Click", "InteractiveSession", "PromptError", "PromptList", "Scribble", "next_click", "simulate"]
