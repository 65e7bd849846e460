r"""Optimal interpolation / 3D-Var: the best linear unbiased estimate given ``x_b``, ``B``, ``y``.

Each step ``t`` of the window is analysed with the observations whose ``time_index`` is ``t``
(no temporal correlation of the background error), by minimising

    J(x) = ½ (x − x_b)ᵀ B⁻¹ (x − x_b) + ½ Σ_m (y_m − A_m x)ᵀ R_m⁻¹ (y_m − A_m x)

over the observed entries; its minimiser is the BLUE / Kalman mean

    x_a = x_b + B Aᵀ (A B Aᵀ + R)⁻¹ (y − A x_b).

It is found by conjugate gradients in the control variable ``v`` with ``x = x_b + B^{1/2} v``:

    (I + B^{1/2} Aᵀ R⁻¹ A B^{1/2}) v = B^{1/2} Aᵀ R⁻¹ d,   d = y − A x_b,

a well-conditioned symmetric positive-definite system (see docs/method.md §Background covariance).
``Aᵀ`` is the vector-Jacobian product of the (linear) observation operators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..covariance import BackgroundCovariance
from ..observations import Observation, _as_int, check_observations

__all__ = ["NOISE_VARIANCE_FLOOR", "optimal_interpolation"]

NOISE_VARIANCE_FLOOR = 1e-10
"""Observation-error variances are floored at ``NOISE_VARIANCE_FLOOR · max(diag B)`` (at
``NOISE_VARIANCE_FLOOR`` if ``B = 0``): a perfect observation (``noise_std = 0``) is fitted almost
exactly instead of making ``R⁻¹`` infinite."""


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def optimal_interpolation(
    background: Tensor,
    observations: Sequence[Observation],
    covariance: BackgroundCovariance,
    *,
    iterations: int = 100,
    tolerance: float = 1e-6,
) -> Tensor:
    """The 3D-Var / OI analysis ``x_a`` of every step (formulas in the module docstring).

    Args:
        background: ``x_b``, ``(T, levels, *space)`` (extra leading batch dims are allowed and
            share the observations). Use float64 for an exact BLUE.
        observations: :class:`~slams_diffusers.observations.Observation` objects with linear
            operators; each observes step ``time_index`` of ``background``. Missing values
            (``mask`` False, NaN) contribute nothing; error variances are floored at
            ``NOISE_VARIANCE_FLOOR · max(diag B)``.
        covariance: ``B`` of one step (``levels`` and ``grid_shape`` must match ``background``).
        iterations: maximum number of conjugate-gradient iterations (``>= 0``).
        tolerance: stop when ``‖residual‖ <= tolerance · ‖right-hand side‖``.

    Returns:
        ``x_a``, the shape and dtype of ``background`` (no autograd graph).
    """
    if not isinstance(covariance, BackgroundCovariance):
        raise ValueError(
            f"covariance: expected a BackgroundCovariance (DiagonalCovariance, "
            f"SpectralCovariance), got {type(covariance).__name__}"
        )
    if not isinstance(background, Tensor) or not background.is_floating_point():
        raise ValueError(
            f"background: expected a floating tensor (T, levels, *space), got "
            f"{getattr(background, 'dtype', type(background).__name__)}"
        )
    state_shape = covariance.state_shape
    if background.ndim < len(state_shape) + 1 or tuple(
        background.shape[background.ndim - len(state_shape) :]
    ) != tuple(state_shape):
        raise ValueError(
            f"background: expected shape (T, levels, *space) ending in {tuple(state_shape)} "
            f"(levels={covariance.levels}, grid_shape={covariance.grid_shape} of covariance), "
            f"got {tuple(background.shape)}"
        )
    if not bool(torch.isfinite(background).all()):
        raise ValueError("background: contains NaN or inf; expected finite values")
    iterations = _as_int(iterations, "iterations", minimum=0)
    if not (math.isfinite(float(tolerance)) and tolerance >= 0):
        raise ValueError(f"tolerance: expected a finite float >= 0, got {tolerance}")

    time_dim = background.ndim - len(state_shape) - 1
    steps = background.shape[time_dim]
    observations = check_observations(
        observations, steps=steps, levels=covariance.levels, space=tuple(covariance.grid_shape)
    )
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
