r"""Cycled assimilation with the user's forecast model (docs/method.md §Cycling).

:class:`SLAMSFilter` runs forecast → assimilate → forecast from the analysis. At cycle ``k`` the
forecast ensemble ``x_f^{(1…N)}`` (the analysis members of cycle ``k − 1`` advanced by the
forecast model) is the background: its mean with the flow-dependent covariance
``B = ρ (L ∘ P_f) + B_s`` (:func:`~slams_diffusers.ensemble.ensemble_covariance`). The pipeline
samples

.. math:: p(x_{k-ℓ:k} \mid x̄_f, y_{k-ℓ:k}) ∝ p(x_{k-ℓ:k})\, N(x̄_f; x_{k-ℓ}, B)
          \prod_{j=k-ℓ}^{k} p(y_j \mid x_j)

over a window of ``F = max(window, ℓ + 1)`` frames ending at ``k`` with the score model's prior
``p`` (frames before ``k − ℓ`` carry no information and are marginalised), where ``ℓ`` is the
``lag`` and ``x̄_f, B`` are those of the forecast *for cycle* ``k − ℓ``, made from the analysis of
cycle ``k − ℓ − 1``: it has seen ``y_{1:k−ℓ−1}`` only, so no observation counts twice.

- ``lag = 0`` (the filter): the background and ``y_k`` inform the last frame; its members are
  the analysis, forecast to the next cycle.
- ``lag = ℓ > 0`` (a fixed-lag smoother): frame ``k − ℓ`` is the smoothed analysis given
  ``y_{1:k}``; the last frame is still the filter analysis given ``y_{1:k}`` (the prior's dynamics
  carry the background ``ℓ`` cycles forward), and it is what the forecast model advances.

A forecast model that advances another state than the pipeline's (the QG model's PV, where the
pipeline assimilates temperature) comes with a :class:`~slams_diffusers.forecast.StateMap`: the
covariance and the analysis are of ``z = observe(x)``, and each analysis member ``z_a^{(i)}``
becomes the model state ``update(x_f^{(i)}, z_a^{(i)})``, the rest of the forecast member kept.

The learned prior is climatological, so the analysis also counts the climatology once besides the
background; in cycling, where ``B`` is far tighter than the climate's variance, this adds little
(docs/method.md §Cycling). Sampling is seeded per cycle and member, so a run stopped after ``k``
cycles and resumed from :meth:`SLAMSFilter.state_dict` is identical to one never stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput, logging
from torch import Tensor

from .ensemble import CovarianceOptions, ensemble_covariance
from .forecast import ForecastModel, StateMap, run_forecast
from .models.level_normalizer import LevelNormalizer
from .observations import Background, Observation, check_observations
from .seeding import member_generators
from .validation import as_int, finite_float

logger = logging.get_logger(__name__)

#: Cycles :class:`SLAMSFilter` lets its analysis spin up, and then averages departures over,
#: before it judges the analysis.
DEPARTURE_CYCLES = 10

__all__ = ["CycleOutput", "SLAMSFilter"]

#: Arguments of the pipeline that the filter sets itself.
_OWNED = (
    "background",
    "observations",
    "num_members",
    "num_frames",
    "generator",
    "output_type",
    "return_dict",
)


@dataclass
class CycleOutput(BaseOutput):
    """One cycle of :class:`SLAMSFilter`.

    Args:
        cycle: the cycle's index (from 0).
        analysis: the filter analysis members ``(members, *state)`` given ``y_{1:k}``.
        forecast: the forecast (background) members of this cycle ``(members, *state)``.
        smoothed: with ``lag = ℓ``, the members of cycle ``k − ℓ`` given ``y_{1:k}``; ``None``
            for the filter and the first ``ℓ`` cycles.
        quality_control: the pipeline's quality-control report of this cycle's window (the
            observations of cycles ``k − ℓ … k`` against the forecast of cycle ``k − ℓ``, frame
            ``time_index``); ``None`` with ``qc=False``.
    """

    cycle: int
    analysis: Tensor
    forecast: Tensor
    smoothed: Tensor | None = None
    quality_control: Any = None


class SLAMSFilter:
    """Cycled assimilation with a :class:`~slams_diffusers.SLAMSPipeline` and a forecast model
    (module docstring; docs/method.md §Cycling).

    Args:
        pipeline: the :class:`~slams_diffusers.SLAMSPipeline` whose prior is used.
        forecast_model: ``model(states (members, *state), steps) -> states``
            (:mod:`slams_diffusers.forecast`).
        initial_ensemble: the forecast members of cycle 0, ``(members, levels, *space)``,
            ``members >= 2`` (model states ``(members, *model_state)`` with a ``state_map``).
        steps_per_cycle: forecast-model steps between two cycles.
        lag: ``ℓ >= 0``; 0 is the filter.
        localization_radius, periodic: the Gaspari–Cohn half-width (cells) of ``L`` and the axes
            that wrap; ``None`` = no localisation.
        covariance_inflation: ``ρ`` multiplying the forecast covariance.
        static_covariance: ``B_s`` added to it (a covariance object), or ``None``.
        covariance_structure: ``"dense"``, ``"spectral"`` or ``None`` (dense for small states;
            :func:`~slams_diffusers.ensemble.ensemble_covariance`).
        state_map: how the model's state gives the pipeline's and back
            (:class:`~slams_diffusers.forecast.StateMap`); ``None``: they are the same.
        seed: seeds the sampling of every cycle and member.
        **pipeline_kwargs: passed to every pipeline call (``num_inference_steps``,
            ``likelihood_covariance``, ...). ``spread_inflation`` defaults to 1: the pipeline's
            own, fitted on single windows, widens every cycle's members and, carried by the
            forecast into ``B``, leaves the analysis to the prior (docs/method.md §Cycling);
            ``covariance_inflation`` is the cycling's.
    """

    def __init__(
        self,
        pipeline: Any,
        forecast_model: ForecastModel,
        initial_ensemble: Tensor,
        *,
        steps_per_cycle: int = 1,
        lag: int = 0,
        localization_radius: float | None = None,
        periodic: Any = True,
        covariance_inflation: float = 1.0,
        static_covariance: Any = None,
        covariance_structure: str | None = None,
        state_map: StateMap | None = None,
        seed: int = 0,
        **pipeline_kwargs: Any,
    ) -> None:
        if not callable(forecast_model):
            raise ValueError(
                "forecast_model: expected a callable (states, steps) -> states, got "
                f"{type(forecast_model).__name__}"
            )
        owned = sorted(set(pipeline_kwargs) & set(_OWNED))
        if owned:
            raise ValueError(
                f"pipeline_kwargs: {owned} are set by the filter each cycle; expected none of "
                f"{list(_OWNED)}"
            )
        if state_map is not None and not isinstance(state_map, StateMap):
            raise ValueError(
                f"state_map: expected a StateMap or None, got {type(state_map).__name__}"
            )
        if not isinstance(initial_ensemble, Tensor) or initial_ensemble.ndim < 2:
            raise ValueError(
                "initial_ensemble: expected a tensor (members, ...), got "
                f"{type(initial_ensemble).__name__} of shape "
                f"{tuple(getattr(initial_ensemble, 'shape', ()))}"
            )
        if not bool(torch.isfinite(initial_ensemble).all()):
            raise ValueError("initial_ensemble: contains NaN or inf")
        self.pipeline = pipeline
        self.state_map = state_map
        observed = self._observe(initial_ensemble)
        if (
            observed.ndim != 2 + pipeline.spatial_dims
            or observed.shape[0] < 2
            or observed.shape[1] != pipeline.levels
        ):
            what = "the states state_map.observe gives of it" if state_map else "a tensor"
            raise ValueError(
                f"initial_ensemble: expected {what} (members >= 2, levels={pipeline.levels}, "
                f"*space) with {pipeline.spatial_dims} spatial dims, got shape "
                f"{tuple(observed.shape)}"
            )
        self.forecast_model = forecast_model
        self.steps_per_cycle = as_int(steps_per_cycle, "steps_per_cycle", minimum=1)
        self.lag = as_int(lag, "lag", minimum=0)
        self.covariance_options = CovarianceOptions.build(  # checked and precomputed once
            tuple(observed.shape[1:]),
            localization_radius=localization_radius,
            periodic=periodic,
            inflation=finite_float(covariance_inflation, "covariance_inflation"),
            static=static_covariance,
            structure=covariance_structure,
        )
        self.seed = as_int(seed, "seed", minimum=0)
        self.pipeline_kwargs = {"spread_inflation": 1.0, **pipeline_kwargs}
        self.cycle = 0
        # the forecasts of cycles cycle - lag … cycle, the observations of cycle - lag … cycle - 1
        self._forecasts: list[Tensor] = [initial_ensemble.detach().clone()]
        self._observations: list[list[Observation]] = []
        self._departures = [0.0, 0]  # Σ d², count (see _check_departures)
        self._departure_cycles = 0
        self._departures_warned = False

    @property
    def num_members(self) -> int:
        return int(self._forecasts[-1].shape[0])

    @property
    def forecast(self) -> Tensor:
        """The forecast members of the next cycle ``(members, *state)`` (model states with a
        ``state_map``)."""
        return self._forecasts[-1]

    def _observe(self, model_states: Tensor) -> Tensor:
        """The pipeline's states of model states (checked: members kept, finite)."""
        if self.state_map is None:
            return model_states
        states = self.state_map.observe(model_states)
        if (
            not isinstance(states, Tensor)
            or states.ndim < 2
            or states.shape[0] != model_states.shape[0]
            or not bool(torch.isfinite(states).all())
        ):
            raise ValueError(
                f"state_map.observe: expected finite states (members={model_states.shape[0]}, "
                f"levels, *space), got {type(states).__name__} of shape "
                f"{tuple(getattr(states, 'shape', ()))}"
            )
        return states

    def _update(self, forecast: Tensor, analysis: Tensor) -> Tensor:
        """The model states of the analysis members (checked: the forecast's shape, finite)."""
        if self.state_map is None:
            return analysis
        states = self.state_map.update(forecast, analysis.to(forecast.device))
        if (
            not isinstance(states, Tensor)
            or states.shape != forecast.shape
            or not bool(torch.isfinite(states).all())
        ):
            raise ValueError(
                f"state_map.update: expected finite model states of shape "
                f"{tuple(forecast.shape)}, got {type(states).__name__} of shape "
                f"{tuple(getattr(states, 'shape', ()))}"
            )
        return states.to(forecast.dtype)

    # ------------------------------------------------------------------ cycling
    def step(self, observations: Observation | Sequence[Observation] = ()) -> CycleOutput:
        """Assimilate the observations of the next cycle (one time; their ``time_index`` is
        ignored) and forecast the analysis to the cycle after it."""
        space = self.covariance_options.state_shape[1:]
        observations = check_observations(observations, levels=self.pipeline.levels, space=space)
        if any(isinstance(o, Background) for o in observations):
            raise ValueError(
                "observations: a Background was given; the filter's background is its forecast "
                "ensemble (add a static B with `static_covariance=`)"
            )
        lagged = len(self._observations)  # min(lag, cycle)
        frames = max(self.pipeline.window, lagged + 1)
        first = frames - 1 - lagged  # the frame of cycle - lagged
        forecast = self._observe(self._forecasts[0])
        current = forecast if lagged == 0 else self._observe(self._forecasts[-1])
        covariance = ensemble_covariance(forecast, options=self.covariance_options)
        background = Background(
            values=forecast.mean(dim=0),
            noise_std=covariance.variance().sqrt().to(forecast),
            time_index=first,
            covariance=covariance,
        )
        window = [background]
        for offset, cycle_observations in enumerate([*self._observations, observations]):
            window += [
                dataclasses.replace(o, time_index=first + offset) for o in cycle_observations
            ]
        out = self.pipeline(
            observations=window,
            num_frames=frames,
            num_members=self.num_members,
            generator=member_generators(
                self.seed, self.cycle, self.num_members, self.pipeline.device
            ),
            output_type="pt",
            **self.pipeline_kwargs,
        )
        members = out.members.to(forecast)
        analysis = members[:, -1]
        self._check_departures(analysis.mean(dim=0), observations)
        smoothed = members[:, first] if self.lag and lagged == self.lag else None
        output = CycleOutput(
            cycle=self.cycle,
            analysis=analysis,
            forecast=current,
            smoothed=smoothed,
            quality_control=out.quality_control,
        )
        states = self._update(self._forecasts[-1], analysis)
        self._forecasts.append(run_forecast(self.forecast_model, states, self.steps_per_cycle))
        self._observations.append(observations)
        if len(self._observations) > self.lag:
            self._observations.pop(0)
        self._forecasts = self._forecasts[-(len(self._observations) + 1) :]
        self.cycle += 1
        return output

    def _check_departures(self, analysis: Tensor, observations: list[Observation]) -> None:
        """Warn (once) when the analysis is worse than the observations themselves.

        With the analysis mean ``x̄_a`` and an observation ``y = H x + e`` of error ``σ``, the
        departure ``d = (y − H x̄_a) / σ`` has ``E[d²] = 1 + e_a²``, ``e_a²`` the analysis'
        squared error in units of ``σ²`` (independent errors; Desroziers et al. 2005). The first
        ``DEPARTURE_CYCLES`` cycles are the spin-up from the initial ensemble and are not
        counted; over at least ``DEPARTURE_CYCLES`` cycles after them, ``mean d² > 2`` says
        ``e_a > σ``: the filter names the numbers, and for a latent prior its autoencoder's error
        on this analysis."""
        self._departure_cycles += 1
        if self._departure_cycles <= DEPARTURE_CYCLES:
            return
        for observation in observations:
            mask = observation.mask
            predicted = observation.operator(analysis.to(observation.values))
            d2 = (observation.values - predicted).square() / observation.noise_variance()
            self._departures[0] += float(d2[mask].sum())
            self._departures[1] += int(mask.sum())
        count = self._departures[1]
        judged = self._departure_cycles >= 2 * DEPARTURE_CYCLES
        if self._departures_warned or not judged or not count:
            return
        mean = self._departures[0] / count
        if mean <= 2.0:
            return
        self._departures_warned = True
        message = (
            f"SLAMSFilter, cycles {DEPARTURE_CYCLES}-{self.cycle} (after a spin-up of "
            f"{DEPARTURE_CYCLES}): the analysis mean departs from the "
            f"observations by {mean**0.5:.3g} of their error (RMS), so its own error is about "
            f"{(mean - 1) ** 0.5:.3g} of theirs: worse than the observations themselves"
        )
        if not isinstance(self.pipeline.autoencoder, LevelNormalizer):
            state = analysis.to(self.pipeline.device, self.pipeline.dtype)[None, None]
            with torch.no_grad():
                floor = self.pipeline.decode(self.pipeline.encode(state)) - state
            message += (
                f"; the autoencoder reconstructs this analysis to "
                f"{float(floor.double().square().mean().sqrt()):.3g} (RMS): cycle with a "
                "pixel-space prior (a LevelNormalizer pipeline)"
            )
        logger.warning(message + "; or widen covariance_inflation")

    def cycles(self, observations: Iterable[Sequence[Observation]]) -> Iterator[CycleOutput]:
        """``step`` over the observations of successive cycles, yielding each cycle's output."""
        for cycle_observations in observations:
            yield self.step(cycle_observations)

    # ------------------------------------------------------------------ stop and resume
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the cycle, the pending forecasts and the observations of the
        last ``lag`` cycles (``Observation`` objects; none for the filter, whose state is
        tensors and ints only). ``torch.save`` it."""
        return {
            "cycle": self.cycle,
            "seed": self.seed,
            "lag": self.lag,
            "forecasts": [f.clone() for f in self._forecasts],
            "observations": [list(o) for o in self._observations],
            "departures": [*self._departures, self._departure_cycles, self._departures_warned],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next :meth:`step` continues as the saved run did."""
        missing = {"cycle", "seed", "lag", "forecasts", "observations", "departures"} - set(state)
        if missing:
            raise ValueError(f"state: missing {sorted(missing)}; expected a SLAMSFilter state_dict")
        if int(state["lag"]) != self.lag:
            raise ValueError(f"state: saved with lag={state['lag']}, this filter has {self.lag}")
        forecasts = list(state["forecasts"])
        shape = tuple(self._forecasts[-1].shape)
        if not forecasts or any(tuple(f.shape) != shape for f in forecasts):
            raise ValueError(
                f"state: expected forecasts of shape {shape}, got "
                f"{[tuple(f.shape) for f in forecasts]}"
            )
        self.cycle = as_int(state["cycle"], "cycle", minimum=0)
        self.seed = as_int(state["seed"], "seed", minimum=0)
        self._forecasts = [f.clone() for f in forecasts]
        self._observations = [list(o) for o in state["observations"]]
        total, count, cycles, warned = state["departures"]
        self._departures = [float(total), int(count)]
        self._departure_cycles, self._departures_warned = int(cycles), bool(warned)
