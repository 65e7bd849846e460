"""Stores in the canonical layout: netCDF / zarr / xarray -> one lazy ``DataArray``.

The canonical layout of a state store is one ``xarray.DataArray`` (temperature in K, or any
other field) with dims ``(trajectory?, time, level, *space)``, ``space`` a subset of ``(y, x)``
in that order:

- ``trajectory`` (optional): independent runs (the QG testbed); windows never cross it.
- ``split`` (optional coordinate, on ``trajectory`` or on ``time``): ``'train'`` / ``'val'`` /
  ``'test'`` labels (:mod:`slams_diffusers.data.splits`).
- ``time``: consecutive states of one trajectory.
- ``level``: pressure levels in hPa (converted from Pa when the coordinate says ``units='Pa'``,
  or has no units and values above 1100); a store without a level dim gets one of size 1.
- ``y``, ``x``: the grid; ``latitude``/``lat`` become ``y`` and ``longitude``/``lon`` become
  ``x`` (coordinate values and attributes kept), in ascending order.

:func:`open_store` makes any store canonical; :func:`level_pressures` reads its levels in hPa;
:func:`find_variable` picks the state variable of a dataset.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..observations import pressures_hpa

__all__ = [
    "CANONICAL_DIMS",
    "DIM_ALIASES",
    "TEMPERATURE_NAMES",
    "CELSIUS_UNITS",
    "find_variable",
    "level_pressures",
    "open_store",
]

CANONICAL_DIMS = ("trajectory", "time", "level", "y", "x")
"""Canonical dim order; ``trajectory``, ``y`` and ``x`` are optional."""

REQUIRED_DIMS = ("time",)

_PA_UNITS = ("Pa", "pa", "pascal", "Pascal", "pascals")
_HPA_UNITS = ("hPa", "hpa", "hectopascal", "hectopascals", "mbar", "millibar", "millibars", "mb")

CELSIUS_UNITS = ("degC", "deg_C", "C", "°C", "celsius", "Celsius", "degree_Celsius", "degrees_C")
"""``units`` attributes of temperatures in °C: refused where a state is read (the models work in
K)."""

TEMPERATURE_NAMES = ("t", "temperature", "air_temperature", "ta", "T")
"""Variable names tried, in order, when ``variable`` is not given (then ``standard_name``)."""

DIM_ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("valid_time",),
    "level": ("plev", "pressure_level", "isobaricInhPa"),
    "y": ("latitude", "lat"),
    "x": ("longitude", "lon"),
}
"""Canonical dim -> names it is mapped from (ERA5, WeatherBench2, ChaosBench, CMIP, GRIB)."""


def _is_zarr(path: str) -> bool:
    stripped = path.rstrip("/")
    return stripped.endswith(".zarr") or stripped.endswith(".zarr.zip") or os.path.isdir(path)


def _open_path(
    path: str | os.PathLike, chunks: Any, engine: str | None, **open_kwargs: Any
) -> xr.Dataset:
    """A lazy ``xr.Dataset`` from a zarr store (directory or ``*.zarr``) or a netCDF file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(
            f"`source`: no such file or folder {path!r}; expected a zarr or netCDF store."
        )
    if engine is None and _is_zarr(path):
        engine = "zarr"
    try:
        return xr.open_dataset(path, engine=engine, chunks=chunks, **open_kwargs)
    except NotImplementedError:
        if chunks != "auto":
            raise
        # dask cannot size "auto" chunks of variable-length strings (a `split` coordinate
        # written by `to_store`): take the store's own chunks instead
        return xr.open_dataset(path, engine=engine, chunks={}, **open_kwargs)


def find_variable(dataset: xr.Dataset, variable: str | None) -> xr.DataArray:
    """The state variable of ``dataset``: ``variable``, else the first temperature name, else
    the one with ``standard_name='air_temperature'``, else the only data variable with a time
    dim (any field: a store of one variable needs no name)."""
    found = list(map(str, dataset.data_vars))
    if variable is not None:
        if variable not in dataset.data_vars:
            raise ValueError(
                f"`variable`={variable!r} is not in the store; found variables {found}, "
                f"expected one of them."
            )
        return dataset[variable]
    for name in TEMPERATURE_NAMES:
        if name in dataset.data_vars:
            return dataset[name]
    for array in dataset.data_vars.values():
        if array.attrs.get("standard_name") == "air_temperature":
            return array
    times = ("time", *DIM_ALIASES["time"])
    fields = [a for a in dataset.data_vars.values() if any(d in a.dims for d in times)]
    if len(fields) == 1:
        return fields[0]
    raise ValueError(
        f"No variable to read in the store: found variables {found}; expected one named "
        f"{list(TEMPERATURE_NAMES)}, one with standard_name='air_temperature', or a single "
        "data variable with a time dim; pass `variable=` (training scripts: --variable NAME)."
    )


