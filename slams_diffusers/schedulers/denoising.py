"""The Tweedie denoiser, shared by the scheduler and the guidance (docs/method.md §Denoiser)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["tweedie_denoise"]


def tweedie_denoise(
    z_t: Tensor, eps: Tensor, alpha: Tensor | float, sigma: Tensor | float
) -> Tensor:
    """``ẑ = E[z | z_t] = (z_t − sigma_t ε) / alpha_t`` (Tweedie's formula for
    ``z_t = alpha_t z + sigma_t ε``, with ε the noise prediction: Efron 2011; Chung et al. 2023)."""
    return (z_t - sigma * eps) / alpha
