"""Classical data-assimilation baselines on the package's observation and covariance objects."""

from .cycling import CyclingResult, cycle_ensemble_filter
from .enkf import letkf, stochastic_enkf
from .localization import gaspari_cohn, observation_positions
from .oi import optimal_interpolation
from .qg_ensemble import cycle_ensemble, forecast_ensemble, qg_ensemble_filter

__all__ = [
    "CyclingResult",
    "cycle_ensemble",
    "cycle_ensemble_filter",
    "forecast_ensemble",
    "gaspari_cohn",
    "letkf",
    "observation_positions",
    "optimal_interpolation",
    "qg_ensemble_filter",
    "stochastic_enkf",
]
