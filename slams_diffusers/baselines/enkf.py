r"""Ensemble Kalman filters on the package's observation objects: the stochastic (perturbed-
observation) EnKF and the LETKF, with Gaspari–Cohn localisation and multiplicative inflation
(docs/method.md §Baselines: EnKF and LETKF).

Notation: ``N`` members ``x_m`` of a state (any shape ``(*state)``; with localisation it ends in the
observations' grid, ``(…, *space)``, and every leading index of a grid column shares the column's
analysis), mean ``x̄``, perturbations ``X' = [x_m − x̄]`` (``n × N``). The observed values are the
entries of ``A_j(φ(x))`` where ``mask`` is ``True``, stacked over the observations ``j``: ``H(x)``
(``p`` values), ``φ`` the ``operator`` argument (e.g. PV → temperature, identity by default).
``Y' = [H(x_m) − ȳ]``, ``ȳ`` the mean of ``H(x_m)``, ``R = diag(σ_y²)`` from each observation's
``noise_std``, floored at ``NOISE_VARIANCE_FLOOR · max_o Var_m H_o(x_m)`` so that ``R^{-1}`` stays
finite.
``ρ`` is the multiplicative (covariance) inflation, ``GC`` the Gaspari–Cohn taper
(:func:`~slams_diffusers.baselines.localization.gaspari_cohn`) of the horizontal distance.

Stochastic EnKF (Burgers, van Leeuwen & Evensen 1998; Evensen 2009), prior inflation in state space,
Schur-product (Houtekamer & Mitchell 2001) localisation ``L_xy``, ``L_yy``:

    x_m ← x̄ + √ρ (x_m − x̄),            ε_m ~ N(0, R)
    K   = (L_xy ∘ X'Y'ᵀ)(L_yy ∘ Y'Y'ᵀ + (N−1) R)^{-1}
    x_m^a = x_m + K (y + ε_m − H(x_m))

LETKF (Hunt, Kostelich & Szunyogh 2007), for every grid column ``g`` with the R-localised
precision ``R_g^{-1} = diag(GC(d_go) / σ_o²)`` and inflation in ensemble space:

    P̃_g = [(N−1) I / ρ + Y'ᵀ R_g^{-1} Y']^{-1},   w̄_g = P̃_g Y'ᵀ R_g^{-1} (y − ȳ)
    W_g = [(N−1) P̃_g]^{1/2}  (symmetric square root),   x_m^a = x̄ + X' (w̄_g + W_g e_m)

Without localisation (``localization_radius=None``) every column has weight 1: the ETKF. Both
filters analyse one time: all observations must share one ``time_index``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..linear_update import NOISE_VARIANCE_FLOOR
from ..observations import Observation, check_observations
from ..validation import periodic_axes
from .localization import (
    check_localization_radius,
    gaspari_cohn,
    grid_distance,
    grid_positions,
    observation_positions,
)

__all__ = ["letkf", "stochastic_enkf"]

_COLUMN_CHUNK = 1024
"""Grid columns per block in the localised analyses (bounds memory at ``chunk · N²`` numbers)."""


@dataclass
class _Observed:
    """The stacked observed values: ``y`` ``(p,)``, ``r = σ_y²`` ``(p,)``, ``hx = H(x_m)``
    ``(N, p)`` (float64), ``positions`` ``(p, spatial_dims)`` or ``None``."""

    y: Tensor
    r: Tensor
    hx: Tensor
    positions: Tensor | None


def _check_ensemble(ensemble: Any) -> Tensor:
    if not isinstance(ensemble, Tensor) or not ensemble.is_floating_point():
        raise ValueError(
            f"ensemble: expected a floating tensor (N, *state), got "
            f"{getattr(ensemble, 'dtype', type(ensemble).__name__)}"
        )
    if ensemble.ndim < 2 or ensemble.shape[0] < 2:
        raise ValueError(
            f"ensemble: expected shape (N, *state) with N >= 2 members, got {tuple(ensemble.shape)}"
        )
    if not bool(torch.isfinite(ensemble).all()):
        raise ValueError("ensemble: contains NaN or inf; expected finite values")
    return ensemble


def _check_inflation(inflation: Any) -> float:
    try:
        value = float(inflation)
    except (TypeError, ValueError) as e:
        raise ValueError(f"inflation: expected a positive finite number, got {inflation!r}") from e
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"inflation: expected a positive finite number (1 = none), got {value}")
    return value


def _check_observations(observations: Any) -> list[Observation]:
    """:func:`~slams_diffusers.observations.check_observations`, then what the filters need:
    ``R`` diagonal, one time, one grid."""
    observations = check_observations(observations)
    for i, observation in enumerate(observations):
        if getattr(observation, "covariance", None) is not None:
            raise ValueError(
                f"observations[{i}]: {type(observation).__name__} ({observation.modality!r}) has "
                f"a correlated error covariance; the ensemble filters take R = diag(noise_std²)"
            )
    times = sorted({o.time_index for o in observations})
    if len(times) > 1:
        raise ValueError(
            f"observations: the filters analyse one time, got time_index values {times}; pass "
            f"the observations of one step (the QG cycling selects them per step)"
        )
    grids = {tuple(o.grid_shape) for o in observations}  # type: ignore[attr-defined]
    if len(grids) > 1:
        raise ValueError(f"observations: expected one grid_shape, got {sorted(grids)}")
    return observations


def _observe(
    ensemble: Tensor,
    observations: list[Observation],
    operator: Callable[[Tensor], Tensor] | None,
    localize: bool,
) -> _Observed:
    """Apply ``A_j ∘ φ`` to every member and keep the observed entries."""
    if operator is not None and not callable(operator):
        raise ValueError(f"operator: expected a callable or None, got {type(operator).__name__}")
    used = [(i, o) for i, o in enumerate(observations) if o.num_observed > 0]
    n = ensemble.shape[0]
    f64 = dict(dtype=torch.float64, device=ensemble.device)
    if not used:
        empty = torch.zeros(0, **f64)
        return _Observed(empty, empty, torch.zeros(n, 0, **f64), None)
    with torch.no_grad():
        seen = ensemble if operator is None else operator(ensemble)
    if not isinstance(seen, Tensor) or seen.ndim < 2 or seen.shape[0] != n:
        raise ValueError(
            f"operator: expected it to map the ensemble {tuple(ensemble.shape)} to states "
            f"(N, levels, *space) with N={n}, got {getattr(seen, 'shape', type(seen).__name__)}"
        )
    ys, rs, hxs, positions = [], [], [], []
    for i, observation in used:
        try:
            observation.check_state(seen.shape[1], tuple(seen.shape[2:]))
        except ValueError as e:
            raise ValueError(
                f"observations[{i}]: does not fit the observed states (N, levels, *space) = "
                f"{tuple(seen.shape)}: {e}"
            ) from e
        mask = observation.mask.to(ensemble.device)
        ys.append(observation.values.to(**f64)[mask])
        rs.append(observation.noise_variance().to(**f64)[mask])
        hxs.append(observation.operator(seen).to(torch.float64)[:, mask])
        if localize:
            positions.append(observation_positions(observation).to(ensemble.device)[mask])
    hx = torch.cat(hxs, dim=1)
    r = torch.cat(rs)
    largest = float(hx.var(dim=0).max()) if hx.shape[1] else 0.0
    r = r.clamp_min(NOISE_VARIANCE_FLOOR * (largest if largest > 0 else 1.0))
    return _Observed(torch.cat(ys), r, hx, torch.cat(positions) if localize else None)


def _columns(
    ensemble: Tensor, observations: list[Observation], radius: float | None
) -> tuple[Tensor, tuple[int, ...] | None]:
    """The ensemble as ``(N, levels, G)``: ``G`` grid columns with localisation, else ``G = 1``."""
    n = ensemble.shape[0]
    if radius is None:
        return ensemble.reshape(n, -1, 1), None
    if not observations:
        return ensemble.reshape(n, -1, 1), None
    grid = tuple(observations[0].grid_shape)  # type: ignore[attr-defined]
    sd = len(grid)
    if sd == 0:
        raise ValueError(
            f"localization_radius: a column has no horizontal distance to localise over; got "
            f"{radius!r}, expected None"
        )
    if ensemble.ndim < 1 + sd or tuple(ensemble.shape[-sd:]) != grid:
        raise ValueError(
            f"ensemble: localisation needs states ending in the observations' grid {grid}, "
            f"(N, …, {', '.join(map(str, grid))}); got {tuple(ensemble.shape)}"
        )
    return ensemble.reshape(n, -1, math.prod(grid)), grid


def _prepare(
    ensemble: Any, observations: Any, inflation: Any, localization_radius: Any, periodic: Any
) -> tuple[Tensor, list[Observation], float, float | None, Tensor, tuple[int, ...] | None]:
    """Checked inputs of both filters, and the ensemble's grid columns in float64
    (:func:`_columns`)."""
    ensemble = _check_ensemble(ensemble)
    observations = _check_observations(observations)
    rho = _check_inflation(inflation)
    radius = check_localization_radius(localization_radius)
    if observations:
        periodic_axes(periodic, observations[0].spatial_dims)
    states, grid = _columns(ensemble, observations, radius)
    return ensemble, observations, rho, radius, states.to(torch.float64), grid


def _weights(
    grid: tuple[int, ...] | None,
    positions: Tensor | None,
    radius: float | None,
    periodic: Any,
    columns: slice,
) -> Tensor | None:
    """``GC(d_go)`` for the grid columns in ``columns`` and all observations: ``(G_chunk, p)``."""
    if grid is None or positions is None:
        return None
    cells = grid_positions(grid, positions.dtype, positions.device)[columns]
    return gaspari_cohn(grid_distance(cells, positions, grid, periodic), radius)


def stochastic_enkf(
    ensemble: Tensor,
    observations: Observation | Sequence[Observation],
    operator: Callable[[Tensor], Tensor] | None = None,
    *,
    inflation: float = 1.0,
    localization_radius: float | None = None,
    periodic: bool | Sequence[bool] = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The perturbed-observation EnKF analysis of ``ensemble`` (formulas in the module docstring).

    Args:
        ensemble: ``(N, *state)`` prior members (``N >= 2``); with localisation ``state`` ends in
            the observations' ``grid_shape``.
        observations: :class:`~slams_diffusers.observations.Observation` objects of one time;
            masked (missing) values are dropped, ``R = diag(noise_std²)``.
        operator: ``φ``, maps the members ``(N, *state)`` to the states the observations see
            ``(N, levels, *space)`` (e.g. a model's PV → temperature); ``None`` = identity.
        inflation: ``ρ > 0``, the prior covariance is multiplied by ``ρ`` (1 = none).
        localization_radius: Gaspari–Cohn half-width ``c`` in grid cells (no influence beyond
            ``2c``); ``None`` = no localisation.
        periodic: the axes that wrap (distances wrap), as
            :func:`~slams_diffusers.validation.periodic_axes`: a bool for every axis, axis names or
            one bool per axis.
        generator: for the observation perturbations ``ε_m``.

    Returns:
        The analysis members, the shape and dtype of ``ensemble``. The increments are computed in
        float64; the stacked observations need a dense ``p × p`` solve (a few thousand values).
    """
    ensemble, observations, rho, radius, x, grid = _prepare(
        ensemble, observations, inflation, localization_radius, periodic
    )
    n = x.shape[0]
    mean = x.mean(dim=0, keepdim=True)
    x = mean + math.sqrt(rho) * (x - mean)
    inflated = x.reshape(ensemble.shape)
    obs = _observe(inflated, observations, operator, grid is not None)
    p = obs.y.shape[0]
    if p == 0:
        return inflated.to(ensemble.dtype)

    perturbations = x - mean  # (N, L, G)
    hx_prime = obs.hx - obs.hx.mean(dim=0, keepdim=True)  # (N, p)
    noise = torch.randn(n, p, generator=generator, dtype=torch.float64, device="cpu")
    noise = noise.to(obs.y.device) * obs.r.sqrt()
    innovations = obs.y + noise - obs.hx  # (N, p)
    covariance = hx_prime.T @ hx_prime  # (p, p), times (N - 1)
    if grid is not None:
        distance = grid_distance(obs.positions, obs.positions, grid, periodic)
        covariance = covariance * gaspari_cohn(distance, radius)
    covariance = covariance + torch.diag((n - 1) * obs.r)
    # LU, not Cholesky: on a periodic grid the tapered L_yy ∘ Y'Y'ᵀ need not be semi-definite
    solved = torch.linalg.solve(covariance, innovations.T)  # (p, N): (…)^{-1} d_m

    if grid is None:  # K d_m = X' Y'ᵀ (…)^{-1} d_m, grouped as (solved)ᵀ (Y'ᵀ X')
        flat = perturbations.reshape(n, -1)
        analysis = x.reshape(n, -1) + solved.T @ (hx_prime.T @ flat)
        return analysis.reshape(ensemble.shape).to(ensemble.dtype)

    # localised: member m at column g moves by Σ_k X'_k M_g[k, m], M_g = Σ_o L_go Y'_ok E_om
    outer = (hx_prime.T[:, :, None] * solved[:, None, :]).reshape(p, n * n)  # (p, N²)
    analysis = torch.empty_like(x)
    columns = x.shape[-1]
    for start in range(0, columns, _COLUMN_CHUNK):
        block = slice(start, min(start + _COLUMN_CHUNK, columns))
        weights = _weights(grid, obs.positions, radius, periodic, block)
        mixing = (weights @ outer).reshape(-1, n, n)  # (G_chunk, N, N)
        increment = torch.einsum("klg,gkm->mlg", perturbations[..., block], mixing)
        analysis[..., block] = x[..., block] + increment
    return analysis.reshape(ensemble.shape).to(ensemble.dtype)


