"""Validation-fitted multiplicative spread inflation of the analysis ensemble (docs/method.md
§Spread inflation).

The sampler is calibrated on its own prior, but the window's likelihood terms count errors that
are correlated in time (the background's, an encoder's at consecutive steps) as independent, so
on real windows the ensemble is too narrow by a factor that is stable across windows and
observing networks. As the multiplicative inflation ``ρ`` of an ensemble Kalman filter
(Anderson & Anderson 1999), which is also tuned on validation cases, one factor per level widens
the members about their mean,

``x_i ← x̄ + ρ_l (x_i − x̄)``,

fitted so that the finite-ensemble spread-skill ratio (Fortin et al. 2014) is one on validation
windows:

``ρ_l² = mean_w mse_l(x̄_w, x_w) / ((N + 1)/N · mean_w Var_l(x_w))``.

The ensemble mean, and so the analysis RMSE, is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["fit_spread_inflation", "inflate_spread", "spread_inflation_factors"]


def spread_inflation_factors(
    spread_inflation: Sequence[float] | float | Tensor, levels: int
) -> Tensor:
    """``ρ_l`` as a float64 tensor ``(levels,)`` from one factor or one per level;
    ``ValueError`` unless every factor is finite and > 0."""
    factors = torch.as_tensor(spread_inflation, dtype=torch.float64).reshape(-1)
    if factors.numel() == 1:
        factors = factors.expand(levels)
    if factors.numel() != levels or not bool(torch.isfinite(factors).all()):
        raise ValueError(
            f"`spread_inflation` must be one finite factor or one per level ({levels}), got "
            f"{factors.tolist()}"
        )
    if bool((factors <= 0).any()):
        raise ValueError(f"`spread_inflation` must be > 0, got {factors.tolist()}")
    return factors


def inflate_spread(
    members: Tensor, spread_inflation: Sequence[float] | float | Tensor, level_dim: int
) -> Tensor:
    """``x̄ + ρ_l (x_i − x̄)`` for members on axis 0 and levels on ``level_dim`` (of
    ``members``); ``ρ`` one factor or one per level. A single member is returned unchanged."""
    levels = members.shape[level_dim]
    factors = spread_inflation_factors(spread_inflation, levels)
    if members.shape[0] < 2 or bool((factors == 1).all()):
        return members
    shape = [1] * members.dim()
    shape[level_dim] = levels
    factors = factors.to(members).reshape(shape)
    mean = members.mean(0, keepdim=True)
    return mean + factors * (members - mean)


def fit_spread_inflation(
    ensembles: Sequence[Tensor], truths: Sequence[Tensor], level_dim: int
) -> list[float]:
    """``ρ_l`` (one per level) from validation ensembles ``(N, ...)`` and their truths
    (``ensembles[w].shape[1:]``), ``level_dim`` counted on a truth. Squared errors and variances
    are pooled over windows before the ratio, as the spread-skill ratio is.

    Raises:
        ValueError: no windows, a window with fewer than 2 members, mismatched shapes, or a level
            without spread.
    """
    if len(ensembles) == 0 or len(ensembles) != len(truths):
        raise ValueError(
            f"`ensembles` and `truths` must be non-empty and of the same length, got "
            f"{len(ensembles)} and {len(truths)}"
        )
    squared, variance = 0.0, 0.0
    for index, (members, truth) in enumerate(zip(ensembles, truths, strict=True)):
        if members.dim() < 2 or members.shape[0] < 2 or members.shape[1:] != truth.shape:
            raise ValueError(
                f"`ensembles[{index}]` must be (members >= 2, *truth.shape) with truth "
                f"{tuple(truth.shape)}, got {tuple(members.shape)}"
            )
        members, truth = members.double(), truth.double()
        n = members.shape[0]
        dims = [d for d in range(truth.dim()) if d != level_dim % truth.dim()]
        squared = squared + (members.mean(0) - truth).pow(2).mean(dims)
        variance = variance + (n + 1) / n * members.var(0).mean(dims)
    if bool((variance <= 0).any()):
        raise ValueError("an ensemble has no spread at some level: nothing to inflate")
    return (squared / variance).sqrt().tolist()
