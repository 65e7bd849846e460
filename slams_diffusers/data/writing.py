"""Writing states: tensors -> ``DataArray`` on a template, arrays -> canonical stores.

Tensors at this boundary are in physical units (K); normalisation is the models' own (the
autoencoder's ``level_mean`` / ``level_std`` config).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from .splits import label_split, split_dim, split_labels
from .stores import CANONICAL_DIMS, find_variable, open_store

__all__ = [
    "to_store",
    "to_xarray",
]


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
        data = find_variable(data, None)
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

    Raises:
        ValueError: an existing ``path``, ``dims`` that do not fit, bad ``split`` labels, or a
            ``name`` that is also a dimension or coordinate (``"x"``, ``"time"``, ``"split"``…),
            naming ``name`` and ``dims``.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path!r} exists; pass overwrite=True to replace it.")
    array = open_store(_as_data_array(data, dims, name, attrs, coords))
    array = label_split(array, split, gap)
    taken = sorted({str(d) for d in array.dims} | {str(c) for c in array.coords})
    if str(array.name) in taken:
        raise ValueError(
            f"`name`={str(array.name)!r} is also the name of a dimension or coordinate of the "
            f"store {taken} (from `dims` and `coords`); expected a variable name that is none "
            "of them, e.g. 'u' or 'state', or other names in `dims`."
        )
    if "split" in array.coords:
        array = array.assign_coords(
            split=(split_dim(array), split_labels(array), array.coords["split"].attrs)
        )
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
