"""Where torch work runs: ``--device auto|cpu|cuda[:N]`` for training, prediction and learned registration.

``auto`` (the default everywhere) uses the first CUDA GPU when PyTorch sees one and the CPU otherwise, so nothing
ever requires a GPU; ``cuda`` asks for a GPU and fails with a clear message when there is none. Results do not
depend on the device beyond floating-point rounding (weights saved from a GPU load on a CPU and vice versa).
"""

from __future__ import annotations

from typing import Any

from medimg.errors import MedimgError

#: The accepted ``--device`` names (``cuda:N`` picks GPU N).
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None = None) -> Any:
    """The ``torch.device`` for a ``--device`` value (None = ``auto``); raises :class:`MedimgError` for unknown
    names and for ``cuda`` without a visible GPU."""
    import torch

    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MedimgError(
                f"--device {text}: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False: no GPU, no "
                "driver, or a CPU-only torch build). Use --device cpu, or --device auto to use a GPU only when there "
                "is one."
            )
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MedimgError(
                f"--device {text}: there are {torch.cuda.device_count()} GPU(s), numbered 0 to "
                f"{torch.cuda.device_count() - 1}."
            )
        return dev
    raise MedimgError(f"Unknown --device {name!r}; use auto, cpu, cuda or cuda:N.")
