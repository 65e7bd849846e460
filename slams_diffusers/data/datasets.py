"""Data layer: xarray / zarr / netCDF / Hugging Face ``datasets`` <-> tensors.

The canonical layout of a state store is one ``xarray.DataArray`` (temperature in K, or any
other field) with dims ``(trajectory?, time, level, *space)``, ``space`` a subset of ``(y, x)``
in that order:

- ``trajectory`` (optional): independent runs (the QG testbed); windows never cross it.
- ``split`` (optional coordinate, on ``trajectory`` or on ``time``): ``'train'`` / ``'val'`` /
  ``'test'`` labels that select subsets; on ``time`` each split is one block of consecutive
  times, separated by ``'gap'`` times (:func:`add_split`), so one continuous run can be split.
- ``time``: consecutive states of one trajectory.
- ``level``: pressure levels in hPa (converted from Pa when the coordinate says ``units='Pa'``,
  or has no units and values above 1100); a store without a level dim gets one of size 1.
- ``y``, ``x``: the grid; ``latitude``/``lat`` become ``y`` and ``longitude``/``lon`` become
  ``x`` (coordinate values and attributes kept), in ascending order.

Functions:

- :func:`open_store`: netCDF / zarr path or xarray object -> canonical, lazy ``DataArray``.
- :func:`to_store`: an array -> a zarr / netCDF store in that layout (``split`` labels included).
- :func:`add_split`, :func:`select_split`: label and select train / val / test subsets.
- :func:`level_pressures`: the store's levels in hPa, when they are pressure levels.
- :class:`LevelStatistics`: per-level mean / std (one dask pass) for model configs.
- :class:`WindowDataset`: ``torch`` dataset of ``(window, level, *space)`` windows.
- :func:`to_xarray`: tensors ``(..., time, level, *space)`` -> ``DataArray`` on a template.
- :func:`to_hf_dataset` / :func:`from_hf_dataset`: ``DataArray`` <-> ``datasets.Dataset``,
  one row per ``(trajectory, time)`` snapshot, metadata as JSON in ``info.description``.

Normalisation itself is not done here: :class:`~slams_diffusers.StateAutoencoder` normalises
per level internally from its ``level_mean`` / ``level_std`` config; tensors at this boundary
are in physical units (K).
"""

from __future__ import annotations

import copy
import json
import math
import os
import uuid
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..observations import pressures_hpa

