"""Files in, files out: the user's background, station and satellite files as the pipeline's inputs,
and the analysis as a netCDF file (what ``slams assimilate`` reads and writes).

- **Background** (netCDF or zarr): one temperature variable in K, dims ``(time, level, *space)``
  with the names :func:`~slams_diffusers.data.datasets.open_store` maps (``plev`` in Pa or hPa,
  ``latitude`` / ``lat``, ``longitude`` / ``lon``, ...); a ``trajectory`` dim is allowed when one
  is selected. :func:`read_background`.
- **Stations** (CSV or Parquet), one row per value, columns ``station`` (an id), ``time`` (values
  of the background's time coordinate), ``y, x`` (in the background's coordinate units) or
  ``lat, lon`` (degrees; ``x`` alone for a 1-D state), ``pressure`` (hPa, a level of the
  background) or ``level`` (0-based index of the background's levels), ``value`` (K) and
  ``error`` (K, > 0). NaN values are missing. :func:`read_stations`.
- **Satellite** (netCDF): ``radiance(time, channel, y, x)`` (K, on a grid coarser than the
  background's by an integer footprint; NaN = missing), ``weights(channel, level)`` (the
  channels' weighting functions over the background's levels), optional ``cloud_mask`` (true =
  cloudy; ``(time, y, x)`` or the radiance's dims) and ``error`` (K: a scalar, per channel, or the
  radiance's dims). :func:`read_satellite`.
- **Analysis** (netCDF): ``mean``, ``std`` and ``members`` with the background's coordinates,
  dim names and CF attributes. :func:`write_analysis`.

Everything is checked on reading: a bad file raises ``ValueError`` naming the argument (e.g.
``--stations``), the file, what was found and what is expected, before anything is computed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .data.stores import CELSIUS_UNITS, DIM_ALIASES, find_variable, open_store
from .observations import Observation, Profile, Satellite, Stations

__all__ = [
    "BackgroundFile",
    "align_truth",
    "check_input_file",
    "check_output_file",
    "open_dataset",
    "read_analysis",
    "cycle_times",
    "read_background",
    "read_initial_ensemble",
    "read_satellite",
    "read_stations",
    "satellite_dataset",
    "satellite_times",
    "split_windows",
    "station_table",
    "station_times",
    "window_observations",
    "write_analysis",
]

STATION_COLUMNS = ("station", "time", "value", "error")
"""Columns every station file has, besides the position and the vertical coordinate."""


# ----------------------------------------------------------------------------- files
def check_input_file(path: str | os.PathLike, argument: str) -> Path:
    """``path`` as a ``Path`` if it exists and is readable, else ``ValueError`` naming
    ``argument``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{argument}: no such file or folder {str(p)!r}")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{argument}: {str(p)!r} is not readable (check its permissions)")
    return p


