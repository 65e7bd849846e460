r"""Scores of analyses against the truth (members ``x^{(i)}``, ``i = 1..N``, ensemble mean
``x̄``, truth ``x``).

Conventions shared by every score:

- ``truth`` (and a deterministic ``estimate``) has any shape, typically a state
  ``(time, level, *space)``; ``members`` has one more axis in front, ``(N, *truth.shape)``.
- ``dims`` are axes of ``truth`` (one member) to reduce; ``None`` reduces all, ``()`` none. A
  per-level score of a ``(time, level, y, x)`` state uses ``dims=(0, 2, 3)``; :func:`level_dims`
  builds it and :func:`score_ensemble` returns every score per level and overall.
- ``weights`` (optional), broadcastable to ``truth``, non-negative: the means over ``dims`` are
  weighted, ``Σ w v / Σ w``. On a latitude grid use :func:`area_weights` (``cos φ``).
- Everything is accumulated in float64; results are float64 tensors.

References: Ferro (2014), Fair scores for ensemble forecasts, QJRMS 140; Zamo & Naveau (2018),
Estimation of the CRPS for ensemble forecasts, Math. Geosci. 50; Fortin et al. (2014), Why should
ensemble spread match the RMSE of the ensemble mean?, J. Hydrometeor. 15; Hamill (2001),
Interpretation of rank histograms, Mon. Wea. Rev. 129.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import scoringrules
import torch
from scipy.stats import wasserstein_distance
from torch import Tensor

from .covariance import SpectralCovariance

__all__ = [
    "area_weights",
    "bias",
    "crps",
    "ensemble_spread",
    "level_dims",
    "power_spectrum",
    "rank_histogram",
    "rmse",
    "score_ensemble",
    "spread_skill_ratio",
    "wasserstein1",
]


# --------------------------------------------------------------------------- deterministic


def rmse(
    estimate: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Root-mean-square error :math:`\sqrt{\operatorname{mean}_{dims}(\hat x - x)^2}` over
    ``dims`` (default: all), weighted by ``weights``, accumulated in float64."""
    estimate, truth = _check_pair(estimate, truth)
    return _mean((estimate - truth).square(), dims, weights).sqrt()