def _rename_dims(array: xr.DataArray) -> xr.DataArray:
    """Rename alias dims (``latitude`` -> ``y``, ``plev`` -> ``level``, ...) to canonical names."""
    renames: dict[Hashable, str] = {}
    for canonical, aliases in DIM_ALIASES.items():
        present = [d for d in (canonical, *aliases) if d in array.dims]
        if len(present) > 1:
            raise ValueError(
                f"`data` has several dims that map to {canonical!r}: found {present} in dims "
                f"{tuple(map(str, array.dims))}; expected exactly one of them."
            )
        if present and present[0] != canonical:
            if canonical in array.coords:  # a non-dim coordinate already holds the name
                array = array.drop_vars(canonical)
            renames[present[0]] = canonical
    return array.rename(renames) if renames else array


def _validate_dims(array: xr.DataArray, original_dims: tuple[Hashable, ...]) -> None:
    dims = set(array.dims)
    missing = [d for d in REQUIRED_DIMS if d not in dims]
    unknown = [str(d) for d in array.dims if d not in CANONICAL_DIMS]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unknown:
            problems.append(f"unexpected {unknown}")
        raise ValueError(
            f"`data` variable {array.name!r} has dims {tuple(map(str, original_dims))} "
            f"(after name mapping {tuple(map(str, array.dims))}): {'; '.join(problems)}. "
            f"Expected (trajectory?, time, level?, y?, x?), where latitude/lat -> y, "
            f"longitude/lon -> x, plev/pressure_level/isobaricInhPa -> level, valid_time -> time."
        )


def _load_coords(array: xr.DataArray) -> xr.DataArray:
    """Load dask-backed coordinates (e.g. ``split``): small, and needed for selections."""
    lazy = {key: coord.compute() for key, coord in array.coords.items() if coord.chunks}
    return array.assign_coords(lazy) if lazy else array


def _levels_to_hpa(array: xr.DataArray) -> xr.DataArray:
    """Convert a ``level`` coordinate in Pa to hPa (attributes kept, ``units='hPa'``): one
    whose units say Pa, or one without units whose values are all above 1100 (no pressure in
    hPa is), with a warning that it was read as Pa."""
    if "level" not in array.coords:
        return array
    level = array.coords["level"]
    units = str(level.attrs.get("units", "")).strip()
    values = np.asarray(level.values)
    if units not in _PA_UNITS:
        numeric = values.dtype.kind in "fiu" and values.size > 0
        if units or not numeric or not bool(np.all(values > 1100)):
            return array
        warnings.warn(
            f"the store's `level` coordinate {values.tolist()} has no units and values above "
            "1100: read as Pa and converted to hPa (set its `units` attribute to silence this).",
            UserWarning,
            stacklevel=3,
        )
    attrs = {**level.attrs, "units": "hPa"}
    return array.assign_coords(level=("level", values / 100.0, attrs))


def _add_level(array: xr.DataArray) -> xr.DataArray:
    """A store without a ``level`` dim (a 1-D or 2-D field) gets one of size 1, no coordinate."""
    if "level" in array.dims:
        return array
    return array.expand_dims("level")  # a scalar `level` coordinate becomes the dim's value


def level_pressures(data: xr.DataArray) -> list[float] | None:
    """The pressures [hPa] of the levels of a canonical array, or ``None`` if they are not
    pressure levels: a ``level`` coordinate in hPa / mbar (or Pa, converted by
    :func:`open_store`), or without units and with values in ``(0, 1100]`` that do not count
    ``0, 1, 2, ...`` or ``1, 2, 3, ...`` (model level numbers)."""
    if "level" not in data.coords or data.coords["level"].ndim != 1:
        return None
    level = data.coords["level"]
    values = np.asarray(level.values)
    if values.dtype.kind not in "fiu" or values.size == 0:
        return None
    units = str(level.attrs.get("units", "")).strip()
    if units in _PA_UNITS:
        values = values / 100.0
    elif units not in _HPA_UNITS and units != "":
        return None
    elif units == "" and values.size > 1 and values[0] in (0, 1):
        if np.array_equal(values, values[0] + np.arange(values.size)):
            return None  # level numbers, not pressures
    if not (np.all(np.isfinite(values)) and np.all(values > 0) and np.all(values <= 1100)):
        return None
    return [float(v) for v in values]