def check_output_file(
    path: str | os.PathLike, argument: str, overwrite: bool, suffixes: Sequence[str]
) -> Path:
    """``path`` as a ``Path`` if it may be written: the right suffix, an existing folder, and no
    file there unless ``overwrite``."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise ValueError(
            f"{argument}: {str(p)!r} has suffix {p.suffix!r}; expected one of {list(suffixes)}"
        )
    if p.exists() and not overwrite:
        raise ValueError(f"{argument}: {str(p)!r} exists; pass --overwrite to replace it")
    if p.is_dir():
        raise ValueError(f"{argument}: {str(p)!r} is a folder; expected a file name")
    if not p.parent.is_dir():
        raise ValueError(f"{argument}: the folder {str(p.parent)!r} does not exist")
    return p


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def open_dataset(path: Path, argument: str) -> xr.Dataset:
    """A lazy dataset from a netCDF file or a zarr store, or a ``ValueError`` saying why not."""
    zarr = path.is_dir() or path.name.endswith((".zarr", ".zarr.zip"))
    try:
        return xr.open_dataset(path, engine="zarr" if zarr else None, chunks=None)
    except Exception as error:  # the backends raise many kinds; the user needs the gist
        raise ValueError(
            f"{argument}: cannot read {str(path)!r} as {'zarr' if zarr else 'netCDF'} "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error


# ------------------------------------------------------------------------ background
@dataclass
class BackgroundFile:
    """A background read by :func:`read_background`.

    Attributes:
        data: ``(time, level, *space)`` in K, loaded, canonical dim names (``y``, ``x``,
            ascending; ``level`` in hPa).
        dim_names: canonical dim -> the file's name (``{"y": "latitude", ...}``), to write the
            analysis with the file's names.
        attrs: the file's global attributes.
    """

    data: xr.DataArray
    dim_names: dict[str, str]
    attrs: dict[str, Any]

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return tuple(str(d) for d in self.data.dims[2:])

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(self.data.sizes[d] for d in self.spatial_dims)


def _original_dim_names(variable: xr.DataArray) -> dict[str, str]:
    names = {}
    for canonical, aliases in DIM_ALIASES.items():
        for alias in aliases:
            if alias in variable.dims:
                names[canonical] = alias
    return names


def _checked_levels_and_units(
    data: xr.DataArray, levels: Sequence[float] | None, where: str
) -> xr.DataArray:
    """The checks every state file gets (a canonical array, :func:`open_store`'s layout): the
    pipeline's ``levels`` selected, no °C units, strictly monotonic levels."""
    if levels is not None and "level" not in data.coords:
        if data.sizes["level"] != len(levels):
            raise ValueError(
                f"{where}: has {data.sizes['level']} level(s) and no level coordinate; expected "
                f"the pipeline's {len(levels)} levels {list(levels)} hPa"
            )
    elif levels is not None:
        try:
            data = open_store(data, levels=levels)
        except ValueError as error:
            raise ValueError(
                f"{where}: does not have the levels the pipeline was trained on: "
                f"{_first_line(error)}"
            ) from error
    units = str(data.attrs.get("units", "K")).strip()
    if units in CELSIUS_UNITS:
        raise ValueError(
            f"{where}: variable {data.name!r} is in {units!r}; expected K (add 273.15)"
        )
    if "level" in data.coords and data.sizes["level"] > 1:
        found = np.asarray(data.coords["level"].values, dtype=float)
        steps = np.diff(found)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise ValueError(
                f"{where}: levels {found.tolist()} are not strictly monotonic; expected each "
                "level once, in order"
            )
    return data


def _loaded_complete(data: xr.DataArray, where: str, expected: str) -> xr.DataArray:
    """``data`` as float32, loaded; ``ValueError`` naming the first NaN or inf."""
    data = data.astype(np.float32).load()
    bad = ~np.isfinite(data.values)
    if bad.any():
        first = dict(zip(map(str, data.dims), np.argwhere(bad)[0].tolist(), strict=True))
        raise ValueError(
            f"{where}: {int(bad.sum())} NaN or inf values (first at index {first}); expected "
            f"{expected}"
        )
    return data


def read_background(
    path: str | os.PathLike,
    *,
    variable: str | None = None,
    trajectory: int | None = None,
    levels: Sequence[float] | None = None,
    argument: str = "--background",
) -> BackgroundFile:
    """Read and check a background file (module docstring).

    Args:
        path: netCDF file or zarr store.
        variable: the temperature variable (default: guessed as by ``open_store``).
        trajectory: index along a ``trajectory`` dim (e.g. a ``slams simulate`` file); needed
            when there are several.
        levels: the levels [hPa] a model was trained on: the file's are selected and ordered
            as these (``ValueError`` if one is missing).
        argument: the name errors use for the file.

    Raises:
        ValueError: missing or unreadable file, wrong variable or dims, °C units, levels not
            strictly monotonic, NaN or inf values.
    """
    source = check_input_file(path, argument)
    dataset = open_dataset(source, argument)
    where = f"{argument} {str(source)!r}"
    try:
        data = open_store(dataset, variable)
    except ValueError as error:
        raise ValueError(f"{where}: {_first_line(error)}") from error
    dim_names = _original_dim_names(dataset[data.name] if data.name in dataset else data)
    if "trajectory" in data.dims:
        count = data.sizes["trajectory"]
        if trajectory is None and count == 1:
            trajectory = 0
        if trajectory is None:
            raise ValueError(
                f"{where}: has {count} trajectories; select one with --trajectory INDEX "
                f"(0 to {count - 1})"
            )
        if not 0 <= trajectory < count:
            raise ValueError(
                f"--trajectory: {trajectory} is out of range; {where} has trajectories 0 to "
                f"{count - 1}"
            )
        data = data.isel(trajectory=trajectory)
    elif trajectory is not None:
        raise ValueError(f"--trajectory: {where} has no trajectory dim (dims {data.dims})")
    if "level" not in data.dims or "time" not in data.dims:
        raise ValueError(
            f"{where}: variable {data.name!r} has dims {tuple(map(str, data.dims))}; expected "
            "(time, level, y?, x?) (a pipeline's state has levels)"
        )
    data = _checked_levels_and_units(data, levels, where)
    data = _loaded_complete(data, where, "a complete background")
    return BackgroundFile(data=data, dim_names=dim_names, attrs=dict(dataset.attrs))


# ------------------------------------------------------------------------ initial ensemble
#: The dims an initial ensemble's variable may have (the file's names, before mapping).
_ENSEMBLE_DIMS = {"member", *(n for c, a in DIM_ALIASES.items() for n in (c, *a))}


def read_initial_ensemble(
    path: str | os.PathLike,
    *,
    variable: str | None = None,
    levels: Sequence[float] | None = None,
    argument: str = "--initial",
) -> BackgroundFile:
    """Read and check the initial ensemble of a cycled assimilation (``slams cycle``): one
    variable with dims ``(member, level, *space)`` (a ``time`` dim of size 1, or a scalar
    ``time`` coordinate, gives its time), read and checked as :func:`read_background` reads a
    background (dim names, level coordinate in hPa, units, the pipeline's ``levels``, no NaN).

    Returns:
        a :class:`BackgroundFile` whose ``data`` is ``(member, level, *space)``, float32, loaded,
        with the scalar ``time`` coordinate when the file gives one.
    """
    source = check_input_file(path, argument)
    dataset = open_dataset(source, argument)
    where = f"{argument} {str(source)!r}"
    try:
        array = find_variable(dataset, variable)
    except ValueError as error:
        if variable is not None:
            raise ValueError(f"{where}: {_first_line(error)}") from error
        found = list(dataset.data_vars.values())
        ensembles = [a for a in found if "member" in a.dims]
        if len(ensembles) != 1 and len(found) != 1:
            raise ValueError(
                f"{where}: found variables {sorted(map(str, dataset.data_vars))}; expected one "
                "with a 'member' dim (or pass --variable NAME)"
            ) from error
        array = (ensembles or found)[0]
    dims = tuple(map(str, array.dims))
    unknown = [d for d in dims if d not in _ENSEMBLE_DIMS]
    if "member" not in dims or unknown:
        raise ValueError(
            f"{where}: variable {array.name!r} has dims {dims}; expected (member, level, y?, x?) "
            "(the members along a 'member' dim; latitude/lat, longitude/lon, plev ... as in a "
            "background)"
        )
    times = [d for d in ("time", *DIM_ALIASES["time"]) if d in dims]
    if times and array.sizes[times[0]] != 1:
        raise ValueError(
            f"{where}: has {array.sizes[times[0]]} times; expected the initial ensemble at one "
            "time (a time dim of size 1 or a scalar time coordinate)"
        )
    dim_names = _original_dim_names(array)
    if not times:
        array = array.expand_dims("time")  # a scalar time coordinate becomes the dim's value
    # open_store's canonical layout (trajectory?, time, level, *space) with the members as its
    # trajectories: the dims are mapped and checked exactly as a background's
    try:
        data = open_store(array.rename(member="trajectory"))
    except ValueError as error:
        raise ValueError(f"{where}: {_first_line(error)}") from error
    data = _checked_levels_and_units(data, levels, where)
    data = data.isel(time=0).rename(trajectory="member")
    if "time" in data.coords and data.coords["time"].ndim != 0:
        data = data.drop_vars("time")
    if data.sizes["member"] < 2:
        raise ValueError(
            f"{where}: has {data.sizes['member']} member; expected at least 2 (the forecast "
            "covariance is the members' spread)"
        )
    data = _loaded_complete(data, where, "complete initial members")
    return BackgroundFile(data=data, dim_names=dim_names, attrs=dict(dataset.attrs))


# ------------------------------------------------------------------------ cycle times
def _time_values(values: Any, where: str) -> np.ndarray:
    """Times as ``datetime64[ns]`` (dates, or strings that parse as dates) or ``float64``."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        out = values.astype("datetime64[ns]")
    elif values.dtype.kind in "fiu":
        out = values.astype(np.float64)
    else:
        import pandas as pd

        try:
            out = pd.to_datetime(values).to_numpy(dtype="datetime64[ns]")
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{where}: time values like {values[:1].tolist()} are neither numbers nor dates"
            ) from error
    if np.isnan(out).any():
        raise ValueError(f"{where}: has missing (NaN / NaT) times; expected a time on every row")
    return out


def station_times(path: str | os.PathLike, *, argument: str = "--stations") -> np.ndarray:
    """The distinct times of a station table's ``time`` column, sorted (``datetime64[ns]`` or
    ``float64``)."""
    source = check_input_file(path, argument)
    where = f"{argument} {str(source)!r}"
    table = _read_table(source, where)
    if "time" not in set(map(str, table.columns)):
        raise ValueError(f"{where}: no column 'time'; found {sorted(map(str, table.columns))}")
    if len(table) == 0:
        raise ValueError(f"{where}: has no rows")
    return np.unique(_time_values(table["time"].to_numpy(), where))


def satellite_times(path: str | os.PathLike, *, argument: str = "--satellite") -> np.ndarray:
    """The times of a satellite file's ``radiance``, sorted (``datetime64[ns]`` or ``float64``)."""
    source = check_input_file(path, argument)
    where = f"{argument} {str(source)!r}"
    dataset = open_dataset(source, argument)
    if "radiance" not in dataset.data_vars or "time" not in dataset["radiance"].coords:
        raise ValueError(
            f"{where}: no variable 'radiance' with a time coordinate; found "
            f"{sorted(map(str, dataset.data_vars))}"
        )
    return np.unique(_time_values(dataset["radiance"].coords["time"].values, where))