__all__ = [
    "CANONICAL_DIMS",
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

CANONICAL_DIMS = ("trajectory", "time", "level", "y", "x")
"""Canonical dim order; ``trajectory``, ``y`` and ``x`` are optional."""

REQUIRED_DIMS = ("time",)

SPLIT_NAMES = ("train", "val", "test")
"""Split labels :func:`add_split` gives, in order."""

GAP_LABEL = "gap"
"""Split label of the times :func:`add_split` leaves out between two splits."""

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

HF_METADATA_FORMAT = "slams_diffusers.xarray_rows"
"""Tag of the JSON metadata :func:`to_hf_dataset` writes to ``info.description``."""

_HF_METADATA_VERSION = 1


# ---------------------------------------------------------------------------------- open_store
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


def _find_variable(dataset: xr.Dataset, variable: str | None) -> xr.DataArray:
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
    """Flip descending ``y`` / ``x`` coordinates (e.g. latitude 90..-90) to ascending order."""
    for dim in ("y", "x"):
        if dim in array.dims and dim in array.coords and array.sizes[dim] > 1:
            values = np.asarray(array.coords[dim].values)
            if values.ndim == 1 and np.all(np.diff(values) < 0):
                array = array.isel({dim: slice(None, None, -1)})
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
        array = _find_variable(source, variable)
    elif isinstance(source, str | os.PathLike):
        array = _find_variable(_open_path(source, chunks, engine, **open_kwargs), variable)
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


def _split_labels(data: xr.DataArray) -> np.ndarray:
    """The ``split`` coordinate as an array of ``str`` (fixed-width, object, numpy's
    ``StringDType`` and netCDF bytes alike)."""
    values = np.asarray(data.coords["split"].values).ravel()
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


def _split_dim(data: xr.DataArray) -> str | None:
    """The dim the ``split`` coordinate labels (``trajectory`` or ``time``), or ``None``."""
    if "split" not in data.coords:
        return None
    dims = data.coords["split"].dims
    if len(dims) != 1 or dims[0] not in ("trajectory", "time"):
        raise ValueError(
            f"the `split` coordinate has dims {tuple(map(str, dims))}; expected ('trajectory',) "
            "or ('time',)."
        )
    return str(dims[0])


_SPLIT_HELP = (
    "label one with add_split(data, fractions=(0.8, 0.1, 0.1), gap=8) (training scripts: "
    "--split_by time --split_fractions 0.8 0.1 0.1 --split_gap 8), or pass split=None "
    "(--split None) to use all of the data"
)


def select_split(data: xr.DataArray, split: str | None) -> xr.DataArray:
    """The part of ``data`` whose ``split`` coordinate equals ``split`` (lazy).

    On ``trajectory``: those trajectories. On ``time``: that block of consecutive times (it
    must be one block, as :func:`add_split` writes, so windows never jump over other splits).
    ``split=None`` returns ``data`` unchanged.

    Raises:
        ValueError: no ``split`` coordinate (the message says how to add one), no data with
            that label, or a time split that is not one block.
    """
    if split is None:
        return data
    dim = _split_dim(data)
    if dim is None or dim not in data.dims:
        raise ValueError(
            f"`split`={split!r} needs a `split` coordinate on the `trajectory` or `time` dim; "
            f"found dims {tuple(map(str, data.dims))} and coordinates "
            f"{sorted(map(str, data.coords))}: {_SPLIT_HELP}."
        )
    labels = _split_labels(data)
    chosen = np.flatnonzero(labels == split)
    if chosen.size == 0:
        found = sorted({label for label in labels if label != GAP_LABEL})
        raise ValueError(f"`split`={split!r} selects no {dim}; found splits {found}.")
    if dim == "trajectory":
        return data.isel(trajectory=chosen)
    if not bool(np.all(np.diff(chosen) == 1)):
        raise ValueError(
            f"`split`={split!r} labels times {chosen.tolist()} that are not one block of "
            "consecutive times; expected one block per split (as add_split writes), so that "
            "windows do not jump over the other splits."
        )
    return data.isel(time=slice(int(chosen[0]), int(chosen[-1]) + 1))


def _object_labels(labels: Sequence[str]) -> np.ndarray:
    """Labels as an object array of ``str``: zarr stores them as variable-length strings
    (fixed-width unicode has no stable zarr v3 encoding and warns)."""
    out = np.empty(len(labels), dtype=object)
    out[:] = [str(label) for label in labels]
    return out


def add_split(
    data: xr.DataArray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    gap: int = 0,
    *,
    by: str | None = None,
) -> xr.DataArray:
    """``data`` with a ``split`` coordinate labelling train / val / test parts.

    ``by="trajectory"``: whole trajectories, ``fractions`` of them per split (largest
    remainder, at least one each when there are enough). ``by="time"`` (one continuous run, or
    the same time blocks in every trajectory): consecutive blocks of times in the order of
    :data:`SPLIT_NAMES`, ``fractions`` of the ``T - gap (k - 1)`` times that are not gaps (``k``
    non-empty splits), with ``gap`` times labelled :data:`GAP_LABEL` between two blocks. States
    a few steps apart are correlated: a gap of at least the training window keeps the windows
    of different splits apart. ``by=None``: by trajectory when there are at least ``k``
    trajectories, else by time. An existing ``split`` coordinate is replaced.

    Args:
        data: a canonical array (:func:`open_store`) with a ``time`` dim.
        fractions: 1 to 3 non-negative fractions for ``('train', 'val', 'test')``, normalised.
        gap: times left out between two splits (``by="time"`` only), ``>= 0``.
        by: ``"trajectory"``, ``"time"`` or ``None``.

    Raises:
        ValueError: bad fractions, gap or ``by``, or too few trajectories / times.
    """
    from .qg import split_counts

    try:
        shares = [float(f) for f in fractions]
    except (TypeError, ValueError) as e:
        raise ValueError(f"`fractions` must be numbers, got {fractions!r}.") from e
    if not 1 <= len(shares) <= len(SPLIT_NAMES) or any(
        not math.isfinite(f) or f < 0 for f in shares
    ):
        raise ValueError(
            f"`fractions` must be 1 to {len(SPLIT_NAMES)} non-negative numbers for "
            f"{SPLIT_NAMES[: len(shares) or 1]}, got {shares}."
        )
    k = sum(f > 0 for f in shares)
    if k == 0:
        raise ValueError(f"`fractions` must not all be zero, got {shares}.")
    if isinstance(gap, bool) or int(gap) != gap or gap < 0:
        raise ValueError(f"`gap` must be an integer >= 0 (times between splits), got {gap!r}.")
    gap = int(gap)
    if by is None:
        by = "trajectory" if data.sizes.get("trajectory", 0) >= k else "time"
    if by not in ("trajectory", "time"):
        raise ValueError(f"`by` must be 'trajectory', 'time' or None, got {by!r}.")
    if by not in data.dims:
        raise ValueError(
            f"`by`={by!r}: `data` has no {by!r} dim (dims {tuple(map(str, data.dims))}); "
            "expected by='time' for one continuous run."
        )
    if by == "trajectory" and gap:
        raise ValueError(
            f"`gap`={gap} applies to by='time' only: trajectories are independent runs."
        )
    size = data.sizes[by]
    usable = size - gap * (k - 1)
    if usable < k:
        raise ValueError(
            f"`data` has {size} {by} entries; splitting them into {k} parts "
            f"{'with ' + str(gap) + ' gap times between them ' if gap else ''}needs at least "
            f"{k + gap * (k - 1)}."
        )
    counts = split_counts(usable, shares)
    labels: list[str] = []
    for name, count in zip(SPLIT_NAMES, counts, strict=False):
        if count == 0:
            continue
        if labels and gap:
            labels += [GAP_LABEL] * gap
        labels += [name] * count
    if "split" in data.coords:
        data = data.drop_vars("split")
    attrs: dict[str, Any] = {"long_name": "dataset split"}
    if by == "time":
        attrs["gap"] = gap  # read by the training scripts (a gap shorter than a window)
    return data.assign_coords(split=(by, _object_labels(labels), attrs))


# ---------------------------------------------------------------------------- LevelStatistics
@dataclass(frozen=True)
class LevelStatistics:
    """Per-level mean and standard deviation [K], over all dims but ``level``.

    Computed once from the training data and stored with the model:
    ``StateAutoencoder(**stats.as_config(), ...)`` or, in pixel space,
    ``LevelNormalizer(**stats.as_config(), ...)``.

    Attributes:
        mean: ``(level,)`` means, plain floats.
        std: ``(level,)`` population standard deviations (``ddof=0``), plain floats.
        levels: ``(level,)`` pressure levels [hPa] they belong to, if known.
    """

    mean: list[float]
    std: list[float]
    levels: list[float] | None = None

    @classmethod
    def compute(
        cls, data: xr.DataArray | xr.Dataset | str | os.PathLike, split: str | None = None
    ) -> LevelStatistics:
        """Statistics of ``data`` (anything :func:`open_store` reads), optionally of one split.

        One pass over a dask-backed array: mean and std are computed in one graph, so every
        chunk is read once; float64 accumulation, NaN skipped. ``ValueError`` if a level has
        zero or undefined spread (it could not be normalised).
        """
        array = select_split(open_store(data), split)
        dims = [d for d in array.dims if d != "level"]
        values = array.astype(np.float64)
        stats = xr.Dataset({"mean": values.mean(dims), "std": values.std(dims)}).compute()
        mean = [float(v) for v in stats["mean"].values]
        std = [float(v) for v in stats["std"].values]
        levels = (
            [float(v) for v in array.coords["level"].values] if "level" in array.coords else None
        )
        bad = [i for i, s in enumerate(std) if not (math.isfinite(s) and s > 0)]
        if bad or not all(math.isfinite(m) for m in mean):
            raise ValueError(
                f"`data` has levels without finite, positive spread: std {std}, mean {mean}; "
                f"expected std > 0 on every level (bad level indices {bad})."
            )
        return cls(mean=mean, std=std, levels=levels)

    def as_config(self) -> dict[str, list[float]]:
        """``{"level_mean": [...], "level_std": [...]}`` for model constructors."""
        return {"level_mean": list(self.mean), "level_std": list(self.std)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LevelStatistics:
        """Read back from a model config (``model.config``) holding ``level_mean``/``level_std``."""
        mean, std = config.get("level_mean"), config.get("level_std")
        if mean is None or std is None:
            raise ValueError(
                "`config` has no level statistics: expected `level_mean` and `level_std`, "
                f"found keys {sorted(config)}."
            )
        return cls(mean=[float(v) for v in mean], std=[float(v) for v in std])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``mean``, ``std``, ``levels``)."""
        return {"mean": list(self.mean), "std": list(self.std), "levels": self.levels}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LevelStatistics:
        """Inverse of :meth:`to_dict`."""
        levels = values.get("levels")
        return cls(
            mean=[float(v) for v in values["mean"]],
            std=[float(v) for v in values["std"]],
            levels=None if levels is None else [float(v) for v in levels],
        )


# ------------------------------------------------------------------------------ WindowDataset
class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``window`` consecutive states, ``(window, level, *space)`` float tensors in K.

    Windows start every ``stride`` steps and never cross a trajectory boundary: a store with
    ``n`` trajectories of ``T`` steps has ``n * ((T - window) // stride + 1)`` windows, ordered
    by trajectory then start. The data stay lazy: ``__getitem__`` reads one window's slice
    (with dask, only the chunks that slice touches).

    Args:
        data: anything :func:`open_store` reads (path, ``xr.Dataset``, ``xr.DataArray``).
        window: steps per window (``2k + 1`` for a Markov-blanket score net), ``>= 1``.
        stride: steps between window starts, ``>= 1``.
        split: ``'train'`` / ``'val'`` / ``'test'``: only the trajectories, or the block of
            times, with that ``split`` label (see :func:`add_split`).
        variable, levels: passed to :func:`open_store`.
        dtype: tensor dtype (default ``torch.float32``).
    """

    def __init__(
        self,
        data: xr.DataArray | xr.Dataset | str | os.PathLike,
        window: int,
        *,
        stride: int = 1,
        split: str | None = None,
        variable: str | None = None,
        levels: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an integer >= 1, got {window!r}.")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"`stride` must be an integer >= 1, got {stride!r}.")
        self.data = select_split(open_store(data, variable, levels=levels), split)
        self.window, self.stride, self.dtype = int(window), int(stride), dtype
        steps = self.data.sizes["time"]
        if self.window > steps:
            raise ValueError(
                f"`window`={self.window} is longer than the trajectories: found {steps} time "
                f"steps, expected window <= {steps}."
            )
        self.windows_per_trajectory = (steps - self.window) // self.stride + 1
        self.num_trajectories = self.data.sizes.get("trajectory", 1)

    def __len__(self) -> int:
        return self.num_trajectories * self.windows_per_trajectory

    def locate(self, index: int) -> tuple[int, int]:
        """``(trajectory, start)`` of window ``index`` (negative indices count from the end)."""
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"window index {index} out of range for {size} windows")
        trajectory, position = divmod(index % size, self.windows_per_trajectory)
        return trajectory, position * self.stride

    def window_array(self, index: int) -> xr.DataArray:
        """Window ``index`` as a lazy ``DataArray`` ``(time, level, *space)`` with coordinates
        (the template for :func:`to_xarray`)."""
        trajectory, start = self.locate(index)
        selection: dict[Hashable, Any] = {"time": slice(start, start + self.window)}
        if "trajectory" in self.data.dims:
            selection["trajectory"] = trajectory
        return self.data.isel(selection)

    def __getitem__(self, index: int) -> Tensor:
        """Window ``index``: ``(window, level, *space)`` tensor in K."""
        values = np.asarray(self.window_array(index).values)
        return torch.from_numpy(np.ascontiguousarray(values)).to(self.dtype)

    def level_statistics(self) -> LevelStatistics:
        """:class:`LevelStatistics` of this dataset's trajectories (e.g. the training split)."""
        return LevelStatistics.compute(self.data)


# ---------------------------------------------------------------------------------- to_xarray
def _to_numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def to_xarray(
    values: Tensor | np.ndarray,
    template: xr.DataArray,
    *,
    leading_dims: Sequence[str] | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """Tensor ``(*leading, time, level, *space)`` -> ``DataArray`` on ``template``.

    The trailing dims of ``values`` take the trailing dims of ``template`` (e.g. a window
    ``(time, level, y, x)`` from :meth:`WindowDataset.window_array`, or a whole store
    ``(trajectory, time, level, y, x)``), with its coordinates on those dims, its scalar
    coordinates, attributes and name. Extra leading dims are named ``leading_dims``
    (default ``sample`` / ``sample_0, sample_1, ...``; e.g. ``("member",)`` for an
    ensemble) and get no coordinates. The dtype of ``values`` is kept.

    Raises:
        ValueError: sizes that differ from the template's, or wrong ``leading_dims`` count.
    """
    array = _to_numpy(values)
    shared = min(array.ndim, template.ndim)
    dims = tuple(template.dims[template.ndim - shared :])
    expected = tuple(template.sizes[d] for d in dims)
    if tuple(array.shape[array.ndim - shared :]) != expected:
        raise ValueError(
            f"`values` has shape {tuple(array.shape)}; expected trailing sizes {expected} for "
            f"dims {tuple(map(str, dims))} of `template`."
        )
    count = array.ndim - shared
    if leading_dims is None:
        leading = ["sample"] if count == 1 else [f"sample_{i}" for i in range(count)]
    else:
        leading = list(leading_dims)
        if len(leading) != count:
            raise ValueError(
                f"`leading_dims` has {len(leading)} names ({leading}); expected {count} for "
                f"`values` of shape {tuple(array.shape)} on template dims "
                f"{tuple(map(str, template.dims))}."
            )
    coords = {
        key: coord.variable.copy(deep=True)
        for key, coord in template.coords.items()
        if set(coord.dims) <= set(dims)
    }
    return xr.DataArray(
        array,
        dims=(*leading, *dims),
        coords=coords,
        attrs=copy.deepcopy(template.attrs),
        name=template.name if name is None else name,
    )


# ----------------------------------------------------------------------------------- to_store
_DEFAULT_DIMS = {
    2: ("time", "x"),
    4: ("time", "level", "y", "x"),
    5: ("trajectory", "time", "level", "y", "x"),
}


def _as_data_array(
    data: xr.DataArray | xr.Dataset | np.ndarray | Tensor,
    dims: Sequence[str] | None,
    name: str | None,
    attrs: Mapping[str, Any] | None,
    coords: Mapping[str, Any] | None,
) -> xr.DataArray:
    if isinstance(data, xr.Dataset):
        data = _find_variable(data, None)
    if isinstance(data, xr.DataArray):
        array = data if dims is None else data.rename(dict(zip(data.dims, dims, strict=True)))
    else:
        values = _to_numpy(data)
        if dims is None:
            if values.ndim not in _DEFAULT_DIMS:
                raise ValueError(
                    f"`data` of shape {tuple(values.shape)} needs `dims`: expected names for its "
                    f"{values.ndim} axes among {CANONICAL_DIMS}, e.g. ('trajectory', 'time', "
                    "'x') or ('time', 'level', 'x') or ('time', 'y', 'x')."
                )
            dims = _DEFAULT_DIMS[values.ndim]
        if len(dims) != values.ndim:
            raise ValueError(
                f"`dims`={tuple(dims)} names {len(dims)} axes; `data` has shape "
                f"{tuple(values.shape)} ({values.ndim} axes)."
            )
        array = xr.DataArray(values, dims=tuple(dims))
    if coords:
        array = array.assign_coords(dict(coords))
    if attrs:
        array = array.assign_attrs(dict(attrs))
    return array.rename(name or array.name or "state")


def _label_split(array: xr.DataArray, split: Any, gap: int) -> xr.DataArray:
    """Apply ``to_store``'s ``split`` argument (see there)."""
    if split is None:
        return array
    if isinstance(split, str):
        dim = "trajectory" if "trajectory" in array.dims else "time"
        labels = [split] * array.sizes[dim]
    else:
        items = list(split)
        if items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return add_split(array, items, gap)
        labels = [str(v) for v in items]
        dim = next((d for d in ("trajectory", "time") if array.sizes.get(d) == len(labels)), None)
        if dim is None or not all(isinstance(v, str) for v in items):
            sizes = {d: array.sizes[d] for d in ("trajectory", "time") if d in array.dims}
            raise ValueError(
                f"`split` must be a label, one label per trajectory or per time {sizes}, or "
                f"fractions such as (0.8, 0.1, 0.1); got {split!r}."
            )
    if "split" in array.coords:
        array = array.drop_vars("split")
    return array.assign_coords(split=(dim, _object_labels(labels), {"long_name": "dataset split"}))


def to_store(
    data: xr.DataArray | xr.Dataset | np.ndarray | Tensor,
    path: str | os.PathLike,
    split: str | Sequence[str] | Sequence[float] | None = None,
    *,
    dims: Sequence[str] | None = None,
    name: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    coords: Mapping[str, Any] | None = None,
    gap: int = 0,
    overwrite: bool = False,
) -> str:
    """Write a state array as a store :func:`open_store` reads back unchanged.

    The array is first made canonical with :func:`open_store` (dims renamed and ordered, a
    size-1 ``level`` added when there is none, levels in hPa), then written as one variable:
    zarr (``path`` ending in ``.zarr``; format 2, consolidated, one trajectory by up to 32
    times per chunk) or netCDF (otherwise). ``split`` labels are stored as variable-length
    strings (zarr warns about fixed-width ones).

    Args:
        data: an ``xr.DataArray`` (or an ``xr.Dataset``: its variable as :func:`open_store`
            finds it), or an array / tensor with ``dims`` (default for 2, 4, 5
            axes: ``(time, x)``, ``(time, level, y, x)``, ``(trajectory, time, level, y, x)``).
        path: output path (``*.zarr`` or netCDF).
        split: ``None`` (keep ``data``'s ``split`` coordinate, if any), one label for all
            (``"train"``), one label per trajectory or per time, or fractions
            ``(train, val, test)`` given to :func:`add_split` with ``gap``.
        dims, name, attrs, coords: for arrays: axis names, variable name (default
            ``data.name`` or ``"state"``), attributes (e.g. ``units``), coordinates (e.g.
            ``{"level": ("level", [850.0, 500.0], {"units": "hPa"})}``).
        gap: times between splits when ``split`` holds fractions.
        overwrite: replace an existing ``path`` (otherwise ``ValueError``).

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path!r} exists; pass overwrite=True to replace it.")
    array = open_store(_as_data_array(data, dims, name, attrs, coords))
    array = _label_split(array, split, gap)
    if "split" in array.coords:
        array = array.assign_coords(
            split=(_split_dim(array), _object_labels(list(_split_labels(array))),
                   array.coords["split"].attrs)
        )  # fmt: skip
    dataset = array.to_dataset(name=str(array.name))
    for variable in dataset.variables.values():
        variable.encoding = {}  # a netCDF source's encodings do not fit zarr, and vice versa
    if path.rstrip("/").endswith(".zarr"):
        chunks = {"trajectory": 1, "time": min(array.sizes["time"], 32)}
        key = str(array.name)  # chunk the data only: coordinates stay in memory, in one piece
        dataset[key] = dataset[key].variable.chunk({d: chunks.get(d, -1) for d in array.dims})
        dataset.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    else:
        dataset.to_netcdf(path, mode="w")
    return path


# ------------------------------------------------------------------- Hugging Face datasets I/O
def _encode_array(values: np.ndarray) -> dict[str, Any]:
    """JSON form of a small array: dtype, shape and a flat list (times as int64 counts)."""
    values = np.asarray(values)
    dtype = str(values.dtype)
    if values.dtype.kind in "mM":
        data = values.view("int64").ravel().tolist()
    elif values.dtype.kind in "OUST":
        data = [str(v) for v in values.ravel().tolist()]
    else:
        data = values.ravel().tolist()
    return {"dtype": dtype, "shape": list(values.shape), "data": data}


def _decode_dtype(dtype: str) -> np.dtype | None:
    try:
        return np.dtype(dtype)
    except TypeError:
        return None  # e.g. numpy's StringDType: keep what numpy infers


def _decode_array(encoded: Mapping[str, Any]) -> np.ndarray:
    dtype = _decode_dtype(encoded["dtype"])
    shape = tuple(encoded["shape"])
    if dtype is not None and dtype.kind in "mM":
        return np.asarray(encoded["data"], dtype="int64").view(dtype).reshape(shape)
    if dtype is not None and dtype.kind == "O":
        out = np.empty(len(encoded["data"]), dtype=object)
        out[:] = encoded["data"]
        return out.reshape(shape)
    return np.asarray(encoded["data"], dtype=dtype).reshape(shape)


def _encode_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode_array(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_attr(v) for v in value]}
    if isinstance(value, list):
        return [_encode_attr(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_attr(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(
        f"attribute value {value!r} of type {type(value).__name__} cannot be exported; "
        "expected str, number, bool, list, tuple, dict or numpy array."
    )


def _decode_attr(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return _decode_array(value["__ndarray__"])
        if set(value) == {"__tuple__"}:
            return tuple(_decode_attr(v) for v in value["__tuple__"])
        return {k: _decode_attr(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_attr(v) for v in value]
    return value


def _attrs_json(attrs: Mapping[Hashable, Any]) -> dict[str, Any]:
    return {str(k): _encode_attr(v) for k, v in attrs.items()}


def _attrs_back(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _decode_attr(v) for k, v in attrs.items()}


def _hf_value(dtype: np.dtype) -> Any:
    """The ``datasets.Value`` of a per-row coordinate of ``dtype``."""
    import datasets

    if dtype.kind == "M":
        return datasets.Value("timestamp[ns]")
    if dtype.kind == "m":
        return datasets.Value("duration[ns]")
    if dtype.kind in "OUST":
        return datasets.Value("string")
    return datasets.Value(str(dtype))


def _hf_sample_feature(shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """The ``datasets`` feature of one snapshot of ``shape`` (rank 0 to 5)."""
    import datasets

    value_dtype = str(dtype)
    if len(shape) == 0:
        return datasets.Value(value_dtype)
    if len(shape) == 1:
        return datasets.List(datasets.Value(value_dtype), length=shape[0])
    arrays = {
        2: datasets.Array2D,
        3: datasets.Array3D,
        4: datasets.Array4D,
        5: datasets.Array5D,
    }
    if len(shape) not in arrays:
        raise ValueError(f"snapshots of rank {len(shape)} cannot be exported; expected <= 5.")
    return arrays[len(shape)](shape=shape, dtype=value_dtype)


def _row_value(value: Any, dtype: np.dtype) -> Any:
    if dtype.kind == "M":
        return np.datetime64(value, "ns")
    if dtype.kind == "m":
        return np.timedelta64(value, "ns")
    if dtype.kind in "OUST":
        return str(value)
    return value.item() if isinstance(value, np.generic) else value


def _hf_metadata(data: xr.DataArray, column: str, row_dims: list[str]) -> dict[str, Any]:
    """The JSON metadata that lets :func:`from_hf_dataset` rebuild ``data``."""
    coords: dict[str, Any] = {}
    row_coords: dict[str, Any] = {}
    for key, coord in data.coords.items():
        on_rows = [d for d in coord.dims if d in row_dims]
        entry = {"dims": list(map(str, coord.dims)), "attrs": _attrs_json(coord.attrs)}
        if not on_rows:
            coords[str(key)] = {**entry, "values": _encode_array(coord.values)}
        elif len(on_rows) == coord.ndim:
            row_coords[str(key)] = {**entry, "dtype": str(coord.dtype)}
        else:
            raise ValueError(
                f"coordinate {key!r} has dims {coord.dims}, mixing row dims {row_dims} with "
                "snapshot dims; expected coordinates on row dims only or on snapshot dims only."
            )
    return {
        "format": HF_METADATA_FORMAT,
        "version": _HF_METADATA_VERSION,
        "name": None if data.name is None else str(data.name),
        "column": column,
        "dims": list(map(str, data.dims)),
        "row_dims": row_dims,
        "sizes": {str(d): int(n) for d, n in data.sizes.items()},
        "dtype": str(data.dtype),
        "attrs": _attrs_json(data.attrs),
        "coords": coords,
        "row_coords": row_coords,
    }


def _hf_rows(
    data: xr.DataArray,
    column: str,
    row_dims: Sequence[str],
    row_coords: Mapping[str, Any],
    block: int,
) -> Iterator[dict[str, Any]]:
    """Rows in C order over ``row_dims``, reading ``block`` snapshots at a time."""
    sizes = [data.sizes[d] for d in row_dims]
    grids = {
        key: np.asarray(
            data.coords[key].variable.set_dims(dict(zip(row_dims, sizes, strict=True))).values
        )
        for key in row_coords
    }
    dtypes = {key: data.coords[key].dtype for key in row_coords}
    outer, last = row_dims[:-1], row_dims[-1]
    for index in np.ndindex(*sizes[:-1]):
        for start in range(0, sizes[-1], block):
            stop = min(start + block, sizes[-1])
            selection = {**dict(zip(outer, index, strict=True)), last: slice(start, stop)}
            snapshots = np.asarray(data.isel(selection).values)
            for offset, step in enumerate(range(start, stop)):
                position = (*index, step)
                row = {key: _row_value(grids[key][position], dtypes[key]) for key in grids}
                row[column] = snapshots[offset]
                yield row


def to_hf_dataset(
    data: xr.DataArray,
    *,
    row_dims: Sequence[str] = ("trajectory", "time"),
    cache_dir: str | os.PathLike | None = None,
    keep_in_memory: bool = False,
    block_size: int = 64,
) -> Any:
    """``DataArray`` -> ``datasets.Dataset`` with one row per ``(trajectory, time)`` snapshot.

    Columns: the data (named after ``data.name``, default ``"t"``) as an ``ArrayND`` feature of
    the snapshot shape, e.g. ``Array3D((level, y, x))``; one column per coordinate on the row
    dims (``trajectory``, ``time``, ``split``, ...; times as ``timestamp[ns]``). Rows are in C
    order over the row dims. Everything else (dims, sizes, dtype, attributes, coordinates on
    the snapshot dims with their attributes) is JSON in ``info.description`` (tag
    :data:`HF_METADATA_FORMAT`): kept by ``save_to_disk`` / ``load_from_disk``, but not by
    ``push_to_hub`` (the Hub keeps features only), so pass it to :func:`from_hf_dataset`
    as ``metadata=`` then. Snapshots are streamed ``block_size`` at a time into the arrow
    cache (``cache_dir``, default the ``datasets`` cache), so dask-backed stores larger than
    memory can be exported.

    Args:
        data: the array (any dims; typically canonical from :func:`open_store`).
        row_dims: dims that index rows, those of them present in ``data`` (at least one).
        cache_dir, keep_in_memory: passed to ``datasets.Dataset.from_generator``.
        block_size: snapshots read per slice.
    """
    import datasets

    rows = [d for d in row_dims if d in data.dims]
    if not rows:
        raise ValueError(
            f"`row_dims`={list(row_dims)} are not in `data` dims "
            f"{tuple(map(str, data.dims))}; expected at least one of them."
        )
    snapshot_dims = [str(d) for d in data.dims if d not in rows]
    data = data.transpose(*rows, *snapshot_dims)
    column = "t" if data.name is None else str(data.name)
    if column in data.coords:
        raise ValueError(f"`data` name {column!r} clashes with a coordinate of the same name.")
    metadata = _hf_metadata(data, column, rows)
    shape = tuple(data.sizes[d] for d in snapshot_dims)
    features = {key: _hf_value(data.coords[key].dtype) for key in metadata["row_coords"]}
    features[column] = _hf_sample_feature(shape, data.dtype)
    dataset = datasets.Dataset.from_generator(
        _hf_rows,
        features=datasets.Features(features),
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        keep_in_memory=keep_in_memory,
        gen_kwargs={
            "data": data,
            "column": column,
            "row_dims": tuple(rows),
            "row_coords": metadata["row_coords"],
            "block": max(1, int(block_size)),
        },
        fingerprint=uuid.uuid4().hex,  # never reuse a stale cache of a changed store
    )
    dataset.info.description = json.dumps(metadata)
    return dataset


def _read_metadata(dataset: Any, metadata: str | Mapping[str, Any] | None) -> dict[str, Any]:
    source = dataset.info.description if metadata is None else metadata
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except json.JSONDecodeError:
            source = None
    if not isinstance(source, Mapping) or source.get("format") != HF_METADATA_FORMAT:
        raise ValueError(
            "`dataset` carries no slams_diffusers metadata in `info.description` (found "
            f"{str(dataset.info.description)[:80]!r}); expected a dataset written by "
            "`to_hf_dataset`, or pass its metadata as `metadata=`."
        )
    return dict(source)


def _row_coordinate(values: np.ndarray, entry: Mapping[str, Any], row_dims: list[str]) -> Any:
    """A per-row column, shape ``row sizes``, reduced to the coordinate's own dims."""
    for axis in reversed(range(len(row_dims))):
        if row_dims[axis] in entry["dims"]:
            continue
        first = np.take(values, [0], axis=axis)
        if not np.all(values == first):
            raise ValueError(
                f"coordinate column varies along {row_dims[axis]!r} where it should not; "
                "expected the rows in the order `to_hf_dataset` wrote them (not shuffled, "
                "filtered or sorted)."
            )
        values = np.take(values, 0, axis=axis)
    kept = [d for d in row_dims if d in entry["dims"]]
    dtype = _decode_dtype(entry["dtype"])
    if dtype is not None and dtype.kind in "mM":
        values = np.asarray(values).astype(dtype)
    elif dtype is not None and dtype.kind != "O":
        values = np.asarray(values).astype(dtype)
    variable = xr.Variable(kept, values, attrs=_attrs_back(entry["attrs"]))
    return variable.transpose(*entry["dims"])


def from_hf_dataset(
    dataset: Any, *, metadata: str | Mapping[str, Any] | None = None
) -> xr.DataArray:
    """``datasets.Dataset`` written by :func:`to_hf_dataset` -> the original ``DataArray``.

    Values, dims (in their original order), coordinates and attributes come back equal. The
    data are loaded into memory (the arrow table is memory-mapped, so this reads it once).

    Args:
        dataset: a ``datasets.Dataset`` (e.g. after ``load_from_disk``), rows in the written
            order.
        metadata: the JSON metadata (string or dict) when ``info.description`` lost it.

    Raises:
        ValueError: no metadata, a row count that does not match, or rows out of order.
    """
    meta = _read_metadata(dataset, metadata)
    row_dims: list[str] = list(meta["row_dims"])
    sizes = meta["sizes"]
    row_shape = tuple(sizes[d] for d in row_dims)
    snapshot_dims = [d for d in meta["dims"] if d not in row_dims]
    if dataset.num_rows != math.prod(row_shape):
        raise ValueError(
            f"`dataset` has {dataset.num_rows} rows; expected {math.prod(row_shape)} "
            f"= {dict(zip(row_dims, row_shape, strict=True))} (rows filtered or appended?)."
        )
    columns = [meta["column"], *meta["row_coords"]]
    # dtype=None keeps each column's own dtype (the numpy formatter casts floats to float32)
    table = dataset.select_columns(columns).with_format("numpy", dtype=None)[:]
    values = np.asarray(table[meta["column"]], dtype=_decode_dtype(meta["dtype"]))
    values = values.reshape(*row_shape, *(sizes[d] for d in snapshot_dims))
    coords: dict[str, Any] = {}
    for key, entry in meta["coords"].items():
        coords[key] = xr.Variable(
            entry["dims"], _decode_array(entry["values"]), attrs=_attrs_back(entry["attrs"])
        )
    for key, entry in meta["row_coords"].items():
        column = np.asarray(table[key]).reshape(row_shape)
        coords[key] = _row_coordinate(column, entry, row_dims)
    array = xr.DataArray(
        values,
        dims=(*row_dims, *snapshot_dims),
        coords=coords,
        attrs=_attrs_back(meta["attrs"]),
        name=meta["name"],
    )
    return array.transpose(*meta["dims"])
