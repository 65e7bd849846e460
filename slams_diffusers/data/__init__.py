"""Testbed and data layer: the QG and Lorenz-96 simulators, twins and observation simulators,
xarray / datasets I/O.

Submodules import heavy optional pieces (``datasets``, ``zarr``) only where used; import
what you need from ``slams_diffusers.data.datasets`` (which gathers ``.stores``, ``.splits``,
``.statistics``, ``.windows``, ``.writing`` and ``.hf``), ``.observing``, ``.qg``, ``.lorenz96``,
``.l96_twin`` or ``.twin``.
"""