def cycle_times(
    sources: Mapping[str, np.ndarray], start: Any = None, *, start_where: str = "--initial"
) -> tuple[np.ndarray, Any]:
    """The cycles of a cycled assimilation from the observation times: a regular grid
    ``t0 + k Δ`` from ``start`` (the initial ensemble's time; default the first observation
    time) to the last observation time, ``Δ`` the smallest gap between the times; cycles between
    observed times have no observations.

    Args:
        sources: ``{where: times}``, the times of each observation file (``where`` names the
            file in errors), from :func:`station_times` / :func:`satellite_times`.
        start: the time of the initial ensemble, or ``None``.
        start_where: names ``start`` in errors.

    Returns:
        ``(times, interval)``: the cycle times (``datetime64[ns]`` or ``float64``; an observed
        time is kept exactly), ``Δ`` (``None`` for a single cycle).

    Raises:
        ValueError: dates mixed with numbers, an observation before ``start``, or an observation
        time that is not a whole number of intervals after ``t0``.
    """
    named = {where: _time_values(times, where) for where, times in sources.items()}
    if start is not None:
        named = {start_where: _time_values(np.atleast_1d(start), start_where), **named}
    kinds = {where: times.dtype.kind for where, times in named.items()}
    if len(set(kinds.values())) > 1:
        found = ", ".join(f"{w}: {'dates' if k == 'M' else 'numbers'}" for w, k in kinds.items())
        raise ValueError(f"times: dates mixed with numbers ({found}); expected one kind")
    dates = next(iter(kinds.values())) == "M"
    as_number = (lambda t: t.view("int64")) if dates else (lambda t: t)
    values = {where: as_number(times) for where, times in named.items()}
    everything = np.unique(np.concatenate(list(values.values())))
    t0 = values[start_where][0] if start is not None else everything[0]
    for where, times in values.items():
        if (times < t0).any():
            first = named[where][np.argmax(times < t0)]
            raise ValueError(
                f"{where}: time {first} is before the initial ensemble's time "
                f"{named[start_where][0]}; expected observations at or after it"
            )
    tolerance = 0 if dates else 1e-9 * max(1.0, float(np.abs(everything).max()))
    distinct = everything[np.concatenate([[True], np.diff(everything) > tolerance])]
    if distinct.size == 1:
        return named[start_where if start is not None else next(iter(named))][:1], None
    interval = np.diff(distinct).min()
    grid = np.rint((distinct - t0) / interval).astype(np.int64)
    cycles = int(grid.max()) + 1
    times = t0 + np.arange(cycles) * interval
    if dates:
        times = times.astype(np.int64)
    for where, observed in values.items():
        steps = (observed - t0) / interval
        off = np.abs(steps - np.rint(steps)) > (0 if dates else 1e-6)
        if off.any():
            shown = np.timedelta64(int(interval), "ns") if dates else interval
            raise ValueError(
                f"{where}: time {named[where][np.argmax(off)]} is not a whole number of cycle "
                f"intervals ({shown}, the smallest gap between the times) after the first cycle "
                f"{(t0.astype('datetime64[ns]') if dates else t0)}; expected evenly spaced cycles"
            )
        times[np.rint(steps).astype(np.int64)] = observed
    if dates:
        return times.astype("datetime64[ns]"), np.timedelta64(int(interval), "ns")
    return times.astype(np.float64), float(interval)


