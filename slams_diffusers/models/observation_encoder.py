"""Observation encoders: one small conv encoder per modality maps rasterised observations to a
Gaussian posterior in the latent space, and the modalities present are fused as posteriors that
share the latent prior (docs/method.md §Fusing modalities)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .layers import (
    PaddedConv,
    ResidualBlock,
    channel_values,
    group_norm,
    validate_spatial_dims,
)

__all__ = [
    "ObservationEncoder",
    "ObservationEncoderOutput",
    "error_correlation_matrix",
    "fuse_gaussians",
    "fuse_likelihoods",
    "fuse_posteriors",
    "posterior_from_likelihood",
    "posterior_to_likelihood",
]

LOGVAR_BOUND = 10.0


@dataclass
class ObservationEncoderOutput(BaseOutput):
    """Latent Gaussian ``N(mean, exp(logvar))``, both ``(B, latent_channels, *latent_shape)``."""

    mean: torch.Tensor
    logvar: torch.Tensor


def fuse_gaussians(
    means: Sequence[torch.Tensor], logvars: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision-weighted product of independent Gaussians, elementwise.

    ``P = sum_m exp(-logvar_m)``, ``mean = sum_m exp(-logvar_m) mean_m / P``,
    ``logvar = -log P`` (computed as ``-logsumexp(-logvar_m)``, weights as
    ``softmax_m(-logvar_m)``, so one input is returned unchanged). Inputs broadcast together.
    Right for estimates whose errors are independent; posteriors that share a prior are fused by
    :func:`fuse_posteriors`.
    """
    mu, logvar = _stacked(means, logvars)
    neg_lv = -logvar
    weights = torch.softmax(neg_lv, dim=0)
    return (weights * mu).sum(0), -torch.logsumexp(neg_lv, dim=0)


