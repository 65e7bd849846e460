"""Noise-prediction network ``eps_theta(z_t, t)`` over Markov-blanket windows: a U-Net on 1-D or
2-D grids, a residual MLP on columns."""

from __future__ import annotations

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
    ResidualMLPBlock,
    Upsample,
    group_norm,
    sinusoidal_embedding,
    validate_spatial_dims,
)

__all__ = ["ScoreNet", "ScoreNetOutput"]

TIME_SCALE = 1000.0


@dataclass
class ScoreNetOutput(BaseOutput):
    """``sample``: predicted noise ``eps``, shape of the input ``(B, window, C, *space)``."""

    sample: torch.Tensor


class ScoreNet(ModelMixin, ConfigMixin):
    """U-Net predicting the noise ``eps`` of ``z_t = alpha_t z + sigma_t eps``.

    ``sample`` ``(B, window, C, *space)`` is reshaped to ``(B, window * C, *space)``; levels
    ``i = 0 .. L-1`` (``L = len(hidden_channels)``) run ``layers_per_block`` residual blocks of
    width ``hidden_channels[i]`` and halve the grid between levels; the up path mirrors it with
    skip connections. Time: ``emb = MLP(sinusoidal(1000 t))`` is added in every residual block.
    Space must be divisible by ``2^(L-1)``. The score is ``s = -eps / sigma_t``.

    A column (``spatial_dims=0``, ``sample`` ``(B, window, C)``) has no grid to convolve or
    halve: the network is a residual MLP on the ``window * C`` values, the same blocks with
    linear maps in place of convolutions (:class:`~.layers.ResidualMLPBlock`), ``layers_per_block``
    blocks per width of ``hidden_channels`` and two more at the last width.

    Args:
        in_channels: channels ``C`` per window frame (latent channels, or levels in pixel space).
        window: frames per sample, ``2k + 1`` (the Markov blanket).
        spatial_dims: 1 or 2, or 0 for a column.
        hidden_channels: widths per resolution level (per block group of a column).
        layers_per_block: residual blocks per level (down path; the up path has as many).
        periodic: circular padding along x.
        time_embedding_dim: width of the time embedding.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        window: int = 1,
        spatial_dims: int = 2,
        hidden_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 2,
        periodic: bool = False,
        time_embedding_dim: int = 128,
    ) -> None:
        super().__init__()
        validate_spatial_dims(spatial_dims, column=True)
        if window < 1 or window % 2 != 1:
            raise ValueError(f"`window` must be odd (2k + 1), got {window!r}.")
        if in_channels < 1 or layers_per_block < 1 or time_embedding_dim < 1:
            raise ValueError(
                "`in_channels`, `layers_per_block` and `time_embedding_dim` must be >= 1, got "
                f"{in_channels}, {layers_per_block}, {time_embedding_dim}."
            )
        hidden = [int(c) for c in hidden_channels]
        if len(hidden) == 0:
            raise ValueError("`hidden_channels` must have at least one entry.")

        sd, per, temb = spatial_dims, periodic, time_embedding_dim
        self.time_mlp = nn.Sequential(nn.Linear(hidden[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        channels = window * in_channels
        if sd == 0:
            self._build_column(channels, hidden, layers_per_block, temb)
            return
        self.conv_in = PaddedConv(sd, channels, hidden[0], 3, periodic=per)

        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        ch = hidden[0]
        for i, width in enumerate(hidden):
            blocks = nn.ModuleList()
            for _ in range(layers_per_block):
                blocks.append(ResidualBlock(sd, ch, width, temb, per))
                ch = width
            self.down.append(blocks)
            if i < len(hidden) - 1:
                self.downsamplers.append(Downsample(sd, ch, ch, per))

        self.mid = nn.ModuleList(
            [ResidualBlock(sd, ch, ch, temb, per), ResidualBlock(sd, ch, ch, temb, per)]
        )

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(len(hidden))):
            width = hidden[i]
            blocks = nn.ModuleList()
            for _ in range(layers_per_block):
                blocks.append(ResidualBlock(sd, ch + width, width, temb, per))
                ch = width
            self.up.append(blocks)
            if i > 0:
                self.upsamplers.append(Upsample(sd, ch, ch, per))

        self.norm_out = group_norm(ch)
        self.conv_out = PaddedConv(sd, ch, channels, 3, periodic=per)

    def _build_column(
        self, channels: int, hidden: list[int], layers_per_block: int, temb: int
    ) -> None:
        self.linear_in = nn.Linear(channels, hidden[0])
        widths = [w for w in hidden for _ in range(layers_per_block)] + [hidden[-1]] * 2
        inputs = [hidden[0], *widths[:-1]]
        self.blocks = nn.ModuleList(
            ResidualMLPBlock(a, b, temb) for a, b in zip(inputs, widths, strict=True)
        )
        self.norm_out = group_norm(hidden[-1])
        self.linear_out = nn.Linear(hidden[-1], channels)

    def _time(self, timestep: float | torch.Tensor, batch: int, ref: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=ref.dtype, device=ref.device)
        if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
            t = t.reshape(1).expand(batch)
        elif t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(
                f"`timestep` must be a float, a 0-d tensor or a ({batch},) tensor, got shape "
                f"{tuple(t.shape)}."
            )
        return t

    def forward(
        self,
        sample: torch.Tensor,
        timestep: float | torch.Tensor,
        return_dict: bool = True,
    ) -> ScoreNetOutput | tuple[torch.Tensor]:
        """``sample`` ``(B, window, C, *space)``, ``timestep`` t in [0, 1] (float, 0-d or
        ``(B,)``) -> ``eps`` of the same shape as ``sample``."""
        cfg = self.config
        sd, window, c = cfg.spatial_dims, cfg.window, cfg.in_channels
        axes = "".join(", " + a for a in ["y", "x"][2 - sd :])
        if not isinstance(sample, torch.Tensor) or sample.ndim != 3 + sd:
            found = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample)
            raise ValueError(
                f"`sample` must be a {3 + sd}-D tensor (B, window, C{axes}), got {found}."
            )
        if sample.shape[1] != window or sample.shape[2] != c:
            raise ValueError(
                f"`sample` must be (B, window={window}, C={c}{axes}), got {tuple(sample.shape)}."
            )
        div = 2 ** (len(cfg.hidden_channels) - 1)
        if any(s % div for s in sample.shape[3:]):
            raise ValueError(
                f"`sample` spatial sizes {tuple(sample.shape[3:])} must be divisible by "
                f"2^(len(hidden_channels) - 1) = {div}."
            )
        b = sample.shape[0]
        t = self._time(timestep, b, sample)
        emb = self.time_mlp(sinusoidal_embedding(TIME_SCALE * t, cfg.hidden_channels[0]))
        if sd == 0:
            h = self.linear_in(sample.reshape(b, window * c))
            for block in self.blocks:
                h = block(h, emb)
            eps = self.linear_out(F.silu(self.norm_out(h))).reshape(sample.shape)
            return ScoreNetOutput(sample=eps) if return_dict else (eps,)

        h = self.conv_in(sample.reshape(b, window * c, *sample.shape[3:]))
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h)
        eps = self.conv_out(F.silu(self.norm_out(h))).reshape(sample.shape)
        if not return_dict:
            return (eps,)
        return ScoreNetOutput(sample=eps)
