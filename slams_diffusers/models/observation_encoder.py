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

__all__ = ["ObservationEncoder", "ObservationEncoderOutput", "fuse_gaussians", "fuse_posteriors"]

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
    mu, neg_lv = _stacked(means, logvars)
    weights = torch.softmax(neg_lv, dim=0)
    return (weights * mu).sum(0), -torch.logsumexp(neg_lv, dim=0)


def fuse_posteriors(
    means: Sequence[torch.Tensor],
    logvars: Sequence[torch.Tensor],
    prior_mean: torch.Tensor | float,
    prior_logvar: torch.Tensor | float,
    include_prior: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fuse Gaussian posteriors ``p(z | y_m) = N(mean_m, exp(logvar_m))`` that share the prior
    ``p(z) = N(m_0, v_0)``, elementwise (docs/method.md §Fusing modalities).

    With the ``y_m`` conditionally independent given ``z``,
    ``p(z | y_1..y_M) ∝ p(z) Π_m p(z | y_m) / p(z)``: each posterior is divided by the prior and
    the prior is counted once. (Their errors are correlated through the prior they all shrink
    towards; :func:`fuse_gaussians` would count it ``M`` times and be over-confident.) With
    precisions ``P_m = exp(-logvar_m)``, ``P_0 = 1 / v_0``, modality ``m`` brings the information
    ``I_m = [P_m − P_0]_+`` and ``a_m = P_m mean_m − P_0 m_0`` where ``I_m > 0`` (0 elsewhere:
    an encoder no surer than the prior adds nothing), and

    ``P = P_0 + Σ_m I_m``, ``mean = (P_0 m_0 + Σ_m a_m) / P``.

    ``include_prior=False`` gives the likelihood ``Π_m p(z | y_m) / p(z)`` alone as a Gaussian in
    ``z``: ``P = Σ_m I_m`` floored at ``exp(-LOGVAR_BOUND)`` (a cell nothing informs gets a
    variance of ``exp(LOGVAR_BOUND)`` and a pull ``Σ_m a_m`` that is 0), ``mean = Σ_m a_m / P``.
    Returns ``(mean, logvar)``; inputs broadcast together.
    """
    mu, neg_lv = _stacked(means, logvars)
    prior_mean = torch.as_tensor(prior_mean, dtype=mu.dtype, device=mu.device)
    prior_precision = torch.exp(-torch.as_tensor(prior_logvar, dtype=mu.dtype, device=mu.device))
    precision = neg_lv.exp()
    information = (precision - prior_precision).clamp_min(0.0)
    informed = information > 0
    shift = torch.where(informed, precision * mu - prior_precision * prior_mean, 0.0).sum(0)
    information = information.sum(0)
    if include_prior:
        total = prior_precision + information
        return (prior_precision * prior_mean + shift) / total, -total.log()
    total = information.clamp_min(math.exp(-LOGVAR_BOUND))
    return shift / total, -total.log()


def _stacked(
    means: Sequence[torch.Tensor], logvars: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means, -logvars)`` stacked on a new first axis, broadcast together."""
    if len(means) == 0 or len(means) != len(logvars):
        raise ValueError(
            "`means` and `logvars` must be non-empty and of equal length, got "
            f"{len(means)} and {len(logvars)}."
        )
    shape = torch.broadcast_shapes(*[m.shape for m in means], *[lv.shape for lv in logvars])
    mu = torch.stack([m.expand(shape) for m in means])
    neg_lv = -torch.stack([lv.expand(shape) for lv in logvars])
    return mu, neg_lv


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
    ``forward`` fuses the modalities given with :func:`fuse_posteriors` under the latent prior
    ``N(latent_prior_mean, latent_prior_std²)`` per channel, in sorted-name order.

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
        means, logvars = [], []
        for name in self.modality_names:  # fixed order: results do not depend on dict order
            if name not in inputs:
                continue
            pair = inputs[name]
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"`inputs[{name!r}]` must be a (values, mask) pair.")
            mean, logvar = self.encode_modality(name, pair[0], pair[1], latent_shape)
            means.append(mean)
            logvars.append(logvar)
        prior_mean, prior_logvar = self.latent_prior(means[0].dtype, means[0].device)
        mean, logvar = fuse_posteriors(means, logvars, prior_mean, prior_logvar)
        if not return_dict:
            return mean, logvar
        return ObservationEncoderOutput(mean=mean, logvar=logvar)
