r"""Ensemble Kalman filtering of the QG testbed with its own model (docs/method.md §Baselines: EnKF
and LETKF).

The ensemble is made as the testbed makes its backgrounds
(:func:`~slams_diffusers.data.testbed.assimilation_cases`): the background's forecast starts
``τ`` (the lead) before the window from ``q_b = q + δq_0``, the true PV perturbed by
:meth:`~slams_diffusers.data.qg.QGModel.perturb` (``perturbation_std`` K). The members start from
``q_b + δq_m − mean_m δq_m`` with ``δq_m`` independent draws of the same perturbation: centred on
what the background knew, and ``q = q_b − δq_0`` is statistically one more member (so the initial
spread matches the initial error). Centring on the true ``q`` instead would put the truth at the
ensemble mean. The members are forecast ``τ`` to the window's first step and cycled through the
window: at step ``t`` the PV members are analysed with the observations of that step
(``time_index = t``) and the forward map ``H = A ∘ T(q)``, ``T`` the model's temperature diagnostic
(affine in ``q``); the analyses are forecast one snapshot interval (6 h) to step ``t + 1``. The
analysis at step ``t`` uses the observations up to ``t`` only (a filter, not a smoother). The loop
is :func:`~slams_diffusers.baselines.cycling.cycle_ensemble_filter` with the model's ``run``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.qg import QGConfig, QGModel
from ..observations import Observation, check_observations
from ..validation import as_int
from .cycling import cycle_ensemble_filter

__all__ = ["case_generator", "cycle_ensemble", "forecast_ensemble", "qg_ensemble_filter"]

METHODS = ("letkf", "enkf")


def forecast_ensemble(
    model: QGModel,
    initial_pv: Tensor,
    lead_steps: int,
    perturbation_std: float,
    members: int = 32,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The prior PV ensemble ``(members, layers, ny, nx)``: ``initial_pv`` ``(layers, ny, nx)`` plus
    ``members`` perturbations of :meth:`QGModel.perturb` (``perturbation_std`` K) with their mean
    removed, each forecast ``lead_steps`` model steps."""
    members = as_int(members, "members", minimum=2)
    lead_steps = as_int(lead_steps, "lead_steps", minimum=0)
    if not isinstance(initial_pv, Tensor) or tuple(initial_pv.shape) != model.shape:
        raise ValueError(
            f"initial_pv: expected a tensor of shape {model.shape} (layers, ny, nx), got "
            f"{tuple(getattr(initial_pv, 'shape', ()))}"
        )
    if not bool(torch.isfinite(initial_pv).all()):
        raise ValueError("initial_pv: contains NaN or inf")
    if not (math.isfinite(float(perturbation_std)) and float(perturbation_std) >= 0):
        raise ValueError(
            f"perturbation_std: expected a finite number >= 0 (K), got {perturbation_std}"
        )
    centre = initial_pv.to(device=model.device, dtype=model.dtype)
    delta = model.perturb(centre.expand(members, *model.shape), float(perturbation_std), generator)
    delta = delta - centre
    q = centre + (delta - delta.mean(dim=0))
    return model.run(q, lead_steps) if lead_steps else q


