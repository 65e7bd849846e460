"""The training losses: autoencoder reconstruction, the observation encoders' Gaussian NLL on
randomly degraded observations, and the score net's ε loss (docs/method.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..observations import Observation
from .accelerator import unwrap

__all__ = [
    "reconstruction_loss",
    "gaussian_nll",
    "EncoderBatch",
    "encoder_batches",
    "ObservationEncoderLoss",
    "denoising_loss",
]


def reconstruction_loss(autoencoder: nn.Module, states: Tensor) -> Tensor:
    r"""Level-normalised reconstruction error of the state autoencoder.

    .. math:: \mathcal{L} = \operatorname{mean}\big(((D(E(x)) - x) / s_l)^2\big),

    ``x`` ``(B, T, levels, *space)`` in K, ``s_l`` the per-level std of the autoencoder's config.
    ``autoencoder`` may be wrapped (DDP): it is called, not its methods.
    """
    reconstruction = autoencoder(states, return_dict=False)[0]
    std = torch.as_tensor(
        unwrap(autoencoder).config.level_std, dtype=states.dtype, device=states.device
    )
    std = std.reshape(-1, *([1] * (states.ndim - 3)))
    return ((reconstruction - states) / std).pow(2).mean()


def gaussian_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    r"""Mean Gaussian negative log-likelihood, without the constant:
    :math:`\tfrac12 \operatorname{mean}\big(\log v + (z - \mu)^2 / v\big)`, ``v = exp(logvar)``,
    in float32 at least (mixed-precision outputs are upcast)."""
    mean, logvar, target = (
        t.to(torch.promote_types(t.dtype, torch.float32)) for t in (mean, logvar, target)
    )
    return 0.5 * (logvar + (target - mean).pow(2) * torch.exp(-logvar)).mean()


@dataclass
class EncoderBatch:
    """Observations of one modality on one grid, stacked: ``values``, ``mask``
    ``(n, C, *grid)``, and the latents ``targets`` ``(n, c, *latent)`` of their true states."""

    modality: str
    values: Tensor
    mask: Tensor
    targets: Tensor


def encoder_batches(
    observations: Sequence[Sequence[Observation]], latents: Tensor, modalities: Iterable[str]
) -> list[EncoderBatch]:
    """Group the observations of a batch of states by (modality, grid): one
    :class:`EncoderBatch` per group. ``observations[b]`` are observations of state ``b`` whose
    latent is ``latents[b]``; modalities not in ``modalities`` are skipped."""
    known = set(modalities)
    groups: dict[tuple[str, tuple[int, ...]], list[tuple[Tensor, Tensor, int]]] = {}
    for b, items in enumerate(observations):
        for observation in items:
            if observation.modality not in known:
                continue
            values, mask = observation.to_grid()
            groups.setdefault((observation.modality, tuple(values.shape)), []).append(
                (values, mask, b)
            )
    batches = []
    for (modality, _), members in sorted(groups.items()):
        device, dtype = latents.device, latents.dtype
        batches.append(
            EncoderBatch(
                modality,
                torch.stack([v for v, _, _ in members]).to(device, dtype),
                torch.stack([m for _, m, _ in members]).to(device, dtype),
                latents[[b for _, _, b in members]],
            )
        )
    return batches


class ObservationEncoderLoss(nn.Module):
    r"""Gaussian NLL of each modality encoder's latent against the true state's latent.

    .. math:: \mathcal{L} = \frac{1}{N} \sum_{(m, y, z)} \mathrm{NLL}\big(z;\, \mu_m(y),
              e^{\ell_m(y)}\big),

    summed over the :class:`EncoderBatch` groups (weighted by their size, so every degraded
    observation counts the same), ``z = E(x)`` the frozen autoencoder's latent. Each modality is
    fitted alone, so its variance is calibrated for that modality; the pipeline fuses them.

    A module so that DDP sees one forward per backward whatever the number of groups.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batches: Sequence[EncoderBatch]) -> Tensor:
        if not batches:
            raise ValueError("`batches` is empty: no observation of a known modality.")
        total, count = 0.0, 0
        for batch in batches:
            latent_shape = tuple(batch.targets.shape[2:])
            mean, logvar = self.encoder.encode_modality(
                batch.modality, batch.values, batch.mask, latent_shape
            )
            total = total + gaussian_nll(mean, logvar, batch.targets) * batch.values.shape[0]
            count += batch.values.shape[0]
        return total / count


def denoising_loss(score_model: nn.Module, scheduler: Any, clean: Tensor, generator) -> Tensor:
    r"""The ε (denoising score matching) loss on windows ``clean`` ``(B, window, C, *space)``.

    .. math:: \mathcal{L} = \operatorname{mean}\,\lVert \epsilon_\theta(\alpha_t z + \sigma_t
              \epsilon, t) - \epsilon \rVert^2,\quad t \sim \mathcal{U}(0, 1),\ \epsilon \sim
              \mathcal{N}(0, I),

    ``alpha_t, sigma_t`` from ``scheduler.alpha_sigma`` (docs/method.md §Noise schedule). ``t``
    and ``ε`` are drawn on the CPU from ``generator`` (same draws on every device).
    """
    b = clean.shape[0]
    t = torch.rand(b, generator=generator, dtype=torch.float32).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(clean.device, clean.dtype)
    noisy = scheduler.add_noise(clean, noise, t.to(clean.dtype))
    prediction = score_model(noisy, t, return_dict=False)[0]
    return (prediction.float() - noise.float()).pow(2).mean()
