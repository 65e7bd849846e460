"""Testbed and data layer: the QG simulator, observation simulators, xarray / datasets I/O."""
