"""What a trained model is measured and calibrated with after training: reconstruction error,
the encoders' calibration, the likelihood and fused-posterior calibration fits, and the latent
statistics a pipeline's config records."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..models.observation_encoder import error_correlation_matrix, posterior_to_likelihood
from ..models.state_autoencoder import StateAutoencoder
from ..observations import Observation
from .accelerator import unwrap
from .losses import encoder_batches

__all__ = [
    "reconstruction_rmse",
    "encoder_calibration",
    "fit_likelihood_calibration",
    "fused_calibration",
    "latent_prior_statistics",
    "latent_scaling_factor",
]


def reconstruction_rmse(autoencoder: nn.Module, states: Tensor, batch: int = 64) -> list[float]:
    r"""Per-level RMSE [K] of the autoencoder's reconstruction of ``states`` ``(N, levels,
    *space)``:

    .. math:: \mathrm{RMSE}_l = \sqrt{\operatorname{mean}_{n,\,\text{space}}
              \big(D(E(x_n))_l - x_{n,l}\big)^2},

    the floor of the latent route's accuracy (docs/method.md). Accumulated in float64.
    """
    squared = torch.zeros(states.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(states), batch):
            x = states[i : i + batch, None]
            error = autoencoder(x, return_dict=False)[0] - x
            squared += error.double().pow(2).sum(dim=(0, 1, *range(3, x.ndim))).cpu()
    count = len(states) * math.prod(states.shape[2:])
    return (squared / count).sqrt().tolist()


def encoder_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> dict[str, float]:
    r"""Calibration of each modality encoder: the mean squared z-score of its latent error,

    .. math:: \overline{z^2}_m = \operatorname{mean}\big((E(x) - \mu_m(y))^2 / e^{\ell_m(y)}\big),

    over latent cells and cases (``observations[b]`` observe the state of latent ``latents[b]``
    ``(c, *latent)``). 1 when the encoder's variances match its errors; above 1 it is
    over-confident, below 1 under-confident. Modalities never observed are left out.
    """
    totals: dict[str, list[float]] = {}
    names = list(unwrap(encoder).config.modalities)
    with torch.no_grad():
        for batch in encoder_batches(observations, latents, names):
            mean, logvar = unwrap(encoder).encode_modality(
                batch.modality, batch.values, batch.mask, tuple(batch.targets.shape[2:])
            )
            z2 = (batch.targets.double() - mean.double()).pow(2) * torch.exp(-logvar.double())
            entry = totals.setdefault(batch.modality, [0.0, 0.0])
            entry[0] += float(z2.sum())
            entry[1] += z2.numel()
    return {name: total / count for name, (total, count) in sorted(totals.items())}


def _likelihood_errors(
    encoder: nn.Module, latent: Tensor, observations: Sequence[Observation]
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per modality observed in ``observations`` (of the state whose latent is ``latent``
    ``(c, *latent)``), over the latent cells it informs: its likelihood's error ``u − z``, the
    error variance ``1 / I_0`` the encoder claims and the gain ``g = P / I_0``
    (:func:`~slams_diffusers.models.observation_encoder.posterior_to_likelihood`), float64."""
    encoder = unwrap(encoder)
    prior_mean, prior_logvar = encoder.latent_prior(torch.float64, latent.device)
    errors = {}
    with torch.no_grad():
        for observation in observations:
            if observation.modality not in encoder.config.modalities:
                continue
            values, mask = observation.to_grid()
            mean, logvar = encoder.encode_modality(
                observation.modality,
                values[None].to(latent.device, latent.dtype),
                mask[None].to(latent.device, latent.dtype),
                tuple(latent.shape[1:]),
            )
            mean, logvar = mean[0].double(), logvar[0].double()
            u, information = posterior_to_likelihood(mean, logvar, prior_mean, prior_logvar)
            informed = information > 0
            errors[observation.modality] = (
                (u - latent.double())[informed],
                1 / information[informed],
                torch.exp(-logvar)[informed] / information[informed],
                informed,
            )
    return errors