# ------------------------------------------------------------------------ coordinates
def _time_indices(times: Any, background: xr.DataArray, where: str) -> np.ndarray:
    """Index of each of ``times`` in the background's ``time`` coordinate."""
    axis = background.coords["time"].values if "time" in background.coords else None
    if axis is None:
        raise ValueError(f"{where}: the background has no time coordinate to match times to")
    times = np.asarray(times)
    if axis.dtype.kind == "M":
        import pandas as pd

        try:
            times = pd.to_datetime(times).to_numpy(dtype=axis.dtype)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{where}: time values like {times[:1].tolist()} are not dates; expected values "
                f"of the background's time coordinate (e.g. {str(axis[0])})"
            ) from error
        lookup = {int(v): i for i, v in enumerate(axis.astype("datetime64[ns]").view("int64"))}
        keys = times.astype("datetime64[ns]").view("int64")
        index = np.array([lookup.get(int(k), -1) for k in keys], dtype=int)
    else:
        try:
            values = times.astype(float)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{where}: time values like {times[:1].tolist()} are not numbers; expected values "
                f"of the background's time coordinate {axis[:3].tolist()}..."
            ) from error
        axis = axis.astype(float)
        close = np.isclose(values[:, None], axis[None, :], rtol=1e-9, atol=1e-9)
        index = np.where(close.any(1), close.argmax(1), -1)
    if (index < 0).any():
        missing = np.unique(np.asarray(times)[index < 0])[:5]
        raise ValueError(
            f"{where}: times {[str(t) for t in missing]} are not in the background's time "
            f"coordinate ({str(axis[0])} to {str(axis[-1])}, {len(axis)} values)"
        )
    return index


def _level_indices_from_pressures(pressures: Any, background: xr.DataArray, where: str):
    levels = np.asarray(background.coords["level"].values, dtype=float)
    pressures = np.asarray(pressures, dtype=float)
    close = np.isclose(pressures[:, None], levels[None, :], rtol=1e-6)
    index = np.where(close.any(1), close.argmax(1), -1)
    if (index < 0).any():
        unknown = np.unique(pressures[index < 0])
        hint = " (in Pa? expected hPa)" if np.all(unknown > 1100) else ""
        raise ValueError(
            f"{where}: pressures {unknown.tolist()[:5]}{hint} are not levels of the background; "
            f"expected some of {levels.tolist()} hPa"
        )
    return index


def _degrees(coord: xr.DataArray, original: str | None) -> bool:
    units = str(coord.attrs.get("units", "")).lower()
    return "degree" in units or (original or "") in ("latitude", "lat", "longitude", "lon")


