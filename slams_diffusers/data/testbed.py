"""Assimilation cases of the QG testbed: true windows of held-out trajectories, their forecast
backgrounds and the default multimodal observations, to score analyses against the truth.

A case at snapshot ``s`` of a trajectory: the truth ``x_{s+τ .. s+τ+T-1}`` (``T`` = ``window``), a
background forecast started ``τ`` (``lead_hours``) before the window from the true PV at ``s``
perturbed by ``perturbation_std`` K (:meth:`QGModel.perturb`) and run through the window, and
:func:`default_observations` of the truth at every step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..covariance import SpectralCovariance, estimate_background_covariance
from ..observations import Observation
from ..validation import periodic_axes
from .observing import satellite_channels, station_network
from .qg import QGConfig, QGModel

__all__ = [
    "AssimilationCase",
    "assimilation_cases",
    "background_error_std",
    "default_observations",
    "DEFAULT_SATELLITE_PEAKS",
    "validation_covariance",
]

#: Peak pressures [hPa] of the default satellite instrument's three channels.
DEFAULT_SATELLITE_PEAKS = (700.0, 500.0, 300.0)


@dataclass
class AssimilationCase:
    """One window to assimilate: ``truth`` and ``background`` ``(T, levels, *space)`` in K,
    the ``observations`` of the truth, and where the window starts. How the background was made,
    so that forecast ensembles can be made the same way: its forecast started ``lead_hours``
    before the window from ``initial_pv`` ``(layers, *space)``, the true PV perturbed by
    ``perturbation_std`` K."""

    truth: Tensor
    background: Tensor
    observations: list[Observation]
    trajectory: int
    start: int
    lead_hours: float | None = None
    perturbation_std: float | None = None
    initial_pv: Tensor | None = None


def default_observations(
    truth: Tensor,
    pressures: Sequence[float],
    generator: torch.Generator,
    *,
    stations: int = 64,
    layout: str = "uniform",
    station_noise: float = 0.5,
    missing_fraction: float = 0.1,
    satellite_peaks: Sequence[float] = DEFAULT_SATELLITE_PEAKS,
    footprint: int = 4,
    satellite_noise: float = 1.0,
    cloud_fraction: float = 0.3,
    periodic: bool | str | Sequence[bool] = True,
) -> list[Observation]:
    """The testbed's default multimodal observing system, at every step of ``truth``
    ``(T, levels, *space)``:

    - ``stations``: ``stations`` radiosondes at fixed random positions (``layout`` ``"uniform"`` or
      ``"clustered"``, the same at every step), all levels, ``station_noise`` K,
      ``missing_fraction`` of values missing;
    - ``satellite``: channels peaking at ``satellite_peaks`` hPa (width 0.5 in log-pressure),
      ``footprint``-cell footprints, ``satellite_noise`` K, ``cloud_fraction`` cloud cover
      (new clouds every step, correlation length 8 cells).

    ``periodic``: the axes where stations and clouds wrap
    (:func:`~slams_diffusers.validation.periodic_axes`; ``True``: every axis, the doubly periodic
    testbed).
    """
    spatial_dims = truth.ndim - 2
    wrap = periodic_axes(periodic, spatial_dims)
    first = station_network(truth[0], stations, layout=layout, periodic=wrap, generator=generator)
    out: list[Observation] = []
    for t in range(truth.shape[0]):
        out.append(
            station_network(
                truth[t],
                None,
                positions=first.positions,
                noise_std=station_noise,
                missing_fraction=missing_fraction,
                periodic=wrap,
                time_index=t,
                generator=generator,
            )
        )
        out.append(
            satellite_channels(
                truth[t],
                pressures,
                satellite_peaks,
                footprint,
                satellite_noise,
                cloud_fraction=cloud_fraction,
                periodic=wrap,
                time_index=t,
                generator=generator,
            )
        )
    return out


def assimilation_cases(
    dataset: xr.Dataset,
    split: str = "test",
    window: int = 5,
    cases_per_trajectory: int = 4,
    lead_hours: float = 24.0,
    perturbation_std: float = 1.5,
    seed: int = 0,
    observations: bool = True,
) -> list[AssimilationCase]:
    """Cases from the trajectories of ``split`` of a testbed dataset (which stores their PV ``q``,
    :func:`~slams_diffusers.data.qg.simulate_dataset`), ``cases_per_trajectory`` windows per
    trajectory at evenly spaced starts. Seeded: the same arguments give the same cases.

    Raises:
        ValueError: no PV for the split, or trajectories too short for the lead and window.
    """
    if "q" not in dataset or "split" not in dataset.coords:
        raise ValueError(
            "`dataset` must be a testbed dataset with PV `q` and a `split` coordinate "
            f"(simulate_dataset); found variables {list(dataset.data_vars)}"
        )
    chosen = dataset.isel(trajectory=np.flatnonzero(dataset["split"].values == split))
    if chosen.sizes["trajectory"] == 0:
        raise ValueError(f"`split`={split!r} has no trajectories in `dataset`")
    config = QGConfig(**json.loads(dataset.attrs["qg_config"]))
    interval = int(dataset.attrs["interval_steps"])
    lead = round(lead_hours * 3600 / config.dt)
    lead_snapshots = lead / interval
    if lead % interval:
        raise ValueError(
            f"`lead_hours`={lead_hours} must be a multiple of the snapshot interval "
            f"({interval * config.dt / 3600} h)"
        )
    steps = chosen.sizes["time"]
    last_start = steps - int(lead_snapshots) - window
    if last_start < 0:
        raise ValueError(
            f"trajectories of {steps} snapshots are too short for lead {lead_hours} h and "
            f"window {window}"
        )
    starts = np.unique(np.linspace(0, last_start, cases_per_trajectory).round().astype(int))
    model = QGModel(config)
    pressures = [float(p) for p in chosen["level"].values]
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for trajectory in range(chosen.sizes["trajectory"]):
        member = chosen.isel(trajectory=trajectory)
        q0 = torch.from_numpy(np.asarray(member["q"].isel(time=starts).values))
        if not torch.isfinite(q0).all():
            raise ValueError(f"`dataset` has no PV for the {split!r} trajectories")
        q = model.perturb(q0, perturbation_std, generator)
        # one continuous run (a restart would reset the AB3 history), PV every snapshot
        states = [q, *model.iterate(q, lead + (window - 1) * interval, every=interval)]
        frames = states[lead // interval : lead // interval + window]
        backgrounds = torch.stack([model.temperature(f) for f in frames], dim=1).float()
        for i, start in enumerate(starts):
            first = start + int(lead_snapshots)
            truth = torch.from_numpy(
                np.asarray(member["t"].isel(time=slice(first, first + window)).values)
            ).float()
            obs = default_observations(truth, pressures, generator) if observations else []
            cases.append(
                AssimilationCase(
                    truth,
                    backgrounds[i],
                    obs,
                    int(chosen["trajectory"][trajectory]),
                    int(first),
                    float(lead_hours),
                    float(perturbation_std),
                    q[i].clone(),
                )
            )
    return cases


def background_error_std(cases: Sequence[AssimilationCase]) -> Tensor:
    """Per-level rms error of the cases' backgrounds, ``(levels, 1, ..., 1)`` (broadcasts over
    space): the ``background_error_std`` to declare, estimated on cases not scored (e.g. the
    validation split)."""
    errors = torch.stack([c.background - c.truth for c in cases])  # (N, T, L, *space)
    levels = errors.shape[2]
    dims = [d for d in range(errors.ndim) if d != 2]
    rms = errors.double().pow(2).mean(dim=dims).sqrt().float()
    return rms.reshape(levels, *([1] * (errors.ndim - 3)))


def validation_covariance(
    dataset: xr.Dataset, window: int = 5, cases_per_trajectory: int = 2, **setup
) -> SpectralCovariance:
    """The testbed's ``B``: spectral, estimated from the (background, truth) pairs of the
    validation split (``cases_per_trajectory`` windows per trajectory, seed 1; ``setup`` as
    :func:`assimilation_cases`), never from the windows scored."""
    validation = assimilation_cases(
        dataset, "val", window, cases_per_trajectory, seed=1, observations=False, **setup
    )
    return estimate_background_covariance(
        torch.stack([c.background for c in validation]), torch.stack([c.truth for c in validation])
    )