def letkf(
    ensemble: Tensor,
    observations: Observation | Sequence[Observation],
    operator: Callable[[Tensor], Tensor] | None = None,
    *,
    inflation: float = 1.0,
    localization_radius: float | None = None,
    periodic: bool | Sequence[bool] = False,
) -> Tensor:
    """The LETKF analysis of ``ensemble`` (formulas in the module docstring).

    Every grid column gets its own local analysis from the observations within ``2c`` of it,
    their error variances divided by the Gaspari–Cohn weight of their distance (R-localisation);
    all leading indices (levels) of a column share its weights. Without localisation it is the
    ETKF: the analysis mean and covariance are exactly the Kalman update of the (inflated)
    ensemble mean and covariance when ``H`` is linear.

    Args:
        ensemble: ``(N, *state)`` prior members (``N >= 2``); with localisation ``state`` ends in
            the observations' ``grid_shape``.
        observations: :class:`~slams_diffusers.observations.Observation` objects of one time;
            masked (missing) values are dropped, ``R = diag(noise_std²)``.
        operator: ``φ``, maps the members ``(N, *state)`` to the states the observations see
            ``(N, levels, *space)``; ``None`` = identity.
        inflation: ``ρ > 0``, applied in ensemble space as ``(N − 1) I / ρ`` (the prior
            covariance times ``ρ``; with no observations the perturbations grow by ``√ρ``).
        localization_radius: Gaspari–Cohn half-width ``c`` in grid cells; ``None`` = ETKF.
        periodic: the axes that wrap (distances wrap), as
            :func:`~slams_diffusers.validation.periodic_axes`: a bool for every axis, axis names or
            one bool per axis.

    Returns:
        The analysis members, the shape and dtype of ``ensemble`` (computed in float64).
    """
    ensemble, observations, rho, radius, x, grid = _prepare(
        ensemble, observations, inflation, localization_radius, periodic
    )
    n = x.shape[0]
    mean = x.mean(dim=0)  # (L, G)
    perturbations = x - mean
    obs = _observe(ensemble, observations, operator, grid is not None)
    p = obs.y.shape[0]
    if p == 0:  # nothing observed: the inflated prior
        return (mean + math.sqrt(rho) * perturbations).reshape(ensemble.shape).to(ensemble.dtype)

    hx_prime = obs.hx - obs.hx.mean(dim=0, keepdim=True)  # (N, p)
    departure = obs.y - obs.hx.mean(dim=0)  # (p,)
    if grid is None:
        analysis = mean + _etkf_increment(
            perturbations.reshape(n, -1), hx_prime / obs.r.sqrt(), departure / obs.r.sqrt(), rho
        ).reshape(x.shape)
        return analysis.reshape(ensemble.shape).to(ensemble.dtype)

    # localised: one N × N eigendecomposition per grid column
    scaled = hx_prime / obs.r  # Y'ᵀ R^{-1}, as (N, p)
    outer = (scaled.T[:, :, None] * hx_prime.T[:, None, :]).reshape(p, n * n)  # (p, N²)
    projected = scaled.T * departure[:, None]  # (p, N)
    eye = torch.eye(n, dtype=torch.float64, device=x.device)
    analysis = torch.empty_like(x)
    columns = x.shape[-1]
    for start in range(0, columns, _COLUMN_CHUNK):
        block = slice(start, min(start + _COLUMN_CHUNK, columns))
        weights = _weights(grid, obs.positions, radius, periodic, block)
        precision = (weights @ outer).reshape(-1, n, n) + (n - 1) / rho * eye  # P̃_g^{-1}
        gradient = weights @ projected  # Y'ᵀ R_g^{-1} d, (G_chunk, N)
        values, vectors = torch.linalg.eigh(0.5 * (precision + precision.transpose(-1, -2)))
        rotated = vectors.transpose(-1, -2) @ gradient[..., None]  # (G_chunk, N, 1)
        mean_weights = vectors @ (rotated / values[..., None])  # w̄ = P̃ Y'ᵀ R^{-1} d
        root = (vectors * ((n - 1) / values).sqrt()[..., None, :]) @ vectors.transpose(-1, -2)
        transform = root + mean_weights  # (G_chunk, N, N): column m = w̄ + W e_m
        increment = torch.einsum("klg,gkm->mlg", perturbations[..., block], transform)
        analysis[..., block] = mean[..., block] + increment
    return analysis.reshape(ensemble.shape).to(ensemble.dtype)


