r"""Observation simulators: seeded, realistic observations of a true state.

Every simulator takes one true state ``truth`` of shape ``(levels, *space)`` in K,
``space = (x,)`` or ``(y, x)``, and returns an observation type of
:mod:`slams_diffusers.observations` built with that type's own ``simulate``, so

.. math:: y = A(x) + \sigma_y \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I),

holds with ``A = observation.operator`` on every entry where ``observation.mask`` is
``True``. Every random draw (positions, missing values, clouds, noise, the degradation
mix) comes from the ``generator`` argument, in a fixed order, so the same seed gives
the same observations. Without a generator torch's global RNG is used. Draws happen on
``generator.device`` (the truth's device without one); the noise itself is drawn by the
observation types on the truth's device, so a generator must live there.

- :func:`station_positions`, :func:`station_network`: point profiles (radiosondes),
  uniform or clustered networks, chosen levels, missing values;
- :func:`cloud_mask`: a thresholded, spatially correlated Gaussian random field;
- :func:`satellite_channels`: Gaussian-in-log-pressure weighting functions, a coarse
  footprint, clouds;
- :func:`degraded_field`: the SLAMS paper's degradations (coarsen ``r``, noise ``σ``,
  sparsity ``g``);
- :func:`random_observations`: the random mix of all of them used to train the
  observation encoders.

``periodic`` names the axes that wrap (:func:`~slams_diffusers.validation.periodic_axes`:
axis names such as ``"xy"``, one bool per axis, or a bool for every axis); the station
simulators still read the old form, a bool, as :class:`~slams_diffusers.observations.Stations`
does (the x axis only; ``True`` on a 2-D grid warns), so name the axes, e.g. ``"xy"``, for the
doubly periodic testbed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..observations import (
    Gridded,
    Observation,
    Satellite,
    Stations,
    gaussian_weighting_functions,
    pressures_hpa,
    station_periodic_axes,
)
from ..validation import as_grid_shape, as_int, check_truth, finite_float, periodic_axes

__all__ = [
    "station_positions",
    "station_network",
    "cloud_mask",
    "satellite_channels",
    "degraded_field",
    "random_observations",
    "MODALITIES",
]

#: The modalities :func:`random_observations` can produce.
MODALITIES = ("stations", "satellite", "gridded")

#: Pressures (hPa) assumed by :func:`random_observations` when ``model_pressures`` is
#: not given: levels equally spaced in log-pressure between these two.
_DEFAULT_PRESSURE_RANGE = (850.0, 200.0)


# --------------------------------------------------------------------------- helpers


def _draw_device(generator: torch.Generator | None, fallback: torch.device | str | None):
    if generator is not None:
        return generator.device
    return torch.device(fallback) if fallback is not None else torch.device("cpu")


def _rand(generator: torch.Generator | None, device, *shape: int) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def _fraction(x, name: str) -> float:
    return finite_float(x, name, minimum=0.0, maximum=1.0)


def _truth(truth: Tensor) -> Tensor:
    truth = check_truth(truth)
    if not bool(torch.isfinite(truth).all()):
        raise ValueError("truth: contains NaN or inf; expected a complete, finite state")
    return truth


def _range(r, name: str, minimum: float | None = None, positive: bool = False):
    try:
        lo, hi = r
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a (low, high) pair, got {r!r}") from e
    lo = finite_float(lo, name, minimum=minimum)
    hi = finite_float(hi, name, minimum=minimum)
    if lo > hi:
        raise ValueError(f"{name}: expected low <= high, got ({lo:g}, {hi:g})")
    if positive and lo <= 0:
        raise ValueError(f"{name}: expected positive bounds (log-uniform), got ({lo:g}, {hi:g})")
    return lo, hi


def _int_range(r, name: str, minimum: int):
    try:
        lo, hi = r
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a (low, high) pair of ints, got {r!r}") from e
    lo, hi = as_int(lo, name, minimum), as_int(hi, name, minimum)
    if lo > hi:
        raise ValueError(f"{name}: expected low <= high, got ({lo}, {hi})")
    return lo, hi


def _choices(c, name: str) -> tuple[int, ...]:
    try:
        out = tuple(as_int(v, name, minimum=1) for v in c)
    except TypeError as e:
        raise ValueError(
            f"{name}: expected a non-empty sequence of positive ints, got {c!r}"
        ) from e
    if not out:
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got {c!r}")
    return out


def _uniform(lo: float, hi: float, g, device) -> float:
    return lo + (hi - lo) * float(_rand(g, device))


def _log_uniform(lo: float, hi: float, g, device) -> float:
    return math.exp(_uniform(math.log(lo), math.log(hi), g, device))


def _randint(lo: int, hi: int, g, device) -> int:
    """Uniform integer in ``[lo, hi]`` (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=g, device=device))


