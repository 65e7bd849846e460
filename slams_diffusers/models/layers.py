"""Shared building blocks of the models: padded convolutions, residual blocks, resampling
and the sinusoidal time embedding.

Tensors are ``(B, C, *space)`` with ``len(space) == spatial_dims`` in {1, 2} (``(B, C)`` for
the column block). The last axis is
``x``: with ``periodic=True`` it is padded circularly (a periodic domain, e.g. longitude or a
doubly periodic beta-plane in x); every other axis is zero-padded. All ops are functional (no
in-place writes), so the blocks work under ``torch.autograd.grad``, ``torch.func.jvp`` and
``torch.func.vjp``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PaddedConv",
    "ResidualBlock",
    "ResidualMLPBlock",
    "Downsample",
    "Upsample",
    "group_norm",
    "sinusoidal_embedding",
    "validate_spatial_dims",
]


def channel_values(
    values: Sequence[float] | None, count: int, name: str, default: float
) -> list[float]:
    """Per-channel config values as a JSON-friendly list of ``count`` floats (``default``
    everywhere when ``values`` is None); ``ValueError`` naming ``name`` on a length mismatch."""
    if values is None:
        return [default] * count
    out = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    if len(out) != count:
        raise ValueError(f"`{name}` must have {count} values (one per channel), got {len(out)}.")
    return out


def validate_spatial_dims(spatial_dims: int, column: bool = False) -> int:
    """Return ``spatial_dims`` if it is 1 or 2 (or 0, a column ``(level,)``, where ``column``),
    else raise ``ValueError``."""
    allowed = (0, 1, 2) if column else (1, 2)
    if isinstance(spatial_dims, bool) or spatial_dims not in allowed:
        expected = "0 (a column), 1 or 2" if column else "1 or 2"
        raise ValueError(f"`spatial_dims` must be {expected}, got {spatial_dims!r}.")
    return int(spatial_dims)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(channels, 8)`` groups (8 groups for the usual widths)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels, eps=1e-6)


class PaddedConv(nn.Module):
    """Convolution with "same"-style padding ``(k - 1) // 2``: circular along the last axis when
    ``periodic``, zero elsewhere. With ``stride=2`` and even sizes the output is ``n / 2``.

    Input ``(B, C_in, *space)`` -> output ``(B, C_out, *space / stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = validate_spatial_dims(spatial_dims)
        self.periodic = bool(periodic)
        self.pad = (kernel_size - 1) // 2
        conv_cls = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if p > 0:
            if self.periodic:
                h = torch.cat([h[..., -p:], h, h[..., :p]], dim=-1)
                pads = (0, 0) + (p, p) * (self.spatial_dims - 1)
            else:
                pads = (p, p) * self.spatial_dims
            if any(pads):
                h = F.pad(h, pads)
        return self.conv(h)


class ResidualBlock(nn.Module):
    """``h + f(h)`` with ``f = conv(SiLU(GN(conv(SiLU(GN(h))) + proj(temb))))``.

    ``temb`` ``(B, temb_dim)`` is optional (``temb_dim=None`` for no time embedding); a 1x1
    conv maps the skip path when ``in_channels != out_channels``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        temb_dim: int | None = None,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = validate_spatial_dims(spatial_dims)
        self.norm1 = group_norm(in_channels)
        self.conv1 = PaddedConv(spatial_dims, in_channels, out_channels, 3, periodic=periodic)
        self.temb_proj = nn.Linear(temb_dim, out_channels) if temb_dim is not None else None
        self.norm2 = group_norm(out_channels)
        self.conv2 = PaddedConv(spatial_dims, out_channels, out_channels, 3, periodic=periodic)
        self.skip = (
            PaddedConv(spatial_dims, in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        if self.temb_proj is not None:
            if temb is None:
                raise ValueError("`temb` is required: this block was built with a `temb_dim`.")
            t = self.temb_proj(F.silu(temb))
            out = out + t.reshape(*t.shape, *([1] * self.spatial_dims))
        out = self.conv2(F.silu(self.norm2(out)))
        return self.skip(h) + out


class ResidualMLPBlock(nn.Module):
    """:class:`ResidualBlock` without space (a column): the two convolutions are linear maps.
    ``(B, C_in)`` -> ``(B, C_out)``, with the time embedding ``temb`` ``(B, temb_dim)`` added
    between them."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.linear1 = nn.Linear(in_channels, out_channels)
        self.temb_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.linear2 = nn.Linear(out_channels, out_channels)
        self.skip = (
            nn.Linear(in_channels, out_channels) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.linear1(F.silu(self.norm1(h))) + self.temb_proj(F.silu(temb))
        out = self.linear2(F.silu(self.norm2(out)))
        return self.skip(h) + out


class Downsample(nn.Module):
    """Stride-2 3x3 conv: ``(B, C_in, *space)`` -> ``(B, C_out, *space / 2)``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, periodic: bool = False
    ) -> None:
        super().__init__()
        self.conv = PaddedConv(spatial_dims, in_channels, out_channels, 3, 2, periodic)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: ``(B, C_in, *space)`` -> ``(B, C_out, *space * 2)``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, periodic: bool = False
    ) -> None:
        super().__init__()
        self.conv = PaddedConv(spatial_dims, in_channels, out_channels, 3, 1, periodic)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (already scaled) times ``t`` ``(B,)`` -> ``(B, dim)``.

    ``emb = [cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k / (dim / 2))``,
    ``k = 0 .. dim/2 - 1``; an odd ``dim`` is padded with one zero column.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1)).to(t.dtype)
    args = t.reshape(-1, 1) * freqs.reshape(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
