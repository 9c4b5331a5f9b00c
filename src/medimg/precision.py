"""Choosing bf16 or fp32 autocast for CPU training from timed probe steps (shared by the segmentation, classification
and generator trainers)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

#: bf16 is chosen when its probe steps take less than this share of fp32's time (a smaller gain is timing noise).
BF16_SPEEDUP = 0.8


def bf16_is_faster(step: Callable[[bool], object], stateful: Sequence[Any], timed_steps: int = 2) -> bool:
    """Time ``step(False)`` (fp32) and ``step(True)`` (bf16 autocast): one warm-up step, then ``timed_steps`` timed
    steps each. The state of every object in ``stateful`` (networks, optimisers: anything with ``state_dict`` /
    ``load_state_dict``) is restored afterwards, so the probe leaves no trace in the training. True when bf16 takes
    less than :data:`BF16_SPEEDUP` of fp32's time."""
    saved = [copy.deepcopy(o.state_dict()) for o in stateful]
    timing = {}
    for bf16 in (False, True):
        step(bf16)
        t0 = time.perf_counter()
        for _ in range(timed_steps):
            step(bf16)
        timing[bf16] = time.perf_counter() - t0
    for o, state in zip(stateful, saved, strict=True):
        o.load_state_dict(state)
    return timing[True] < BF16_SPEEDUP * timing[False]
