r"""Twin experiments on any gridded system: observation arrays -> observation objects.

A twin experiment (e.g. Lorenz-96, a shallow-water model) observes its own simulated truth
through a linear operator,

.. math:: y_t = H\, \operatorname{vec}(x_t) + e_t, \qquad e_t \sim \mathcal{N}(0, \sigma^2 I),

with ``x_t`` one state ``(levels, *space)`` (a 1-D field is ``(1, x)``, as
:func:`~slams_diffusers.data.datasets.open_store` reads it) flattened in C order (level, then
``y``, then ``x``). :func:`observations_from_array` turns the ``(time, n)`` array of ``y_t`` and
``H`` (a matrix, or the list of observed state entries) into one observation per time step:

- ``H`` selects entries (an index list, or a matrix whose rows are one-hot): :class:`Stations` at
  the observed cells and levels (the ``"stations"`` modality, which encoders learn);
- any other ``H``: a :class:`LinearObservation` (modality ``"linear"``), assimilated through its
  operator (the decoded route of docs/method.md).

Example (Lorenz-96 with 40 variables, every second one observed, noise 1)::

    to_store(runs, "l96.zarr", split=(0.8, 0.1, 0.1), dims=("trajectory", "time", "x"))
    observations = observations_from_array(y, list(range(0, 40, 2)), (1, 40), 1.0, periodic=True)
    pipe(background=xb, observations=observations, background_error_std=1.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..observations import Observation, Stations, add_noise
from ..validation import as_int

__all__ = ["LinearObservation", "observations_from_array"]


def _tensor(x: Any) -> Tensor:
    """A tensor of ``x`` keeping its dtype; numpy arrays are copied (they may be read-only)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x))
    return torch.as_tensor(x)


