"""Likelihood scores ``∇_{z_t} log p(y | z_t)`` (docs/method.md §Likelihood covariance).

With the denoiser ``ẑ(z_t)`` (:func:`~slams_diffusers.schedulers.tweedie_denoise`), every term is
``y ~ N(h(ẑ), Σ + V_t)`` and

- ``"diagonal"`` (SDA, Rozet & Louppe 2023): ``V_t = γ (sigma_t/alpha_t)² scale² I``;
- ``"moment_matching"`` (MMPS, Rozet et al. 2024; alias ``"tweedie"``): ``V_t = J_h Cov[z | z_t]
  J_h^T`` with ``Cov[z | z_t] = sigma_t² / alpha_t · ∂ẑ/∂z_t``, applied by vector-Jacobian and
  Jacobian-vector products and inverted with a few conjugate-gradient iterations over all terms
  jointly (preconditioned by ``(Σ + c_t I)^{-1}``). Then
  ``sigma_t²/alpha_t ∇ log p = Cov J_h^T (Σ + V_t)^{-1} (y − h(ẑ))``: the guided denoiser is the
  Kalman update of ẑ, kept one (bounded, towards the data) when a learned Jacobian is not.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .conjugate_gradient import batch_dot, conjugate_gradient
from .terms import GaussianTerm

__all__ = [
    "COVARIANCES",
    "LIKELIHOOD_COVARIANCES",
    "canonical_covariance",
    "diagonal_score",
    "likelihood_score",
    "moment_matching_score",
]

_ALIASES = {"tweedie": "moment_matching", "mmps": "moment_matching"}


def canonical_covariance(name: str) -> str:
    """The covariance's canonical name (``"tweedie"`` is the old name of moment matching)."""
    name = _ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in LIKELIHOOD_COVARIANCES:
        raise ValueError(
            f"`likelihood_covariance` must be one of {tuple(LIKELIHOOD_COVARIANCES)} (or the "
            f"alias 'tweedie'), got {name!r}"
        )
    return name


@functools.cache
def _load_forward_ad() -> None:
    """Load torch's forward-mode AD once, quietly: its first use imports
    ``torch._decomp.decompositions_for_jvp``, which scripts 18 functions with ``torch.jit.script``,
    each warning ``DeprecationWarning`` (torch 2.9+) about torch's own code."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        torch.func.jvp(torch.sin, (torch.zeros(()),), (torch.ones(()),))


def _jvp(function: Callable, primals: tuple, tangents: tuple) -> tuple:
    """``torch.func.jvp`` without torch's own deprecation warnings (:func:`_load_forward_ad`)."""
    _load_forward_ad()
    return torch.func.jvp(function, primals, tangents)


def _observer(terms: Sequence[GaussianTerm]) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """``h`` of every term at once (for autograd and ``torch.func.jvp``)."""

    def observe_all(latent: Tensor) -> tuple[Tensor, ...]:
        return tuple(term.observe(latent) for term in terms)

    return observe_all


def _preconditioner(
    terms: Sequence[GaussianTerm], alpha: Tensor, sigma: Tensor
) -> Callable[[list[Tensor]], list[Tensor]]:
    """``(Σ + c_t scale² I)^{-1}`` on the observed entries, with ``c_t = sigma_t²/(alpha_t² +
    sigma_t²)`` the climatology's ``Cov[z | z_t]`` in normalised units: exact where ``Σ`` or
    ``V_t`` dominates, and it makes a correlated ``Σ`` (e.g. a spectral B) cheap to invert in few
    iterations. It is also the metric of the Kalman bound."""
    shift = sigma**2 / (alpha**2 + sigma**2)

    def precondition(vectors: list[Tensor]) -> list[Tensor]:
        return [
            term.mask * term.noise_solve(v, shift) for term, v in zip(terms, vectors, strict=True)
        ]

    return precondition


def diagonal_score(
    z_t: Tensor,
    z_hat: Tensor,
    terms: Sequence[GaussianTerm],
    alpha: Tensor,
    sigma: Tensor,
    gamma: float = 1e-2,
    cg_iterations: int = 3,
) -> Tensor:
    """``∇_{z_t} log p(y | z_t)`` with ``V_t = γ (sigma_t/alpha_t)² scale² I`` (SDA): one
    vector-Jacobian product through the denoiser, bounded as a Kalman update.
    ``cg_iterations`` is unused (the signature of :data:`LIKELIHOOD_COVARIANCES`)."""
    inflation = gamma * (sigma / alpha) ** 2
    log_p, residuals = 0.0, []
    for term in terms:
        residual = term.mask * (term.target - term.observe(z_hat))
        residuals.append(residual.detach())
        log_p = log_p - 0.5 * torch.sum(residual * term.noise_solve(residual, inflation))
    score = torch.autograd.grad(log_p, z_t)[0]
    bound = _kalman_bound(
        _observer(terms),
        z_hat.detach(),
        sigma**2 / alpha * score,
        residuals,
        [term.mask for term in terms],
        _preconditioner(terms, alpha, sigma),
    )
    return score * bound


