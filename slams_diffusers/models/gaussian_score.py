"""Exact ε of a Gaussian prior: a score model with a closed form, for checks and baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import Tensor

from ..schedulers.scheduling_vp_pc import VPPredictorCorrectorScheduler
from .score_net import ScoreNetOutput


class GaussianScoreModel(ModelMixin, ConfigMixin):
    r"""ε-model of a Gaussian prior ``z ~ N(m, C)`` over a window ``(window, c, *space)``.

    With ``z_t = alpha_t z + sigma_t ε`` the marginal is ``N(alpha_t m, alpha_t² C + sigma_t² I)``,
    so the exact noise prediction is

        ε(z_t, t) = sigma_t (alpha_t² C + sigma_t² I)^{-1} (z_t - alpha_t m),

    evaluated through the eigendecomposition ``C = U Λ U^T``. ``alpha_t, sigma_t`` follow the
    schedule named in the config (the same arguments as ``VPPredictorCorrectorScheduler``).
    Build it with :meth:`from_moments`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        window: int = 1,
        spatial_dims: int = 2,
        sample_shape: Sequence[int] = (8, 8),
        schedule: str = "cosine",
        eta: float = 1e-3,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
    ) -> None:
        super().__init__()
        if len(sample_shape) != spatial_dims:
            raise ValueError(
                f"`sample_shape` must have spatial_dims={spatial_dims} entries, got {sample_shape}"
            )
        size = window * in_channels * math.prod(sample_shape)
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("eigenvalues", torch.ones(size))
        self.register_buffer("eigenvectors", torch.eye(size))
        self.schedule = VPPredictorCorrectorScheduler(
            schedule=schedule, eta=eta, beta_min=beta_min, beta_max=beta_max
        )

    @classmethod
    def from_moments(
        cls, mean: Tensor, covariance: Tensor, *, window: int = 1, in_channels: int = 1, **config
    ) -> GaussianScoreModel:
        """Model of ``N(mean, covariance)``; ``mean`` has shape ``(window, c, *space)``."""
        if mean.shape[:2] != (window, in_channels):
            raise ValueError(
                f"`mean` must have shape (window={window}, in_channels={in_channels}, *space), "
                f"got {tuple(mean.shape)}"
            )
        size = mean.numel()
        if covariance.shape != (size, size):
            raise ValueError(
                f"`covariance` must have shape ({size}, {size}), got {tuple(covariance.shape)}"
            )
        space = tuple(mean.shape[2:])
        model = cls(
            in_channels=in_channels,
            window=window,
            spatial_dims=len(space),
            sample_shape=space,
            **config,
        )
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.to(mean.dtype))
        model.mean = mean.reshape(-1).clone()  # assigning a registered buffer keeps it a buffer
        model.eigenvalues = eigenvalues.clamp_min(0)
        model.eigenvectors = eigenvectors.contiguous()  # eigh returns column-major storage
        return model

    def forward(self, sample: Tensor, timestep: Tensor | float, return_dict: bool = True):
        """``sample`` ``(B, window, c, *space)``, ``timestep`` scalar or ``(B,)`` -> ε."""
        batch = sample.shape[0]
        alpha, sigma = self.schedule.alpha_sigma(torch.as_tensor(timestep, dtype=sample.dtype))
        alpha = alpha.to(sample).expand(batch)[:, None]
        sigma = sigma.to(sample).expand(batch)[:, None]
        centred = sample.reshape(batch, -1) - alpha * self.mean
        coefficients = centred @ self.eigenvectors
        coefficients = coefficients / (alpha**2 * self.eigenvalues + sigma**2)
        eps = sigma * (coefficients @ self.eigenvectors.T)
        eps = eps.reshape(sample.shape)
        return ScoreNetOutput(sample=eps) if return_dict else (eps,)
