"""Differential privacy for a site's training, on Opacus (DP-SGD: per-sample clipping + Gaussian noise, RDP
accounting).

Privacy unit: one **case** (a patient's volume). Every step samples each training case independently with
probability ``q`` (Poisson sampling, what the RDP accountant assumes) and takes one patch from each sampled case,
so a case contributes at most one clipped per-sample gradient to a step. The loss of a batch is the mean of
per-case losses (Dice + cross-entropy of each patch alone: the usual batch Dice would couple the cases and void the
per-sample clipping bound).

The noise multiplier is calibrated before training from the planned number of steps (Opacus'
``get_noise_multiplier``); a site that stops early has spent less than its target epsilon, and what it spent is
recomputed from the steps it actually made (:func:`epsilon_spent`).

Opacus has no per-sample-gradient rule for ``ConvTranspose2d/3d`` (DynUNet's upsampling), and its functorch
fallback fails on current torch, so :func:`_conv_transpose_grad_sample` adds one for the case DynUNet uses
(kernel == stride, no padding, no groups or dilation).
"""

from __future__ import annotations

import warnings
from typing import Any

from medimg.errors import MedimgError

#: Opacus' accountant used for calibration and reporting.
ACCOUNTANT = "rdp"


def _register_conv_transpose() -> None:
    import torch
    from opacus.grad_sample import register_grad_sampler
    from opacus.grad_sample.grad_sample_module import GradSampleModule

    if torch.nn.ConvTranspose3d in GradSampleModule.GRAD_SAMPLERS:
        return

    @register_grad_sampler([torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d])
    def _conv_transpose_grad_sample(layer: Any, activations: list[Any], backprops: Any) -> dict[Any, Any]:
        """Per-sample gradients of a transposed convolution whose kernel equals its stride (no overlap).

        ``y[n, o, k*i + a] = sum_c x[n, c, i] * W[c, o, a]`` per spatial axis, so
        ``dW[n, c, o, a] = sum_i x[n, c, i] * g[n, o, k*i + a]``."""
        x = activations[0].to(backprops.dtype)
        d = x.dim() - 2
        k = tuple(layer.kernel_size)
        if (
            tuple(layer.stride) != k
            or any(layer.padding)
            or any(layer.output_padding)
            or layer.groups != 1
            or any(v != 1 for v in layer.dilation)
        ):
            raise MedimgError(
                "Differential privacy supports transposed convolutions with kernel == stride only (DynUNet's "
                f"upsampling); this layer has kernel {k}, stride {tuple(layer.stride)}."
            )
        n, o = backprops.shape[:2]
        spatial = x.shape[2:]
        # g: (n, o, I, a, J, b, [K, c]) -> contract with x (n, c, I, J, [K])
        shape = [n, o]
        for s, kk in zip(spatial, k, strict=True):
            shape += [s, kk]
        g = backprops.reshape(shape)
        spec = "nCij,noiajb->nCoab" if d == 2 else "nCijk,noiajbkc->nCoabc"
        gw = torch.einsum(spec, x, g)
        out = {}
        if layer.weight.requires_grad:
            out[layer.weight] = gw
        if layer.bias is not None and layer.bias.requires_grad:
            out[layer.bias] = backprops.sum(dim=tuple(range(2, backprops.dim())))
        return out


def _register_fast_conv() -> None:
    """Per-sample weight gradients of Conv2d/Conv3d through the convolution backward-weight kernel, one sample at
    a time (``torch.nn.grad.conv3d_weight``): the same numbers as Opacus' im2col rule, several times faster on 3D
    patches because no unfolded copy of the input is built. Grouped convolutions keep Opacus' rule."""
    import torch
    from opacus.grad_sample import register_grad_sampler
    from opacus.grad_sample.conv import compute_conv_grad_sample

    @register_grad_sampler([torch.nn.Conv2d, torch.nn.Conv3d])
    def _conv_grad_sample(layer: Any, activations: list[Any], backprops: Any) -> dict[Any, Any]:
        if layer.groups != 1 or isinstance(layer.padding, str):
            return compute_conv_grad_sample(layer, activations, backprops)
        x = activations[0].to(backprops.dtype)
        from torch.nn import grad as nn_grad

        fn = nn_grad.conv3d_weight if x.dim() == 5 else nn_grad.conv2d_weight
        out = {}
        if layer.weight.requires_grad:
            out[layer.weight] = torch.stack(
                [
                    fn(
                        x[i : i + 1],
                        layer.weight.shape,
                        backprops[i : i + 1],
                        layer.stride,
                        layer.padding,
                        layer.dilation,
                    )
                    for i in range(x.shape[0])
                ]
            )
        if layer.bias is not None and layer.bias.requires_grad:
            out[layer.bias] = backprops.sum(dim=tuple(range(2, backprops.dim())))
        return out


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The Gaussian noise multiplier (noise std / clipping norm) that spends ``epsilon`` at ``delta`` over ``steps``
    Poisson-sampled steps of rate ``sample_rate`` (Opacus' RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    check_budget(epsilon, delta)
    if not 0 < sample_rate <= 1:
        raise MedimgError(f"The sampling rate must be in (0, 1], not {sample_rate}.")
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound for very few steps
        warnings.simplefilter("ignore", UserWarning)
        sigma = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=max(1, int(steps)),
            accountant=ACCOUNTANT,
        )
    return float(sigma)


def epsilon_spent(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``steps`` steps with noise multiplier ``noise`` and sampling rate
    ``sample_rate`` (0 when no step was made)."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(noise, sample_rate, int(steps))]
    return float(acc.get_epsilon(delta=delta))


def check_budget(epsilon: float, delta: float) -> None:
    """Refuse privacy parameters that make no sense."""
    if not epsilon > 0:
        raise MedimgError(f"--dp-epsilon must be > 0 (e.g. 8), not {epsilon}.")
    if not 0 < delta < 1:
        raise MedimgError(f"--dp-delta must be in (0, 1) (e.g. 1e-3, below 1 / the number of cases), not {delta}.")


def _unique_gsm_class() -> Any:
    from opacus import GradSampleModule

    class UniqueGradSampleModule(GradSampleModule):
        """Hooks each layer once: MONAI's DynUNet reaches the same layers through two attributes
        (``skip_layers`` and ``downsamples``/``upsamples``), and Opacus would otherwise hook them twice and double
        every per-sample gradient."""

        def iterate_submodules(self, module: Any) -> Any:
            seen: set[int] = set()
            for m in super().iterate_submodules(module):
                if id(m) not in seen:
                    seen.add(id(m))
                    yield m

    return UniqueGradSampleModule


def make_private(net: Any, optimizer: Any, noise: float, max_grad_norm: float, expected_batch_size: int) -> tuple:
    """Wrap ``net`` in Opacus' ``GradSampleModule`` and ``optimizer`` in its ``DPOptimizer`` (per-sample clipping to
    ``max_grad_norm``, Gaussian noise ``noise * max_grad_norm``, gradients averaged over ``expected_batch_size``)."""
    from opacus.optimizers import DPOptimizer
    from opacus.validators import ModuleValidator

    _register_conv_transpose()
    _register_fast_conv()
    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise MedimgError(f"This network cannot be trained with differential privacy: {errors[0]}")
    gsm = _unique_gsm_class()(net, batch_first=True, loss_reduction="mean", strict=False)
    opt = DPOptimizer(
        optimizer,
        noise_multiplier=noise,
        max_grad_norm=max_grad_norm,
        expected_batch_size=max(1, expected_batch_size),
        loss_reduction="mean",
    )
    return gsm, opt
