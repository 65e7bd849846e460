r"""The linear-Gaussian update: the best linear unbiased estimate (BLUE / Kalman mean) of a state
given a first guess ``x_b`` with error covariance ``B`` and observations ``y`` with linear
operators (docs/method.md §Baseline: OI / 3D-Var, §Analysis).

Each step ``t`` of the window is analysed with the observations whose ``time_index`` is ``t``
(no temporal correlation of the background error), by minimising

    J(x) = ½ (x − x_b)ᵀ B⁻¹ (x − x_b) + ½ Σ_m (y_m − A_m x)ᵀ R_m⁻¹ (y_m − A_m x)

over the observed entries; its minimiser is the BLUE / Kalman mean

    x_a = x_b + B Aᵀ (A B Aᵀ + R)⁻¹ (y − A x_b).

It is found by conjugate gradients in the control variable ``v`` with ``x = x_b + B^{1/2} v``:

    (I + B^{1/2} Aᵀ R⁻¹ A B^{1/2}) v = B^{1/2} Aᵀ R⁻¹ d,   d = y − A x_b,

a well-conditioned symmetric positive-definite system (see docs/method.md §Background covariance).
``Aᵀ`` is the vector-Jacobian product of the (linear) observation operators. The OI baseline
(:func:`~slams_diffusers.baselines.optimal_interpolation`) and the filtered analysis
(:mod:`slams_diffusers.analysis`) both rest on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .covariance import BackgroundCovariance
from .observations import Observation

__all__ = ["NOISE_VARIANCE_FLOOR", "linear_gaussian_update"]

NOISE_VARIANCE_FLOOR = 1e-10
"""Observation-error variances are floored at ``NOISE_VARIANCE_FLOOR · max(diag B)`` (at
``NOISE_VARIANCE_FLOOR`` if ``B = 0``): a perfect observation (``noise_std = 0``) is fitted almost
exactly instead of making ``R⁻¹`` infinite."""


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def linear_gaussian_update(
    background: Tensor,
    observations: Sequence[Observation],
    covariance: BackgroundCovariance,
    *,
    iterations: int = 100,
    tolerance: float = 1e-6,
) -> Tensor:
    """The BLUE ``x_a`` of every step of ``background`` (formulas in the module docstring), for
    inputs already checked (:func:`~slams_diffusers.baselines.optimal_interpolation` checks
    them).

    Args:
        background: ``x_b``, a floating tensor ``(T, levels, *space)`` (extra leading batch dims
            share the observations). Use float64 for an exact BLUE.
        observations: with linear operators, each observing step ``time_index`` of
            ``background``; those without an observed value are skipped.
        covariance: ``B`` of one step (its ``state_shape`` ends ``background``'s shape).
        iterations: maximum number of conjugate-gradient iterations.
        tolerance: stop when ``‖residual‖ <= tolerance · ‖right-hand side‖``.

    Returns:
        ``x_a``, the shape and dtype of ``background`` (no autograd graph).
    """
    nonlinear = [o.modality for o in observations if not o.linear]
    if nonlinear:
        raise ValueError(
            f"observations: {nonlinear} observe a function of the state (Transformed); the linear "
            "update (OI, the filtered analysis) takes linear operators only"
        )
    time_dim = background.ndim - len(covariance.state_shape) - 1
    used = [
        o.to(device=background.device, dtype=background.dtype)
        for o in observations
        if o.num_observed > 0
    ]
    x_b = background.detach()
    if not used or iterations == 0:
        return x_b.clone()

    def observe(state: Tensor) -> list[Tensor]:
        return [o.operator(state.select(time_dim, o.time_index)) for o in used]

    largest = float(covariance.variance().max())
    floor = NOISE_VARIANCE_FLOOR * (largest if largest > 0 else 1.0)
    precisions = [
        torch.where(o.mask, 1.0 / o.noise_variance().clamp_min(floor), 0.0).to(x_b) for o in used
    ]

    with torch.enable_grad():
        probe = torch.zeros_like(x_b, requires_grad=True)
        probe_outputs = observe(probe)

    def adjoint(values: list[Tensor]) -> Tensor:
        """``Aᵀ values`` through the retained graph (the operators are linear)."""
        grads = torch.autograd.grad(
            probe_outputs, probe, grad_outputs=values, retain_graph=True, allow_unused=True
        )[0]
        return torch.zeros_like(x_b) if grads is None else grads

    sqrt_b = covariance.apply_sqrt
    with torch.no_grad():
        innovations = [
            torch.where(o.mask, o.values - h, 0.0) for o, h in zip(used, observe(x_b), strict=True)
        ]
        rhs = sqrt_b(adjoint([w * d for w, d in zip(precisions, innovations, strict=True)]))

        def matvec(v: Tensor) -> Tensor:
            seen = observe(sqrt_b(v))
            return v + sqrt_b(adjoint([w * h for w, h in zip(precisions, seen, strict=True)]))

        rhs_norm = float(rhs.square().sum().sqrt())
        if rhs_norm == 0.0:
            return x_b.clone()
        solution = torch.zeros_like(rhs)
        residual = rhs.clone()
        direction = rhs.clone()
        residual_norm2 = _dot([residual], [residual])
        for _ in range(iterations):
            product = matvec(direction)
            step = residual_norm2 / _dot([direction], [product])
            solution = solution + step * direction
            residual = residual - step * product
            new_norm2 = _dot([residual], [residual])
            if float(new_norm2.sqrt()) <= tolerance * rhs_norm:
                break
            direction = residual + (new_norm2 / residual_norm2) * direction
            residual_norm2 = new_norm2
        return x_b + sqrt_b(solution)