def cycle_ensemble(
    model: QGModel,
    ensemble: Tensor,
    observations: Sequence[Observation],
    window: int,
    interval_steps: int,
    *,
    method: str = "letkf",
    inflation: float = 1.0,
    localization_radius: float | None = None,
    generator: torch.Generator | None = None,
    return_forecasts: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Analyse the PV ``ensemble`` ``(N, layers, ny, nx)`` at the window's first step and cycle it
    through ``window`` steps ``interval_steps`` model steps apart (the grid is doubly periodic).

    Args:
        model: the QG model (its ``temperature`` is the state → observed-state map).
        ensemble: prior PV members at step 0.
        observations: of the window, each at its ``time_index`` ``< window``.
        window: number of steps ``T``.
        interval_steps: model steps between window steps.
        method: ``"letkf"`` or ``"enkf"`` (stochastic).
        inflation, localization_radius: of the filter (radius in grid cells, ``None`` = none).
        generator: for the EnKF's observation perturbations.
        return_forecasts: also return the prior (forecast) members of every step.

    Returns:
        Analysis temperature members ``(N, T, levels, ny, nx)`` in K (and the forecasts, same
        shape, with ``return_forecasts``).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    window = as_int(window, "window", minimum=1)
    interval_steps = as_int(interval_steps, "interval_steps", minimum=1)
    if not isinstance(ensemble, Tensor) or ensemble.ndim != 4 or ensemble.shape[1:] != model.shape:
        raise ValueError(
            f"ensemble: expected PV members (N, {', '.join(map(str, model.shape))}), got "
            f"{tuple(getattr(ensemble, 'shape', ()))}"
        )
    observations = check_observations(observations, steps=window)
    result = cycle_ensemble_filter(
        model.run,
        ensemble.to(device=model.device, dtype=model.dtype),
        [[o for o in observations if o.time_index == step] for step in range(window)],
        interval_steps,
        method=method,
        inflation=inflation,
        localization_radius=localization_radius,
        periodic=True,
        operator=model.temperature,
        generator=generator,
        return_ensembles=True,
    )

    def temperature(members: Tensor) -> Tensor:  # (N, T, *PV) -> (N, T, levels, ny, nx)
        return torch.stack([model.temperature(q) for q in members.unbind(1)], dim=1)

    analysis = temperature(result.analyses)
    return (analysis, temperature(result.forecasts)) if return_forecasts else analysis


def case_generator(seed: int, trajectory: int, start: int) -> torch.Generator:
    """The generator :func:`qg_ensemble_filter` draws a case's perturbations from (first the
    initial perturbations, then the EnKF's observation perturbations), seeded by
    ``(seed, trajectory, start)``."""
    state = np.random.SeedSequence([int(seed), int(trajectory), int(start)]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def qg_ensemble_filter(
    dataset: Any,
    case: Any,
    observations: Sequence[Observation] | None = None,
    *,
    method: str = "letkf",
    members: int = 32,
    inflation: float = 1.0,
    localization_radius: float | None = None,
    seed: int = 0,
    return_forecasts: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """EnKF / LETKF ensembles for a testbed window (module docstring).

    Args:
        dataset: the testbed dataset the case comes from: its ``qg_config`` and ``interval_steps``
            attributes (:func:`~slams_diffusers.data.qg.simulate_dataset`).
        case: an :class:`~slams_diffusers.data.testbed.AssimilationCase` with ``initial_pv``,
            ``lead_hours`` and ``perturbation_std`` (as made by
            :func:`~slams_diffusers.data.testbed.assimilation_cases`).
        observations: to assimilate (default: the case's own).
        method: ``"letkf"`` or ``"enkf"`` (stochastic, perturbed observations).
        members: ensemble size ``N``.
        inflation: multiplicative covariance inflation ``ρ``.
        localization_radius: Gaspari–Cohn half-width in grid cells (``None`` = none).
        seed: with the case's trajectory and start, seeds the perturbations (the same case gives
            the same ensemble whatever the order of the calls).
        return_forecasts: also return the forecast members of every step.

    Returns:
        Analysis temperature members ``(N, T, levels, ny, nx)`` in K, float32 like the testbed
        (and the forecast members, same shape, with ``return_forecasts``).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    attrs = getattr(dataset, "attrs", {})
    if "qg_config" not in attrs or "interval_steps" not in attrs:
        raise ValueError(
            "dataset: expected a testbed dataset (simulate_dataset) with `qg_config` and "
            f"`interval_steps` attributes; found attributes {sorted(attrs)}"
        )
    missing = [
        name
        for name in ("initial_pv", "lead_hours", "perturbation_std")
        if getattr(case, name, None) is None
    ]
    if missing:
        raise ValueError(
            f"case: expected an AssimilationCase that records how its background was made "
            f"(assimilation_cases); missing {missing}"
        )
    config = QGConfig(**json.loads(attrs["qg_config"]))
    interval = int(attrs["interval_steps"])
    lead_steps = round(float(case.lead_hours) * 3600 / config.dt)
    model = QGModel(config)
    generator = case_generator(seed, case.trajectory, case.start)
    prior = forecast_ensemble(
        model, case.initial_pv, lead_steps, case.perturbation_std, members, generator
    )
    result = cycle_ensemble(
        model,
        prior,
        case.observations if observations is None else observations,
        case.truth.shape[0],
        interval,
        method=method,
        inflation=inflation,
        localization_radius=localization_radius,
        generator=generator,
        return_forecasts=return_forecasts,
    )
    if return_forecasts:
        return result[0].float(), result[1].float()
    return result.float()
