"""The Hugging Face ``datasets`` codec: ``DataArray`` <-> ``datasets.Dataset``.

One row per ``(trajectory, time)`` snapshot, the coordinates and attributes as JSON metadata in
``info.description``, so :func:`from_hf_dataset` gives back the array :func:`to_hf_dataset` was
given.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "HF_METADATA_FORMAT",
    "from_hf_dataset",
    "to_hf_dataset",
]

HF_METADATA_FORMAT = "slams_diffusers.xarray_rows"
"""Tag of the JSON metadata :func:`to_hf_dataset` writes to ``info.description``."""

_HF_METADATA_VERSION = 1


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