def _ascending_space(array: xr.DataArray) -> xr.DataArray:
    """Flip descending ``y`` / ``x`` coordinates (e.g. latitude 90..-90) to ascending order. The
    flipped coordinate is a fresh array (``torch.as_tensor`` refuses the reversed view)."""
    for dim in ("y", "x"):
        if dim in array.dims and dim in array.coords and array.sizes[dim] > 1:
            values = np.asarray(array.coords[dim].values)
            if values.ndim == 1 and np.all(np.diff(values) < 0):
                array = array.isel({dim: slice(None, None, -1)})
                flipped = array.coords[dim]
                array = array.assign_coords({dim: flipped.copy(data=values[::-1].copy())})
    return array


def _select_levels(array: xr.DataArray, levels: Sequence[float]) -> xr.DataArray:
    """Select ``levels`` [hPa, or Pa: see :func:`~slams_diffusers.observations.pressures_hpa`]
    in the given order; ``ValueError`` if any is missing."""
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence | np.ndarray):
        raise ValueError(f"`levels` must be a sequence of levels, got {levels!r}.")
    if level_pressures(array) is not None:
        expected = pressures_hpa(levels, "levels")
    else:
        expected = [float(v) for v in levels]
    if "level" not in array.coords:
        raise ValueError(
            f"`levels`={expected} cannot be checked: the store's `level` dim has no "
            "coordinate values; expected a `level` coordinate in hPa."
        )
    found = np.asarray(array.coords["level"].values, dtype=float)
    positions, missing = [], []
    for value in expected:
        hits = np.flatnonzero(np.isclose(found, value, rtol=1e-6, atol=1e-6))
        if hits.size == 0:
            missing.append(value)
        else:
            positions.append(int(hits[0]))
    if missing:
        raise ValueError(
            f"`levels` do not match the store: found levels {found.tolist()} hPa, expected "
            f"{expected} hPa; missing {missing}."
        )
    if positions == list(range(found.size)):
        return array
    return array.isel(level=positions)


def open_store(
    source: str | os.PathLike | xr.Dataset | xr.DataArray,
    variable: str | None = None,
    *,
    levels: Sequence[float] | None = None,
    chunks: Any = "auto",
    engine: str | None = None,
    **open_kwargs: Any,
) -> xr.DataArray:
    """Open a temperature store as a canonical, lazy ``DataArray``.

    Args:
        source: path of a zarr store (directory or ``*.zarr``) or a netCDF file, or an
            ``xr.Dataset`` / ``xr.DataArray`` (used as is: no re-chunking).
        variable: the variable to read; by default the first of :data:`TEMPERATURE_NAMES`
            present, else the first with ``standard_name='air_temperature'``.
        levels: levels the caller (e.g. a model) expects, pressures in hPa (or Pa, values
            above 1100); the store is subset / reordered to them, ``ValueError`` if any is
            missing.
        chunks: passed to ``xr.open_dataset`` for paths: ``"auto"`` / dict -> dask-backed
            (larger-than-memory stores), ``None`` -> xarray's lazy indexing without dask.
        engine: xarray backend; by default ``"zarr"`` for zarr paths, else xarray's guess.
        **open_kwargs: passed to ``xr.open_dataset``.

    Returns:
        ``DataArray`` with dims ``(trajectory?, time, level, *space)`` (``space`` a subset of
        ``(y, x)``), ``y`` / ``x`` ascending, ``level`` in hPa (a size-1 ``level`` dim without
        coordinate when the store has none); attributes and coordinates of the variable kept
        (renamed dims keep their coordinate values and attributes). Nothing is loaded.

    Raises:
        ValueError: missing variable, missing or unexpected dims, or levels not in the store;
            the message lists what was found and what is expected.
    """
    if isinstance(source, xr.DataArray):
        array = source
    elif isinstance(source, xr.Dataset):
        array = find_variable(source, variable)
    elif isinstance(source, str | os.PathLike):
        array = find_variable(_open_path(source, chunks, engine, **open_kwargs), variable)
    else:
        raise ValueError(
            f"`source` must be a path (zarr or netCDF), an xr.Dataset or an xr.DataArray, "
            f"got {type(source).__name__}."
        )
    original_dims = array.dims
    array = _load_coords(_rename_dims(array))
    _validate_dims(array, original_dims)
    array = _add_level(array)
    array = array.transpose(*[d for d in CANONICAL_DIMS if d in array.dims])
    array = _levels_to_hpa(_ascending_space(array))
    if levels is not None:
        array = _select_levels(array, levels)
    return array
