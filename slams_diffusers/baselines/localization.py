r"""Covariance localisation for ensemble filters: where observations sit, how far apart things are,
and the Gaspari–Cohn taper (see docs/method.md §Baselines: EnKF and LETKF).

Positions are fractional grid indices, ``(y, x)`` in 2-D or ``(x,)`` in 1-D, the convention of
:class:`~slams_diffusers.observations.Stations`: state cell ``[i, j]`` sits at ``(i, j)``. An
observation's position is where its operator looks:

- :class:`~slams_diffusers.observations.Stations`: the station's position, for each observed level;
- :class:`~slams_diffusers.observations.Satellite`: the centre of its ``r × r`` footprint, block
  ``k`` covering cells ``k r … k r + r − 1`` and centred at ``k r + (r − 1)/2``, for every channel;
- :class:`~slams_diffusers.observations.Gridded`: the centre of its coarse block, value ``j`` on an
  axis being coarse cell ``j g``, centred at ``j g r + (r − 1)/2``, for every level;
- :class:`~slams_diffusers.observations.Background`: its own cell, for every level.

Only horizontal distance counts: every level of a column shares one localisation weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..observations import Background, Gridded, Observation, Satellite, Stations
from ..validation import periodic_axes

__all__ = ["gaspari_cohn", "grid_distance", "grid_positions", "observation_positions"]


def gaspari_cohn(distance: Tensor, radius: float) -> Tensor:
    r"""The Gaspari & Cohn (1999, eq. 4.10) compactly supported, fifth-order piecewise rational
    correlation function, ``z = distance / radius``:

    .. math::

        \mathrm{GC}(z) = \begin{cases}
            -\tfrac14 z^5 + \tfrac12 z^4 + \tfrac58 z^3 - \tfrac53 z^2 + 1, & 0 \le z \le 1,\\
            \tfrac1{12} z^5 - \tfrac12 z^4 + \tfrac58 z^3 + \tfrac53 z^2 - 5 z + 4
                - \tfrac23 z^{-1}, & 1 < z \le 2,\\
            0, & z > 2.
        \end{cases}

    ``GC(0) = 1``, ``GC(radius) = 5/24``, ``GC(2 radius) = 0``: ``radius`` is the half-width
    ``c`` and ``2c`` the cut-off. ``radius = inf`` gives 1 everywhere (no localisation).

    Args:
        distance: non-negative distances (any shape).
        radius: the half-width ``c > 0`` in the units of ``distance``.

    Returns:
        Weights in ``[0, 1]``, the shape and dtype of ``distance``.
    """
    radius = float(radius)
    if not radius > 0:  # also rejects NaN
        raise ValueError(f"radius: expected a positive number (or inf), got {radius}")
    if not isinstance(distance, Tensor) or not distance.is_floating_point():
        raise ValueError(
            f"distance: expected a floating tensor, got {getattr(distance, 'dtype', distance)!r}"
        )
    z = distance.abs() / radius
    near = ((((-0.25 * z + 0.5) * z + 0.625) * z - 5.0 / 3.0) * z) * z + 1.0
    zf = z.clamp(min=1.0)  # keeps 1/z finite where the branch is not used
    far = ((((zf / 12.0 - 0.5) * zf + 0.625) * zf + 5.0 / 3.0) * zf - 5.0) * zf + 4.0
    far = far - 2.0 / (3.0 * zf)
    out = torch.where(z <= 1.0, near, torch.where(z <= 2.0, far, torch.zeros_like(z)))
    return out.clamp(0.0, 1.0)


def grid_distance(
    a: Tensor, b: Tensor, grid_shape: Sequence[int], periodic: bool | Sequence[bool] = False
) -> Tensor:
    r"""Euclidean distances, in grid cells, between positions ``a`` ``(n, d)`` and ``b`` ``(m, d)``
    (fractional grid indices): ``(n, m)``. On a periodic axis of ``N`` cells the difference is
    ``min(|Δ|, N − |Δ|)``.

    ``periodic``: the axes that wrap (:func:`~slams_diffusers.validation.periodic_axes`: a bool for
    every axis, axis names such as ``"xy"``, or one bool per axis).
    """
    grid = tuple(int(n) for n in grid_shape)
    axes = periodic_axes(periodic, len(grid))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != len(grid) or b.shape[1] != len(grid):
        raise ValueError(
            f"a, b: expected positions of shape (n, {len(grid)}) and (m, {len(grid)}), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    squared = a.new_zeros(a.shape[0], b.shape[0])
    for axis, (n, wrap) in enumerate(zip(grid, axes, strict=True)):
        delta = (a[:, axis, None] - b[None, :, axis]).abs()
        if wrap:
            delta = torch.remainder(delta, n)
            delta = torch.minimum(delta, n - delta)
        squared = squared + delta**2
    return squared.sqrt()


def grid_positions(
    grid_shape: Sequence[int], dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """The positions of all cells of a grid in C order: ``(prod(grid_shape), len(grid_shape))``."""
    axes = torch.meshgrid(
        *[torch.arange(int(n), dtype=dtype, device=device) for n in grid_shape], indexing="ij"
    )
    return torch.stack([a.reshape(-1) for a in axes], dim=-1)


def _block_centres(count: int, stride: int, block: int, dtype, device) -> Tensor:
    """``j · stride · block + (block − 1)/2`` for ``j < count``."""
    index = torch.arange(count, dtype=dtype, device=device)
    return index * (stride * block) + (block - 1) / 2


def observation_positions(observation: Observation) -> Tensor:
    """Where each value of ``observation`` sits: ``(*values.shape, spatial_dims)`` fractional grid
    indices (the rules are in the module docstring)."""
    dtype, device = torch.float64, observation.values.device
    sd = observation.spatial_dims
    shape = tuple(observation.values.shape)
    if isinstance(observation, Stations):
        pos = observation.positions.to(device=device, dtype=dtype)  # (n, sd)
        return pos[:, None, :].expand(*shape, sd).clone()
    if isinstance(observation, Satellite | Gridded):
        if isinstance(observation, Satellite):
            block, stride = observation.footprint, 1
        else:
            block, stride = observation.coarsen, observation.subsample
        centres = [_block_centres(n, stride, block, dtype, device) for n in shape[1:]]
        grid = torch.stack(torch.meshgrid(*centres, indexing="ij"), dim=-1)
        return grid.expand(*shape, sd).clone()
    if isinstance(observation, Background):
        grid = grid_positions(shape[1:], dtype, device).reshape(*shape[1:], sd)
        return grid.expand(*shape, sd).clone()
    raise ValueError(
        f"observation: localisation needs positions, known for Stations, Satellite, Gridded and "
        f"Background observations; got a {type(observation).__name__} ({observation.modality!r})"
    )


def check_localization_radius(radius: Any) -> float | None:
    """``None`` or ``inf`` (no localisation) or a positive finite float."""
    if radius is None:
        return None
    try:
        value = float(radius)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"localization_radius: expected None or a positive number of grid cells, got {radius!r}"
        ) from e
    if math.isnan(value) or value <= 0:
        raise ValueError(
            f"localization_radius: expected None or a positive number of grid cells, got {value}"
        )
    return value
