"""Data layer: xarray / zarr / netCDF / Hugging Face ``datasets`` <-> tensors, in one import.

The pieces live in one module per concept; this module gathers them under the path scripts and
notebooks use (``from slams_diffusers.data.datasets import open_store, WindowDataset``):

- :mod:`~slams_diffusers.data.stores`: :func:`open_store` (netCDF / zarr path or xarray object
  -> canonical, lazy ``DataArray``; the layout is described there), :func:`level_pressures`;
- :mod:`~slams_diffusers.data.splits`: :func:`add_split`, :func:`select_split` (train / val /
  test subsets);
- :mod:`~slams_diffusers.data.statistics`: :class:`LevelStatistics` (per-level mean / std for
  model configs);
- :mod:`~slams_diffusers.data.windows`: :class:`WindowDataset` (``(window, level, *space)``
  windows);
- :mod:`~slams_diffusers.data.writing`: :func:`to_xarray` (tensors -> ``DataArray`` on a
  template), :func:`to_store` (an array -> a zarr / netCDF store in that layout);
- :mod:`~slams_diffusers.data.hf`: :func:`to_hf_dataset` / :func:`from_hf_dataset`
  (``DataArray`` <-> ``datasets.Dataset``).
"""

from __future__ import annotations

from .hf import HF_METADATA_FORMAT, from_hf_dataset, to_hf_dataset
from .splits import GAP_LABEL, SPLIT_NAMES, add_split, select_split
from .statistics import LevelStatistics
from .stores import (
    CANONICAL_DIMS,
    CELSIUS_UNITS,
    DIM_ALIASES,
    TEMPERATURE_NAMES,
    level_pressures,
    open_store,
)
from .windows import WindowDataset
from .writing import to_store, to_xarray

__all__ = [
    "CANONICAL_DIMS",
    "CELSIUS_UNITS",
    "DIM_ALIASES",
    "GAP_LABEL",
    "HF_METADATA_FORMAT",
    "SPLIT_NAMES",
    "TEMPERATURE_NAMES",
    "LevelStatistics",
    "WindowDataset",
    "add_split",
    "from_hf_dataset",
    "level_pressures",
    "open_store",
    "select_split",
    "to_hf_dataset",
    "to_store",
    "to_xarray",
]
