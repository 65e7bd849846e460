"""Optimal interpolation / 3D-Var, the classical baseline (docs/method.md §Baseline: OI / 3D-Var):
the linear-Gaussian update of :mod:`slams_diffusers.linear_update` with a static ``B``, on the
package's observation and covariance objects, its inputs checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..covariance import BackgroundCovariance
from ..linear_update import NOISE_VARIANCE_FLOOR, linear_gaussian_update
from ..observations import Observation, check_observations
from ..validation import as_int

__all__ = ["NOISE_VARIANCE_FLOOR", "optimal_interpolation"]


def optimal_interpolation(
    background: Tensor,
    observations: Sequence[Observation],
    covariance: BackgroundCovariance,
    *,
    iterations: int = 100,
    tolerance: float = 1e-6,
) -> Tensor:
    """The 3D-Var / OI analysis ``x_a`` of every step (the BLUE of
    :func:`~slams_diffusers.linear_update.linear_gaussian_update`).

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
    iterations = as_int(iterations, "iterations", minimum=0)
    if not (math.isfinite(float(tolerance)) and tolerance >= 0):
        raise ValueError(f"tolerance: expected a finite float >= 0, got {tolerance}")

    time_dim = background.ndim - len(state_shape) - 1
    steps = background.shape[time_dim]
    observations = check_observations(
        observations, steps=steps, levels=covariance.levels, space=tuple(covariance.grid_shape)
    )
    return linear_gaussian_update(
        background, observations, covariance, iterations=iterations, tolerance=tolerance
    )