def _log_randint(lo: int, hi: int, g, device) -> int:
    """Integer in ``[lo, hi]``, log-uniform (``lo >= 1``)."""
    v = _log_uniform(lo, hi + 1, g, device)
    return min(max(int(v), lo), hi)


def _pick(options: Sequence, g, device):
    return options[_randint(0, len(options) - 1, g, device)]


# --------------------------------------------------------------------------- stations


def station_positions(
    grid_shape: Sequence[int],
    n: int,
    layout: Literal["uniform", "clustered"] = "uniform",
    *,
    clusters: int = 4,
    spread: float | None = None,
    periodic: bool | str | Sequence[bool] = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Random station positions as fractional grid indices.

    - ``"uniform"``: :math:`p_{s,a} \sim \mathcal{U}[0, e_a)` independently, with the
      extent :math:`e_a = n_a` on a periodic axis and :math:`n_a - 1` otherwise.
    - ``"clustered"``: ``clusters`` centres :math:`c_k` drawn uniformly as above, each
      station joins a uniformly chosen cluster :math:`k_s` and sits at
      :math:`p_s = c_{k_s} + \text{spread}\cdot\xi_s`, :math:`\xi_s \sim \mathcal{N}(0, I)`,
      wrapped on periodic axes and clipped to ``[0, n_a - 1]`` otherwise (so some
      stations may sit on the boundary).

    The result is valid for :class:`~slams_diffusers.observations.Stations` with the
    same ``periodic``: ``[0, n_a)`` on periodic axes, ``[0, n_a - 1]`` otherwise.

    Args:
        grid_shape: spatial shape ``(x,)`` or ``(y, x)``.
        n: number of stations, ``>= 1``.
        layout: ``"uniform"`` or ``"clustered"``.
        clusters: number of cluster centres (clustered layout), ``>= 1``.
        spread: std of the Gaussian blobs in cells (clustered layout), ``> 0``;
            default ``max(1, min(grid_shape) / 16)`` (4 cells on a 64 × 64 grid).
        periodic: as :class:`Stations`: axis names or one bool per axis (the old form, a bool,
            wraps the x axis only).
        generator: source of all random draws.
        device: where to return the positions (default: the generator's device).

    Returns:
        ``(n, spatial_dims)`` float64 positions, ``(y, x)`` or ``(x,)`` per station.
    """
    shape = as_grid_shape(grid_shape)
    n = as_int(n, "n", minimum=1)
    sd = len(shape)
    per = station_periodic_axes(periodic, sd)
    if layout not in ("uniform", "clustered"):
        raise ValueError(f"layout: expected 'uniform' or 'clustered', got {layout!r}")
    dev = _draw_device(generator, device)
    size = torch.tensor(shape, dtype=torch.float64, device=dev)
    perd = torch.tensor(per, device=dev)
    extent = torch.where(perd, size, size - 1)

    if layout == "uniform":
        pos = _rand(generator, dev, n, sd) * extent
    else:
        clusters = as_int(clusters, "clusters", minimum=1)
        if spread is None:
            spread = max(1.0, min(shape) / 16)
        spread = finite_float(spread, "spread", minimum=0.0)
        if spread <= 0:
            raise ValueError(f"spread: expected a positive number of cells, got {spread:g}")
        centres = _rand(generator, dev, clusters, sd) * extent
        member = torch.randint(0, clusters, (n,), generator=generator, device=dev)
        xi = torch.randn(n, sd, generator=generator, dtype=torch.float64, device=dev)
        pos = centres[member] + spread * xi
        wrapped = torch.remainder(pos, size)
        wrapped = torch.where(wrapped >= size, wrapped - size, wrapped)  # rounding at n
        pos = torch.where(perd, wrapped, torch.minimum(pos.clamp(min=0), size - 1))
    return pos if device is None else pos.to(device)


def station_network(
    truth: Tensor,
    n: int | None,
    levels: Sequence[int] | None = None,
    *,
    pressures: Sequence[float] | None = None,
    model_pressures: Sequence[float] | Tensor | None = None,
    noise_std: float | Tensor = 0.5,
    layout: Literal["uniform", "clustered"] = "uniform",
    clusters: int = 4,
    spread: float | None = None,
    positions: Tensor | None = None,
    missing_fraction: float = 0.0,
    periodic: bool | str | Sequence[bool] = False,
    time_index: int = 0,
    modality: str = "stations",
    generator: torch.Generator | None = None,
) -> Stations:
    r"""A simulated station network: ``n`` point profiles of ``truth`` with noise.

    .. math:: y_{sj} = \operatorname{interp}(x_{\ell_j}, p_s) + \sigma_y \varepsilon_{sj},

    positions :math:`p_s` from :func:`station_positions` (or given), levels
    :math:`\ell_j` given as indices or as pressures; then a random
    ``round(missing_fraction · n · n_levels)`` of the values are masked (missing), and
    the noise is added by :meth:`Stations.simulate`. Draw order: positions, missing
    values, noise.

    Args:
        truth: one state ``(levels, *space)`` in K.
        n: number of stations (``None`` when ``positions`` is given).
        levels: model level indices observed by every station; default all levels.
        pressures: the observed levels as pressures instead (each must be one of
            ``model_pressures``; see :meth:`Stations.from_pressures`).
        model_pressures: ``(levels,)`` pressures of the model levels, needed with
            ``pressures``.
        noise_std: ``σ_y`` in K, float or broadcastable to ``(n, n_levels)`` (e.g. one
            per observed level). Default 0.5 K, a radiosonde temperature error.
        layout, clusters, spread: see :func:`station_positions`.
        positions: ``(n, spatial_dims)`` fixed positions instead of random ones (e.g.
            the same network at every step of a window).
        missing_fraction: fraction of the values masked at random, in ``[0, 1]``.
        periodic: as :class:`Stations` (axis names; the old form, a bool, wraps x only).
        time_index, modality: stored on the observation.
        generator: source of all random draws (on the truth's device).

    Returns:
        :class:`Stations` with ``values`` ``(n, n_levels)``.
    """
    truth = _truth(truth)
    grid = tuple(truth.shape[1:])
    num_levels = truth.shape[0]
    missing_fraction = _fraction(missing_fraction, "missing_fraction")

    if positions is None:
        if n is None:
            raise ValueError("n: expected the number of stations (or give positions), got None")
        pos = station_positions(
            grid,
            n,
            layout,
            clusters=clusters,
            spread=spread,
            periodic=periodic,
            generator=generator,
        )
    else:
        pos = torch.as_tensor(positions)
        if pos.ndim != 2:
            raise ValueError(
                f"positions: expected shape (n_stations, spatial_dims), got {tuple(pos.shape)}"
            )
        if n is not None and as_int(n, "n", minimum=1) != pos.shape[0]:
            raise ValueError(
                f"n: {n} stations requested but positions holds {pos.shape[0]}; "
                f"give n=None with positions"
            )
    n_st = pos.shape[0]

    if pressures is not None:
        if levels is not None:
            raise ValueError("levels: give either levels (indices) or pressures, not both")
        if model_pressures is None:
            raise ValueError("model_pressures: required when the levels are given as pressures")
        mp = torch.tensor(pressures_hpa(model_pressures), dtype=torch.float64)
        if mp.numel() != num_levels:
            raise ValueError(
                f"model_pressures: expected {num_levels} pressures (one per level of truth), "
                f"got {mp.numel()}"
            )
        # resolve pressures -> level indices with the type's own matching
        n_p = torch.as_tensor(pressures).reshape(-1).numel()
        level_idx = Stations.from_pressures(
            torch.zeros(n_st, n_p),
            pos,
            pressures,
            mp,
            grid,
            noise_std=0.0,
            periodic=periodic,
        ).levels
    elif levels is None:
        level_idx = tuple(range(num_levels))
    else:
        level_idx = levels

    mask = None
    if missing_fraction > 0:
        try:
            m = len(level_idx)
        except TypeError as e:
            raise ValueError(f"levels: expected a sequence of level indices, got {levels!r}") from e
        total = n_st * m
        k = round(missing_fraction * total)
        dev = _draw_device(generator, truth.device)
        drop = torch.randperm(total, generator=generator, device=dev)[:k]
        keep = torch.ones(total, dtype=torch.bool, device=dev)
        keep[drop] = False
        mask = keep.reshape(n_st, m).to(truth.device)

    return Stations.simulate(
        truth,
        pos,
        level_idx,
        noise_std,
        periodic=periodic,
        modality=modality,
        time_index=time_index,
        mask=mask,
        generator=generator,
    )


# --------------------------------------------------------------------------- clouds


def cloud_mask(
    shape: Sequence[int],
    cloud_fraction: float,
    correlation_length: float = 4.0,
    *,
    periodic: bool | str | Sequence[bool] = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""A random cloud mask with spatially coherent clouds.

    A Gaussian random field with correlation
    :math:`\rho(r) = \exp(-r^2 / 2L^2)` (``L = correlation_length`` in cells) is made by
    filtering white noise in Fourier space,

    .. math:: f = \mathcal{F}^{-1}\big[\, e^{-\pi^2 L^2 |k|^2}\, \mathcal{F}[w] \big],
              \qquad w \sim \mathcal{N}(0, I),

    (``k`` in cycles per cell), and the ``round(cloud_fraction · N)`` cells with the
    largest ``f`` are cloudy: the fraction is exact up to ``1/N``. ``L = 0`` gives
    independent cells. A non-periodic axis is padded by ``⌈4L⌉`` cells before filtering
    and cropped after, so its edges do not wrap around.

    Args:
        shape: spatial shape ``(x,)`` or ``(y, x)``.
        cloud_fraction: fraction of cloudy cells in ``[0, 1]``.
        correlation_length: ``L`` in cells, ``>= 0``; larger = bigger cloud blobs.
        periodic: a bool for every axis, or one bool per axis.
        generator: source of the white noise.
        device: where to return the mask (default: the generator's device).

    Returns:
        bool ``shape``, ``True`` = cloudy (not observed).
    """
    shape = as_grid_shape(shape, "shape")
    f = _fraction(cloud_fraction, "cloud_fraction")
    L = finite_float(correlation_length, "correlation_length", minimum=0.0)
    per = periodic_axes(periodic, len(shape))
    dev = _draw_device(generator, device)
    padded = tuple(n if p else n + math.ceil(4 * L) for n, p in zip(shape, per, strict=True))
    field = torch.randn(padded, generator=generator, dtype=torch.float64, device=dev)
    if L > 0:
        k2 = torch.zeros((), dtype=torch.float64, device=dev)
        for a, m in enumerate(padded):
            k = torch.fft.fftfreq(m, dtype=torch.float64, device=dev)
            k2 = k2 + (k**2).reshape((m,) + (1,) * (len(padded) - 1 - a))
        filt = torch.exp(-(math.pi**2) * L**2 * k2)
        field = torch.fft.ifftn(torch.fft.fftn(field) * filt).real
    field = field[tuple(slice(0, n) for n in shape)].reshape(-1)
    cloudy = torch.zeros(field.numel(), dtype=torch.bool, device=dev)
    k = round(f * field.numel())
    if k > 0:
        cloudy[torch.topk(field, k).indices] = True
    cloudy = cloudy.reshape(shape)
    return cloudy if device is None else cloudy.to(device)


# --------------------------------------------------------------------------- satellite


def satellite_channels(
    truth: Tensor,
    model_pressures: Sequence[float] | Tensor,
    peak_pressures: Sequence[float] | Tensor,
    footprint: int = 1,
    noise_std: float | Tensor = 1.0,
    *,
    cloud_fraction: float = 0.0,
    correlation_length: float = 8.0,
    width: float = 0.5,
    periodic: bool | str | Sequence[bool] = True,
    time_index: int = 0,
    modality: str = "satellite",
    generator: torch.Generator | None = None,
) -> Satellite:
    r"""Simulated satellite channels: weighted columns, coarse footprint, clouds, noise.

    .. math:: y_c = \operatorname{BlockMean}_r\Big(\sum_l W_{cl} x_l\Big) + \sigma_y\varepsilon_c,

    ``W = gaussian_weighting_functions(model_pressures, peak_pressures, width)`` (one
    channel per peak pressure), ``r = footprint``; cloudy footprints (a
    :func:`cloud_mask` on the coarse grid) are masked out for every channel. Draw
    order: clouds, noise.

    Args:
        truth: one state ``(levels, *space)`` in K; ``space`` divisible by ``footprint``.
        model_pressures: ``(levels,)`` pressures of the truth's levels.
        peak_pressures: ``(channels,)`` pressure of each channel's peak (same unit).
        footprint: block size ``r >= 1`` of the footprint in cells. Default 1 (no
            coarsening; always valid).
        noise_std: ``σ_y`` in K, float or broadcastable to ``(channels, *coarse)``, e.g.
            ``(channels, 1, 1)``. Default 1 K, a typical brightness-temperature error.
        cloud_fraction: fraction of cloudy footprints in ``[0, 1]``.
        correlation_length: cloud correlation length in *model* cells (divided by
            ``footprint`` on the coarse grid, so cloud size does not depend on it).
        width: weighting-function width in log-pressure.
        periodic: the clouds' periodicity, a bool for every axis or one per axis.
        time_index, modality: stored on the observation.
        generator: source of all random draws (on the truth's device).

    Returns:
        :class:`Satellite` with ``values`` ``(channels, *space // footprint)`` and
        ``cloud_mask`` ``(*space // footprint)`` (``None`` without clouds).
    """
    truth = _truth(truth)
    mp = torch.tensor(pressures_hpa(model_pressures), dtype=torch.float64)
    if mp.numel() != truth.shape[0]:
        raise ValueError(
            f"model_pressures: expected {truth.shape[0]} pressures (one per level of truth), "
            f"got {mp.numel()}"
        )
    weights = gaussian_weighting_functions(mp, peak_pressures, width)
    r = as_int(footprint, "footprint", minimum=1)
    grid = tuple(truth.shape[1:])
    if any(n % r for n in grid):
        raise ValueError(f"footprint: the truth's grid {grid} is not divisible by footprint {r}")
    f = _fraction(cloud_fraction, "cloud_fraction")
    L = finite_float(correlation_length, "correlation_length", minimum=0.0)
    clouds = None
    if f > 0:
        coarse = tuple(n // r for n in grid)
        clouds = cloud_mask(
            coarse, f, L / r, periodic=periodic, generator=generator, device=truth.device
        )
    return Satellite.simulate(
        truth,
        weights.to(truth.dtype),
        r,
        noise_std,
        cloud_mask=clouds,
        modality=modality,
        time_index=time_index,
        generator=generator,
    )


# --------------------------------------------------------------------------- gridded


def degraded_field(
    truth: Tensor,
    coarsen: int = 1,
    noise_std: float | Tensor = 1.0,
    sparsity: int = 1,
    *,
    time_index: int = 0,
    modality: str = "gridded",
    generator: torch.Generator | None = None,
) -> Gridded:
    r"""The SLAMS paper's degradations of a state: coarse, noisy, sparse.

    .. math:: y = \operatorname{BlockMean}_r(x)[\ldots, ::g, ::g] + \sigma\varepsilon,

    block mean over ``r × r`` cells (``r = coarsen``), every ``g``-th coarse cell on
    each axis (``g = sparsity``), Gaussian noise ``σ = noise_std``; a
    :class:`Gridded` made by :meth:`Gridded.simulate`. (The paper's ablations span
    ``σ`` from 0.1 to 4 and several coarsening factors.)

    Args:
        truth: one state ``(levels, *space)`` in K; ``space`` divisible by ``coarsen``.
        coarsen: ``r >= 1``. Default 1.
        noise_std: ``σ`` in K, float or broadcastable to ``values``. Default 1 K.
        sparsity: ``g >= 1``. Default 1.
        time_index, modality: stored on the observation.
        generator: source of the noise (on the truth's device).

    Returns:
        :class:`Gridded` with ``values`` ``(levels, *ceil(space / r / g))``.
    """
    truth = _truth(truth)
    r = as_int(coarsen, "coarsen", minimum=1)
    g = as_int(sparsity, "sparsity", minimum=1)
    grid = tuple(truth.shape[1:])
    if any(n % r for n in grid):
        raise ValueError(f"coarsen: the truth's grid {grid} is not divisible by coarsen {r}")
    return Gridded.simulate(
        truth, r, g, noise_std, modality=modality, time_index=time_index, generator=generator
    )


# --------------------------------------------------------------------------- the mix


#: Noise std ranges [K] (log-uniform) of :func:`random_observations`, per modality.
TRAINING_NOISE_STD = {"stations": (0.1, 2.0), "satellite": (0.3, 2.0), "gridded": (0.1, 4.0)}


def log_uniform_rms(low: float, high: float) -> float:
    """``sqrt(E[σ²])`` for ``σ`` log-uniform on ``[low, high]``: the noise std an encoder trained on
    that range is calibrated for on average (its ``reference_noise_std``, docs/method.md §Declared
    errors)."""
    return math.sqrt((high**2 - low**2) / (2 * math.log(high / low)))


def random_observations(
    truth: Tensor,
    generator: torch.Generator | None = None,
    *,
    model_pressures: Sequence[float] | Tensor | None = None,
    modalities: Sequence[str] = MODALITIES,
    keep_probability: float = 0.75,
    min_modalities: int = 1,
    station_count: tuple[int, int] = (4, 256),
    station_noise: tuple[float, float] = TRAINING_NOISE_STD["stations"],
    clustered_probability: float = 0.5,
    station_clusters: tuple[int, int] = (1, 8),
    station_spread: tuple[float, float] = (1.0, 8.0),
    missing_fraction: tuple[float, float] = (0.0, 0.3),
    satellite_channels_count: tuple[int, int] = (1, 4),
    satellite_peaks: Sequence[float] | None = None,
    satellite_width: tuple[float, float] = (0.3, 0.7),
    satellite_footprints: Sequence[int] = (1, 2, 4, 8),
    satellite_noise: tuple[float, float] = TRAINING_NOISE_STD["satellite"],
    cloud_fraction: tuple[float, float] = (0.0, 0.7),
    cloud_correlation_length: tuple[float, float] = (2.0, 16.0),
    gridded_coarsen: Sequence[int] = (1, 2, 4, 8),
    gridded_sparsity: Sequence[int] = (1, 2, 4),
    gridded_noise: tuple[float, float] = TRAINING_NOISE_STD["gridded"],
    periodic: bool | str | Sequence[bool] = False,
    time_index: int = 0,
) -> list[Observation]:
    r"""A random mix of degraded observations of ``truth``, for training observation encoders.

    Each modality of ``modalities`` is kept independently with probability
    ``keep_probability`` (dropped modalities); if fewer than ``min_modalities`` remain,
    randomly chosen dropped ones are added back. Then, per kept modality, in the order
    of ``modalities`` (``"uniform"`` = uniform in the range, ``"log"`` = uniform in its
    logarithm, ``"choice"`` = uniform among the options that fit the grid):

    ``"stations"`` (:func:`station_network`)
        count ``station_count`` (log, integers, inclusive); layout clustered with
        probability ``clustered_probability``, then ``station_clusters`` centres
        (uniform integers) and ``station_spread`` cells (log); levels: a random
        non-empty subset of the model levels (its size uniform in ``[1, levels]``);
        noise ``station_noise`` K (log); missing fraction ``missing_fraction``
        (uniform).
    ``"satellite"`` (:func:`satellite_channels`)
        ``satellite_channels_count`` channels (uniform integers) with peak pressures
        log-uniform between the lowest and highest model pressure; width
        ``satellite_width`` (uniform); footprint from ``satellite_footprints``
        (choice, among divisors of the grid; 1 if none); noise ``satellite_noise`` K
        (log); cloud fraction ``cloud_fraction`` (uniform) with correlation length
        ``cloud_correlation_length`` model cells (log).
    ``"gridded"`` (:func:`degraded_field`)
        coarsening ``gridded_coarsen`` (choice among divisors of the grid; 1 if
        none); sparsity ``gridded_sparsity`` (choice); noise ``gridded_noise`` K
        (log; the SLAMS paper's σ range).

    Defaults: noise from well below to a few times typical instrument errors (0.5–1 K),
    station counts from a handful to a dense network on a 64 × 64 grid, footprints and
    coarsening up to 8 cells, clouds up to 70 % cover.

    Args:
        truth: one state ``(levels, *space)`` in K.
        generator: source of every random choice and draw (on the truth's device).
        model_pressures: ``(levels,)`` pressures of the truth's levels, for the
            satellite weighting functions; default: equally spaced in log-pressure from
            850 to 200 hPa.
        modalities: which modalities may appear, a subset of :data:`MODALITIES`.
        keep_probability: probability of keeping each modality, in ``[0, 1]``.
        min_modalities: at least this many modalities (``0`` allows an empty list).
        periodic: stations' periodicity as :class:`Stations` (axis names; the old form, a
            bool, wraps x only); the clouds use the same axes.
        time_index: stored on every observation.
        others: the ranges above.

    Returns:
        A list of :class:`Stations`, :class:`Satellite` and :class:`Gridded`
        observations, at most one per modality, in the order of ``modalities``.
    """
    truth = _truth(truth)
    num_levels = truth.shape[0]
    grid = tuple(truth.shape[1:])
    sd = len(grid)
    dev = _draw_device(generator, truth.device)

    mods = tuple(modalities) if not isinstance(modalities, str) else (modalities,)
    bad = [m for m in mods if m not in MODALITIES]
    if bad or len(set(mods)) != len(mods):
        raise ValueError(
            f"modalities: expected distinct names among {MODALITIES}, got {tuple(modalities)}"
        )
    keep_p = _fraction(keep_probability, "keep_probability")
    min_mod = as_int(min_modalities, "min_modalities", minimum=0)
    if min_mod > len(mods):
        raise ValueError(
            f"min_modalities: expected at most len(modalities) = {len(mods)}, got {min_mod}"
        )
    if model_pressures is None:
        p0, p1 = _DEFAULT_PRESSURE_RANGE
        mp = torch.logspace(math.log10(p0), math.log10(p1), num_levels, dtype=torch.float64)
    else:
        mp = torch.tensor(pressures_hpa(model_pressures), dtype=torch.float64)
        if mp.numel() != num_levels:
            raise ValueError(
                f"model_pressures: expected {num_levels} positive pressures (one per level "
                f"of truth), got {mp.tolist()}"
            )
    cnt = _int_range(station_count, "station_count", minimum=1)
    st_noise = _range(station_noise, "station_noise", minimum=0.0, positive=True)
    clustered_p = _fraction(clustered_probability, "clustered_probability")
    n_clusters = _int_range(station_clusters, "station_clusters", minimum=1)
    spread = _range(station_spread, "station_spread", minimum=0.0, positive=True)
    missing = _range(missing_fraction, "missing_fraction", minimum=0.0)
    if missing[1] > 1:
        raise ValueError(f"missing_fraction: expected bounds in [0, 1], got {missing}")
    n_ch = _int_range(satellite_channels_count, "satellite_channels_count", minimum=1)
    fixed_peaks = None
    if satellite_peaks is not None:
        fixed_peaks = pressures_hpa(satellite_peaks, "satellite_peaks")
    widths = _range(satellite_width, "satellite_width", minimum=0.0, positive=True)
    foots = _choices(satellite_footprints, "satellite_footprints")
    sat_noise = _range(satellite_noise, "satellite_noise", minimum=0.0, positive=True)
    cloud_f = _range(cloud_fraction, "cloud_fraction", minimum=0.0)
    if cloud_f[1] > 1:
        raise ValueError(f"cloud_fraction: expected bounds in [0, 1], got {cloud_f}")
    cloud_l = _range(cloud_correlation_length, "cloud_correlation_length", positive=True)
    coarsens = _choices(gridded_coarsen, "gridded_coarsen")
    sparsities = _choices(gridded_sparsity, "gridded_sparsity")
    gr_noise = _range(gridded_noise, "gridded_noise", minimum=0.0, positive=True)
    st_periodic = station_periodic_axes(periodic, sd)

    # which modalities
    keep = (_rand(generator, dev, len(mods)) < keep_p).tolist()
    while sum(keep) < min_mod:
        dropped = [i for i, k in enumerate(keep) if not k]
        keep[_pick(dropped, generator, dev)] = True

    def divisors(options: tuple[int, ...]) -> tuple[int, ...]:
        fit = tuple(o for o in options if all(n % o == 0 for n in grid))
        return fit or (1,)

    out: list[Observation] = []
    for mod, kept in zip(mods, keep, strict=True):
        if not kept:
            continue
        if mod == "stations":
            n = _log_randint(*cnt, generator, dev)
            clustered = float(_rand(generator, dev)) < clustered_p
            k_lev = _randint(1, num_levels, generator, dev)
            perm = torch.randperm(num_levels, generator=generator, device=dev)
            levels = sorted(int(i) for i in perm[:k_lev])
            kw = {}
            if clustered:
                kw = {
                    "clusters": _randint(*n_clusters, generator, dev),
                    "spread": _log_uniform(*spread, generator, dev),
                }
            noise = _log_uniform(*st_noise, generator, dev)
            miss = _uniform(*missing, generator, dev)
            out.append(
                station_network(
                    truth,
                    n,
                    levels,
                    noise_std=noise,
                    layout="clustered" if clustered else "uniform",
                    missing_fraction=miss,
                    periodic=st_periodic,
                    time_index=time_index,
                    generator=generator,
                    **kw,
                )
            )
        elif mod == "satellite":
            if fixed_peaks is None:
                c = _randint(*n_ch, generator, dev)
                lo, hi = float(mp.min()), float(mp.max())
                peaks = [_log_uniform(lo, hi, generator, dev) for _ in range(c)]
            else:
                peaks = fixed_peaks
            width = _uniform(*widths, generator, dev)
            r = _pick(divisors(foots), generator, dev)
            noise = _log_uniform(*sat_noise, generator, dev)
            frac = _uniform(*cloud_f, generator, dev)
            length = _log_uniform(*cloud_l, generator, dev)
            out.append(
                satellite_channels(
                    truth,
                    mp,
                    peaks,
                    r,
                    noise,
                    cloud_fraction=frac,
                    correlation_length=length,
                    width=width,
                    periodic=st_periodic,
                    time_index=time_index,
                    generator=generator,
                )
            )
        else:
            r = _pick(divisors(coarsens), generator, dev)
            g = _pick(sparsities, generator, dev)
            noise = _log_uniform(*gr_noise, generator, dev)
            out.append(
                degraded_field(truth, r, noise, g, time_index=time_index, generator=generator)
            )
    return out