def moment_matching_score(
    z_t: Tensor,
    z_hat: Tensor,
    terms: Sequence[GaussianTerm],
    alpha: Tensor,
    sigma: Tensor,
    gamma: float = 1e-2,
    cg_iterations: int = 3,
) -> Tensor:
    """``∇_{z_t} log p(y | z_t)`` with ``V_t = J_h Cov[z | z_t] J_h^T`` (MMPS):
    ``cg_iterations`` preconditioned conjugate-gradient steps over all terms jointly, then one
    vector-Jacobian product (∂ẑ/∂z_t is symmetric, so a VJP applies it), bounded as a Kalman
    update. ``gamma`` is unused (the signature of :data:`LIKELIHOOD_COVARIANCES`)."""
    masks = [term.mask for term in terms]
    posterior_scale = sigma**2 / alpha
    observe_all = _observer(terms)
    precondition = _preconditioner(terms, alpha, sigma)
    x = z_hat.detach().requires_grad_(True)
    with torch.enable_grad():
        predictions = [term.observe(x) for term in terms]

    def pull_back(vectors: list[Tensor]) -> Tensor:
        """``Σ_m J_h_m^T v_m`` at ẑ."""
        return torch.autograd.grad(predictions, x, vectors, retain_graph=True)[0]

    def denoiser_vjp(vector: Tensor, retain: bool) -> Tensor:
        return torch.autograd.grad(z_hat, z_t, vector, retain_graph=retain)[0]

    def matvec(vectors: list[Tensor]) -> list[Tensor]:
        """``(Σ + J_h Cov[z | z_t] J_h^T) v`` on the observed entries."""
        latent_direction = denoiser_vjp(pull_back(vectors), retain=True)
        _, pushed = _jvp(observe_all, (x.detach(),), (latent_direction,))
        return [
            m * (term.noise_apply(v) + posterior_scale * p)
            for m, term, v, p in zip(masks, terms, vectors, pushed, strict=True)
        ]

    residuals = [
        m * (term.target - p.detach()) for m, term, p in zip(masks, terms, predictions, strict=True)
    ]
    solution = conjugate_gradient(matvec, residuals, cg_iterations, precondition)
    score = denoiser_vjp(pull_back(solution), retain=False)
    bound = _kalman_bound(
        observe_all, x.detach(), posterior_scale * score, residuals, masks, precondition
    )
    return score * bound


#: The likelihood covariances by canonical name: each maps ``(z_t, z_hat, terms, alpha, sigma,
#: gamma, cg_iterations)`` to ``∇_{z_t} log p(y | z_t)``. A new approximation is one more entry.
LIKELIHOOD_COVARIANCES: dict[str, Callable[..., Tensor]] = {
    "moment_matching": moment_matching_score,
    "diagonal": diagonal_score,
}
COVARIANCES = tuple(LIKELIHOOD_COVARIANCES)


def likelihood_score(
    z_t: Tensor,
    z_hat: Tensor,
    terms: Sequence[GaussianTerm],
    alpha: Tensor,
    sigma: Tensor,
    covariance: str = "moment_matching",
    gamma: float = 1e-2,
    cg_iterations: int = 3,
) -> Tensor:
    """``∇_{z_t} log p(y | z_t)`` summed over ``terms``, with the ``covariance`` of
    :data:`LIKELIHOOD_COVARIANCES` (its user-facing name or an alias). ``z_hat`` must be computed
    from ``z_t`` with the autograd graph kept."""
    score = LIKELIHOOD_COVARIANCES[canonical_covariance(covariance)]
    return score(z_t, z_hat, terms, alpha, sigma, gamma=gamma, cg_iterations=cg_iterations)


def _kalman_bound(
    observe_all,
    x: Tensor,
    update: Tensor,
    residuals: list[Tensor],
    masks: list[Tensor],
    metric: Callable[[list[Tensor]], list[Tensor]],
) -> Tensor:
    """Per-sample factor in ``[0, 1]`` that keeps the guided denoiser's update ``Δẑ`` a Kalman
    update: seen by the observations it moves towards them (``<J_h Δẑ, r>_M >= 0``) and by no
    more than the innovation (``|J_h Δẑ|_M <= |r|_M``), in the metric
    ``M = (Σ + c_t scale² I)^{-1}`` (``metric``), as ``J_h K`` with a Kalman gain ``K`` does in
    the metric of the innovation covariance. A Gaussian prior's update is not changed; a learned
    denoiser's indefinite Jacobian at high noise would otherwise step away from, or far past, the
    data. The metric weighs each residual by its error: an uninformative entry (a weak encoded
    pseudo-observation, far out with a huge variance) neither hides an overshoot elsewhere nor
    sets the bound (docs/method.md §Stability)."""
    _, pushed = _jvp(observe_all, (x,), (update.detach(),))
    pushed = [m * p for m, p in zip(masks, pushed, strict=True)]
    towards = batch_dot(pushed, metric(residuals))
    ratio = batch_dot(pushed, metric(pushed)).sqrt() / batch_dot(
        residuals, metric(residuals)
    ).sqrt().clamp_min(torch.finfo(update.dtype).tiny)
    factor = torch.where(ratio > 1, 1 / ratio, torch.ones_like(ratio))
    factor = torch.where(towards >= 0, factor, torch.zeros_like(factor))
    return factor.reshape(-1, *([1] * (update.dim() - 1)))
