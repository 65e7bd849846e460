"""The quasi-geostrophic testbed: the simulator and the datasets made with it.

- :mod:`.model`: the multi-layer QG atmosphere on a doubly periodic β-plane (:class:`QGModel`,
  :class:`QGConfig`), its temperatures on pressure levels, and forecast backgrounds
  (:func:`background_observation`);
- :mod:`.dataset`: :func:`simulate_dataset` (trajectories as a reanalysis-like
  ``xarray.Dataset``) and :func:`write_dataset`.

The ``slams simulate qg`` command is :func:`slams_diffusers.cli.simulate_qg`.
"""

from ..splits import split_counts
from .dataset import (
    DEFAULT_STEPS,
    DEFAULT_TRAJECTORIES,
    INTERVAL_HOURS,
    SPINUP_DAYS,
    simulate_dataset,
    write_dataset,
)
from .model import (
    CP_DRY,
    DAY,
    DEFAULT_LEVELS,
    GRAVITY,
    R_DRY,
    QGConfig,
    QGModel,
    QGState,
    background_observation,
    standard_atmosphere,
)

__all__ = [
    "QGConfig",
    "QGModel",
    "QGState",
    "standard_atmosphere",
    "background_observation",
    "simulate_dataset",
    "write_dataset",
    "split_counts",
    "CP_DRY",
    "DAY",
    "DEFAULT_LEVELS",
    "DEFAULT_STEPS",
    "DEFAULT_TRAJECTORIES",
    "GRAVITY",
    "INTERVAL_HOURS",
    "R_DRY",
    "SPINUP_DAYS",
]