def _state_shape(state_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(as_int(n, "state_shape", minimum=1) for n in state_shape)
    except TypeError as e:
        raise ValueError(
            f"state_shape: expected (levels, x) or (levels, y, x), got {state_shape!r}"
        ) from e
    if len(shape) not in (2, 3):
        raise ValueError(
            f"state_shape: expected (levels, x) or (levels, y, x) (a 1-D field is (1, x)), "
            f"got {state_shape!r}"
        )
    return shape


@dataclass(eq=False, repr=False)
class LinearObservation(Observation):
    r"""A linear observation of the whole state: :math:`y = H \operatorname{vec}(x) + e`.

    Args:
        values: ``(n,)`` observed values; NaN = missing.
        matrix: ``H`` ``(n, levels · prod(space))``, acting on the state flattened in C order.
        state_shape: ``(levels, x)`` or ``(levels, y, x)`` of the observed state.
        noise_std: ``σ_y``, a float or ``(n,)``.
        modality, time_index, mask: see :class:`Observation`.
    """

    values: Tensor
    matrix: Tensor
    state_shape: tuple[int, ...]
    noise_std: float | Tensor
    modality: str = "linear"
    time_index: int = 0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.state_shape = _state_shape(self.state_shape)
        matrix = _tensor(self.matrix)
        if not matrix.is_floating_point():
            matrix = matrix.to(torch.get_default_dtype())
        size = math.prod(self.state_shape)
        if matrix.ndim != 2 or matrix.shape[1] != size:
            raise ValueError(
                f"matrix: expected shape (n, {size}) (n observations of a state "
                f"{self.state_shape} flattened), got {tuple(matrix.shape)}"
            )
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("matrix: contains NaN or inf; expected a finite H")
        self.matrix = matrix.clone()
        self._init_common((matrix.shape[0],))

    @property
    def num_levels(self) -> int:
        return self.state_shape[0]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return self.state_shape[1:]

    @classmethod
    def simulate(
        cls,
        truth: Tensor,
        matrix: Tensor,
        noise_std: float | Tensor,
        *,
        modality: str = "linear",
        time_index: int = 0,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LinearObservation:
        """``y = H vec(truth) + σ_y ε``; ``truth`` is one state ``(levels, *space)``."""
        truth = torch.as_tensor(truth)
        proto = cls(
            values=torch.zeros(torch.as_tensor(matrix).shape[0], dtype=truth.dtype),
            matrix=matrix,
            state_shape=tuple(truth.shape),
            noise_std=noise_std,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )
        values = add_noise(proto.operator(truth), proto.noise_std, generator)
        return dataclasses.replace(proto, values=values)

    def operator(self, state: Tensor) -> Tensor:
        """``(..., levels, *space) -> (..., n)``: ``H`` times the flattened state."""
        self._check_state_tensor(state)
        flat = state.flatten(start_dim=state.ndim - len(self.state_shape))
        return flat @ self.matrix.to(device=state.device, dtype=state.dtype).T

    def to_grid(self) -> tuple[Tensor, Tensor]:
        r"""The values spread back on the state grid, ``(levels, *space)`` each: in every
        cell the ``|H|``-weighted mean of the observations that see it,
        :math:`\sum_i |H_{ic}| m_i y_i / \sum_i |H_{ic}| m_i`; the mask is where that weight
        is positive."""
        weights = self.matrix.abs().to(self.values)
        observed = self.mask.to(self.values.dtype)
        total = (observed * self.values) @ weights
        count = observed @ weights
        values = torch.where(count > 0, total / count.clamp(min=1e-30), torch.zeros_like(total))
        return values.reshape(self.state_shape), (count > 0).to(values.dtype).reshape(
            self.state_shape
        )

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        self._check_num_levels(levels, f"state_shape {self.state_shape}")
        self._check_spatial_shape(spatial_shape)


def _selected_entries(matrix: Tensor) -> list[int] | None:
    """The entry each row of ``matrix`` picks when every row is one-hot (a single 1), else
    ``None``."""
    nonzero = matrix != 0
    if not bool((nonzero.sum(dim=1) == 1).all()):
        return None
    columns = nonzero.float().argmax(dim=1)
    picked = matrix.gather(1, columns[:, None])[:, 0]
    return columns.tolist() if bool((picked == 1).all()) else None


def _stations(
    values: Tensor,
    entries: Sequence[int],
    shape: tuple[int, ...],
    noise_std: Tensor,
    periodic: bool | Sequence[bool],
    modality: str,
    time_index: int,
) -> Stations:
    """:class:`Stations` from one time's values of the flat state ``entries``."""
    cells = math.prod(shape[1:])
    sites = list(dict.fromkeys(i % cells for i in entries))  # first-seen order
    levels = sorted({i // cells for i in entries})
    table = torch.full((len(sites), len(levels)), float("nan"), dtype=values.dtype)
    noise = torch.ones_like(table)
    for k, entry in enumerate(entries):
        row, column = sites.index(entry % cells), levels.index(entry // cells)
        table[row, column] = values[k]
        noise[row, column] = noise_std[k]
    strides = [math.prod(shape[1:][a + 1 :]) for a in range(len(shape) - 1)]
    positions = torch.tensor(
        [[(site // s) % n for s, n in zip(strides, shape[1:], strict=True)] for site in sites],
        dtype=torch.float64,
    )
    return Stations(
        values=table,
        positions=positions,
        levels=levels,
        num_levels=shape[0],
        grid_shape=shape[1:],
        noise_std=noise,
        periodic=periodic,
        modality=modality,
        time_index=time_index,
    )


def observations_from_array(
    values: Any,
    operator: Any,
    state_shape: Sequence[int],
    noise_std: float | Any,
    *,
    time_offset: int = 0,
    periodic: bool | Sequence[bool] = False,
    modality: str | None = None,
) -> list[Observation]:
    """One observation per time step from an array of observations ``(time, n)`` and ``H``.

    Args:
        values: ``(time, n)`` observed values (numpy, torch or nested lists); NaN = missing.
        operator: the ``n`` observed entries of the flattened state (ints, C order over
            ``state_shape``), or ``H`` ``(n, prod(state_shape))``.
        state_shape: one state's ``(levels, x)`` or ``(levels, y, x)``; a 1-D field is
            ``(1, x)``.
        noise_std: ``σ_y``, a float or one per observation ``(n,)``.
        time_offset: ``time_index`` of row 0 (rows are consecutive steps of the window).
        periodic: for the stations: a bool (the x axis) or one per spatial axis.
        modality: default ``"stations"`` for selected entries, ``"linear"`` otherwise.

    Returns:
        ``time`` observations: :class:`~slams_diffusers.Stations` where ``H`` selects
        entries, else :class:`LinearObservation`; ``time_index = time_offset + row``.

    Raises:
        ValueError: shapes that do not fit, indices out of range or repeated, bad noise.
    """
    shape = _state_shape(state_shape)
    size = math.prod(shape)
    array = _tensor(values)
    if not array.is_floating_point():
        array = array.to(torch.get_default_dtype())
    if array.ndim != 2:
        raise ValueError(f"values: expected shape (time, n), got {tuple(array.shape)}")
    n = array.shape[1]
    offset = as_int(time_offset, "time_offset", minimum=0)
    matrix = _tensor(operator)
    if matrix.ndim == 1:  # an index list
        if matrix.is_floating_point() or matrix.dtype == torch.bool:
            raise ValueError(
                f"operator: an index list must hold ints, got dtype {matrix.dtype}; pass H "
                "as a 2-D matrix"
            )
        entries = matrix.tolist()
    elif matrix.ndim == 2:
        if tuple(matrix.shape) != (n, size):
            raise ValueError(
                f"operator: H must have shape (n, prod(state_shape)) = ({n}, {size}), got "
                f"{tuple(matrix.shape)}"
            )
        entries = _selected_entries(matrix)
    else:
        raise ValueError(
            f"operator: expected an index list (n,) or H (n, {size}), got shape "
            f"{tuple(matrix.shape)}"
        )
    if entries is not None:
        if len(entries) != n:
            raise ValueError(f"operator: {len(entries)} indices for values with n = {n} columns")
        bad = [i for i in entries if not 0 <= i < size]
        if bad:
            raise ValueError(
                f"operator: indices {bad[:5]} out of range for a state {shape} ({size} entries)"
            )
        if len(set(entries)) != len(entries):
            raise ValueError("operator: repeated indices; expected each entry observed once")
    std = torch.as_tensor(noise_std, dtype=array.dtype)
    if std.ndim > 1 or (std.ndim == 1 and std.numel() != n):
        raise ValueError(f"noise_std: expected a float or {n} values, got shape {tuple(std.shape)}")
    if not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
        raise ValueError("noise_std: expected finite, non-negative values")
    std_each = std.expand(n)
    observations: list[Observation] = []
    for row in range(array.shape[0]):
        if entries is not None:
            observations.append(
                _stations(
                    array[row],
                    entries,
                    shape,
                    std_each,
                    periodic,
                    modality or "stations",
                    offset + row,
                )
            )
        else:
            observations.append(
                LinearObservation(
                    values=array[row],
                    matrix=matrix,
                    state_shape=shape,
                    noise_std=std_each.clone() if std.ndim else float(std),
                    modality=modality or "linear",
                    time_index=offset + row,
                )
            )
    return observations
