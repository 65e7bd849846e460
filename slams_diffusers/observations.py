"""Observation types: what was observed, how, where, when, and how well.

A *state* is a temperature field in physical units (K) of shape
``(..., levels, *space)`` with ``space = (x,)`` (``spatial_dims = 1``),
``space = (y, x)`` (``spatial_dims = 2``) or ``space = ()`` (a single column,
``spatial_dims = 0``) and any number of leading batch dimensions.

Every observation ``y`` is modelled as

.. math:: y = A(x) + e, \\qquad e \\sim \\mathcal{N}(0, \\operatorname{diag}(\\sigma_y^2)),

where ``A = observation.operator`` is differentiable (pure torch ops; works with
:mod:`torch.autograd` and :mod:`torch.func`), ``σ_y = noise_std`` (scalar or
per value) and only the entries where ``mask`` is ``True`` exist.

The common interface (:class:`Observation`) is

- ``modality``: the name the pipeline maps to an observation encoder;
- ``values``: the observed values, missing entries stored as 0;
- ``noise_std``: ``σ_y``, a float or a tensor broadcastable to ``values``;
- ``time_index``: which step of the assimilation window is observed;
- ``mask``: bool, ``values.shape``, ``True`` = observed. NaN in the given
  ``values`` counts as missing;
- ``operator(state)``: ``(..., levels, *space) -> (..., *values.shape)``;
- ``noise_variance()``: ``σ_y²`` broadcast to ``values.shape``;
- ``to_grid()``: ``(values, mask)`` rasterised on the modality's own grid,
  ``(channels, *grid)`` each, the input of the modality's encoder;
- ``check_state(levels, spatial_shape)``: ``ValueError`` if the observation
  does not fit such a state;
- ``to(device, dtype)``: a converted copy.

The concrete types are :class:`Stations` (point profiles, bilinear
interpolation), :class:`Satellite` (weighted vertical sums over a coarse
footprint), :class:`Gridded` (coarsened, subsampled fields),
:class:`Background` (the full state, e.g. a forecast) and :class:`Profile`
(a column's values at any pressures, e.g. a surface report).
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .validation import as_grid_shape, as_int, check_truth, periodic_axes

__all__ = [
    "Observation",
    "Stations",
    "Satellite",
    "Gridded",
    "Background",
    "Profile",
    "Transformed",
    "check_observations",
    "gaussian_weighting_functions",
    "level_scale",
    "pressures_hpa",
    "add_noise",
    "station_periodic_axes",
]

#: Largest pressure read as hPa: values above it (surface pressure is about 1013 hPa) are in Pa.
MAX_PRESSURE_HPA = 1100.0


# --------------------------------------------------------------------------- helpers


def _as_float_tensor(x: Any, name: str) -> Tensor:
    """A new floating tensor from ``x`` (ints/bools become the default float dtype)."""
    try:
        t = torch.as_tensor(x)
    except Exception as e:  # pragma: no cover - torch's own message is informative
        raise ValueError(f"{name}: expected a tensor or array-like of numbers, got {x!r}") from e
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t.clone()


def pressures_hpa(source: Any, name: str = "model_pressures") -> list[float]:
    """Pressures in hPa, from a sequence or from a pipeline / model that records its levels.

    ``source`` is a sequence (list, array, tensor) of positive pressures, or an object with
    ``autoencoder.config.levels_hpa`` (a :class:`~slams_diffusers.SLAMSPipeline`) or
    ``config.levels_hpa`` (its autoencoder). Values all above :data:`MAX_PRESSURE_HPA` are read
    as Pa and divided by 100; a mix of both units is refused.

    Raises:
        ValueError: naming ``name``, when no levels are recorded, values are not positive and
            finite, or the units are mixed.
    """
    if hasattr(source, "autoencoder") or hasattr(source, "config"):
        owner = getattr(source, "autoencoder", None) or source
        config = getattr(owner, "config", None)
        recorded = None if config is None else getattr(config, "levels_hpa", None)
        if recorded is None:
            raise ValueError(
                f"{name}: {type(source).__name__} records no pressure levels (its autoencoder "
                "config has levels_hpa=None); pass the model's pressures in hPa instead"
            )
        source = recorded
    if isinstance(source, Tensor):
        source = source.detach().cpu().reshape(-1).tolist()
    elif hasattr(source, "tolist"):  # numpy (possibly read-only): no tensor view of it
        source = source.tolist()
    try:
        values = [float(v) for v in (source if isinstance(source, list | tuple) else [source])]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a sequence of pressures, got {source!r}") from e
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name}: expected positive, finite pressures, got {values}")
    above = [v > MAX_PRESSURE_HPA for v in values]
    if all(above):
        return [v / 100.0 for v in values]
    if any(above):
        raise ValueError(
            f"{name}: {values} mixes units: values above {MAX_PRESSURE_HPA:g} are read as Pa, the "
            "others as hPa; expected all in hPa (e.g. 850) or all in Pa (e.g. 85000)"
        )
    return values


def _block_mean(x: Tensor, r: int, spatial_dims: int) -> Tensor:
    """Mean over non-overlapping ``r`` (1-D) or ``r × r`` (2-D) blocks of the last axes.

    ``(..., *space) -> (..., *space // r)``; identical to ``avg_pool{1,2}d(x, r)``
    but for any number of leading dims. The spatial shape must be divisible by ``r``.
    """
    if r == 1:
        return x
    lead = x.shape[: x.ndim - spatial_dims]
    if spatial_dims == 1:
        (nx,) = x.shape[-1:]
        return x.reshape(*lead, nx // r, r).mean(dim=-1)
    ny, nx = x.shape[-2:]
    return x.reshape(*lead, ny // r, r, nx // r, r).mean(dim=(-1, -3))


def gaussian_weighting_functions(
    model_pressures: Sequence[float] | Tensor,
    peak_pressures: Sequence[float] | Tensor,
    width: float = 0.5,
) -> Tensor:
    r"""Satellite channel weighting functions, Gaussian in log-pressure.

    .. math:: W_{cl} \propto \exp\!\Big(-\tfrac12 \big(\tfrac{\ln p_l - \ln p_c}{w}\big)^2\Big),
              \qquad \textstyle\sum_l W_{cl} = 1,

    with ``p_l`` the model pressures, ``p_c`` the channel peak pressures and
    ``w = width`` in units of ``ln p`` (0.5 ≈ a factor 1.65 in pressure).

    Args:
        model_pressures: ``(levels,)`` pressures of the model levels in hPa or Pa, or a
            pipeline / autoencoder that records them (see :func:`pressures_hpa`).
        peak_pressures: ``(channels,)`` pressure of each channel's peak, in hPa or Pa.
        width: standard deviation in log-pressure, > 0.

    Returns:
        ``(channels, levels)`` weights, each row summing to 1: float64 if a pressure tensor
        is float64, else the default float dtype.
    """
    wide = any(
        isinstance(v, Tensor) and v.dtype == torch.float64
        for v in (model_pressures, peak_pressures)
    )
    dtype = torch.float64 if wide else torch.get_default_dtype()
    p = torch.tensor(pressures_hpa(model_pressures, "model_pressures"), dtype=torch.float64)
    pc = torch.tensor(pressures_hpa(peak_pressures, "peak_pressures"), dtype=torch.float64)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width: expected a positive number (log-pressure units), got {width}")
    d = (p.log()[None, :] - pc.log()[:, None]) / width
    w = torch.exp(-0.5 * d**2)
    return (w / w.sum(dim=-1, keepdim=True)).to(dtype)


# --------------------------------------------------------------------------- base


class Observation(abc.ABC):
    """Base class of all observation types (see the module docstring).

    Subclasses are dataclasses with at least the fields ``modality: str``,
    ``values: Tensor``, ``noise_std: float | Tensor``, ``time_index: int`` and
    ``mask: Tensor`` and call :meth:`_init_common` in their ``__post_init__``.
    They also expose ``grid_shape`` (the model's spatial shape) and
    ``num_levels`` (the model's number of levels) as fields or properties.
    """

    modality: str
    values: Tensor
    noise_std: float | Tensor
    time_index: int
    mask: Tensor

    #: Whether ``operator`` is linear (affine) in the state; :class:`Transformed` is not.
    linear = True

    # -- construction ----------------------------------------------------------------

    def _init_common(self, values_shape: tuple[int, ...] | None = None) -> None:
        """Validate and normalise ``values``, ``mask``, ``noise_std``, ``time_index``.

        Afterwards ``values`` is a new floating tensor with 0 where missing,
        ``mask = ~isnan(values) & mask`` (bool, ``values.shape``).
        """
        if not isinstance(self.modality, str) or not self.modality:
            raise ValueError(f"modality: expected a non-empty str, got {self.modality!r}")
        self.time_index = as_int(self.time_index, "time_index", minimum=0)

        values = torch.as_tensor(self.values)
        if not values.is_floating_point():
            values = values.to(torch.get_default_dtype())
        if values_shape is not None and tuple(values.shape) != tuple(values_shape):
            raise ValueError(
                f"values: expected shape {tuple(values_shape)}, got {tuple(values.shape)}"
            )
        if bool(torch.isinf(values).any()):
            raise ValueError("values: contains ±inf; use NaN (or mask) for missing values")
        observed = ~torch.isnan(values)
        if self.mask is not None:
            user_mask = torch.as_tensor(self.mask, device=values.device)
            try:
                user_mask = user_mask.to(torch.bool).broadcast_to(values.shape)
            except RuntimeError as e:
                raise ValueError(
                    f"mask: expected a bool tensor of shape {tuple(values.shape)} "
                    f"(the shape of values), got shape {tuple(user_mask.shape)}"
                ) from e
            observed = observed & user_mask
        self.mask = observed.clone()
        self.values = torch.where(observed, values, values.new_zeros(()))

        std = self.noise_std
        if isinstance(std, Tensor) or not isinstance(std, int | float):
            try:
                std_t = torch.as_tensor(std).to(device=values.device, dtype=values.dtype)
            except Exception as e:
                raise ValueError(f"noise_std: expected a float or tensor, got {std!r}") from e
            if not bool(torch.isfinite(std_t).all()) or bool((std_t < 0).any()):
                raise ValueError("noise_std: expected finite, non-negative values")
            try:
                fits = torch.broadcast_shapes(std_t.shape, values.shape) == values.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"noise_std: expected a float or a tensor broadcastable to values "
                    f"{tuple(values.shape)}, got shape {tuple(std_t.shape)}"
                )
            self.noise_std = std_t.clone()
        else:
            std_f = float(std)
            if not math.isfinite(std_f) or std_f < 0:
                raise ValueError(f"noise_std: expected a finite, non-negative number, got {std}")
            self.noise_std = std_f

    # -- interface -------------------------------------------------------------------

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions of the observed state: 1 ``(x,)`` or 2 ``(y, x)``."""
        return len(self.grid_shape)  # type: ignore[attr-defined]

    @property
    def num_observed(self) -> int:
        """Number of values that exist (``mask.sum()``)."""
        return int(self.mask.sum())

    def noise_variance(self) -> Tensor:
        """``σ_y²`` broadcast to ``values.shape`` (a new tensor)."""
        std = torch.as_tensor(self.noise_std, dtype=self.values.dtype, device=self.values.device)
        return torch.zeros_like(self.values) + std**2

    def replace_values(self, values: Tensor) -> Observation:
        """A copy with other ``values`` (same shape) and the same mask, operator and time."""
        return dataclasses.replace(self, values=values, mask=self.mask)

    @abc.abstractmethod
    def operator(self, state: Tensor) -> Tensor:
        """``A(x)``: ``(..., levels, *space) -> (..., *values.shape)``, differentiable."""

    @abc.abstractmethod
    def to_grid(self) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` rasterised on the modality grid, ``(channels, *grid)`` each.

        Missing cells hold value 0 and mask 0; the mask is float (values' dtype).
        """

    @abc.abstractmethod
    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if this observation cannot observe such a state."""

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Observation:
        """A copy with floating tensors moved/cast; bool and integer tensors are only moved."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
        changes = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                if v.is_floating_point():
                    changes[f.name] = v.to(device=device, dtype=dtype)
                else:
                    changes[f.name] = v.to(device=device)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    # -- shared checks ---------------------------------------------------------------

    def _check_state_tensor(self, state: Tensor) -> None:
        expected = (self.num_levels, *self.grid_shape)  # type: ignore[attr-defined]
        if state.ndim < len(expected) or tuple(state.shape[-len(expected) :]) != expected:
            raise ValueError(
                f"state: expected shape (..., levels, *space) ending in {expected}, "
                f"got {tuple(state.shape)}"
            )

    def _check_spatial_shape(self, spatial_shape: tuple[int, ...]) -> None:
        spatial_shape = tuple(int(n) for n in spatial_shape)
        grid = tuple(self.grid_shape)  # type: ignore[attr-defined]
        if spatial_shape != grid:
            raise ValueError(
                f"spatial_shape: {type(self).__name__} observation ({self.modality!r}) is defined "
                f"on a grid of shape {grid}, got a state with spatial shape {spatial_shape}"
            )

    def _check_num_levels(self, levels: int, what: str) -> None:
        if int(levels) != self.num_levels:  # type: ignore[attr-defined]
            raise ValueError(
                f"levels: {type(self).__name__} observation ({self.modality!r}) expects a state "
                f"with {self.num_levels} levels ({what}), got {levels}"  # type: ignore[attr-defined]
            )

    def __repr__(self) -> str:
        std = self.noise_std
        std_s = f"{std:g}" if isinstance(std, float) else f"tensor{tuple(std.shape)}"
        return (
            f"{type(self).__name__}(modality={self.modality!r}, values={tuple(self.values.shape)}, "
            f"observed={self.num_observed}/{self.values.numel()}, noise_std={std_s}, "
            f"time_index={self.time_index}, grid_shape={tuple(self.grid_shape)})"  # type: ignore[attr-defined]
        )


def check_observations(
    observations: Any,
    *,
    steps: int | None = None,
    levels: int | None = None,
    space: tuple[int, ...] | None = None,
) -> list[Observation]:
    """The ``observations`` argument as a list (an :class:`Observation` alone is one item), checked
    entry by entry: ``ValueError`` naming ``observations[i]`` for one that is not an Observation,
    cannot observe a state of ``levels`` and ``space`` (:meth:`Observation.check_state`; with
    both given), observes a step outside the window of ``steps`` (``time_index``; with ``steps``)
    or has a negative ``noise_std``. The pipeline and the baselines check their inputs with it."""
    if isinstance(observations, Observation):
        observations = [observations]
    try:
        observations = list(observations)
    except TypeError as error:
        raise ValueError(
            "observations: expected an Observation or a sequence of them, got "
            f"{type(observations).__name__}"
        ) from error
    for index, observation in enumerate(observations):
        if not isinstance(observation, Observation):
            raise ValueError(
                f"observations[{index}]: expected an Observation, got {type(observation).__name__}"
            )
        if levels is not None and space is not None:
            try:
                observation.check_state(levels, space)
            except ValueError as error:
                raise ValueError(
                    f"observations[{index}] ({observation.modality!r}): does not fit the state "
                    f"(levels={levels}, space={space}): {error}"
                ) from error
        if steps is not None and not 0 <= observation.time_index < steps:
            raise ValueError(
                f"observations[{index}]: time_index {observation.time_index} out of range for a "
                f"window of T={steps} steps (expected 0 <= time_index < {steps})"
            )
        if (torch.as_tensor(observation.noise_std) < 0).any():
            raise ValueError(f"observations[{index}]: noise_std must be >= 0")
    return observations


def level_scale(observation: Observation, level_std: Tensor) -> Tensor:
    """``|A(s) − A(0)|`` per value (``values.shape``), with ``s`` the field of per-level
    climatological std ``level_std`` ``(levels,)``: how many units of ``y`` one normalised unit of
    the state is (linear operators), the std of ``A(x)`` for a climatology whose anomalies are
    fully correlated within the operator's footprint (an upper bound otherwise). Floored at
    ``1e-12``. It gives γ the same meaning in every unit (docs/method.md §Likelihood covariance) and
    scales the climatology check (docs/method.md §Quality control)."""
    field = level_std.reshape(-1, *([1] * observation.spatial_dims))
    field = torch.broadcast_to(field, (observation.num_levels, *observation.grid_shape))
    zero = observation.operator(torch.zeros_like(field))
    return (observation.operator(field) - zero).abs().clamp_min(1e-12)


def add_noise(
    values: Tensor, noise_std: float | Tensor, generator: torch.Generator | None
) -> Tensor:
    """``values + σ_y ε``, ``ε ~ N(0, I)`` drawn with ``generator`` on ``values``' device."""
    eps = torch.randn(values.shape, generator=generator, dtype=values.dtype, device=values.device)
    std = torch.as_tensor(noise_std, dtype=values.dtype, device=values.device)
    return values + std * eps


def station_periodic_axes(periodic: Any, spatial_dims: int) -> tuple[bool, ...]:
    """``periodic`` as :class:`Stations` reads it: the package's one meaning,
    :func:`~slams_diffusers.validation.periodic_axes` (axis names or one bool per axis), with the
    old form still accepted: a bool here keeps its historical meaning, ``True`` wrapping the x
    axis (longitude) only. On a 2-D grid, where that differs from the package's ``True`` (every
    axis), it warns (``FutureWarning``) and asks for the axes by name: ``"x"`` or ``"xy"``."""
    if isinstance(periodic, bool):
        if periodic and spatial_dims > 1:
            warnings.warn(
                "periodic=True for stations wraps the x axis only (its historical meaning), "
                "while True wraps every axis elsewhere in the package; pass periodic='x' "
                "(longitude only) or periodic='xy' (doubly periodic) instead",
                FutureWarning,
                stacklevel=3,
            )
        periodic = "x" if periodic else "none"
    return periodic_axes(periodic, spatial_dims)


# --------------------------------------------------------------------------- stations


@dataclass(eq=False, repr=False)
class Stations(Observation):
    r"""Point profiles (radiosondes, surface stations) at fractional grid positions.

    Station ``s`` observes level ``levels[j]`` of the state at ``positions[s]``
    by (bi)linear interpolation:

    .. math:: y_{sj} = \sum_{\text{corners } c} w_c(p_s)\, x_{\text{levels}[j],\, c},

    with the usual (bi)linear weights. ``positions`` are fractional indices into
    the grid, ``(y, x)`` in 2-D or ``(x,)`` in 1-D, so ``(2.0, 3.5)`` lies
    between cells ``[2, 3]`` and ``[2, 4]``. Without periodicity positions must
    lie in ``[0, n - 1]`` on every axis; on a periodic axis in ``[0, n)``, the
    last interval wrapping to cell 0.

    Args:
        values: ``(n_stations, n_obs_levels)``; NaN = missing.
        positions: ``(n_stations, spatial_dims)`` fractional grid indices.
        levels: ``n_obs_levels`` indices into the model levels.
        num_levels: number of model levels.
        grid_shape: model spatial shape ``(x,)`` or ``(y, x)``.
        noise_std: ``σ_y``, float or broadcastable to ``values``.
        periodic: the axes that wrap, as :func:`station_periodic_axes` reads them: axis names
            (``"x"``, ``"xy"``) or one bool per spatial axis, e.g. ``(True, True)`` for a doubly
            periodic domain; stored as one bool per axis. The old form, a bool, still means the
            x axis (longitude) only, and ``True`` on a 2-D grid warns (``FutureWarning``).
        modality, time_index, mask: see :class:`Observation`.

    Use :meth:`from_pressures` to give the levels as pressures.
    """

    values: Tensor
    positions: Tensor
    levels: Sequence[int]
    num_levels: int
    grid_shape: tuple[int, ...]
    noise_std: float | Tensor
    periodic: bool | str | Sequence[bool] = False
    modality: str = "stations"
    time_index: int = 0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.grid_shape = as_grid_shape(self.grid_shape, column=True)
        self.num_levels = as_int(self.num_levels, "num_levels", minimum=1)
        sd = len(self.grid_shape)

        try:
            levels = tuple(as_int(i, "levels") for i in self.levels)
        except TypeError as e:
            raise ValueError(
                f"levels: expected a sequence of level indices, got {self.levels!r}"
            ) from e
        if len(levels) == 0:
            raise ValueError("levels: expected at least one level index, got none")
        bad = [i for i in levels if not 0 <= i < self.num_levels]
        if bad:
            raise ValueError(
                f"levels: indices {bad} out of range for a model with num_levels="
                f"{self.num_levels} (expected 0 <= index < {self.num_levels})"
            )
        self.levels = levels

        pos = _as_float_tensor(self.positions, "positions")
        if pos.ndim != 2 or pos.shape[1] != sd:
            raise ValueError(
                f"positions: expected shape (n_stations, {sd}) (fractional grid indices "
                f"{'(y, x)' if sd == 2 else '(x,)'}), got {tuple(pos.shape)}"
            )
        self.positions = pos
        self.periodic = station_periodic_axes(self.periodic, sd)  # one bool per axis
        self._check_positions(self.grid_shape, "positions")

        values = torch.as_tensor(self.values)
        if values.ndim != 2 or values.shape != (pos.shape[0], len(levels)):
            raise ValueError(
                f"values: expected shape (n_stations, n_obs_levels) = "
                f"({pos.shape[0]}, {len(levels)}), got {tuple(values.shape)}"
            )
        self._init_common()

    @classmethod
    def from_pressures(
        cls,
        values: Tensor,
        positions: Tensor,
        pressures: Sequence[float],
        model_pressures: Sequence[float],
        grid_shape: tuple[int, ...],
        noise_std: float | Tensor,
        periodic: bool | str | Sequence[bool] = False,
        modality: str = "stations",
        time_index: int = 0,
        mask: Tensor | None = None,
    ) -> Stations:
        """Stations whose levels are given as pressures, each one a model level.

        ``pressures`` ``(n_obs_levels,)`` are matched to ``model_pressures``
        ``(num_levels,)`` (relative tolerance 1e-6); ``num_levels = len(model_pressures)``.
        Both may be in hPa or Pa (see :func:`pressures_hpa`); ``model_pressures`` may be the
        pipeline itself (``model_pressures=pipe``: the levels its autoencoder records).
        """
        mp = pressures_hpa(model_pressures, "model_pressures")
        idx = []
        for p in pressures_hpa(pressures, "pressures"):
            hits = [i for i, q in enumerate(mp) if math.isclose(p, q, rel_tol=1e-6)]
            if not hits:
                raise ValueError(
                    f"pressures: {p:g} hPa is not a model level; expected one of "
                    f"model_pressures {mp} hPa"
                )
            idx.append(hits[0])
        return cls(
            values=values,
            positions=positions,
            levels=idx,
            num_levels=len(mp),
            grid_shape=grid_shape,
            noise_std=noise_std,
            periodic=periodic,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )

    @classmethod
    def simulate(
        cls,
        truth: Tensor,
        positions: Tensor,
        levels: Sequence[int],
        noise_std: float | Tensor,
        *,
        periodic: bool | str | Sequence[bool] = False,
        modality: str = "stations",
        time_index: int = 0,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Stations:
        """``y = A(truth) + σ_y ε``, ``ε ~ N(0, I)`` drawn with ``generator``.

        ``truth`` is one state ``(levels, *space)``.
        """
        pos = torch.as_tensor(positions)
        sd = pos.shape[-1] if pos.ndim == 2 else None
        truth = check_truth(truth, sd)
        proto = cls(
            values=torch.zeros(pos.shape[0], len(levels), dtype=truth.dtype, device=truth.device),
            positions=positions,
            levels=levels,
            num_levels=truth.shape[0],
            grid_shape=tuple(truth.shape[1:]),
            noise_std=noise_std,
            periodic=periodic,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )
        values = add_noise(proto.operator(truth), proto.noise_std, generator)
        return dataclasses.replace(proto, values=values)

    # -- geometry ------------------------------------------------------------------

    def _check_positions(self, grid_shape: tuple[int, ...], name: str) -> None:
        pos = self.positions
        if not bool(torch.isfinite(pos).all()):
            raise ValueError("positions: contains NaN or inf")
        names = ("y", "x") if len(grid_shape) == 2 else ("x",)
        for a, (n, per) in enumerate(zip(grid_shape, self.periodic, strict=True)):
            p = pos[:, a]
            if per:
                ok = (p >= 0) & (p < n)
                rng = f"[0, {n})"
            else:
                ok = (p >= 0) & (p <= n - 1)
                rng = f"[0, {n - 1}]"
            if not bool(ok.all()):
                s = int(torch.nonzero(~ok)[0, 0])
                raise ValueError(
                    f"{name}: station {s} at {pos[s].tolist()} lies outside the grid of shape "
                    f"{tuple(grid_shape)}: expected {names[a]} in {rng} "
                    f"({'periodic' if per else 'non-periodic'} axis)"
                )

    def _interp_weights(self, device, dtype) -> tuple[Tensor, Tensor]:
        """Flat cell indices ``(2**sd, n)`` and weights ``(2**sd, n)`` of the corners."""
        pos = self.positions.to(device=device, dtype=torch.float64)
        per_axis = []
        for a, (n, per) in enumerate(zip(self.grid_shape, self.periodic, strict=True)):
            p = pos[:, a]
            if per:
                f = torch.floor(p)
                w = p - f
                i0 = f.long() % n
                i1 = (i0 + 1) % n
            else:
                i0 = torch.floor(p).long().clamp(0, max(n - 2, 0))
                w = p - i0
                i1 = (i0 + 1).clamp(max=n - 1)
            per_axis.append(((i0, 1 - w), (i1, w)))
        strides = [math.prod(self.grid_shape[a + 1 :]) for a in range(len(self.grid_shape))]
        idx, wts = [], []
        for corner in itertools.product(*per_axis):
            idx.append(sum(i * s for (i, _), s in zip(corner, strides, strict=True)))
            wts.append(math.prod(w for _, w in corner))
        return torch.stack(idx), torch.stack(wts).to(dtype)

    # -- interface -------------------------------------------------------------------

    def operator(self, state: Tensor) -> Tensor:
        """(Bi)linear interpolation.

        ``(..., num_levels, *grid) -> (..., n_stations, n_obs_levels)``.
        """
        self._check_state_tensor(state)
        sd = self.spatial_dims
        lev = torch.tensor(self.levels, dtype=torch.long, device=state.device)
        sel = state.index_select(state.ndim - 1 - sd, lev)  # (..., m, *grid)
        if sd == 0:  # a column: every station reads its levels
            n = self.positions.shape[0]
            return sel.unsqueeze(-2).expand(*sel.shape[:-1], n, sel.shape[-1])
        flat = sel.flatten(start_dim=sel.ndim - sd)  # (..., m, cells)
        idx, wts = self._interp_weights(state.device, state.dtype)  # (k, n)
        k, n = idx.shape
        corners = flat.index_select(-1, idx.reshape(-1))  # (..., m, k * n)
        corners = corners.unflatten(-1, (k, n))  # (..., m, k, n)
        out = (corners * wts).sum(dim=-2)  # (..., m, n)
        return out.transpose(-1, -2)

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """Each station's value in its nearest cell on its levels (mean if shared).

        Returns ``(values, mask)``, each ``(num_levels, *grid_shape)``.
        """
        dev, dt = self.values.device, self.values.dtype
        cell = torch.zeros(self.positions.shape[0], dtype=torch.long, device=dev)
        for a, (n, per) in enumerate(zip(self.grid_shape, self.periodic, strict=True)):
            c = torch.round(self.positions[:, a].to(dev)).long()
            c = c % n if per else c.clamp(0, n - 1)
            cell = cell * n + c
        ncell = math.prod(self.grid_shape)
        lev = torch.tensor(self.levels, dtype=torch.long, device=dev)
        flat_idx = (lev[None, :] * ncell + cell[:, None]).reshape(-1)
        m = self.mask.to(dt).reshape(-1)
        total = torch.zeros(self.num_levels * ncell, dtype=dt, device=dev)
        count = torch.zeros_like(total)
        total = total.index_add(0, flat_idx, self.values.reshape(-1) * m)
        count = count.index_add(0, flat_idx, m)
        shape = (self.num_levels, *self.grid_shape)
        values = (total / count.clamp(min=1)).reshape(shape)
        return values, (count > 0).to(dt).reshape(shape)

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        bad = [i for i in self.levels if not 0 <= i < int(levels)]
        if bad:
            raise ValueError(
                f"levels: level indices {bad} of {type(self).__name__} observation "
                f"({self.modality!r}) out of range for a state with {levels} levels"
            )
        self._check_num_levels(levels, f"num_levels={self.num_levels}")
        self._check_spatial_shape(spatial_shape)


# --------------------------------------------------------------------------- satellite


@dataclass(eq=False, repr=False)
class Satellite(Observation):
    r"""Satellite radiances/brightness temperatures: weighted column sums over a footprint.

    .. math:: y_{c} = \operatorname{BlockMean}_r\Big(\sum_l W_{cl}\, x_l\Big),

    ``W`` the channel weighting functions (rows normalised to sum 1, so
    ``y`` is a temperature in K) and the block mean over non-overlapping
    ``r × r`` footprints (``avg_pool`` with kernel = stride = ``r``).

    Args:
        values: ``(channels, *coarse_grid)`` with ``coarse_grid = grid_shape // footprint``.
        weights: ``(channels, num_levels)`` weighting functions, non-negative;
            normalised to row sum 1 (in a new tensor). See
            :func:`gaussian_weighting_functions`.
        footprint: coarsening factor ``r >= 1``; ``grid_shape`` must be divisible by it.
        grid_shape: model spatial shape ``(x,)`` or ``(y, x)``.
        noise_std: ``σ_y``, float or broadcastable to ``values`` (e.g. ``(channels, 1, 1)``).
        cloud_mask: bool ``(*coarse_grid)`` (or ``values.shape``), ``True`` = cloudy
            (not observed), or ``None``.
        modality, time_index, mask: see :class:`Observation`.
    """

    values: Tensor
    weights: Tensor
    footprint: int
    grid_shape: tuple[int, ...]
    noise_std: float | Tensor
    cloud_mask: Tensor | None = None
    modality: str = "satellite"
    time_index: int = 0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.grid_shape = as_grid_shape(self.grid_shape, column=True)
        self.footprint = as_int(self.footprint, "footprint", minimum=1)
        r = self.footprint
        if any(n % r for n in self.grid_shape):
            raise ValueError(
                f"footprint: grid_shape {self.grid_shape} is not divisible by footprint {r}"
            )
        w = _as_float_tensor(self.weights, "weights")
        if w.ndim != 2:
            raise ValueError(
                f"weights: expected shape (channels, num_levels), got {tuple(w.shape)}"
            )
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights: expected finite, non-negative weighting functions")
        rows = w.sum(dim=-1, keepdim=True)
        if bool((rows <= 0).any()):
            raise ValueError("weights: every channel's weighting function must have a positive sum")
        self.weights = w / rows

        channels = w.shape[0]
        expected = (channels, *self.coarse_shape)
        values = torch.as_tensor(self.values)
        if tuple(values.shape) != expected:
            raise ValueError(
                f"values: expected shape (channels, *coarse_grid) = {expected} "
                f"(channels from weights, coarse_grid = grid_shape // footprint), "
                f"got {tuple(values.shape)}"
            )
        if self.cloud_mask is not None:
            cm = torch.as_tensor(self.cloud_mask).to(torch.bool).clone()
            if tuple(cm.shape) not in (tuple(self.coarse_shape), expected):
                raise ValueError(
                    f"cloud_mask: expected a bool tensor of shape {tuple(self.coarse_shape)} "
                    f"(the coarse grid) or {expected}, got {tuple(cm.shape)}"
                )
            self.cloud_mask = cm
        self._init_common()
        if self.cloud_mask is not None:
            clear = ~self.cloud_mask.to(self.values.device).broadcast_to(self.values.shape)
            self.mask = self.mask & clear
            self.values = torch.where(self.mask, self.values, torch.zeros_like(self.values))

    @property
    def num_levels(self) -> int:
        """Number of model levels (``weights.shape[1]``)."""
        return self.weights.shape[1]

    @property
    def num_channels(self) -> int:
        return self.weights.shape[0]

    @property
    def coarse_shape(self) -> tuple[int, ...]:
        """``grid_shape // footprint``."""
        return tuple(n // self.footprint for n in self.grid_shape)

    @classmethod
    def simulate(
        cls,
        truth: Tensor,
        weights: Tensor,
        footprint: int,
        noise_std: float | Tensor,
        *,
        cloud_mask: Tensor | None = None,
        modality: str = "satellite",
        time_index: int = 0,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Satellite:
        """``y = A(truth) + σ_y ε``; ``truth`` is one state ``(levels, *space)``."""
        truth = check_truth(truth)
        grid = tuple(truth.shape[1:])
        w = torch.as_tensor(weights)
        channels = w.shape[0] if w.ndim >= 1 else 0
        r = as_int(footprint, "footprint", minimum=1)
        proto = cls(
            values=torch.zeros(
                channels, *(n // r for n in grid), dtype=truth.dtype, device=truth.device
            ),
            weights=weights,
            footprint=footprint,
            grid_shape=grid,
            noise_std=noise_std,
            cloud_mask=cloud_mask,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )
        proto.check_state(truth.shape[0], grid)
        values = add_noise(proto.operator(truth), proto.noise_std, generator)
        return dataclasses.replace(proto, values=values)

    def operator(self, state: Tensor) -> Tensor:
        """``(..., num_levels, *grid) -> (..., channels, *coarse_grid)``."""
        self._check_state_tensor(state)
        w = self.weights.to(device=state.device, dtype=state.dtype)
        space = "yx"[2 - self.spatial_dims :]
        column = torch.einsum(f"cl,...l{space}->...c{space}", w, state)
        return _block_mean(column, self.footprint, self.spatial_dims)

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` on the coarse grid, ``(channels, *coarse_grid)`` each."""
        return self.values.clone(), self.mask.to(self.values.dtype)

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        if int(levels) != self.num_levels:
            raise ValueError(
                f"weights: Satellite observation ({self.modality!r}) has weighting functions "
                f"over {self.num_levels} levels (weights {tuple(self.weights.shape)}), but the "
                f"state has levels={levels}; expected weights of shape "
                f"({self.num_channels}, {levels})"
            )
        self._check_spatial_shape(spatial_shape)


# --------------------------------------------------------------------------- gridded


@dataclass(eq=False, repr=False)
class Gridded(Observation):
    r"""A coarsened, subsampled gridded product (e.g. a low-resolution analysis).

    .. math:: y = \operatorname{BlockMean}_r(x)[\ldots, ::g, ::g],

    block mean over ``r × r`` cells, then every ``g``-th coarse cell on each axis.

    Args:
        values: ``(num_levels, *subsampled_grid)`` with
            ``subsampled_grid = ceil(grid_shape // coarsen / subsample)``.
        coarsen: block size ``r >= 1``; ``grid_shape`` must be divisible by it.
        subsample: stride ``g >= 1`` on the coarse grid.
        grid_shape: model spatial shape ``(x,)`` or ``(y, x)``.
        noise_std: ``σ_y``, float or broadcastable to ``values``.
        modality, time_index, mask: see :class:`Observation`.
    """

    values: Tensor
    coarsen: int
    subsample: int
    grid_shape: tuple[int, ...]
    noise_std: float | Tensor
    modality: str = "gridded"
    time_index: int = 0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.grid_shape = as_grid_shape(self.grid_shape)
        self.coarsen = as_int(self.coarsen, "coarsen", minimum=1)
        self.subsample = as_int(self.subsample, "subsample", minimum=1)
        if any(n % self.coarsen for n in self.grid_shape):
            raise ValueError(
                f"coarsen: grid_shape {self.grid_shape} is not divisible by coarsen {self.coarsen}"
            )
        values = torch.as_tensor(self.values)
        sub = self.subsampled_shape
        if values.ndim != 1 + len(sub) or tuple(values.shape[1:]) != sub:
            raise ValueError(
                f"values: expected shape (num_levels, *subsampled_grid) = (num_levels, "
                f"{', '.join(map(str, sub))}) for grid_shape {self.grid_shape}, coarsen "
                f"{self.coarsen}, subsample {self.subsample}; got {tuple(values.shape)}"
            )
        self._init_common()

    @property
    def num_levels(self) -> int:
        return self.values.shape[0]

    @property
    def coarse_shape(self) -> tuple[int, ...]:
        """``grid_shape // coarsen``: the grid of :meth:`to_grid`."""
        return tuple(n // self.coarsen for n in self.grid_shape)

    @property
    def subsampled_shape(self) -> tuple[int, ...]:
        """``ceil(coarse_shape / subsample)``: the spatial shape of ``values``."""
        return tuple(-(-n // self.subsample) for n in self.coarse_shape)

    @classmethod
    def simulate(
        cls,
        truth: Tensor,
        coarsen: int,
        subsample: int,
        noise_std: float | Tensor,
        *,
        modality: str = "gridded",
        time_index: int = 0,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Gridded:
        """``y = A(truth) + σ_y ε``; ``truth`` is one state ``(levels, *space)``."""
        truth = check_truth(truth)
        grid = tuple(truth.shape[1:])
        r = as_int(coarsen, "coarsen", minimum=1)
        g = as_int(subsample, "subsample", minimum=1)
        sub = tuple(-(-(n // r) // g) for n in grid)
        proto = cls(
            values=torch.zeros(truth.shape[0], *sub, dtype=truth.dtype, device=truth.device),
            coarsen=r,
            subsample=g,
            grid_shape=grid,
            noise_std=noise_std,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )
        values = add_noise(proto.operator(truth), proto.noise_std, generator)
        return dataclasses.replace(proto, values=values)

    def operator(self, state: Tensor) -> Tensor:
        """``(..., num_levels, *grid) -> (..., num_levels, *subsampled_grid)``."""
        self._check_state_tensor(state)
        coarse = _block_mean(state, self.coarsen, self.spatial_dims)
        g = self.subsample
        return coarse[..., ::g] if self.spatial_dims == 1 else coarse[..., ::g, ::g]

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` on the coarse grid, ``(num_levels, *coarse_grid)`` each."""
        shape = (self.num_levels, *self.coarse_shape)
        values = self.values.new_zeros(shape)
        mask = self.values.new_zeros(shape)
        g = self.subsample
        sl = (slice(None),) + (slice(None, None, g),) * self.spatial_dims
        values[sl] = self.values
        mask[sl] = self.mask.to(self.values.dtype)
        return values, mask

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        self._check_num_levels(levels, f"values {tuple(self.values.shape)}")
        self._check_spatial_shape(spatial_shape)


# --------------------------------------------------------------------------- background


@dataclass(eq=False, repr=False)
class Background(Observation):
    r"""The background state ``x_b`` (a forecast) seen as a direct observation.

    .. math:: x_b = x + e_b, \qquad A = \mathrm{id}.

    Args:
        values: ``(num_levels, *grid_shape)`` with grid ``()`` (a column), ``(x,)`` or ``(y, x)``.
        noise_std: background error std, float or broadcastable to ``values``
            (e.g. per level ``(num_levels, 1, 1)``).
        modality, time_index, mask: see :class:`Observation`.
        covariance: the full error covariance ``B`` (an object with ``apply``, ``solve``,
            ``sample`` and ``variance``, e.g. a
            :class:`~slams_diffusers.covariance.SpectralCovariance`) when errors are correlated;
            then ``noise_std`` is its marginal std.
    """

    values: Tensor
    noise_std: float | Tensor
    modality: str = "background"
    time_index: int = 0
    mask: Tensor | None = None
    covariance: Any = None

    def __post_init__(self) -> None:
        values = torch.as_tensor(self.values)
        if values.ndim not in (1, 2, 3):
            raise ValueError(
                f"values: expected shape (num_levels,), (num_levels, x) or (num_levels, y, x), "
                f"got {tuple(values.shape)}"
            )
        self._init_common()

    @property
    def num_levels(self) -> int:
        return self.values.shape[0]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    @classmethod
    def simulate(
        cls,
        truth: Tensor,
        noise_std: float | Tensor,
        *,
        modality: str = "background",
        time_index: int = 0,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Background:
        """``x_b = truth + σ_b ε`` (white noise; real backgrounds are forecasts)."""
        truth = check_truth(truth)
        proto = cls(
            values=torch.zeros_like(truth),
            noise_std=noise_std,
            modality=modality,
            time_index=time_index,
            mask=mask,
        )
        values = add_noise(truth, proto.noise_std, generator)
        return dataclasses.replace(proto, values=values)

    def operator(self, state: Tensor) -> Tensor:
        """Identity: ``(..., num_levels, *grid) -> (..., num_levels, *grid)``."""
        self._check_state_tensor(state)
        return state

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` on the full grid, ``(num_levels, *grid_shape)`` each."""
        return self.values.clone(), self.mask.to(self.values.dtype)

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        self._check_num_levels(levels, f"values {tuple(self.values.shape)}")
        self._check_spatial_shape(spatial_shape)


@dataclass(eq=False, repr=False)
class Profile(Observation):
    r"""Values of a column at any pressures: a surface report, or a radiosonde's own levels.

    .. math:: y_k = x_{l} + (x_{l+1} - x_l)\,\frac{\ln p_k - \ln p_l}{\ln p_{l+1} - \ln p_l},

    linear in ``ln p`` between the two model levels ``p_l, p_{l+1}`` that bracket ``p_k``, or
    the two nearest levels continued linearly (extrapolation) for a point at most
    ``max_extrapolation`` (in ``ln p``) below the lowest or above the highest model level. The
    state is a column ``(..., levels)`` (``grid_shape = ()``).

    Args:
        values: ``(n_points,)``; NaN = missing.
        pressures: ``(n_points,)`` pressures of the points [hPa or Pa].
        model_pressures: the model levels [hPa or Pa], or the pipeline (see
            :func:`pressures_hpa`).
        noise_std: ``σ_y``, float or broadcastable to ``values`` (instrument and
            representativeness errors: a surface report differs from a smooth profile).
        max_extrapolation: the farthest a point may lie outside the model levels, in ``ln p``
            (0.25: from 850 down to 1091 hPa).
        modality, time_index, mask: see :class:`Observation`.
    """

    values: Tensor
    pressures: Sequence[float] | Tensor
    model_pressures: Any
    noise_std: float | Tensor
    max_extrapolation: float = 0.25
    modality: str = "profile"
    time_index: int = 0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        levels = torch.tensor(pressures_hpa(self.model_pressures, "model_pressures"))
        points = torch.tensor(pressures_hpa(self.pressures, "pressures"), dtype=torch.float64)
        if len(levels) < 2:
            raise ValueError(
                f"model_pressures: expected at least 2 levels to interpolate between, got "
                f"{levels.tolist()}"
            )
        log_levels, log_points = levels.double().log(), points.log()
        if not bool((log_levels.diff() < 0).all() or (log_levels.diff() > 0).all()):
            raise ValueError(
                f"model_pressures: expected strictly monotonic levels, got {levels.tolist()}"
            )
        low, high = log_levels.min(), log_levels.max()
        far = (log_points < low - self.max_extrapolation) | (
            log_points > high + self.max_extrapolation
        )
        if bool(far.any()):
            raise ValueError(
                f"pressures: {points[far].tolist()} hPa lie more than max_extrapolation="
                f"{self.max_extrapolation:g} (in ln p) outside the model levels "
                f"{levels.min().item():g}-{levels.max().item():g} hPa"
            )
        order = log_levels.argsort()
        sorted_levels = log_levels[order]
        upper = torch.searchsorted(sorted_levels, log_points).clamp(1, len(levels) - 1)
        lower = upper - 1
        frac = (log_points - sorted_levels[lower]) / (sorted_levels[upper] - sorted_levels[lower])
        weights = torch.zeros(len(points), len(levels), dtype=torch.float64)
        rows = torch.arange(len(points))
        weights[rows, order[lower]] = 1 - frac
        weights[rows, order[upper]] += frac
        self.pressures = points
        self.model_pressures = levels.tolist()
        self.weights = weights  # float64; cast to the state's dtype where applied
        self._init_common((len(points),))

    @property
    def num_levels(self) -> int:
        return len(self.model_pressures)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return ()

    def operator(self, state: Tensor) -> Tensor:
        """``(..., num_levels) -> (..., n_points)``: ``W x`` with the interpolation weights."""
        self._check_state_tensor(state)
        return state @ self.weights.to(device=state.device, dtype=state.dtype).T

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` ``(n_points,)`` each: one channel per point, no grid."""
        return self.values.clone(), self.mask.to(self.values.dtype)

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        self._check_num_levels(levels, f"model_pressures {self.model_pressures}")
        self._check_spatial_shape(spatial_shape)


@dataclass(eq=False, repr=False)
class Transformed(Observation):
    r"""An observation of a function of the state: ``y = A(φ(x)) + e``.

    ``observation`` is the observation of ``φ(x)`` (its values, noise, mask, modality and step;
    e.g. :class:`Stations` of ``|x|``, the nonlinear Lorenz-96 twin) and ``function`` the
    differentiable ``φ``: ``(..., levels, *space) -> (..., levels, *space)``. The pipelines take
    it on the decoded route, ``A(φ(D(ẑ)))``, which moment matching linearises at the denoised
    state like any operator (docs/method.md §Likelihood covariance); no encoder is learned for
    ``φ``, and the linear updates (OI, the filtered analysis) refuse it.

    Args:
        observation: the observation of ``φ(x)``; not a :class:`Background`.
        function: ``φ``.
        time_index: the step; ``None`` = the observation's.
    """

    observation: Observation
    function: Any
    time_index: int | None = None

    #: ``A ∘ φ`` is not linear in the state.
    linear = False

    def __post_init__(self) -> None:
        inner = self.observation
        if not isinstance(inner, Observation) or isinstance(inner, Background | Transformed):
            raise ValueError(
                "observation: expected the Stations, Satellite or Gridded observation of φ(x), "
                f"got {type(inner).__name__}"
            )
        if not callable(self.function):
            raise ValueError(
                "function: expected a callable φ(state) -> state, got "
                f"{type(self.function).__name__}"
            )
        if self.time_index is None:
            self.time_index = inner.time_index
        self.time_index = as_int(self.time_index, "time_index", minimum=0)
        if self.time_index != inner.time_index:
            self.observation = inner = dataclasses.replace(inner, time_index=self.time_index)
        self.modality, self.values = inner.modality, inner.values
        self.noise_std, self.mask = inner.noise_std, inner.mask

    @property
    def num_levels(self) -> int:
        return self.observation.num_levels  # type: ignore[attr-defined]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.observation.grid_shape)  # type: ignore[attr-defined]

    def replace_values(self, values: Tensor) -> Transformed:
        return Transformed(self.observation.replace_values(values), self.function)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Transformed:
        return Transformed(self.observation.to(device, dtype), self.function)

    def operator(self, state: Tensor) -> Tensor:
        """``A(φ(x))``."""
        return self.observation.operator(self.function(state))

    def to_grid(self) -> tuple[Tensor, Tensor]:
        """The observation of ``φ(x)``'s ``(values, mask)``."""
        return self.observation.to_grid()

    def check_state(self, levels: int, spatial_shape: tuple[int, ...]) -> None:
        self.observation.check_state(levels, spatial_shape)
