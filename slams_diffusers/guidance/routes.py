"""Routes and the Gaussian terms they make (docs/method.md §Routes).

- ``"latent"`` (SLAMS, arXiv 2404.06665): an observation is encoded by its modality's encoder to
  a latent Gaussian posterior; divided by the latent prior (which the score model already
  carries) it is a likelihood ``N(z_y, Σ_zy)``, compared with ``ẑ`` itself; a background ``x_b`` is
  encoded with the autoencoder, ``E(x_b)``, with its error covariance carried into latent space
  (:func:`latent_background_covariance`).
- ``"decoded"``: ``y`` is compared with ``A(D(ẑ))`` through the observation's operator; a
  background with ``N(x_b | D(ẑ), B)``, ``B`` applied as it is (e.g. by FFT).

:func:`likelihood_terms` assembles the terms of all observations. Functions here receive the pieces
they need (the autoencoder, the encoder, shapes) and never the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..covariance import SpectralCovariance, background_covariance_of
from ..models.observation_encoder import fuse_likelihoods, posterior_from_likelihood
from ..observations import Background, Observation, level_scale
from .terms import GaussianTerm

__all__ = [
    "ROUTES",
    "background_covariance_of",
    "decoded_term",
    "encoded_observation_term",
    "latent_background_covariance",
    "latent_background_term",
    "likelihood_terms",
    "resolve_routes",
]

ROUTES = ("latent", "decoded")
#: Monte-Carlo draws that carry a background covariance, or a declared observation error,
#: through an encoder.
ENCODING_DRAWS = 64
NOISE_DRAWS = 16
#: Relative size of the perturbations that linearise an encoder around the observed values.
LINEARISATION_STEP = 1e-2


def resolve_routes(
    observations: Sequence[Observation],
    guidance: str | dict,
    observation_encoder: Any,
    linear_autoencoder: bool,
) -> list[str]:
    """The route of each observation; ``ValueError`` for routes that cannot be taken.

    ``"auto"``: latent where the observation encoder knows the modality; a background goes latent
    through a learned autoencoder and decoded through a linear one (a level normaliser carries
    ``B`` exactly, no sampling needed).
    """
    known = set(observation_encoder.modality_names) if observation_encoder is not None else set()
    if isinstance(guidance, str):
        choices, default = {}, guidance
    elif isinstance(guidance, dict):
        unknown = set(guidance) - {o.modality for o in observations}
        if unknown:
            raise ValueError(
                f"`guidance` names modalities {sorted(unknown)} that no observation has"
            )
        choices, default = guidance, "auto"
    else:
        raise ValueError(
            f"`guidance` must be a route name or a dict, got {type(guidance).__name__}"
        )
    routes = []
    for observation in observations:
        modality = observation.modality
        background = isinstance(observation, Background)
        encodable = (modality in known and observation.linear) or background
        route = choices.get(modality, default)
        if route == "auto":
            if background:
                route = "decoded" if linear_autoencoder else "latent"
            else:
                route = "latent" if encodable else "decoded"
        if route not in ROUTES:
            raise ValueError(
                f"`guidance` must be one of {('auto', *ROUTES)} or a dict of them, got {route!r}"
            )
        if route == "latent" and not observation.linear:
            raise ValueError(
                f"{modality!r} observes a function of the state (Transformed): no encoder is "
                "learned for it; use guidance='decoded' for it"
            )
        if route == "latent" and not encodable:
            raise ValueError(
                f"unknown modality {modality!r} for the latent route: the observation_encoder "
                f"knows {sorted(known)}; use guidance='decoded' for it"
            )
        if route == "latent" and modality in known and not background:
            expected = observation_encoder.config.modalities[modality]["in_channels"]
            channels = observation.to_grid()[0].shape[0]
            if channels != expected:
                raise ValueError(
                    f"`observations` of modality {modality!r} have {channels} channels but the "
                    f"observation_encoder expects {expected}"
                )
        routes.append(route)
    return routes


def decoded_term(
    observation: Observation, decode: Callable[[Tensor], Tensor], level_std: Tensor
) -> GaussianTerm:
    """``y ~ N(A(D(ẑ_i)), Σ_y + V_t)`` at the observation's step ``i``; a background with its
    ``B`` (``A = id``)."""
    index = observation.time_index

    def observe(latent: Tensor) -> Tensor:
        return observation.operator(decode(latent[:, index : index + 1])[:, 0])

    if isinstance(observation, Background) and observation.covariance is not None:
        scale = level_std.pow(2).mean().sqrt()
        covariance = observation.covariance.to(observation.values.device)
        return GaussianTerm(observe, observation.values, covariance=covariance, scale=scale)
    return GaussianTerm(
        observe,
        observation.values,
        variance=observation.noise_variance(),
        mask=observation.mask,
        scale=level_scale(observation, level_std.to(observation.values)),
    )


def latent_background_covariance(
    encode: Callable[[Tensor], Tensor], values: Tensor, covariance: Any, generator_seed: int = 0
) -> SpectralCovariance:
    """``B_z``: the background error covariance carried into latent space by the encoder,
    estimated from ``E(x_b + e) − E(x_b)`` over ``ENCODING_DRAWS`` draws ``e ~ N(0, B)`` (fixed
    seed) as a homogeneous spectral covariance (the encoder is translation-equivariant). Draws of
    ``B`` itself, not white noise: the encoder averages white noise away, while real background
    errors are correlated at the scales it keeps."""
    generator = torch.Generator(device="cpu").manual_seed(generator_seed)
    draws = covariance.sample(ENCODING_DRAWS, generator=generator, dtype=values.dtype)
    draws = draws.to(values.device)
    base = encode(values[None, None])[:, 0]
    latents = encode((values + draws)[:, None])[:, 0]
    return SpectralCovariance.from_samples((latents - base).double(), isotropic=True)


def latent_background_term(
    background: Background, encode: Callable[[Tensor], Tensor]
) -> GaussianTerm:
    """``E(x_b) ~ N(ẑ_i, B_z + V_t)`` (:func:`latent_background_covariance`)."""
    index = background.time_index
    values = background.values
    target = encode(values[None, None])[0, 0]
    covariance = latent_background_covariance(encode, values, background_covariance_of(background))
    return GaussianTerm(
        lambda latent: latent[:, index], target, covariance=covariance.to(target.device)
    )


def _encode_with_declared_noise(
    encoder: Any,
    observation: Observation,
    latent_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The likelihood of one observation as a latent pseudo-observation ``(u, I)`` (mean and
    precision, docs/method.md §Fusing modalities, §Declared errors), its declared error ``σ_y``
    included.

    The encoder gives the posterior ``N(μ, v_E)``, calibrated for observations whose noise is the
    modality's ``reference_noise_std`` ``σ_ref`` (what it was trained on); the encoder's
    :meth:`likelihood` divides out the latent prior. The declared error enters through ``μ``, to
    first order, as a variance of the mean ``diag(J_μ (Σ_y − σ_ref² I) J_μ^T)`` (``J_μ`` its
    Jacobian at ``y``), estimated as ``Var_ξ[μ(y + h σ ξ)] / h²`` with small ``h`` (finite
    differences, so a saturating encoder does not hide a large declared error) and common draws
    ξ; the likelihood carries it through its gain. More declared error means less information,
    down to none; ``σ_y = σ_ref`` leaves the encoder as trained.
    """
    name = observation.modality
    values, mask = observation.to_grid()
    values, mask = values.to(device, dtype)[None], mask.to(device, dtype)[None]
    mean, logvar = encoder.encode_modality(name, values, mask, latent_shape)
    grid_std = _grid_noise_std(observation).to(device, dtype)
    reference = encoder.reference_noise_std(name)
    generator = torch.Generator(device="cpu").manual_seed(0)
    xi = torch.randn((NOISE_DRAWS, *values.shape[1:]), generator=generator).to(device, dtype)
    spreads = []
    for std in (grid_std, torch.full_like(grid_std, reference)):
        noisy = (values + LINEARISATION_STEP * std * xi) * mask
        encoded, _ = encoder.encode_modality(name, noisy, mask.expand_as(noisy), latent_shape)
        spreads.append(encoded.var(0, keepdim=True) / LINEARISATION_STEP**2)
    u, information = encoder.likelihood(name, mean, logvar, mean_variance=spreads[0] - spreads[1])
    return u[0], information[0]