def fit_likelihood_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    r"""The encoders' likelihoods calibrated on held-out cases (docs/method.md §Fusing
    modalities): per modality the approximation variance ``τ_m²`` of its posterior mean, then the
    correlation of the modalities' likelihood errors.

    With ``d = u − z`` (``z = E(x)``), the claimed variance ``1 / I_0`` and the gain
    ``g = P / I_0`` per latent cell the modality informs, ``τ_m² >= 0`` solves

    .. math:: \operatorname{mean}\, \frac{d^2}{1 / I_0 + g^2 \tau_m^2} = 1

    (0 when the encoder is not over-confident; bisection in ``log τ²``). Then, with
    ``ε_m = d / \sqrt{1 / I_0 + g^2 τ_m^2}``, for each pair observed together

    .. math:: \rho_{mn} = \frac{\sum \varepsilon_m \varepsilon_n}
              {\sqrt{\sum \varepsilon_m^2 \sum \varepsilon_n^2}}

    over the cells both inform and the cases (``observations[b]`` observe the state of latent
    ``latents[b]``); the matrix is shrunk towards the identity until positive definite (factors
    0.9, 0.81, …). Returns ``({name: τ²}, {name: {other: ρ}})`` for
    ``ObservationEncoder(modality_approximation_variance=..., modality_error_correlation=...)``;
    pairs never observed together are left out (uncorrelated).
    """
    cases = [
        _likelihood_errors(encoder, latent, items)
        for latent, items in zip(latents, observations, strict=True)
    ]
    names = sorted({name for case in cases for name in case})
    variances = {}
    for name in names:
        d, claimed, gain = (torch.cat([c[name][k] for c in cases if name in c]) for k in range(3))
        variances[name] = _approximation_variance(d.square(), claimed, gain.square())
    sums: dict[tuple[str, str], list[float]] = {}
    for case in cases:
        normalised = {}
        for name, (d, claimed, gain, informed) in case.items():
            full = torch.zeros(informed.shape, dtype=torch.float64)
            full[informed] = d / torch.sqrt(claimed + gain.square() * variances[name])
            normalised[name] = (full, informed)
        present = sorted(normalised)
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                both = normalised[a][1] & normalised[b][1]
                ea, eb = normalised[a][0][both], normalised[b][0][both]
                entry = sums.setdefault((a, b), [0.0, 0.0, 0.0])
                entry[0] += float((ea * eb).sum())
                entry[1] += float(ea.square().sum())
                entry[2] += float(eb.square().sum())
    paired = sorted({name for pair in sums for name in pair})
    rho = torch.eye(len(paired), dtype=torch.float64)
    for (a, b), (cross, aa, bb) in sums.items():
        if aa > 0 and bb > 0:
            i, j = paired.index(a), paired.index(b)
            rho[i, j] = rho[j, i] = cross / math.sqrt(aa * bb)
    eye = torch.eye(len(paired), dtype=torch.float64)
    while torch.linalg.cholesky_ex(rho).info != 0 or float(rho.sub(eye).abs().max()) >= 1:
        rho = 0.9 * rho + 0.1 * eye
    error_correlation_matrix(rho, len(paired))
    pairs = {frozenset(pair) for pair in sums}
    correlation = {
        a: {b: float(rho[i, j]) for j, b in enumerate(paired) if frozenset((a, b)) in pairs}
        for i, a in enumerate(paired)
    }
    return variances, correlation


def _approximation_variance(squared: Tensor, claimed: Tensor, gain2: Tensor) -> float:
    """``τ² >= 0`` with ``mean(squared / (claimed + gain2 τ²)) = 1`` (0 if already <= 1)."""

    def excess(tau2: float) -> float:
        return float((squared / (claimed + gain2 * tau2)).mean()) - 1

    if squared.numel() == 0 or excess(0.0) <= 0:
        return 0.0
    low, high = -30.0, 10.0  # log τ², latent units (unit-variance latent)
    if excess(math.exp(high)) > 0:
        return math.exp(high)
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if excess(math.exp(middle)) > 0 else (low, middle)
    return math.exp(high)


def fused_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> dict[str, dict[str, float]]:
    r"""For every subset of the modalities observed together, the fused posterior's (the
    encoder's ``forward``: prior, likelihoods, their correlation) mean squared z-score
    :math:`\overline{z^2}` (1 when calibrated) and mean squared error ``mse`` of its mean against
    ``z = E(x)``, over latent cells and the cases where every modality of the subset is observed.
    Keys are the subset's names joined by ``+``, sorted; adding a modality should lower ``mse``
    and keep :math:`\overline{z^2}` near 1."""
    encoder = unwrap(encoder)
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for latent, items in zip(latents, observations, strict=True):
            grids = {
                o.modality: tuple(t[None].to(latent.device, latent.dtype) for t in o.to_grid())
                for o in items
                if o.modality in encoder.config.modalities
            }
            names = sorted(grids)
            for size in range(1, len(names) + 1):
                for subset in itertools.combinations(names, size):
                    mean, logvar = encoder(
                        {n: grids[n] for n in subset}, tuple(latent.shape[1:]), return_dict=False
                    )
                    error = (mean[0].double() - latent.double()).square()
                    entry = totals.setdefault("+".join(subset), [0.0, 0.0, 0.0])
                    entry[0] += float((error * torch.exp(-logvar[0].double())).sum())
                    entry[1] += float(error.sum())
                    entry[2] += error.numel()
    return {
        key: {"mean_z2": z2 / count, "mse": mse / count}
        for key, (z2, mse, count) in sorted(totals.items())
    }


def latent_prior_statistics(
    autoencoder: StateAutoencoder, states: Tensor, batch: int = 64
) -> tuple[list[float], list[float]]:
    """Per latent channel, the mean and std of ``E(x)`` over ``states`` ``(N, levels, *space)``
    and their cells: the prior the observation encoders' posteriors shrink towards
    (``ObservationEncoder(latent_prior_mean=..., latent_prior_std=...)``)."""
    with torch.no_grad():
        latents = torch.cat(
            [autoencoder.encode(states[i : i + batch, None]) for i in range(0, len(states), batch)]
        )[:, 0].double()
    per_channel = latents.transpose(0, 1).reshape(latents.shape[1], -1)
    return per_channel.mean(1).tolist(), per_channel.std(1).tolist()


def latent_scaling_factor(autoencoder: StateAutoencoder, states: Tensor, batch: int = 64) -> float:
    """``1 / std(E(x))`` over ``states`` ``(N, levels, *space)`` with the current
    ``scaling_factor`` divided out: the value that gives the latent unit variance."""
    current = float(autoencoder.config.scaling_factor)
    with torch.no_grad():
        latents = torch.cat(
            [autoencoder.encode(states[i : i + batch, None]) for i in range(0, len(states), batch)]
        )
    std = float(latents.double().std()) / abs(current)
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"the autoencoder's latents have std {std}; cannot scale them")
    return 1.0 / std