def bias(
    estimate: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Mean error :math:`\operatorname{mean}_{dims}(\hat x - x)` (positive: too warm)."""
    estimate, truth = _check_pair(estimate, truth)
    return _mean(estimate - truth, dims, weights)


def wasserstein1(
    estimate: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Wasserstein-1 distance :math:`W_1 = \int |F_{\hat x}(v) - F_x(v)|\, dv` between the
    distributions of the values of ``estimate`` and of ``truth`` over ``dims`` (both weighted
    by ``weights``), one per kept index, via :func:`scipy.stats.wasserstein_distance`. This is
    the per-level histogram distance the SLAMS paper reports; it ignores where values are."""
    estimate, truth = _check_pair(estimate, truth)
    reduced = _as_dims(dims, truth.ndim)
    kept = [d for d in range(truth.ndim) if d not in reduced]
    shape = [truth.shape[d] for d in kept]
    w = _check_weights(weights, truth.shape)
    a, b = (_rows(t.detach().cpu(), kept).numpy() for t in (estimate, truth))
    u = [None] * len(a) if w is None else _rows(w.cpu(), kept).numpy()
    out = [wasserstein_distance(*pair, ui, ui) for *pair, ui in zip(a, b, u, strict=True)]
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


# --------------------------------------------------------------------------- ensemble


def ensemble_spread(
    members: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Ensemble spread :math:`\sqrt{\operatorname{mean}_{dims} \operatorname{Var}_i x^{(i)}}`,
    members on axis 0 (unbiased variance, ``1/(N-1)``), means over ``dims`` of the remaining
    axes (default: all). Comparable with :func:`rmse` of the ensemble mean (spread-skill)."""
    members = _check_members(members, minimum=2)
    return _mean(members.var(dim=0), dims, weights).sqrt()


def spread_skill_ratio(
    members: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Spread-skill ratio with the finite-ensemble correction (Fortin et al. 2014),

    .. math:: \mathrm{SSR} = \sqrt{\tfrac{N + 1}{N}}\;
        \frac{\sqrt{\operatorname{mean} \operatorname{Var}_i x^{(i)}}}
             {\sqrt{\operatorname{mean} (\bar x - x)^2}},

    1 in expectation for a calibrated ensemble (truth and members exchangeable); below 1:
    under-dispersive. Needs ``N >= 2``."""
    members, truth = _check_ensemble(members, truth, minimum=2)
    n = members.shape[0]
    spread = ensemble_spread(members, dims, weights=weights)
    return math.sqrt((n + 1) / n) * spread / rmse(members.mean(0), truth, dims, weights=weights)


def crps(
    members: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Fair ensemble CRPS (Ferro 2014; Zamo & Naveau 2018), averaged over ``dims``:

    .. math:: \mathrm{CRPS}_f = \frac1N \sum_i |x^{(i)} - x|
        - \frac{1}{2N(N-1)} \sum_{i,j} |x^{(i)} - x^{(j)}|,

    the unbiased estimator of the CRPS of the distribution the members are drawn from, so
    ensembles of different sizes are comparable. Computed by ``scoringrules.crps_ensemble``
    with ``estimator="pwm"``, the probability-weighted-moment form of the same estimator
    (``O(N log N)`` per cell where the pairwise form is ``O(N²)``). With ``N = 1`` the member is
    a point forecast and the score is its absolute error (the CRPS of a point mass)."""
    members, truth = _check_ensemble(members, truth, minimum=1)
    if members.shape[0] == 1:
        values = (members[0] - truth).abs()
    else:
        values = torch.from_numpy(
            np.asarray(
                scoringrules.crps_ensemble(
                    *(t.detach().cpu().numpy() for t in (truth, members)),
                    m_axis=0,
                    estimator="pwm",
                    backend="numpy",
                ),
                dtype=np.float64,
            )
        )
    return _mean(values, dims, weights)


def rank_histogram(
    members: Tensor,
    truth: Tensor,
    dims: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Rank histogram (Talagrand diagram; Hamill 2001): counts of the truth's rank among the
    ``N`` members, ``N + 1`` bins, summed over ``dims``.

    The rank of ``x`` is :math:`\#\{i : x^{(i)} < x\} + U`, with ``U`` uniform on
    ``{0, …, #{i : x^{(i)} = x}}`` drawn with ``generator`` (ties broken at random). Returns int64
    ``(*kept, N + 1)``; flat for a calibrated ensemble, U-shaped when under-dispersive."""
    members, truth = (t.detach().cpu() for t in _check_ensemble(members, truth, minimum=1))
    if not (bool(torch.isfinite(members).all()) and bool(torch.isfinite(truth).all())):
        raise ValueError("members, truth: contain NaN or inf; a rank needs finite values")
    below = (members < truth).sum(0)
    ties = (members == truth).sum(0)
    draw = torch.rand(truth.shape, generator=generator, dtype=torch.float64)
    rank = below + (draw * (ties + 1)).floor().long().clamp_max(ties)
    reduced = _as_dims(dims, truth.ndim)
    kept = [d for d in range(truth.ndim) if d not in reduced]
    rows = _rows(rank, kept)
    counts = torch.zeros(rows.shape[0], members.shape[0] + 1, dtype=torch.long)
    counts.scatter_add_(1, rows, torch.ones_like(rows))
    return counts.reshape(*(truth.shape[d] for d in kept), members.shape[0] + 1)


# --------------------------------------------------------------------------- spectra


def power_spectrum(field: Tensor, spatial_dims: int = 2) -> Tensor:
    r"""Isotropic power spectrum of a periodic field ``(..., *space)`` over its last
    ``spatial_dims`` axes, one per leading index (e.g. per level):

    .. math:: P(s) = \frac1n \sum_{k:\ \mathrm{shell}(k) = s} |\hat f(k)|^2,

    with the unitary DFT :math:`\hat f` (``norm="ortho"``), ``n`` the number of cells and the
    integer shells ``floor(κ(k) + ½)`` of :meth:`SpectralCovariance.shells` (the same binning as
    the spectral background covariance). By Parseval :math:`\sum_s P(s) = \operatorname{mean}
    f^2`: the spectrum of an error field splits its mean square error by scale. Returns float64
    ``(..., num_shells)``."""
    f = torch.as_tensor(field)
    if spatial_dims not in (1, 2) or f.ndim < spatial_dims:
        raise ValueError(
            f"spatial_dims: expected 1 or 2 with field of at least that many dims, got "
            f"{spatial_dims} for field of shape {tuple(f.shape)}"
        )
    space = tuple(f.shape[f.ndim - spatial_dims :])
    shells = SpectralCovariance(levels=1, grid_shape=space).shells().reshape(-1).to(f.device)
    axes = tuple(range(-spatial_dims, 0))
    power = torch.fft.fftn(f.double(), dim=axes, norm="ortho").abs().square() / math.prod(space)
    power = power.reshape(*f.shape[: f.ndim - spatial_dims], -1)
    out = power.new_zeros(*power.shape[:-1], int(shells.max()) + 1)
    return out.index_add(-1, shells, power)


# --------------------------------------------------------------------------- helpers for states


def level_dims(ndim: int, spatial_dims: int = 2) -> tuple[int, ...]:
    """``dims`` that reduce all axes of a ``(..., level, *space)`` state of ``ndim`` dims but its
    level axis ``ndim - spatial_dims - 1``: pass them to any score for one value per level."""
    level = ndim - spatial_dims - 1
    if spatial_dims not in (0, 1, 2) or level < 0:
        raise ValueError(
            f"spatial_dims: expected 0, 1 or 2 with a state of at least spatial_dims + 1 dims "
            f"(..., level, *space), got spatial_dims={spatial_dims} for {ndim} dims"
        )
    return tuple(d for d in range(ndim) if d != level)


def area_weights(latitude: Tensor) -> Tensor:
    r"""Area weights :math:`\cos φ` of a regular latitude-longitude grid, shaped ``(lat, 1)`` to
    broadcast against states ``(..., level, lat, lon)``. ``latitude`` in degrees."""
    lat = torch.as_tensor(latitude, dtype=torch.float64)
    if lat.ndim != 1 or lat.numel() == 0:
        raise ValueError(
            f"latitude: expected a 1-d tensor of degrees, got shape {tuple(lat.shape)}"
        )
    if not bool(torch.isfinite(lat).all()) or float(lat.abs().max()) > 90:
        raise ValueError("latitude: expected finite degrees in [-90, 90]")
    return torch.cos(torch.deg2rad(lat)).clamp_min(0.0)[:, None]


def score_ensemble(
    members: Tensor,
    truth: Tensor,
    *,
    spatial_dims: int = 2,
    latitude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    r"""Every score of an ensemble ``(N, ..., level, *space)`` against ``truth`` ``(..., level,
    *space)``, per level and overall, as plain Python numbers (JSON-ready).

    Returns ``{"members": N, "levels": L, name: {"per_level": [...], "overall": ...}}`` for
    ``rmse`` and ``bias`` (of the ensemble mean), ``crps`` (fair), ``spread``,
    ``spread_skill_ratio``, ``rank_histogram`` (counts; overall = summed over levels),
    ``wasserstein1`` (of the ensemble mean) and ``wasserstein1_members`` (mean over members:
    one sample's value, as the SLAMS paper reports), overall = mean over levels; and
    ``error_spectrum`` (:func:`power_spectrum` of the ensemble mean's error, averaged over the
    leading axes; overall = mean over levels) on periodic grids, i.e. when no ``latitude`` is
    given. ``latitude`` (degrees, one per ``y``) turns on :func:`area_weights`. With ``N = 1``
    (a deterministic analysis) ``crps`` is the mean absolute error and the ensemble-only scores
    are ``None``.
    """
    members, truth = _check_ensemble(members, truth, minimum=1)
    per_level = level_dims(truth.ndim, spatial_dims)
    weights = None
    if latitude is not None:
        if spatial_dims != 2:
            raise ValueError(
                f"latitude: needs a (lat, lon) grid (spatial_dims=2), got {spatial_dims}"
            )
        weights = area_weights(latitude)
        if weights.shape[0] != truth.shape[-2]:
            raise ValueError(
                f"latitude: expected {truth.shape[-2]} values (the y axis of truth "
                f"{tuple(truth.shape)}), got {weights.shape[0]}"
            )
    n, mean = members.shape[0], members.mean(0)

    def both(score, *args, **kwargs) -> dict[str, Any]:
        return {
            "per_level": score(*args, per_level, **kwargs).tolist(),
            "overall": score(*args, None, **kwargs).item(),
        }

    def level_mean(values: Tensor) -> dict[str, Any]:
        return {"per_level": values.tolist(), "overall": values.mean(0).tolist()}

    result: dict[str, Any] = {
        "members": n,
        "levels": truth.shape[truth.ndim - spatial_dims - 1],
        "rmse": both(rmse, mean, truth, weights=weights),
        "bias": both(bias, mean, truth, weights=weights),
        "crps": both(crps, members, truth, weights=weights),
        "wasserstein1": level_mean(wasserstein1(mean, truth, per_level, weights=weights)),
        "wasserstein1_members": level_mean(
            sum(wasserstein1(m, truth, per_level, weights=weights) for m in members) / n
        ),
        "spread": None,
        "spread_skill_ratio": None,
        "rank_histogram": None,
        "error_spectrum": None,
    }
    if n >= 2:
        counts = rank_histogram(members, truth, per_level, generator=generator)
        result["spread"] = both(ensemble_spread, members, weights=weights)
        result["spread_skill_ratio"] = both(spread_skill_ratio, members, truth, weights=weights)
        result["rank_histogram"] = {
            "per_level": counts.tolist(),
            "overall": counts.sum(0).tolist(),
        }
    if latitude is None and spatial_dims > 0:
        error = (mean - truth).reshape(-1, *truth.shape[truth.ndim - spatial_dims - 1 :])
        result["error_spectrum"] = level_mean(power_spectrum(error, spatial_dims).mean(0))
    return result


# --------------------------------------------------------------------------- validation


def _check_pair(estimate: Any, truth: Any) -> tuple[Tensor, Tensor]:
    estimate, truth = torch.as_tensor(estimate), torch.as_tensor(truth)
    if estimate.shape != truth.shape:
        raise ValueError(
            f"`estimate` {tuple(estimate.shape)} and `truth` {tuple(truth.shape)} must have the "
            "same shape"
        )
    return estimate.double(), truth.double()


def _check_members(members: Any, minimum: int) -> Tensor:
    members = torch.as_tensor(members)
    if members.ndim == 0 or members.shape[0] < minimum:
        found = "a 0-d tensor" if members.ndim == 0 else members.shape[0]
        raise ValueError(
            f"`members` needs at least {minimum} member{'s' * (minimum > 1)} on axis 0, got {found}"
        )
    return members.double()


def _check_ensemble(members: Any, truth: Any, minimum: int) -> tuple[Tensor, Tensor]:
    members, truth = _check_members(members, minimum), torch.as_tensor(truth).double()
    if members.shape[1:] != truth.shape:
        raise ValueError(
            f"`members` {tuple(members.shape)} must be (N, *truth.shape) with `truth` "
            f"{tuple(truth.shape)}"
        )
    return members, truth


def _check_weights(weights: Any, shape: torch.Size) -> Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float64)
    try:
        fits = torch.broadcast_shapes(w.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"weights: expected a tensor broadcastable to {tuple(shape)}, got shape "
            f"{tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
        raise ValueError("weights: expected finite, non-negative values, not all zero")
    return w.expand(shape)


def _as_dims(dims: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``dims`` as sorted non-negative axes (``None``: all)."""
    if dims is None:
        return tuple(range(ndim))
    try:
        given = tuple(operator.index(d) for d in dims)
    except TypeError as e:
        raise ValueError(f"dims: expected a sequence of axes (ints) or None, got {dims!r}") from e
    if not all(-ndim <= d < ndim for d in given):
        raise ValueError(f"dims: expected axes of a {ndim}-d tensor, got {given}")
    out = sorted({d % ndim for d in given})
    if len(out) != len(given):
        raise ValueError(f"dims: expected distinct axes, got {given}")
    return tuple(out)


def _mean(values: Tensor, dims: Sequence[int] | None, weights: Any = None) -> Tensor:
    """(Weighted) mean over ``dims`` (``None``: all; ``()``: none, unlike ``torch.mean``)."""
    reduced = _as_dims(dims, values.ndim)
    w = _check_weights(weights, values.shape)
    if not reduced:
        return values
    if w is None:
        return values.mean(dim=reduced)
    return (w * values).sum(dim=reduced) / w.sum(dim=reduced)


def _rows(x: Tensor, kept: Sequence[int]) -> Tensor:
    """``x`` with the ``kept`` axes first, flattened to ``(prod kept, prod reduced)``."""
    reduced = [d for d in range(x.ndim) if d not in kept]
    return x.permute(*kept, *reduced).reshape(math.prod(x.shape[d] for d in kept), -1)
