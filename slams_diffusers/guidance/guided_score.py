"""The guided noise ``ε̃ = ε_θ − sigma_t ∇_{z_t} log p(y | z_t)`` (docs/method.md §Guidance)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..schedulers.denoising import tweedie_denoise
from .likelihood import canonical_covariance, likelihood_score
from .terms import GaussianTerm

__all__ = ["GuidedScore", "climatology_weight"]


def climatology_weight(alpha: Tensor, sigma: Tensor, snr_range: tuple[float, float]) -> Tensor:
    """Weight ``w ∈ [0, 1]`` of the learned ε: 0 below ``alpha/sigma = snr_range[0]``, 1 above
    ``snr_range[1]``, linear in ``log(alpha/sigma)`` between."""
    low, high = (math.log(v) for v in snr_range)
    snr = torch.log(alpha / sigma)
    return ((snr - low) / (high - low)).clamp(0.0, 1.0)


class GuidedScore:
    r"""``ε̃(z_t, t)``: the prior's ε steered by Gaussian likelihood terms (SDA's ``GaussianScore``,
    azula's ``MMPSDenoiser``; docs/method.md §Guidance).

    Where the signal-to-noise ratio ``alpha_t/sigma_t`` is below ``climatology_snr[1]``, the
    learned ε is blended with the exact ε of the standard-normal climatology of the
    (unit-variance) diffusion space, ``ε_N = sigma_t z_t / (alpha_t² + sigma_t²)``, fully below
    ``climatology_snr[0]``: there ``ẑ = (z_t − sigma_t ε)/alpha_t`` multiplies any error of a
    learned ε by ``sigma_t/alpha_t`` (1000 at t = 1), and the implied ``Cov[z | z_t]`` need not be
    positive definite, while the posterior ``p(z | z_t)`` is still the climatology. ``None``
    keeps the learned ε everywhere.

    Args:
        epsilon_model: ``epsilon_model(z_t, t).sample`` is ε over a whole trajectory (e.g. a
            :class:`~slams_diffusers.models.MarkovBlanketScore`).
        alpha_sigma: ``t -> (alpha_t, sigma_t)`` of the noise schedule.
        terms: the :class:`GaussianTerm` s (none: the prior's ε).
        covariance: ``"moment_matching"`` (alias ``"tweedie"``) or ``"diagonal"``.
        gamma: γ of the diagonal covariance, in normalised units (variances of the diffusion
            space; ``GaussianTerm.scale`` converts).
        cg_iterations: conjugate-gradient iterations of moment matching.
        climatology_snr: ``(low, high)`` of the blend above, or ``None``.
    """

    def __init__(
        self,
        epsilon_model: Callable,
        alpha_sigma: Callable[[Tensor], tuple[Tensor, Tensor]],
        terms: Sequence[GaussianTerm] = (),
        covariance: str = "moment_matching",
        gamma: float = 1e-2,
        cg_iterations: int = 3,
        climatology_snr: tuple[float, float] | None = (0.05, 0.2),
    ) -> None:
        self.epsilon_model = epsilon_model
        self.alpha_sigma = alpha_sigma
        self.terms = list(terms)
        self.covariance = canonical_covariance(covariance)
        self.gamma = gamma
        self.cg_iterations = cg_iterations
        self.climatology_snr = climatology_snr

    def epsilon(self, z_t: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The prior's ε, blended with the climatology's at low signal-to-noise ratio."""
        weight = 1.0
        if self.climatology_snr is not None:
            weight = climatology_weight(alpha, sigma, self.climatology_snr)
        if not isinstance(weight, Tensor) or bool(weight > 0):
            eps = self.epsilon_model(z_t, t).sample
        if isinstance(weight, Tensor) and bool(weight < 1):
            climatology = sigma * z_t / (alpha**2 + sigma**2)
            eps = climatology if bool(weight == 0) else weight * eps + (1 - weight) * climatology
        return eps

    def __call__(self, z_t: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(t)
        alpha, sigma = alpha.to(z_t), sigma.to(z_t)
        if not self.terms:
            with torch.no_grad():
                return self.epsilon(z_t, t, alpha, sigma)
        with torch.enable_grad():
            z_t = z_t.detach().requires_grad_(True)
            eps = self.epsilon(z_t, t, alpha, sigma)
            z_hat = tweedie_denoise(z_t, eps, alpha, sigma)
            score = likelihood_score(
                z_t,
                z_hat,
                self.terms,
                alpha,
                sigma,
                self.covariance,
                self.gamma,
                self.cg_iterations,
            )
        return eps.detach() - sigma * score
