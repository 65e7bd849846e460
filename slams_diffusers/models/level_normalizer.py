"""Level normaliser: the pixel-space "autoencoder" (SDA), ``z = (x - level_mean) / level_std``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .layers import channel_values, validate_spatial_dims

__all__ = ["LevelNormalizer", "recorded_grid_shape", "recorded_levels"]


def recorded_levels(levels_hpa: Sequence[float] | None, levels: int) -> list[float] | None:
    """``levels_hpa`` as a config value: ``None``, or ``levels`` positive pressures in hPa.

    Raises ``ValueError`` for a wrong count, non-positive values, or values above 1100 (Pa,
    not hPa: divide by 100).
    """
    if levels_hpa is None:
        return None
    values = [float(v) for v in levels_hpa]
    if len(values) != levels:
        raise ValueError(
            f"`levels_hpa` has {len(values)} pressures {values}; expected one per level ({levels})."
        )
    if not all(0 < v < float("inf") for v in values):
        raise ValueError(f"`levels_hpa` must be positive, finite pressures in hPa, got {values}.")
    if any(v > 1100 for v in values):
        raise ValueError(
            f"`levels_hpa` {values} has values above 1100: these look like Pa; expected hPa "
            "(divide by 100)."
        )
    return values


def recorded_grid_shape(grid_shape: Sequence[int] | None, spatial_dims: int) -> list[int] | None:
    """``grid_shape`` as a config value: ``None``, or ``spatial_dims`` positive sizes (the grid
    the model was trained on, which the pipeline holds its inputs to)."""
    if grid_shape is None:
        return None
    sizes = [int(v) for v in grid_shape]
    if len(sizes) != spatial_dims or not all(v > 0 for v in sizes):
        raise ValueError(
            f"`grid_shape` must be {spatial_dims} positive sizes, got {list(grid_shape)}."
        )
    return sizes


class LevelNormalizer(ModelMixin, ConfigMixin):
    """Pixel space as an autoencoder component: ``encode(x) = (x - μ_l) / s_l`` per level,
    ``decode(z) = μ_l + s_l z``; the diffusion runs on level-normalised states (SDA, Rozet &
    Louppe 2023). Same interface as :class:`StateAutoencoder` (``encode``, ``decode``,
    ``latent_shape``, ``latent_channels``, ``level_mean``/``level_std`` in the config), so a
    pipeline has no pixel-space special case (docs/method.md §Spaces).

    Args:
        levels: number of vertical levels (channels of the state and of its "latent").
        spatial_dims: 1 (``(level, x)``), 2 (``(level, y, x)``) or 0 (a column ``(level,)``).
        level_mean, level_std: per-level statistics [K]; ``None`` -> 0 / 1.
        levels_hpa: the pressure [hPa] of each level, recorded for users and input checks;
            ``None`` when unknown or not pressure levels.
        grid_shape: the grid of the training data, which inputs must match; ``None``: any.
        pad_to_multiple: ``m``: on a 2-D grid whose ``y`` size (latitude) ``m`` does not divide,
            ``encode`` pads ``y`` with copies of its edge rows to the next multiple of ``m``
            (half before, the rest after) and ``decode`` crops them off, so that a U-Net that
            halves the grid runs on, e.g., a 61 × 120 global grid. ``x`` (periodic longitude)
            is never padded: a wrapped axis cannot be extended without breaking it. Needs
            ``grid_shape``; 1: no padding.
    """

    @register_to_config
    def __init__(
        self,
        levels: int = 5,
        spatial_dims: int = 2,
        level_mean: Sequence[float] | None = None,
        level_std: Sequence[float] | None = None,
        levels_hpa: Sequence[float] | None = None,
        grid_shape: Sequence[int] | None = None,
        pad_to_multiple: int = 1,
    ) -> None:
        super().__init__()
        validate_spatial_dims(spatial_dims, column=True)
        if isinstance(pad_to_multiple, bool) or not isinstance(pad_to_multiple, int):
            raise ValueError(f"`pad_to_multiple` must be an int >= 1, got {pad_to_multiple!r}.")
        if pad_to_multiple < 1:
            raise ValueError(f"`pad_to_multiple` must be an int >= 1, got {pad_to_multiple!r}.")
        if pad_to_multiple > 1:
            if spatial_dims != 2 or grid_shape is None:
                raise ValueError(
                    "`pad_to_multiple` pads the y axis of a 2-D grid given as `grid_shape`; got "
                    f"spatial_dims={spatial_dims}, grid_shape={grid_shape}."
                )
            if int(grid_shape[1]) % pad_to_multiple:
                raise ValueError(
                    f"`grid_shape` {list(grid_shape)}: x (periodic longitude) is never padded and "
                    f"must be a multiple of `pad_to_multiple`={pad_to_multiple}."
                )
        if levels < 1:
            raise ValueError(f"`levels` must be >= 1, got {levels}.")
        mean = channel_values(level_mean, levels, "level_mean", 0.0)
        std = channel_values(level_std, levels, "level_std", 1.0)
        if not all(s > 0 for s in std):
            raise ValueError(f"`level_std` must be positive, got {std}.")
        self.register_to_config(
            level_mean=None if level_mean is None else mean,
            level_std=None if level_std is None else std,
            levels_hpa=recorded_levels(levels_hpa, levels),
            grid_shape=recorded_grid_shape(grid_shape, spatial_dims),
        )
        # persistent: a model without any state would be saved without a weights file
        self.register_buffer("norm_mean", torch.tensor(mean))
        self.register_buffer("norm_std", torch.tensor(std))

    @property
    def latent_channels(self) -> int:
        return int(self.config.levels)

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The grid, with ``y`` padded to a multiple of ``pad_to_multiple`` (``f = 1``)."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != self.config.spatial_dims or any(s <= 0 for s in shape):
            raise ValueError(
                f"`spatial_shape` must have {self.config.spatial_dims} positive sizes, got {shape}."
            )
        before, after = self._padding(shape)
        return (shape[0] + before + after, *shape[1:]) if before + after else shape

    def _padding(self, shape: Sequence[int]) -> tuple[int, int]:
        """Rows added before and after ``y`` for a state grid ``shape``."""
        multiple = int(self.config.get("pad_to_multiple", 1))
        if multiple == 1:
            return 0, 0
        total = -int(shape[0]) % multiple
        return total // 2, total - total // 2

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1,) + (1,) * self.config.spatial_dims
        mean = self.norm_mean.to(like).reshape(shape)
        return mean, self.norm_std.to(like).reshape(shape)

    def _check(self, t: torch.Tensor, name: str) -> None:
        rank = 3 + self.config.spatial_dims
        if not isinstance(t, torch.Tensor) or t.ndim != rank or t.shape[2] != self.config.levels:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"`{name}` must be a {rank}-D tensor (B, T, levels={self.config.levels}, *space), "
                f"got {found}."
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, levels, *space)`` [K] -> ``(x - μ) / s`` (``y`` padded with its edge
        rows where ``pad_to_multiple`` says)."""
        self._check(x, "x")
        mean, std = self._stats(x)
        z = (x - mean) / std
        before, after = self._padding(x.shape[3:])
        if before + after:
            rows = torch.arange(-before, x.shape[3] + after, device=x.device)
            z = z.index_select(3, rows.clamp(0, x.shape[3] - 1))
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, T, levels, *space)`` -> ``μ + s z`` [K] (the padded rows cropped off)."""
        self._check(z, "z")
        mean, std = self._stats(z)
        if int(self.config.get("pad_to_multiple", 1)) > 1:
            rows = int(self.config.grid_shape[0])
            before = (z.shape[3] - rows) // 2
            z = z.narrow(3, before, rows)
        return z * std + mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))`` (the identity up to round-off)."""
        return self.decode(self.encode(x))
