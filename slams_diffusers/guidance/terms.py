"""Gaussian likelihood terms ``y ~ N(h(ẑ), Σ + V_t)`` (docs/method.md §Likelihood terms)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["GaussianTerm"]


@dataclass
class GaussianTerm:
    """One observation term ``y ~ N(observe(ẑ), Σ + V_t)`` on ``mask``.

    ``observe`` maps denoised latents ``(B, T, c, *space)`` to ``(B, *target.shape)`` and is
    differentiable (autograd and ``torch.func.jvp``). ``target`` and ``mask`` have the shape of one
    observation (no batch dimension); entries where ``mask`` is False do not count.

    ``Σ`` is either ``variance`` (diagonal, broadcastable to ``target``) or ``covariance``, an
    object with ``apply(v)`` and ``solve(v, shift)`` such as
    :class:`~slams_diffusers.covariance.SpectralCovariance` (then every entry is observed).
    ``scale`` gives the diagonal covariance its units: ``V_t = γ (sigma_t/alpha_t)² scale²``, with
    ``scale`` the size of one normalised unit of the diffusion space in the units of ``y``.
    """

    observe: Callable[[Tensor], Tensor]
    target: Tensor
    variance: Tensor | None = None
    mask: Tensor | None = None
    covariance: Any = None
    scale: Tensor | float = 1.0

    def __post_init__(self) -> None:
        if (self.variance is None) == (self.covariance is None):
            raise ValueError("a GaussianTerm needs exactly one of `variance` and `covariance`")
        if self.mask is None:
            self.mask = torch.ones_like(self.target, dtype=torch.bool)
        self.mask = self.mask.to(torch.bool)
        if self.covariance is not None and not bool(self.mask.all()):
            raise ValueError("a GaussianTerm with a full `covariance` must observe every entry")
        self.target = torch.where(self.mask, self.target, torch.zeros_like(self.target))
        if self.variance is not None:
            variance = torch.broadcast_to(self.variance, self.target.shape)
            self.variance = torch.where(self.mask, variance, torch.ones_like(variance))

    def noise_apply(self, vector: Tensor) -> Tensor:
        """``Σ v``."""
        if self.covariance is not None:
            return self.covariance.apply(vector)
        return self.variance * vector

    def noise_solve(self, vector: Tensor, shift: Tensor | float) -> Tensor:
        """``(Σ + shift·scale² I)^{-1} v``."""
        shift = shift * torch.as_tensor(self.scale, dtype=vector.dtype, device=vector.device) ** 2
        if self.covariance is not None:
            return self.covariance.solve(vector, shift=shift)
        return vector / (self.variance + shift)