def _etkf_increment(
    perturbations: Tensor, whitened: Tensor, departure: Tensor, rho: float
) -> Tensor:
    """``X' (w̄ 1ᵀ + W)`` as ``(N, n)`` rows, from the thin SVD ``Z = R^{-1/2} Y' = V S Uᵀ``
    (``whitened`` = ``Z`` as ``(N, p)``, ``departure`` = ``R^{-1/2}(y − ȳ)``), without any ``N × N``
    matrix: with ``a = (N − 1)/ρ``,

        P̃ = V diag(1/(a + s²)) Vᵀ + (I − V Vᵀ)/a,   W = √(N−1) [V diag((a + s²)^{-1/2}) Vᵀ
        + (I − V Vᵀ)/√a],   w̄ = V diag(1/(a + s²)) Vᵀ Z R^{-1/2} d.
    """
    n = perturbations.shape[0]
    a = (n - 1) / rho
    v, s, _ = torch.linalg.svd(whitened, full_matrices=False)  # v (N, k)
    shrink = 1.0 / (a + s**2)
    mean_weights = v @ (shrink * (v.T @ (whitened @ departure)))  # (N,)
    projected = v.T @ perturbations  # (k, n)
    root = v @ (shrink.sqrt()[:, None] * projected) + (perturbations - v @ projected) / math.sqrt(a)
    return math.sqrt(n - 1) * root + (mean_weights @ perturbations)[None, :]