def _fractional_index(
    values: np.ndarray, axis: np.ndarray, periodic: bool, name: str, where: str, ids: np.ndarray
) -> np.ndarray:
    """Grid index of coordinate ``values`` along ``axis`` (linear between points; on a periodic
    axis, uniform spacing and wrap-around)."""
    n = axis.size
    if n == 1:
        return np.zeros_like(values)
    if periodic:
        step = (axis[-1] - axis[0]) / (n - 1)
        if not np.allclose(np.diff(axis), step, rtol=1e-4):
            raise ValueError(
                f"{where}: the background's {name} coordinate is not evenly spaced; a periodic "
                "axis needs even spacing"
            )
        return np.mod((values - axis[0]) / step, n)
    index = np.interp(values, axis, np.arange(n, dtype=float), left=np.nan, right=np.nan)
    outside = np.isnan(index)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{where}: station {ids[i]!r} at {name} = {values[i]:g} lies outside the background's "
            f"grid ({name} from {axis[0]:g} to {axis[-1]:g}); {int(outside.sum())} rows outside"
        )
    return index


def _positions(
    table: Any,
    background: BackgroundFile,
    periodic: Sequence[bool],
    where: str,
) -> np.ndarray:
    """Fractional grid indices ``(rows, spatial_dims)`` of the rows' ``y, x`` or ``lat, lon``."""
    dims = background.spatial_dims
    if not dims:  # a column: nothing to locate
        return np.zeros((len(table), 0))
    columns = set(table.columns)
    by_degrees = {"y": "lat", "x": "lon"}
    ids = table["station"].to_numpy()
    out = []
    for axis_index, dim in enumerate(dims):
        coord = background.data.coords.get(dim)
        axis = (
            np.asarray(coord.values, dtype=float)
            if coord is not None
            else np.arange(background.data.sizes[dim], dtype=float)
        )
        if dim in columns:
            values = table[dim].to_numpy(dtype=float)
        elif by_degrees[dim] in columns:
            if coord is None or not _degrees(coord, background.dim_names.get(dim)):
                raise ValueError(
                    f"{where}: column {by_degrees[dim]!r} is in degrees, but the background's "
                    f"{dim} coordinate is not (units {coord.attrs.get('units') if coord is not None else None!r}); "  # noqa: E501
                    f"give column {dim!r} in the background's units"
                )
            values = table[by_degrees[dim]].to_numpy(dtype=float)
            if dim == "x" and periodic[axis_index]:
                values = axis[0] + np.mod(values - axis[0], 360.0)
        else:
            raise ValueError(
                f"{where}: no column {dim!r} (or {by_degrees[dim]!r} in degrees); found columns "
                f"{sorted(columns)}"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: column {dim!r} has NaN or inf positions")
        out.append(_fractional_index(values, axis, periodic[axis_index], dim, where, ids))
    return np.stack(out, axis=1)


# ------------------------------------------------------------------------ stations
def _read_table(path: Path, where: str) -> Any:
    import pandas as pd

    suffixes = path.suffixes
    try:
        if suffixes[-1:] in ([".parquet"], [".pq"]):
            return pd.read_parquet(path)
        if ".csv" in suffixes:
            return pd.read_csv(path)
    except ImportError as error:
        raise ValueError(
            f"{where}: reading Parquet needs pyarrow (pip install pyarrow): {_first_line(error)}"
        ) from error
    except Exception as error:
        raise ValueError(
            f"{where}: cannot read the table ({type(error).__name__}: {_first_line(error)})"
        ) from error
    raise ValueError(f"{where}: unknown table format {path.suffix!r}; expected .csv or .parquet")


def read_stations(
    path: str | os.PathLike,
    background: BackgroundFile,
    *,
    periodic: Sequence[bool] | None = None,
    argument: str = "--stations",
) -> list[Stations]:
    """Station profiles from a CSV / Parquet table (module docstring), one
    :class:`~slams_diffusers.observations.Stations` per background time that has rows, its
    ``time_index`` the index in the background's time axis.

    Args:
        path: the table.
        background: from :func:`read_background`; gives times, levels and the grid.
        periodic: one bool per spatial axis of the background: whether it wraps (default none).
        argument: the name errors use for the file.
    """
    source = check_input_file(path, argument)
    where = f"{argument} {str(source)!r}"
    table = _read_table(source, where)
    columns = set(map(str, table.columns))
    missing = [c for c in STATION_COLUMNS if c not in columns]
    if "pressure" not in columns and "level" not in columns:
        missing.append("pressure or level")
    if missing:
        raise ValueError(f"{where}: missing columns {missing}; found {sorted(columns)}")
    if len(table) == 0:
        raise ValueError(f"{where}: has no rows")
    data = background.data
    levels = data.sizes["level"]
    grid = background.grid_shape
    periodic = tuple(periodic) if periodic is not None else (False,) * len(grid)
    times = _time_indices(table["time"].to_numpy(), data, where)
    value = table["value"].to_numpy(dtype=float)
    error = table["error"].to_numpy(dtype=float)
    ids = table["station"].astype(str).to_numpy()
    if np.isinf(value).any():
        raise ValueError(f"{where}: column 'value' has inf; expected K values, NaN = missing")
    present = ~np.isnan(value)
    bad = present & ~(np.isfinite(error) & (error > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: column 'error' is {error[i]} for station {ids[i]!r} at time "
            f"{table['time'].iloc[i]}; expected a positive error in K for every value"
        )
    if not grid and "pressure" in columns and "level" in data.coords:
        pressure = table["pressure"].to_numpy(dtype=float)
        return _column_profiles(pressure, value, error, times, data, where)
    if "pressure" in columns:
        if "level" not in data.coords:
            raise ValueError(
                f"{where}: column 'pressure' needs the background's level coordinate (hPa); "
                "give column 'level' (0-based index) instead"
            )
        level = _level_indices_from_pressures(table["pressure"].to_numpy(), data, where)
    else:
        level = table["level"].to_numpy()
        if (
            not np.issubdtype(level.dtype, np.integer)
            or (level < 0).any()
            or (level >= levels).any()
        ):
            raise ValueError(
                f"{where}: column 'level' must hold 0-based level indices 0 to {levels - 1}; found "
                f"{np.unique(level)[:5].tolist()}"
            )
    positions = _positions(table, background, periodic, where)
    repeated = table.assign(_t=times, _l=level).duplicated(["station", "_t", "_l"], keep=False)
    if repeated.any():
        i = int(np.flatnonzero(repeated.to_numpy())[0])
        raise ValueError(
            f"{where}: station {ids[i]!r} has {int(repeated.sum())} rows for time "
            f"{table['time'].iloc[i]} and level index {level[i]}; expected one"
        )
    out = []
    for t in np.unique(times):
        rows = np.flatnonzero(times == t)
        names, first = np.unique(ids[rows], return_index=True)
        names = names[np.argsort(first)]
        row_station = {name: i for i, name in enumerate(names)}
        station = np.array([row_station[s] for s in ids[rows]])
        spots = np.zeros((len(names), len(grid)))
        spots[station] = positions[rows]
        if not np.allclose(spots[station], positions[rows]):
            raise ValueError(
                f"{where}: a station has different positions at one time (time index {t}); "
                "expected one position per station and time"
            )
        used = np.unique(level[rows])
        column = np.searchsorted(used, level[rows])
        values = np.full((len(names), len(used)), np.nan)
        noise = np.ones((len(names), len(used)))
        values[station, column] = value[rows]
        noise[station, column] = np.where(present[rows], error[rows], 1.0)
        out.append(
            Stations(
                values=torch.from_numpy(values).float(),
                positions=torch.from_numpy(spots),
                levels=used.tolist(),
                num_levels=levels,
                grid_shape=grid,
                noise_std=torch.from_numpy(noise).float(),
                periodic=periodic,
                time_index=int(t),
            )
        )
    return out


def _column_profiles(
    pressure: np.ndarray,
    value: np.ndarray,
    error: np.ndarray,
    times: np.ndarray,
    data: xr.DataArray,
    where: str,
) -> list[Observation]:
    """A column background's station rows as one :class:`~slams_diffusers.observations.Profile`
    per time: reports at any pressure (a surface report, a sonde's own levels), linear in
    ``ln p`` between the background's levels (the rows' values and errors already checked)."""
    levels = np.asarray(data.coords["level"].values, dtype=float).tolist()
    out = []
    for t in np.unique(times):
        rows = np.flatnonzero(times == t)
        try:
            profile = Profile(
                values=torch.from_numpy(value[rows]).float(),
                pressures=pressure[rows].tolist(),
                model_pressures=levels,
                noise_std=torch.from_numpy(np.where(np.isnan(value[rows]), 1.0, error[rows])),
                modality="stations",
                time_index=int(t),
            )
        except ValueError as error_:
            raise ValueError(f"{where}: {_first_line(error_)}") from error_
        out.append(profile)
    return out


# ------------------------------------------------------------------------ satellite
def _canonical_space(dataset: xr.Dataset) -> xr.Dataset:
    renames = {}
    for canonical in ("y", "x"):
        for alias in DIM_ALIASES[canonical]:
            if alias in dataset.dims and canonical not in dataset.dims:
                renames[alias] = canonical
    dataset = dataset.rename(renames) if renames else dataset
    for dim in ("y", "x"):
        if dim in dataset.coords and dataset.sizes[dim] > 1:
            values = np.asarray(dataset.coords[dim].values, dtype=float)
            if np.all(np.diff(values) < 0):
                dataset = dataset.isel({dim: slice(None, None, -1)})
    return dataset


def read_satellite(
    path: str | os.PathLike,
    background: BackgroundFile,
    *,
    error: float | None = None,
    argument: str = "--satellite",
) -> list[Satellite]:
    """Satellite channels from a netCDF file (module docstring), one
    :class:`~slams_diffusers.observations.Satellite` per time of the file, its ``time_index`` the
    index in the background's time axis.

    Args:
        path: the file.
        background: from :func:`read_background`.
        error: σ_y in K when the file has no ``error`` variable.
        argument: the name errors use for the file.
    """
    source = check_input_file(path, argument)
    where = f"{argument} {str(source)!r}"
    dataset = _canonical_space(open_dataset(source, argument))
    for name in ("radiance", "weights"):
        if name not in dataset.data_vars:
            raise ValueError(
                f"{where}: no variable {name!r}; found {sorted(map(str, dataset.data_vars))}"
            )
    space = background.spatial_dims
    radiance = dataset["radiance"]
    expected = ("time", "channel", *space)
    if set(radiance.dims) != set(expected):
        raise ValueError(f"{where}: radiance has dims {radiance.dims}; expected {expected}")
    radiance = radiance.transpose(*expected)
    weights = dataset["weights"]
    if set(weights.dims) != {"channel", "level"}:
        raise ValueError(f"{where}: weights has dims {weights.dims}; expected ('channel', 'level')")
    weights = weights.transpose("channel", "level")
    data = background.data
    if "level" in weights.coords and "level" in data.coords:
        index = _level_indices_from_pressures(weights.coords["level"].values, data, where)
        if sorted(index.tolist()) != list(range(data.sizes["level"])):
            raise ValueError(
                f"{where}: weights are over levels {weights.coords['level'].values.tolist()}; "
                f"expected the background's levels {data.coords['level'].values.tolist()}"
            )
        weights = weights.isel(level=np.argsort(index))
    elif weights.sizes["level"] != data.sizes["level"]:
        raise ValueError(
            f"{where}: weights has {weights.sizes['level']} levels; expected the background's "
            f"{data.sizes['level']}"
        )
    grid = background.grid_shape
    coarse = tuple(radiance.sizes[d] for d in space)
    ratios = {n // m for n, m in zip(grid, coarse, strict=True) if m and n % m == 0} or {1}
    if len(ratios) != 1 or any(m == 0 or n % m for n, m in zip(grid, coarse, strict=True)):
        raise ValueError(
            f"{where}: radiance grid {coarse} is not the background's grid {grid} coarsened by "
            "one integer footprint"
        )
    footprint = ratios.pop()  # 1 for a column
    times = _time_indices(radiance.coords["time"].values, data, where)
    values = np.asarray(radiance.values, dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError(f"{where}: radiance has inf; expected K values, NaN = missing")
    if "error" in dataset.data_vars:
        noise = dataset["error"]
        extra = [d for d in noise.dims if d not in expected]
        if extra:
            raise ValueError(
                f"{where}: error has dims {noise.dims}; expected a subset of {expected}"
            )
        noise = np.asarray(noise.broadcast_like(radiance).transpose(*expected).values, dtype=float)
    elif error is not None:
        noise = np.full(values.shape, float(error))
    else:
        raise ValueError(f"{where}: no variable 'error'; add one (K) or pass --satellite-error")
    observed = ~np.isnan(values)
    if not (np.isfinite(noise[observed]) & (noise[observed] > 0)).all():
        raise ValueError(f"{where}: error must be finite and > 0 K where radiance is observed")
    clouds = None
    if "cloud_mask" in dataset.data_vars:
        cloud = dataset["cloud_mask"]
        if set(cloud.dims) not in ({"time", *space}, set(expected)):
            raise ValueError(
                f"{where}: cloud_mask has dims {cloud.dims}; expected ('time', {', '.join(map(repr, space))}) "  # noqa: E501
                f"or {expected}"
            )
        clouds = np.asarray(cloud.broadcast_like(radiance).transpose(*expected).values) != 0
    w = torch.from_numpy(np.asarray(weights.values, dtype=np.float64)).float()
    out = []
    for i, t in enumerate(times):
        out.append(
            Satellite(
                values=torch.from_numpy(values[i]).float(),
                weights=w,
                footprint=footprint,
                grid_shape=grid,
                noise_std=torch.from_numpy(np.where(observed[i], noise[i], 1.0)).float(),
                cloud_mask=None if clouds is None else torch.from_numpy(clouds[i]),
                time_index=int(t),
            )
        )
    return out


# ------------------------------------------------------------------------ analysis files
def read_analysis(path: str | os.PathLike, *, argument: str = "--analysis") -> BackgroundFile:
    """An analysis file (:func:`write_analysis`), loaded, with canonical dim names: ``data`` is
    the ``members`` ``(member, time, level, *space)``; ``dim_names`` maps back to the file's."""
    source = check_input_file(path, argument)
    where = f"{argument} {str(source)!r}"
    dataset = open_dataset(source, argument)
    if "members" not in dataset.data_vars:
        raise ValueError(
            f"{where}: no variable 'members'; found {sorted(map(str, dataset.data_vars))}, "
            "expected a file written by slams assimilate"
        )
    dim_names = _original_dim_names(dataset["members"])
    renames = {alias: canonical for canonical, alias in dim_names.items()}
    members = dataset["members"].rename(renames)
    space = [d for d in ("y", "x") if d in members.dims]
    expected = ("member", "time", "level", *space)
    if members.dims != expected:
        raise ValueError(f"{where}: members has dims {members.dims}; expected {expected}")
    members = _canonical_space(members.to_dataset(name="members"))["members"]
    return BackgroundFile(data=members.load(), dim_names=dim_names, attrs=dict(dataset.attrs))


def align_truth(truth: BackgroundFile, analysis: xr.DataArray, *, argument: str) -> xr.DataArray:
    """The states of ``truth`` at the times of ``analysis`` ``(..., time, level, *space)``;
    ``ValueError`` unless levels and grid are the analysis's."""
    where = f"{argument}"
    data = truth.data
    index = _time_indices(analysis.coords["time"].values, data, where)
    data = data.isel(time=index)
    for dim in analysis.dims[-1 - len(truth.spatial_dims) :]:
        if dim not in data.dims or data.sizes[dim] != analysis.sizes[dim]:
            raise ValueError(
                f"{where}: has {dict(data.sizes)}; expected the analysis's {dict(analysis.sizes)}"
            )
        if dim in data.coords and dim in analysis.coords:
            found = np.asarray(data.coords[dim].values, dtype=float)
            wanted = np.asarray(analysis.coords[dim].values, dtype=float)
            if not np.allclose(found, wanted, rtol=1e-6, atol=1e-9):
                raise ValueError(
                    f"{where}: its {dim} coordinate {found[:4].tolist()}... differs from the "
                    f"analysis's {wanted[:4].tolist()}..."
                )
    return data


# ------------------------------------------------------------------------ windows
def split_windows(times: int, length: int) -> list[slice]:
    """Consecutive analysis windows of ``length`` steps over ``times`` steps; ``ValueError`` if
    they do not tile the time axis."""
    if length < 1 or times % length:
        raise ValueError(
            f"--window-length: the background has {times} times, not a multiple of {length}; "
            "expected whole windows"
        )
    return [slice(start, start + length) for start in range(0, times, length)]


def window_observations(observations: Sequence[Observation], window: slice) -> list[Observation]:
    """The observations whose ``time_index`` falls in ``window``, indexed within it."""
    return [
        dataclasses.replace(o, time_index=o.time_index - window.start)
        for o in observations
        if window.start <= o.time_index < window.stop
    ]


# ------------------------------------------------------------------------ output
def write_analysis(
    analysis: xr.Dataset,
    path: str | os.PathLike,
    *,
    background: BackgroundFile,
    attrs: Mapping[str, Any] = (),
    overwrite: bool = False,
) -> Path:
    """Write an analysis (``mean``, ``std``, ``members``) to netCDF with the background's dim
    names and global attributes (``attrs`` added), replacing ``path`` only when ``overwrite``."""
    target = check_output_file(path, "--out", overwrite, (".nc",))
    renames = {c: o for c, o in background.dim_names.items() if c in analysis.dims}
    out = analysis.rename(renames) if renames else analysis
    out.attrs = {**background.attrs, **out.attrs, **dict(attrs)}
    partial = target.with_name(f".{target.name}.partial")
    out.to_netcdf(partial)
    os.replace(partial, target)
    return target


# ------------------------------------------------------------------------ writers (tests, twins)
def _coordinate_values(index: np.ndarray, axis: np.ndarray, periodic: bool) -> np.ndarray:
    if axis.size == 1:
        return np.full_like(index, axis[0], dtype=float)
    if periodic:
        return axis[0] + index * (axis[-1] - axis[0]) / (axis.size - 1)
    return np.interp(index, np.arange(axis.size, dtype=float), axis)


def station_table(stations: Sequence[Stations], background: xr.DataArray) -> Any:
    """The rows of :func:`read_stations` for ``stations`` observing ``background`` ``(time,
    level, *space)``: one per station, level and time, station ids ``s0, s1, …`` by position in
    each object, pressures from the level coordinate (NaN values where missing)."""
    import pandas as pd

    space = [str(d) for d in background.dims[2:]]
    rows: dict[str, list] = {
        k: [] for k in ("station", "time", *space, "pressure", "value", "error")
    }
    levels = np.asarray(background.coords["level"].values, dtype=float)
    times = background.coords["time"].values
    for obs in stations:
        values = torch.where(obs.mask, obs.values, torch.nan).double().numpy()
        noise = np.broadcast_to(obs.noise_variance().double().sqrt().numpy(), values.shape)
        positions = obs.positions.double().numpy()
        wraps = obs.periodic
        coords = [
            _coordinate_values(
                positions[:, a], np.asarray(background.coords[d].values, float), wraps[a]
            )
            for a, d in enumerate(space)
        ]
        for s in range(values.shape[0]):
            for j, level in enumerate(obs.levels):
                rows["station"].append(f"s{s}")
                rows["time"].append(times[obs.time_index])
                for a, d in enumerate(space):
                    rows[d].append(coords[a][s])
                rows["pressure"].append(levels[level])
                rows["value"].append(values[s, j])
                rows["error"].append(noise[s, j])
    return pd.DataFrame(rows)


def satellite_dataset(satellites: Sequence[Satellite], background: xr.DataArray) -> xr.Dataset:
    """The file :func:`read_satellite` reads for ``satellites`` (one per time, one instrument)
    observing ``background`` ``(time, level, *space)``: radiance with NaN where masked, the
    weights over the level coordinate, the error per value."""
    space = [str(d) for d in background.dims[2:]]
    times = background.coords["time"].values
    first = satellites[0]
    radiance = np.stack(
        [torch.where(s.mask, s.values, torch.nan).double().numpy() for s in satellites]
    )
    error = np.stack([s.noise_variance().double().sqrt().numpy() for s in satellites])
    coords = {"time": times[[s.time_index for s in satellites]]}
    for d in space:
        axis = np.asarray(background.coords[d].values, float) if d in background.coords else None
        if axis is not None:
            coarse = axis.reshape(-1, first.footprint).mean(axis=1)
            coords[d] = (d, coarse, dict(background.coords[d].attrs))
    dims = ("time", "channel", *space)
    return xr.Dataset(
        {
            "radiance": (dims, radiance, {"units": "K", "long_name": "brightness temperature"}),
            "error": (dims, error, {"units": "K", "long_name": "observation error std"}),
            "weights": (("channel", "level"), first.weights.double().numpy()),
        },
        coords={**coords, "level": background.coords["level"]},
    )
