"""Batched conjugate gradients (moment-matching likelihood, docs/method.md §Moment matching)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["batch_dot", "conjugate_gradient"]


def batch_dot(u: Sequence[Tensor], v: Sequence[Tensor]) -> Tensor:
    """Per-sample inner product ``Σ_terms Σ_entries u v``, shape ``(B,)``."""
    return sum(torch.sum(a * b, dim=tuple(range(1, a.dim()))) for a, b in zip(u, v, strict=True))


def _scale(coefficient: Tensor, vector: Tensor) -> Tensor:
    return coefficient.reshape(-1, *([1] * (vector.dim() - 1))) * vector


def conjugate_gradient(
    matvec: Callable[[list[Tensor]], list[Tensor]],
    rhs: list[Tensor],
    iterations: int,
    preconditioner: Callable[[list[Tensor]], list[Tensor]] | None = None,
) -> list[Tensor]:
    """Approximately solve ``K u = rhs`` for a symmetric positive-definite ``K`` from ``u = 0``,
    with conjugate gradients preconditioned by ``M ≈ K^{-1}`` (symmetric positive definite; none:
    ``M = I``).

    Vectors are lists of tensors whose first dimension is the batch; each sample has its own step
    sizes, so samples never interact. A direction of non-positive curvature (``K`` not positive
    definite there, e.g. a learned denoiser's Jacobian at high noise) stops that sample's
    iteration where it is instead of stepping along it.
    """
    precondition = preconditioner if preconditioner is not None else list
    solution = [torch.zeros_like(r) for r in rhs]
    residual = list(rhs)
    preconditioned = precondition(residual)
    direction = list(preconditioned)
    residual_norm = batch_dot(residual, preconditioned)
    active = torch.ones_like(residual_norm, dtype=torch.bool)
    for _ in range(iterations):
        product = matvec(direction)
        curvature = batch_dot(direction, product)
        active = active & (curvature > 0) & (residual_norm > 0)
        step = torch.where(active, residual_norm / curvature, torch.zeros_like(curvature))
        solution = [u + _scale(step, d) for u, d in zip(solution, direction, strict=True)]
        residual = [r - _scale(step, p) for r, p in zip(residual, product, strict=True)]
        preconditioned = precondition(residual)
        new_norm = batch_dot(residual, preconditioned)
        ratio = torch.where(active, new_norm / residual_norm, torch.zeros_like(new_norm))
        direction = [z + _scale(ratio, d) for z, d in zip(preconditioned, direction, strict=True)]
        residual_norm = new_norm
    return solution
