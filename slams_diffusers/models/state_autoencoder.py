"""State autoencoder: physical states ``(B, T, levels, *space)`` <-> latents
``(B, T, latent_channels, *space / f)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from .layers import (
    Downsample,
    PaddedConv,
    ResidualBlock,
    Upsample,
    channel_values,
    group_norm,
    validate_spatial_dims,
)
from .level_normalizer import recorded_grid_shape, recorded_levels

__all__ = ["StateAutoencoder", "StateAutoencoderOutput"]


@dataclass
class StateAutoencoderOutput(BaseOutput):
    """``sample``: reconstruction ``(B, T, levels, *space)`` in physical units;
    ``latent``: ``(B, T, latent_channels, *space / f)`` (already times ``scaling_factor``)."""

    sample: torch.Tensor
    latent: torch.Tensor


class StateAutoencoder(ModelMixin, ConfigMixin):
    """Convolutional autoencoder of vertical-profile states on a 1-D or 2-D grid.

    ``encode``: ``x`` ``(B, T, levels, *space)`` [K] -> ``x_n = (x - level_mean) / level_std``
    (per level) -> encoder -> ``z = scaling_factor * E(x_n)`` ``(B, T, latent_channels,
    *space / f)``. ``decode``: ``x = level_mean + level_std * D(z / scaling_factor)``.
    ``f = downsample_factor`` in {1, 2, 4, 8}, reached with ``log2(f)`` stride-2 stages whose
    widths are ``hidden_channels[0 .. log2(f)]`` (extra entries are unused). With ``periodic``
    the last spatial axis (x) is padded circularly, so rolling ``x`` by ``f`` cells rolls ``z``
    by one cell.

    Args:
        levels: number of vertical levels (input channels).
        latent_channels: channels ``c`` of the latent.
        spatial_dims: 1 (``(level, x)``) or 2 (``(level, y, x)``).
        downsample_factor: spatial reduction ``f`` per axis.
        hidden_channels: widths per resolution, ``len >= log2(f) + 1``.
        layers_per_block: residual blocks per resolution.
        periodic: circular padding along x.
        level_mean, level_std: per-level normalisation (length ``levels``); ``None`` -> 0 / 1.
        scaling_factor: multiplies the latent (set it so the latent has unit variance).
        levels_hpa: the pressure [hPa] of each level, recorded for users and input checks;
            ``None`` when unknown or not pressure levels.
        grid_shape: the grid of the training data, which inputs must match; ``None``: any.
    """

    @register_to_config
    def __init__(
        self,
        levels: int = 5,
        latent_channels: int = 4,
        spatial_dims: int = 2,
        downsample_factor: int = 4,
        hidden_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 1,
        periodic: bool = False,
        level_mean: Sequence[float] | None = None,
        level_std: Sequence[float] | None = None,
        scaling_factor: float = 1.0,
        levels_hpa: Sequence[float] | None = None,
        grid_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        validate_spatial_dims(spatial_dims)
        if downsample_factor not in (1, 2, 4, 8):
            raise ValueError(
                f"`downsample_factor` must be one of 1, 2, 4, 8, got {downsample_factor!r}."
            )
        n_down = int(math.log2(downsample_factor))
        hidden = [int(c) for c in hidden_channels]
        if len(hidden) < n_down + 1:
            raise ValueError(
                f"`hidden_channels` needs at least log2(downsample_factor) + 1 = {n_down + 1} "
                f"entries for downsample_factor={downsample_factor}, got {len(hidden)}."
            )
        if levels < 1 or latent_channels < 1:
            raise ValueError(
                f"`levels` and `latent_channels` must be >= 1, got {levels}, {latent_channels}."
            )
        if layers_per_block < 1:
            raise ValueError(f"`layers_per_block` must be >= 1, got {layers_per_block}.")
        if scaling_factor == 0:
            raise ValueError("`scaling_factor` must be non-zero.")
        mean = channel_values(level_mean, levels, "level_mean", 0.0)
        std = channel_values(level_std, levels, "level_std", 1.0)
        if any(s <= 0 for s in std):
            raise ValueError(f"`level_std` must be positive, got {std}.")
        # keep the config JSON-friendly whatever sequence type was passed
        self.register_to_config(
            level_mean=None if level_mean is None else mean,
            level_std=None if level_std is None else std,
            levels_hpa=recorded_levels(levels_hpa, levels),
            grid_shape=recorded_grid_shape(grid_shape, spatial_dims),
        )
        self.register_buffer("norm_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("norm_std", torch.tensor(std), persistent=False)

        sd, per = spatial_dims, periodic
        hidden = hidden[: n_down + 1]
        # encoder
        self.enc_in = PaddedConv(sd, levels, hidden[0], 3, periodic=per)
        enc: list[nn.Module] = []
        for i in range(n_down + 1):
            enc += [
                ResidualBlock(sd, hidden[i], hidden[i], periodic=per)
                for _ in range(layers_per_block)
            ]
            if i < n_down:
                enc.append(Downsample(sd, hidden[i], hidden[i + 1], periodic=per))
        self.enc_blocks = nn.ModuleList(enc)
        self.enc_norm = group_norm(hidden[-1])
        self.enc_out = PaddedConv(sd, hidden[-1], latent_channels, 3, periodic=per)
        # decoder
        self.dec_in = PaddedConv(sd, latent_channels, hidden[-1], 3, periodic=per)
        dec: list[nn.Module] = []
        for i in reversed(range(n_down + 1)):
            dec += [
                ResidualBlock(sd, hidden[i], hidden[i], periodic=per)
                for _ in range(layers_per_block)
            ]
            if i > 0:
                dec.append(Upsample(sd, hidden[i], hidden[i - 1], periodic=per))
        self.dec_blocks = nn.ModuleList(dec)
        self.dec_norm = group_norm(hidden[0])
        self.dec_out = PaddedConv(sd, hidden[0], levels, 3, periodic=per)

    # ------------------------------------------------------------------ shapes
    @property
    def latent_channels(self) -> int:
        return int(self.config.latent_channels)

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Latent grid ``space / f`` of a state grid ``spatial_shape`` (spatial axes only)."""
        cfg = self.config
        f = cfg.downsample_factor
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != cfg.spatial_dims or any(s <= 0 or s % f for s in shape):
            raise ValueError(
                f"`spatial_shape` must have {cfg.spatial_dims} positive sizes divisible by "
                f"downsample_factor={f}, got {shape}."
            )
        return tuple(s // f for s in shape)

    def _view(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.to(like.dtype).reshape(-1, *([1] * self.config.spatial_dims))

    def _check(self, t: torch.Tensor, name: str, channels: int, what: str, factor: int) -> None:
        cfg = self.config
        rank = 3 + cfg.spatial_dims
        axes = "(B, T, " + what + ", " + ", ".join(["y", "x"][-cfg.spatial_dims :]) + ")"
        if not isinstance(t, torch.Tensor) or t.ndim != rank:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"`{name}` must be a {rank}-D tensor {axes}, got {found}.")
        if t.shape[2] != channels:
            raise ValueError(
                f"`{name}` must have {channels} {what} on axis 2 {axes}, "
                f"got shape {tuple(t.shape)}."
            )
        if factor > 1 and any(s % factor for s in t.shape[3:]):
            raise ValueError(
                f"`{name}` spatial sizes {tuple(t.shape[3:])} must be divisible by "
                f"downsample_factor={factor}."
            )

    # ------------------------------------------------------------------ API
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, levels, *space)`` [K] -> ``z`` ``(B, T, latent_channels, *space / f)``."""
        cfg = self.config
        self._check(x, "x", cfg.levels, "levels", cfg.downsample_factor)
        b, t = x.shape[:2]
        h = x.reshape(b * t, *x.shape[2:])
        h = (h - self._view(self.norm_mean, h)) / self._view(self.norm_std, h)
        h = self.enc_in(h)
        for block in self.enc_blocks:
            h = block(h)
        z = self.enc_out(F.silu(self.enc_norm(h))) * cfg.scaling_factor
        return z.reshape(b, t, *z.shape[1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, T, latent_channels, *space / f)`` -> state ``(B, T, levels, *space)`` [K]."""
        cfg = self.config
        self._check(z, "z", cfg.latent_channels, "latent_channels", 1)
        b, t = z.shape[:2]
        h = z.reshape(b * t, *z.shape[2:]) / cfg.scaling_factor
        h = self.dec_in(h)
        for block in self.dec_blocks:
            h = block(h)
        x = self.dec_out(F.silu(self.dec_norm(h)))
        x = x * self._view(self.norm_std, x) + self._view(self.norm_mean, x)
        return x.reshape(b, t, *x.shape[1:])

    def forward(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> StateAutoencoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction ``decode(encode(x))`` and the latent."""
        z = self.encode(x)
        sample = self.decode(z)
        if not return_dict:
            return sample, z
        return StateAutoencoderOutput(sample=sample, latent=z)
