"""The quasi-geostrophic testbed: the simulator and the datasets made with it.

- :mod:`.model`: the multi-layer QG atmosphere on a doubly periodic β-plane (:class:`QGModel`,
  :class:`QGConfig`), its temperatures on pressure levels, and forecast backgrounds
  (:func:`background_observation`);
- :mod:`.dataset`: :func:`simulate_dataset` (trajectories as a reanalysis-like
  ``xarray.Dataset``) and :func:`write_dataset`.

The ``slams simulate qg`` command is :func:`slams_diffusers.cli.simulate_qg`; the names it had
here, ``add_simulate_arguments`` and ``simulate_main``, still resolve to it.
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
    "add_simulate_arguments",
    "simulate_main",
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

_COMMAND_LINE = {
    "add_simulate_arguments": "add_simulate_qg_arguments",
    "simulate_main": "simulate_qg",
}


def __getattr__(name: str):
    """The ``slams simulate qg`` command's former names here, resolved in :mod:`slams_diffusers.cli`
    on first use (the command line sits above the data layer, so it is not imported eagerly)."""
    if name in _COMMAND_LINE:
        from ... import cli

        return getattr(cli, _COMMAND_LINE[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
