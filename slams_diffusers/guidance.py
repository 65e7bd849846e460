"""Likelihood scores that guide the reverse diffusion towards the observations.

Notation of DESIGN §2: ``z_t = alpha_t z + sigma_t eps``, the denoiser (Tweedie)
``ẑ = (z_t - sigma_t eps_θ(z_t, t)) / alpha_t``. Every observation term is a Gaussian

    y ~ N(h(ẑ), Σ_y + V_t),

where ``h`` is what the term looks at (a time slice of ẑ for the latent route, the
observation operator applied to the decoded state ``A(D(ẑ))`` for the decoded route)
and ``V_t`` models the uncertainty of ẑ:

- ``"diagonal"`` (SDA): ``V_t = γ (sigma_t / alpha_t)² I``;
- ``"tweedie"`` (moment matching, MMPS): ``V_t = J_h Cov[z | z_t] J_h^T`` with
  ``Cov[z | z_t] = sigma_t² / alpha_t ∂ẑ/∂z_t``, applied through vector-Jacobian and
  Jacobian-vector products and inverted with a few conjugate-gradient iterations.

The guided noise is ``ε̃ = ε_θ - sigma_t ∇_{z_t} log p(y | z_t)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

COVARIANCES = ("tweedie", "diagonal")


@dataclass
class GaussianTerm:
    """One observation term ``y ~ N(observe(ẑ), diag(variance) + V_t)`` on ``mask``.

    ``observe`` maps a batch of denoised latents ``(B, T, c, *space)`` to ``(B, *target.shape)``;
    it must be differentiable (autograd and ``torch.func.jvp``). ``target``, ``variance`` and
    ``mask`` have the shape of one observation (no batch dimension); entries where ``mask`` is
    False do not count.
    """

    observe: Callable[[Tensor], Tensor]
    target: Tensor
    variance: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        self.mask = self.mask.to(torch.bool)
        self.target = torch.where(self.mask, self.target, torch.zeros_like(self.target))
        variance = torch.broadcast_to(self.variance, self.target.shape)
        self.variance = torch.where(self.mask, variance, torch.ones_like(variance))


def _batch_dot(u: Sequence[Tensor], v: Sequence[Tensor]) -> Tensor:
    """Per-sample inner product ``Σ_terms Σ_entries u v``, shape ``(B,)``."""
    return sum(torch.sum(a * b, dim=tuple(range(1, a.dim()))) for a, b in zip(u, v, strict=True))


def _scale(coefficient: Tensor, vector: Tensor) -> Tensor:
    return coefficient.reshape(-1, *([1] * (vector.dim() - 1))) * vector


def conjugate_gradient(
    matvec: Callable[[list[Tensor]], list[Tensor]], rhs: list[Tensor], iterations: int
) -> list[Tensor]:
    """Approximately solve ``K u = rhs`` for a symmetric positive-definite ``K``.

    Vectors are lists of tensors whose first dimension is the batch; each sample gets its own
    step sizes, so samples never interact. Starts from ``u = 0``.
    """
    solution = [torch.zeros_like(r) for r in rhs]
    residual = list(rhs)
    direction = list(rhs)
    residual_norm = _batch_dot(residual, residual)
    for _ in range(iterations):
        product = matvec(direction)
        curvature = _batch_dot(direction, product)
        step = torch.where(curvature > 0, residual_norm / curvature, torch.zeros_like(curvature))
        solution = [u + _scale(step, d) for u, d in zip(solution, direction, strict=True)]
        residual = [r - _scale(step, p) for r, p in zip(residual, product, strict=True)]
        new_norm = _batch_dot(residual, residual)
        ratio = torch.where(residual_norm > 0, new_norm / residual_norm, torch.zeros_like(new_norm))
        direction = [r + _scale(ratio, d) for r, d in zip(residual, direction, strict=True)]
        residual_norm = new_norm
    return solution


def likelihood_score(
    z_t: Tensor,
    z_hat: Tensor,
    terms: Sequence[GaussianTerm],
    alpha: Tensor,
    sigma: Tensor,
    covariance: str = "tweedie",
    gamma: float = 1e-2,
    cg_iterations: int = 3,
) -> Tensor:
    """``∇_{z_t} log p(y | z_t)`` summed over ``terms``.

    ``z_hat`` must be the denoiser output computed from ``z_t`` with the autograd graph kept.
    ``"diagonal"`` needs one vector-Jacobian product through the denoiser; ``"tweedie"`` needs
    ``cg_iterations + 1`` of them (the Jacobian ∂ẑ/∂z_t is symmetric, so a VJP applies it).
    """
    if covariance not in COVARIANCES:
        raise ValueError(
            f"`likelihood_covariance` must be one of {COVARIANCES}, got {covariance!r}"
        )
    if covariance == "diagonal":
        inflation = gamma * (sigma / alpha) ** 2
        log_p = 0.0
        for term in terms:
            residual = term.target - term.observe(z_hat)
            log_p = log_p - 0.5 * torch.sum(term.mask * residual**2 / (term.variance + inflation))
        return torch.autograd.grad(log_p, z_t)[0]

    x = z_hat.detach().requires_grad_(True)
    with torch.enable_grad():
        predictions = [term.observe(x) for term in terms]
    masks = [term.mask for term in terms]

    def observe_all(latent: Tensor) -> tuple[Tensor, ...]:
        return tuple(term.observe(latent) for term in terms)

    def pull_back(vectors: list[Tensor]) -> Tensor:
        """``Σ_m J_h_m^T v_m`` at ẑ."""
        return torch.autograd.grad(predictions, x, vectors, retain_graph=True)[0]

    def denoiser_vjp(vector: Tensor, retain: bool) -> Tensor:
        return torch.autograd.grad(z_hat, z_t, vector, retain_graph=retain)[0]

    posterior_scale = sigma**2 / alpha

    def matvec(vectors: list[Tensor]) -> list[Tensor]:
        """``(Σ_y + J_h Cov[z | z_t] J_h^T) v`` restricted to the observed entries."""
        latent_direction = denoiser_vjp(pull_back(vectors), retain=True)
        _, pushed = torch.func.jvp(observe_all, (x.detach(),), (latent_direction,))
        return [
            m * (term.variance * v + posterior_scale * p)
            for m, term, v, p in zip(masks, terms, vectors, pushed, strict=True)
        ]

    residuals = [
        m * (term.target - p.detach()) for m, term, p in zip(masks, terms, predictions, strict=True)
    ]
    solution = conjugate_gradient(matvec, residuals, cg_iterations)
    return denoiser_vjp(pull_back(solution), retain=False)