def _grid_noise_std(observation: Observation) -> Tensor:
    """``σ_y`` rasterised like ``to_grid()``'s values (the observation with its values replaced by
    its noise std)."""
    std = torch.broadcast_to(
        torch.as_tensor(observation.noise_std, dtype=observation.values.dtype),
        observation.values.shape,
    )
    return observation.replace_values(std).to_grid()[0]


def encoded_observation_term(
    items: Sequence[Observation],
    index: int,
    encoder: Any,
    latent_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> GaussianTerm:
    """One term for the encoded observations of step ``index``, compared with ``ẑ_index``: the
    encoders' posteriors ``p(z | y_m)`` divided by the latent prior they share (their declared
    errors included, :func:`_encode_with_declared_noise`), fused with the correlation of their
    errors (:func:`~slams_diffusers.models.observation_encoder.fuse_likelihoods`): the
    likelihood ``N(z_y, Σ_zy)`` of ``z``. The score model brings the prior; counting it again
    through each encoder would pull towards the climatology and shrink the spread."""
    means, precisions = [], []
    for observation in items:
        mean, precision = _encode_with_declared_noise(
            encoder, observation, latent_shape, device, dtype
        )
        means.append(mean)
        precisions.append(precision)
    correlation = encoder.error_correlation([o.modality for o in items])
    mean, precision = fuse_likelihoods(means, precisions, correlation)
    mean, logvar = posterior_from_likelihood(mean, precision, 0.0, 0.0, include_prior=False)
    return GaussianTerm(lambda latent: latent[:, index], mean, variance=logvar.exp())


def likelihood_terms(
    observations: Sequence[Observation],
    routes: Sequence[str],
    *,
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    observation_encoder: Any,
    level_std: Sequence[float] | Tensor,
    latent_space: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> list[GaussianTerm]:
    """The Gaussian terms of the ``observations`` on their ``routes`` (:func:`resolve_routes`):
    one per decoded observation (:func:`decoded_term`, ``level_std`` the autoencoder's per-level
    climatological std), one per latent background step (:func:`latent_background_term`), one
    fused term per step for the encoded observations (:func:`encoded_observation_term`, on the
    latent grid ``latent_space``). ``encode`` and ``decode`` are the autoencoder's ``E`` and
    ``D`` on ``(batch, T, …)`` tensors."""
    level_std = torch.as_tensor(level_std, device=device, dtype=dtype)
    terms, encoded = [], {}
    for observation, route in zip(observations, routes, strict=True):
        observation = observation.to(device=device, dtype=dtype)
        if route == "decoded":
            terms.append(decoded_term(observation, decode, level_std))
        elif isinstance(observation, Background):
            terms.append(latent_background_term(observation, encode))
        else:
            encoded.setdefault(observation.time_index, []).append(observation)
    for index, items in sorted(encoded.items()):
        terms.append(
            encoded_observation_term(items, index, observation_encoder, latent_space, device, dtype)
        )
    return terms
