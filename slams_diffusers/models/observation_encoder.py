"""Observation encoders: one small conv encoder per modality maps rasterised observations to a
Gaussian in the latent space, and the modalities present are fused by precision weighting."""

from __future__ import annotations

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

__all__ = ["ObservationEncoder", "ObservationEncoderOutput", "fuse_gaussians"]

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
    """
    if len(means) == 0 or len(means) != len(logvars):
        raise ValueError(
            "`means` and `logvars` must be non-empty and of equal length, got "
            f"{len(means)} and {len(logvars)}."
        )
    shape = torch.broadcast_shapes(*[m.shape for m in means], *[lv.shape for lv in logvars])
    mu = torch.stack([m.expand(shape) for m in means])
    neg_lv = -torch.stack([lv.expand(shape) for lv in logvars])
    weights = torch.softmax(neg_lv, dim=0)
    return (weights * mu).sum(0), -torch.logsumexp(neg_lv, dim=0)


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
    *latent_shape)``, ``logvar_m = 10 tanh(raw / 10)`` in (-10, 10). ``forward`` fuses the
    modalities given with :func:`fuse_gaussians`, in sorted-name order.

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
    """

    @register_to_config
    def __init__(
        self,
        modalities: dict[str, dict[str, Any]],
        latent_channels: int = 4,
        spatial_dims: int = 2,
        hidden_channels: int = 32,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        validate_spatial_dims(spatial_dims)
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
        self.register_to_config(modalities=clean)
        self.encoders = nn.ModuleDict(encoders)

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities this encoder knows, sorted (the fusion order)."""
        return list(self.encoders.keys())

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
        """Encode every modality in ``inputs`` (``{name: (values, mask)}``) and fuse them:
        ``(mean, logvar)`` ``(B, latent_channels, *latent_shape)``. Absent modalities do not
        enter the fusion."""
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
        mean, logvar = fuse_gaussians(means, logvars)
        if not return_dict:
            return mean, logvar
        return ObservationEncoderOutput(mean=mean, logvar=logvar)
