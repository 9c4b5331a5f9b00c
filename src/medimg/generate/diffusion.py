"""Gaussian diffusion with a cosine noise schedule, v-prediction and a deterministic DDIM sampler with
classifier-free guidance.

Conventions: images are scaled to [-1, 1]; the diffusion time ``t`` runs over [0, 1] (0 = clean);
``alpha_bar(t) = cos^2(pi/2 * (t + s) / (1 + s))`` normalised so that ``alpha_bar(0) = 1`` (Nichol & Dhariwal 2021,
``s = 0.008``), clipped to [1e-5, 0.99999]. The network predicts ``v = sqrt(ab) * eps - sqrt(1 - ab) * x0``
(Salimans & Ho 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from medimg.generate.unet import DiffusionUNet

_S = 0.008


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """Signal fraction ``alpha_bar`` at time ``t`` in [0, 1]."""
    f = torch.cos((t + _S) / (1 + _S) * math.pi / 2) ** 2
    f0 = math.cos(_S / (1 + _S) * math.pi / 2) ** 2
    return (f / f0).clamp(1e-5, 0.99999)


def training_loss(
    net: DiffusionUNet,
    x0: torch.Tensor,
    y: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean squared error of the predicted velocity at uniformly drawn times (the v-prediction objective)."""
    n = x0.shape[0]
    t = torch.rand(n, generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alpha_bar(t)[:, None, None, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    pred = net(xt, t, y, cond)
    return ((pred.float() - v) ** 2).mean()


@torch.no_grad()
def ddim_sample(
    net: DiffusionUNet,
    shape: tuple[int, ...],
    y: torch.Tensor | None = None,
    cond: torch.Tensor | None = None,
    steps: int = 50,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    bf16: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Draw images ``shape = (n, c, h, w)`` in [-1, 1] with ``steps`` deterministic DDIM steps (eta = 0).

    ``guidance`` > 1 mixes the conditional and the unconditional prediction (classifier-free guidance:
    ``v = v_uncond + guidance * (v_cond - v_uncond)``); 1 uses the conditional prediction only.
    """
    x = torch.randn(shape, generator=generator)
    times = torch.linspace(1.0, 0.0, steps + 1)
    guided = guidance != 1.0 and (y is not None or cond is not None)
    for i in range(steps):
        t, t_next = times[i], times[i + 1]
        ab, ab_next = alpha_bar(t), alpha_bar(t_next) if i < steps - 1 else torch.tensor(1.0)
        tt = torch.full((shape[0],), float(t))
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            if guided:
                yy = None if y is None else torch.cat([y, torch.full_like(y, net.n_classes)])
                cc = None if cond is None else torch.cat([cond, torch.zeros_like(cond)])
                v_c, v_u = net(torch.cat([x, x]), torch.cat([tt, tt]), yy, cc).float().chunk(2)
                v = v_u + guidance * (v_c - v_u)
            else:
                v = net(x, tt, y, cond).float()
        x0 = (ab.sqrt() * x - (1 - ab).sqrt() * v).clamp(-1, 1)
        eps = ((x - ab.sqrt() * x0) / (1 - ab).sqrt()) if ab < 1 else torch.zeros_like(x)
        x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        if on_step is not None:
            on_step(i + 1, steps)
    return x.clamp(-1, 1)