def posterior_to_likelihood(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    prior_mean: torch.Tensor | float,
    prior_logvar: torch.Tensor | float,
    mean_variance: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The likelihood ``p(y | z) ∝ p(z | y) / p(z)`` of a Gaussian posterior
    ``N(mean, exp(logvar))`` under the prior ``N(m_0, v_0)``, elementwise, as a pseudo-observation
    ``u = z + e``, ``e ~ N(0, 1 / I)`` (docs/method.md §Fusing modalities).

    With precisions ``P = exp(-logvar)``, ``P_0 = 1 / v_0``: ``I_0 = [P − P_0]_+`` and
    ``u = (P mean − P_0 m_0) / I_0`` where ``I_0 > 0``; where the posterior is no surer than the
    prior the observation carries nothing (``I = 0``, ``u = 0``). ``mean_variance`` is a variance
    of ``mean`` about the exact posterior mean (an encoder's approximation error, a declared
    observation error's share): it reaches ``u`` through the gain ``g = P / I_0``, so
    ``1 / I = max(1 / I_0 + g² mean_variance, 1 / (10 I_0))`` (the floor binds only for a
    negative ``mean_variance``, e.g. less declared error than the encoder was trained with). An
    encoder barely surer than the prior has a huge gain: its small mean errors become large
    errors of ``u``. Returns ``(u, I)``.
    """
    precision = torch.exp(-logvar)
    prior_mean = torch.as_tensor(prior_mean, dtype=precision.dtype, device=precision.device)
    prior_precision = torch.exp(
        -torch.as_tensor(prior_logvar, dtype=precision.dtype, device=precision.device)
    )
    information = (precision - prior_precision).clamp_min(0.0)
    informed = information > 0
    safe = torch.where(informed, information, 1.0)
    u = torch.where(informed, (precision * mean - prior_precision * prior_mean) / safe, 0.0)
    variance = torch.maximum(
        1 / safe + (precision / safe).square() * mean_variance, 1 / (10 * safe)
    )
    return u, torch.where(informed, 1 / variance, 0.0)


def posterior_from_likelihood(
    u: torch.Tensor,
    information: torch.Tensor,
    prior_mean: torch.Tensor | float,
    prior_logvar: torch.Tensor | float,
    include_prior: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(mean, logvar)`` of ``p(z) N(u; z, 1 / I)`` (``P = P_0 + I``,
    ``mean = (P_0 m_0 + I u) / P``), or with ``include_prior=False`` of the likelihood alone as a
    Gaussian in ``z``: ``P = I`` floored at ``exp(-LOGVAR_BOUND)`` (a cell nothing informs gets a
    variance of ``exp(LOGVAR_BOUND)``) with the pull ``I (u − z)`` kept."""
    if include_prior:
        prior_mean = torch.as_tensor(prior_mean, dtype=u.dtype, device=u.device)
        prior_precision = torch.exp(-torch.as_tensor(prior_logvar, dtype=u.dtype, device=u.device))
        total = prior_precision + information
        return (prior_precision * prior_mean + information * u) / total, -total.log()
    total = information.clamp_min(math.exp(-LOGVAR_BOUND))
    return information * u / total, -total.log()


def fuse_likelihoods(
    means: Sequence[torch.Tensor],
    precisions: Sequence[torch.Tensor],
    correlation: torch.Tensor | Sequence[Sequence[float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fuse pseudo-observations ``u_m = z + e_m`` of the same ``z``, elementwise, whose errors
    ``e_m ~ N(0, 1 / I_m)`` may be correlated across modalities (docs/method.md §Fusing
    modalities): the generalised least-squares estimate.

    With ``S = diag(I_m^{-1/2})`` and the modalities' error correlation ``R`` (``M × M``), the
    error covariance is ``C = S R S`` and the likelihood of ``z`` given all ``u_m`` is
    ``N(z; u, 1 / P)`` with ``P = 1ᵀ C⁻¹ 1``, ``u = 1ᵀ C⁻¹ u_{1..M} / P``. ``R = I`` (the default)
    is the product of independent Gaussians, ``P = Σ_m I_m``; positive correlation gives
    less information than that: two copies of one error (``ρ → 1``) count once. A modality with
    ``I_m = 0`` in a cell drops out there, and so do its correlations. Cells nothing informs get
    ``P = 0`` and ``u = 0``. Returns ``(u, P)``; inputs broadcast together.
    """
    u, precision = _stacked(means, precisions)
    precision = precision.clamp_min(0.0)
    count = u.shape[0]
    if correlation is None or count == 1:
        total = precision.sum(0)
        weighted = (precision * u).sum(0)
        return _ratio(weighted, total), total
    rho = error_correlation_matrix(correlation, count).to(u.dtype).to(u.device)
    informed = (precision > 0).to(u.dtype)
    root = precision.sqrt()  # (M, *shape)
    both = informed[:, None] * informed[None, :]  # (M, M, *shape)
    eye = torch.eye(count, dtype=u.dtype, device=u.device)
    view = (count, count) + (1,) * (u.ndim - 1)
    cell_rho = eye.reshape(view) + (rho - eye).reshape(view) * both
    inverse = torch.linalg.inv(cell_rho.movedim((0, 1), (-2, -1))).movedim((-2, -1), (0, 1))
    q = root[:, None] * inverse * root[None, :]  # C⁻¹, (M, M, *shape)
    total = q.sum((0, 1))
    weighted = (q * u[None, :]).sum((0, 1))
    return _ratio(weighted, total), total


def error_correlation_matrix(
    correlation: torch.Tensor | Sequence[Sequence[float]], count: int
) -> torch.Tensor:
    """``correlation`` as a float64 ``(count, count)`` tensor, checked: symmetric, unit
    diagonal, positive definite; ``ValueError`` naming ``correlation`` otherwise."""
    rho = torch.as_tensor(correlation, dtype=torch.float64)
    if rho.shape != (count, count) or not bool(torch.isfinite(rho).all()):
        raise ValueError(
            f"`correlation` must be a finite {count} x {count} matrix (one row per modality), "
            f"got shape {tuple(rho.shape)}."
        )
    if not torch.allclose(rho, rho.T) or not torch.allclose(
        rho.diagonal(), torch.ones(count, dtype=torch.float64)
    ):
        raise ValueError(
            f"`correlation` must be symmetric with a unit diagonal, got {rho.tolist()}."
        )
    if torch.linalg.cholesky_ex(rho).info != 0:
        raise ValueError(f"`correlation` must be positive definite, got {rho.tolist()}.")
    return rho


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where ``denominator > 0``, 0 elsewhere."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)


def fuse_posteriors(
    means: Sequence[torch.Tensor],
    logvars: Sequence[torch.Tensor],
    prior_mean: torch.Tensor | float,
    prior_logvar: torch.Tensor | float,
    correlation: torch.Tensor | Sequence[Sequence[float]] | None = None,
    include_prior: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fuse Gaussian posteriors ``p(z | y_m) = N(mean_m, exp(logvar_m))`` that share the prior
    ``p(z) = N(m_0, v_0)``, elementwise (docs/method.md §Fusing modalities).

    ``p(z | y_1..y_M) ∝ p(z) p(y_1..y_M | z)``: each posterior is turned into its likelihood
    (:func:`posterior_to_likelihood`, the prior divided out), the likelihoods are fused with
    their error ``correlation`` (:func:`fuse_likelihoods`; ``None``: conditionally independent,
    ``p(z) Π_m p(z | y_m) / p(z)``) and the prior is counted once. (The posteriors' errors are
    correlated through the prior they all shrink towards; :func:`fuse_gaussians` would count it
    ``M`` times and be over-confident.) The fused likelihood times the prior gives the result
    (:func:`posterior_from_likelihood`; ``include_prior=False``: the likelihood alone). Returns
    ``(mean, logvar)``; inputs broadcast together.
    """
    pairs = [
        posterior_to_likelihood(m, lv, prior_mean, prior_logvar)
        for m, lv in zip(means, logvars, strict=True)
    ]
    u, information = fuse_likelihoods([p[0] for p in pairs], [p[1] for p in pairs], correlation)
    return posterior_from_likelihood(u, information, prior_mean, prior_logvar, include_prior)


def _stacked(
    means: Sequence[torch.Tensor], spreads: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``means`` and their ``spreads`` (log-variances or precisions) each stacked on a new first
    axis, broadcast together."""
    if len(means) == 0 or len(means) != len(spreads):
        raise ValueError(
            "`means` and their log-variances or precisions must be non-empty and of equal "
            f"length, got {len(means)} and {len(spreads)}."
        )
    shape = torch.broadcast_shapes(*[m.shape for m in means], *[s.shape for s in spreads])
    return (
        torch.stack([m.expand(shape) for m in means]),
        torch.stack([s.expand(shape) for s in spreads]),
    )


def _approximation_variances(
    variances: Mapping[str, float] | None, modalities: Mapping[str, Any]
) -> dict[str, float] | None:
    """``modality_approximation_variance`` checked (known names, finite, >= 0), sorted."""
    if variances is None:
        return None
    if not isinstance(variances, Mapping) or any(
        name not in modalities
        or isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        for name, value in variances.items()
    ):
        raise ValueError(
            "`modality_approximation_variance` must be {name: variance >= 0} over the "
            f"modalities {sorted(modalities)}, got {variances!r}."
        )
    return {name: float(variances[name]) for name in sorted(variances)}


def _pairwise_correlation(
    correlation: Mapping[str, Mapping[str, float]] | None, modalities: Mapping[str, Any]
) -> dict[str, dict[str, float]] | None:
    """``modality_error_correlation`` checked (known names, |ρ| < 1, symmetric, positive
    definite) and written out symmetric, sorted; ``None`` stays ``None``."""
    if correlation is None:
        return None
    names = sorted(modalities)
    if not isinstance(correlation, Mapping) or any(
        a not in modalities or not isinstance(row, Mapping) or any(b not in modalities for b in row)
        for a, row in correlation.items()
    ):
        raise ValueError(
            f"`modality_error_correlation` must be {{name: {{other: rho}}}} over the modalities "
            f"{names}, got {correlation!r}."
        )
    rho = torch.eye(len(names), dtype=torch.float64)
    for a, row in correlation.items():
        for b, value in row.items():
            i, j = names.index(a), names.index(b)
            if i == j:
                continue
            other = correlation.get(b, {}).get(a)
            if other is not None and not math.isclose(float(other), float(value), abs_tol=1e-9):
                raise ValueError(
                    f"`modality_error_correlation` must be symmetric: {a}/{b} is {value}, "
                    f"{b}/{a} is {other}."
                )
            rho[i, j] = rho[j, i] = float(value)
    error_correlation_matrix(rho, len(names))  # positive definite, finite
    return {
        a: {b: float(rho[i, j]) for j, b in enumerate(names) if j != i} for i, a in enumerate(names)
    }


class _ModalityEncoder(nn.Module):
    """``(values, mask)`` ``(B, C, *grid)`` -> ``(mean, logvar)`` ``(B, c, *latent_shape)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_channels: int,
        latent_channels: int,
        periodic: bool,
        input_mean: list[float],
        input_std: list[float],
    ) -> None:
        super().__init__()
        sd, h = spatial_dims, hidden_channels
        self.spatial_dims = sd
        self.register_buffer("input_mean", torch.tensor(input_mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std), persistent=False)
        self.conv_in = PaddedConv(sd, 2 * in_channels, h, 3, periodic=periodic)
        self.block_in = ResidualBlock(sd, h, h, periodic=periodic)
        self.block_out = ResidualBlock(sd, h, h, periodic=periodic)
        self.norm_out = group_norm(h)
        self.head = PaddedConv(sd, h, 2 * latent_channels, 3, periodic=periodic)

    def forward(
        self, values: torch.Tensor, mask: torch.Tensor, latent_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        view = (-1,) + (1,) * self.spatial_dims
        mask = mask.to(values.dtype)
        v = (values - self.input_mean.to(values.dtype).reshape(view)) / self.input_std.to(
            values.dtype
        ).reshape(view)
        h = self.block_in(self.conv_in(torch.cat([v * mask, mask], dim=1)))
        grid = tuple(h.shape[2:])
        if grid != latent_shape:
            if all(g >= s for g, s in zip(grid, latent_shape, strict=True)):
                h = (
                    F.adaptive_avg_pool1d(h, latent_shape)
                    if self.spatial_dims == 1
                    else (F.adaptive_avg_pool2d(h, latent_shape))
                )
            else:
                mode = "linear" if self.spatial_dims == 1 else "bilinear"
                h = F.interpolate(h, size=latent_shape, mode=mode, align_corners=False)
        out = self.head(F.silu(self.norm_out(self.block_out(h))))
        mean, raw = out.chunk(2, dim=1)
        logvar = LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)
        return mean, logvar


def _modality_spec(name: Any, spec: Any) -> tuple[int, list[float], list[float]]:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"`modalities` keys must be non-empty strings without '.', got {name!r}.")
    if not isinstance(spec, Mapping) or "in_channels" not in spec:
        raise ValueError(
            f"`modalities[{name!r}]` must be a dict with 'in_channels' (and optional "
            f"'input_mean', 'input_std'), got {spec!r}."
        )
    unknown = set(spec) - {"in_channels", "input_mean", "input_std", "reference_noise_std"}
    if unknown:
        raise ValueError(f"`modalities[{name!r}]` has unknown keys {sorted(unknown)}.")
    c = int(spec["in_channels"])
    if c < 1:
        raise ValueError(f"`modalities[{name!r}]['in_channels']` must be >= 1, got {c}.")
    stats = []
    for key, default in (("input_mean", 0.0), ("input_std", 1.0)):
        stats.append(channel_values(spec.get(key), c, f"modalities[{name!r}][{key!r}]", default))
    if any(s <= 0 for s in stats[1]):
        raise ValueError(f"`modalities[{name!r}]['input_std']` must be positive, got {stats[1]}.")
    reference = spec.get("reference_noise_std", 0.0)
    if not isinstance(reference, int | float) or not reference >= 0:
        raise ValueError(
            f"`modalities[{name!r}]['reference_noise_std']` must be a number >= 0, got "
            f"{reference!r}."
        )
    return c, stats[0], stats[1]


class ObservationEncoder(ModelMixin, ConfigMixin):
    """Per-modality encoders of rasterised observations into the latent space, plus fusion.

    For modality ``m`` with inputs ``values``, ``mask`` ``(B, C_m, *grid_m)`` (mask 1 = observed,
    missing values already 0): ``v = mask * (values - input_mean) / input_std``, then convs on
    ``[v, mask]`` at the modality's own grid, resize to ``latent_shape`` (adaptive average
    pooling when the grid is at least as fine on every axis, else (bi)linear interpolation),
    a residual block and a head giving ``mean_m`` and ``logvar_m`` ``(B, latent_channels,
    *latent_shape)``, ``logvar_m = 10 tanh(raw / 10)`` in (-10, 10): the posterior
    ``p(z | y_m)`` of the latent cell (trained by Gaussian NLL against the true state's latent).
    ``forward`` turns each modality's posterior into its likelihood under the latent prior
    ``N(latent_prior_mean, latent_prior_std²)`` per channel (:meth:`likelihood`), fuses them with
    the correlation of their errors ``modality_error_correlation`` (:func:`fuse_likelihoods`) and
    multiplies by the prior once, in sorted-name order.

    Args:
        modalities: ``{name: {"in_channels": C, "input_mean": list | None,
            "input_std": list | None, "reference_noise_std": float}}`` (normalisation per
            channel, physical -> normalised; the observation error the modality's predicted
            variance is calibrated for, e.g. the typical noise of its training observations,
            default 0: the declared error is then added in full, docs/method.md §Declared errors).
        latent_channels: channels ``c`` of the latent.
        spatial_dims: 1 or 2.
        hidden_channels: width of each modality encoder.
        periodic: circular padding along x.
        latent_prior_mean, latent_prior_std: per latent channel, the marginal distribution of
            the training states' latents (what the encoders' posteriors shrink towards; stage-1
            training sets them); ``None``: 0 and 1, the unit-variance scaled latent.
        modality_error_correlation: ``{name: {other: ρ}}``, the correlation between the errors
            of two modalities' likelihoods (pseudo-observations of ``z``, prior divided out),
            fitted on held-out data by stage-1 training (``fit_likelihood_calibration``);
            pairs not given, or ``None``: 0, conditionally independent modalities.
        modality_approximation_variance: ``{name: τ²}``, the variance of each encoder's
            posterior mean about the exact posterior mean (latent units²), fitted alike; it
            reaches the likelihood through the gain ``P / I_0`` (:func:`posterior_to_likelihood`).
            ``None`` or absent: 0.
    """

    @register_to_config
    def __init__(
        self,
        modalities: dict[str, dict[str, Any]],
        latent_channels: int = 4,
        spatial_dims: int = 2,
        hidden_channels: int = 32,
        periodic: bool = False,
        latent_prior_mean: list[float] | None = None,
        latent_prior_std: list[float] | None = None,
        modality_error_correlation: dict[str, dict[str, float]] | None = None,
        modality_approximation_variance: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        validate_spatial_dims(spatial_dims)
        prior_mean = channel_values(latent_prior_mean, latent_channels, "latent_prior_mean", 0.0)
        prior_std = channel_values(latent_prior_std, latent_channels, "latent_prior_std", 1.0)
        if not all(s > 0 and math.isfinite(s) for s in prior_std):
            raise ValueError(f"`latent_prior_std` must be positive, got {prior_std}.")
        if not isinstance(modalities, Mapping) or len(modalities) == 0:
            raise ValueError(
                "`modalities` must be a non-empty dict {name: {'in_channels': C, ...}}, "
                f"got {modalities!r}."
            )
        clean: dict[str, dict[str, Any]] = {}
        encoders = {}
        for name in sorted(modalities, key=str):  # sorted: the saved config sorts its keys
            spec = modalities[name]
            c, mean, std = _modality_spec(name, spec)
            clean[name] = {
                "in_channels": c,
                "input_mean": None if spec.get("input_mean") is None else mean,
                "input_std": None if spec.get("input_std") is None else std,
            }
            if "reference_noise_std" in spec:
                clean[name]["reference_noise_std"] = float(spec["reference_noise_std"])
            encoders[name] = _ModalityEncoder(
                spatial_dims, c, hidden_channels, latent_channels, periodic, mean, std
            )
        self.register_to_config(
            modalities=clean,
            latent_prior_mean=None if latent_prior_mean is None else prior_mean,
            latent_prior_std=None if latent_prior_std is None else prior_std,
            modality_error_correlation=_pairwise_correlation(modality_error_correlation, clean),
            modality_approximation_variance=_approximation_variances(
                modality_approximation_variance, clean
            ),
        )
        self.encoders = nn.ModuleDict(encoders)

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities this encoder knows, sorted (the fusion order)."""
        return list(self.encoders.keys())

    def latent_prior(
        self, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent prior per channel as ``(mean, logvar)`` ``(c, 1, …)``: broadcasts against
        ``(c, *latent_shape)`` and ``(B, c, *latent_shape)``."""
        c, sd = self.config.latent_channels, self.config.spatial_dims
        view = (c,) + (1,) * sd
        mean = channel_values(self.config.latent_prior_mean, c, "latent_prior_mean", 0.0)
        std = channel_values(self.config.latent_prior_std, c, "latent_prior_std", 1.0)
        mean = torch.tensor(mean, dtype=dtype, device=device).reshape(view)
        logvar = 2 * torch.tensor(std, dtype=dtype, device=device).log().reshape(view)
        return mean, logvar

    def error_correlation(self, names: Sequence[str]) -> torch.Tensor | None:
        """The correlation ``(M, M)`` of the likelihood errors of the modalities ``names`` (in
        that order; the same name twice: two independent observations of one modality), or
        ``None`` when they are all uncorrelated."""
        pairs = self.config.modality_error_correlation or {}
        rho = torch.eye(len(names), dtype=torch.float64)
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if a != b:
                    rho[i, j] = float(pairs.get(a, {}).get(b, 0.0))
        return None if torch.equal(rho, torch.eye(len(names), dtype=torch.float64)) else rho

    def approximation_variance(self, name: str) -> float:
        """``τ_m²`` of modality ``name``: the variance of its posterior mean about the exact one,
        fitted on held-out data (0 when not fitted)."""
        return float((self.config.modality_approximation_variance or {}).get(name, 0.0))

    def likelihood(
        self,
        name: str,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        mean_variance: torch.Tensor | float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality ``name``'s posterior ``(mean, logvar)`` as its likelihood ``(u, I)``
        (:func:`posterior_to_likelihood` under the latent prior), with the approximation variance
        ``τ_m²`` and any further ``mean_variance`` (e.g. a declared error's) of the mean."""
        prior_mean, prior_logvar = self.latent_prior(mean.dtype, mean.device)
        return posterior_to_likelihood(
            mean,
            logvar,
            prior_mean,
            prior_logvar,
            mean_variance=self.approximation_variance(name) + mean_variance,
        )

    def reference_noise_std(self, name: str) -> float:
        """The observation error std modality ``name``'s predicted variance is calibrated for."""
        return float(self.config.modalities[name].get("reference_noise_std", 0.0))

    def _latent_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        sd = self.config.spatial_dims
        try:
            shape = tuple(int(s) for s in latent_shape)
        except TypeError:
            shape = ()
        if len(shape) != sd or any(s <= 0 for s in shape):
            raise ValueError(
                f"`latent_shape` must be {sd} positive ints (the latent grid), "
                f"got {latent_shape!r}."
            )
        return shape

    def encode_modality(
        self,
        name: str,
        values: torch.Tensor,
        mask: torch.Tensor,
        latent_shape: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one modality: ``values``, ``mask`` ``(B, C, *grid)`` -> ``(mean, logvar)``
        ``(B, latent_channels, *latent_shape)``."""
        if name not in self.encoders:
            raise ValueError(
                f"Unknown modality {name!r} in `inputs`/`name`; known modalities: "
                f"{self.modality_names}."
            )
        shape = self._latent_shape(latent_shape)
        sd = self.config.spatial_dims
        c = self.config.modalities[name]["in_channels"]
        for arg, t in (("values", values), ("mask", mask)):
            if not isinstance(t, torch.Tensor) or t.ndim != 2 + sd or t.shape[1] != c:
                found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"`{arg}` of modality {name!r} must be (B, {c}, *grid) with {sd} grid axes, "
                    f"got {found}."
                )
        if mask.shape != values.shape:
            raise ValueError(
                f"`mask` of modality {name!r} must have the shape of `values` "
                f"{tuple(values.shape)}, got {tuple(mask.shape)}."
            )
        return self.encoders[name](values, mask, shape)

    def forward(
        self,
        inputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        latent_shape: Sequence[int],
        return_dict: bool = True,
    ) -> ObservationEncoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Encode every modality in ``inputs`` (``{name: (values, mask)}``) and fuse them into the
        posterior given all of them (:func:`fuse_posteriors`): ``(mean, logvar)``
        ``(B, latent_channels, *latent_shape)``. Absent modalities do not enter the fusion."""
        if not isinstance(inputs, Mapping) or len(inputs) == 0:
            raise ValueError(
                "`inputs` must be a non-empty dict {modality: (values, mask)}; known "
                f"modalities: {self.modality_names}."
            )
        unknown = [k for k in inputs if k not in self.encoders]
        if unknown:
            raise ValueError(
                f"Unknown modality {unknown} in `inputs`; known modalities: {self.modality_names}."
            )
        likelihoods = []
        names = [name for name in self.modality_names if name in inputs]  # fixed order
        for name in names:
            pair = inputs[name]
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"`inputs[{name!r}]` must be a (values, mask) pair.")
            likelihoods.append(
                self.likelihood(name, *self.encode_modality(name, pair[0], pair[1], latent_shape))
            )
        u, information = fuse_likelihoods(
            [u for u, _ in likelihoods], [i for _, i in likelihoods], self.error_correlation(names)
        )
        prior_mean, prior_logvar = self.latent_prior(u.dtype, u.device)
        mean, logvar = posterior_from_likelihood(u, information, prior_mean, prior_logvar)
        if not return_dict:
            return mean, logvar
        return ObservationEncoderOutput(mean=mean, logvar=logvar)
