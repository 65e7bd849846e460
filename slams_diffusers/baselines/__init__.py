"""Classical data-assimilation baselines on the package's observation and covariance objects."""

from .oi import optimal_interpolation

__all__ = ["optimal_interpolation"]
