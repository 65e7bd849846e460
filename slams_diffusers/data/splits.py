"""Train / val / test splits: the ``split`` coordinate of a store.

``split`` labels either the ``trajectory`` dim (whole runs) or the ``time`` dim; on ``time``
each split is one block of consecutive times, separated by ``'gap'`` times (:func:`add_split`),
so one continuous run can be split without windows crossing from one split into another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "GAP_LABEL",
    "SPLIT_NAMES",
    "add_split",
    "label_split",
    "select_split",
    "split_counts",
    "split_dim",
    "split_labels",
]

SPLIT_NAMES = ("train", "val", "test")
"""Split labels :func:`add_split` gives, in order."""

GAP_LABEL = "gap"
"""Split label of the times :func:`add_split` leaves out between two splits."""


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Items (trajectories or times) per split: largest remainder, and at least one for every
    nonzero fraction when ``n`` allows it."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or np.any(f < 0) or f.sum() <= 0:
        raise ValueError(f"splits: expected non-negative fractions, got {fractions}")
    f = f / f.sum()
    counts = np.floor(f * n).astype(int)
    for i in np.argsort(-(f * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    nonzero = np.flatnonzero(f > 0)
    if n >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                counts[i] = 1
                counts[np.argmax(counts)] -= 1
    return counts.tolist()


def split_labels(data: xr.DataArray) -> np.ndarray:
    """The ``split`` coordinate as an array of ``str`` (fixed-width, object, numpy's
    ``StringDType`` and netCDF bytes alike)."""
    values = np.asarray(data.coords["split"].values).ravel()
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


def split_dim(data: xr.DataArray) -> str | None:
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
    dim = split_dim(data)
    if dim is None or dim not in data.dims:
        raise ValueError(
            f"`split`={split!r} needs a `split` coordinate on the `trajectory` or `time` dim; "
            f"found dims {tuple(map(str, data.dims))} and coordinates "
            f"{sorted(map(str, data.coords))}: {_SPLIT_HELP}."
        )
    labels = split_labels(data)
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


def label_split(array: xr.DataArray, split: Any, gap: int) -> xr.DataArray:
    """``array`` with a ``split`` coordinate as
    :func:`~slams_diffusers.data.writing.to_store`'s ``split`` argument gives it: ``None`` (keep
    ``array``'s), one label for all, one label per trajectory or per time, or fractions given
    to :func:`add_split` with ``gap``."""
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
