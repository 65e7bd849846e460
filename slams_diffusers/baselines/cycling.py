r"""Ensemble Kalman filtering of any forecast model: forecast, analyse, repeat.

With ``M`` the forecast model (:mod:`slams_diffusers.forecast`) run ``k`` steps per cycle and
``A`` one filter analysis (:func:`~slams_diffusers.baselines.letkf` or
:func:`~slams_diffusers.baselines.stochastic_enkf`), the members ``x_m`` go

.. math:: x^f_{m,0} = x^{\text{init}}_m, \qquad x^a_{m,t} = A(x^f_{m,t};\, y_t), \qquad
          x^f_{m,t+1} = M^k(x^a_{m,t}),

so the analysis at cycle ``t`` uses the observations up to ``t`` (a filter). Methods:
``"etkf"`` (the LETKF without localisation: Hunt et al. 2007), ``"letkf"`` (with a Gaspari–Cohn
radius) and ``"enkf"`` (perturbed observations; Burgers et al. 1998). The analysis mean ``x̄^a_t``
and spread ``sqrt(mean_i Var_m x^a_{m,t,i})`` are recorded every cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..forecast import ForecastModel, run_forecast
from ..metrics import ensemble_spread
from ..observations import Observation
from ..validation import as_int
from .enkf import letkf, stochastic_enkf

__all__ = ["CyclingResult", "cycle_ensemble_filter"]

FILTERS = ("etkf", "letkf", "enkf")


@dataclass
class CyclingResult:
    """``means`` and ``spreads`` of the analyses ``(cycles, *state)`` and ``(cycles,)``; with
    ``return_ensembles`` also the analysis and forecast (prior) members ``(N, cycles, *state)``
    (else ``None``)."""

    means: Tensor
    spreads: Tensor
    analyses: Tensor | None = None
    forecasts: Tensor | None = None


def cycle_ensemble_filter(
    forecast_model: ForecastModel,
    initial_ensemble: Tensor,
    observations_per_cycle: Sequence[Observation | Sequence[Observation]],
    steps_per_cycle: int,
    *,
    method: str = "etkf",
    inflation: float = 1.0,
    localization_radius: float | None = None,
    periodic: bool | str | Sequence[bool] = "x",
    operator: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    return_ensembles: bool = False,
) -> CyclingResult:
    """Cycle ``initial_ensemble`` (the prior members of cycle 0) through the observations.

    Args:
        forecast_model: ``(states, steps) -> states``, called through
            :func:`~slams_diffusers.forecast.run_forecast` (checked shape, finite values).
        initial_ensemble: ``(N, *state)``, e.g. ``(N, levels, x)``.
        observations_per_cycle: for each cycle the observations of that time (one object or a
            list, possibly empty); their number is the number of cycles.
        steps_per_cycle: model steps between cycles.
        method: ``"etkf"``, ``"letkf"`` or ``"enkf"`` (module docstring).
        inflation: multiplicative covariance inflation ``ρ`` of the filter.
        localization_radius: Gaspari–Cohn half-width in grid cells (``"letkf"``, ``"enkf"``);
            ``None`` = none. ``"etkf"`` takes none.
        periodic: the axes that wrap, as :func:`~slams_diffusers.validation.periodic_axes`.
        operator: ``φ``, the states the observations see (``None`` = the state itself).
        generator: the stochastic EnKF's observation perturbations.
        return_ensembles: also keep every analysis and forecast ensemble.

    Returns:
        A :class:`CyclingResult`.
    """
    if method not in FILTERS:
        raise ValueError(f"method: expected one of {FILTERS}, got {method!r}")
    if method == "etkf" and localization_radius is not None:
        raise ValueError(
            f"localization_radius: the ETKF is not localised, got {localization_radius!r}; "
            "pass method='letkf' to localise"
        )
    steps = as_int(steps_per_cycle, "steps_per_cycle", minimum=0)
    if not isinstance(initial_ensemble, Tensor) or initial_ensemble.ndim < 2:
        raise ValueError(
            f"initial_ensemble: expected a tensor (N, *state), got "
            f"{getattr(initial_ensemble, 'shape', type(initial_ensemble).__name__)}"
        )
    if isinstance(observations_per_cycle, Observation) or not isinstance(
        observations_per_cycle, Sequence
    ):
        raise ValueError(
            "observations_per_cycle: expected a sequence with the observations of each cycle, "
            f"got {type(observations_per_cycle).__name__}"
        )
    options: dict[str, Any] = dict(
        inflation=inflation, localization_radius=localization_radius, periodic=periodic
    )
    x = initial_ensemble
    means, spreads, analyses, forecasts = [], [], [], []
    for cycle, now in enumerate(observations_per_cycle):
        if cycle > 0:
            x = run_forecast(forecast_model, x, steps)
        if return_ensembles:
            forecasts.append(x)
        now = [now] if isinstance(now, Observation) else list(now)
        if method == "enkf":
            x = stochastic_enkf(x, now, operator, generator=generator, **options)
        else:
            x = letkf(x, now, operator, **options)
        means.append(x.mean(dim=0))
        spreads.append(ensemble_spread(x))
        if return_ensembles:
            analyses.append(x)
    if not means:
        raise ValueError("observations_per_cycle: expected at least one cycle, got none")
    result = CyclingResult(torch.stack(means), torch.stack(spreads))
    if return_ensembles:
        result.analyses = torch.stack(analyses, dim=1)
        result.forecasts = torch.stack(forecasts, dim=1)
    return result
