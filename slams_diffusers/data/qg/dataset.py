r"""QG datasets: trajectories of the simulator (:mod:`slams_diffusers.data.qg.model`) as
reanalysis-like stores.

:func:`simulate_dataset` runs trajectories, discards a spin-up and keeps
snapshots every ``interval`` steps as an :class:`xarray.Dataset` with
``t(trajectory, time, level, y, x)`` in K (CF attributes), a ``split``
coordinate on ``trajectory`` and, because the barotropic mode cannot be
recovered from temperatures, the PV ``q(trajectory, time, layer, y, x)`` from
which forecasts restart (:meth:`QGModel.forecast_background`,
:func:`background_observation`). :func:`write_dataset` writes zarr (``*.zarr``)
or netCDF.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ...defaults import DEFAULT_STEPS, DEFAULT_TRAJECTORIES, INTERVAL_HOURS, SPINUP_DAYS
from ..splits import split_counts
from .model import DAY, QGConfig, QGModel, progress_bar

__all__ = [
    "SPINUP_DAYS",
    "INTERVAL_HOURS",
    "DEFAULT_TRAJECTORIES",
    "DEFAULT_STEPS",
    "simulate_dataset",
    "write_dataset",
]


def _trajectory_generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def simulate_dataset(
    trajectories: int = DEFAULT_TRAJECTORIES,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    config: QGConfig | None = None,
    spinup: int | None = None,
    interval: int | None = None,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    store_pv: str = "eval",
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
):
    """Simulate ``trajectories`` independent QG runs as an :class:`xarray.Dataset`.

    Each trajectory starts from its own random state (seeded by ``(seed, index)``:
    the result does not depend on ``batch_size``), runs ``spinup`` steps that are
    discarded, then keeps ``steps`` snapshots ``interval`` model steps apart (the
    first at the end of the spin-up).

    Args:
        trajectories: number of independent runs.
        steps: snapshots kept per trajectory (the ``time`` length).
        seed: base seed.
        config: model parameters (default :class:`QGConfig`).
        spinup: discarded steps (default: 100 days).
        interval: model steps between snapshots (default: 6 hours).
        splits: fractions of trajectories for ``("train", "val", "test")``, in order.
        store_pv: which trajectories keep the PV ``q`` (needed to restart forecasts,
            :func:`background_observation`): ``"all"``, ``"eval"`` (val + test, NaN
            elsewhere; NaN chunks are not stored in zarr) or ``"none"``.
        batch_size: trajectories integrated together.
        device, dtype: where and how to integrate (float32 is stored).
        progress: show a progress bar (tqdm).

    Returns:
        ``t(trajectory, time, level, y, x)`` in K with CF attributes and, unless
        ``store_pv="none"``, ``q(trajectory, time, layer, y, x)`` in s⁻¹;
        coordinates ``trajectory``, ``split(trajectory)``, ``time`` (days since the end
        of spin-up), ``level`` (hPa), ``layer`` (0 = top), ``y``, ``x`` (m); the model
        parameters in the ``qg_config`` attribute (JSON).
    """
    import xarray as xr

    if store_pv not in ("all", "eval", "none"):
        raise ValueError(f"store_pv: expected 'all', 'eval' or 'none', got {store_pv!r}")
    if trajectories < 1 or steps < 1:
        raise ValueError(f"trajectories and steps must be >= 1, got {trajectories}, {steps}")
    config = config if config is not None else QGConfig()
    model = QGModel(config, device=device, dtype=dtype)
    spinup = round(SPINUP_DAYS * DAY / config.dt) if spinup is None else int(spinup)
    interval = round(INTERVAL_HOURS * 3600 / config.dt) if interval is None else int(interval)
    if spinup < 0 or interval < 1:
        raise ValueError(f"spinup must be >= 0 and interval >= 1, got {spinup}, {interval}")
    counts = split_counts(trajectories, splits)
    names = ["train", "val", "test", *[f"split{i}" for i in range(3, len(counts))]]
    split = np.repeat(np.array(names[: len(counts)]), counts)
    keep_pv = {"all": np.ones(trajectories, bool), "none": np.zeros(trajectories, bool)}.get(
        store_pv, split != "train"
    )
    n, ny, nx = model.shape
    levels = n - 1
    t = np.empty((trajectories, steps, levels, ny, nx), dtype=np.float32)
    kept = {i: np.empty((steps, n, ny, nx), dtype=np.float32) for i in np.flatnonzero(keep_pv)}
    n_steps = spinup + (steps - 1) * interval
    bar = progress_bar(trajectories * n_steps, progress, "simulate qg", unit="member-step")
    start = _time.perf_counter()
    for first in range(0, trajectories, batch_size):
        index = range(first, min(first + batch_size, trajectories))
        q0 = torch.cat([model.initial_state(1, _trajectory_generator(seed, i)) for i in index])
        for j, q in enumerate(_snapshots(model, q0, spinup, interval, steps, bar)):
            t[index.start : index.stop, j] = model.temperature(q).float().cpu().numpy()
            for i in index:
                if i in kept:
                    kept[i][j] = q[i - first].float().cpu().numpy()
    bar.close()
    seconds = _time.perf_counter() - start

    dx, dy = config.L / nx, config.W / ny
    coords = {
        "trajectory": (
            "trajectory",
            np.arange(trajectories, dtype=np.int32),
            {"long_name": "trajectory (independent model run)"},
        ),
        "split": ("trajectory", split.astype(str).astype(object), {"long_name": "dataset split"}),
        "time": (
            "time",
            np.arange(steps) * interval * config.dt / DAY,
            {"long_name": "model time since the end of the spin-up", "units": "day"},
        ),
        "level": (
            "level",
            np.asarray(config.pressure_levels, dtype=np.float32),
            {
                "units": "hPa",
                "long_name": "pressure",
                "standard_name": "air_pressure",
                "positive": "down",
                "axis": "Z",
            },
        ),
        "y": (
            "y",
            ((np.arange(ny) + 0.5) * dy).astype(np.float32),
            {
                "units": "m",
                "long_name": "y distance (south to north)",
                "standard_name": "projection_y_coordinate",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            ((np.arange(nx) + 0.5) * dx).astype(np.float32),
            {
                "units": "m",
                "long_name": "x distance (west to east)",
                "standard_name": "projection_x_coordinate",
                "axis": "X",
            },
        ),
    }
    data_vars = {
        "t": (
            ("trajectory", "time", "level", "y", "x"),
            t,
            {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"},
        ),
    }
    if store_pv != "none":
        q_out = _stack_pv(kept, trajectories, (steps, n, ny, nx))
        coords["layer"] = (
            "layer",
            np.arange(n, dtype=np.int32),
            {"long_name": "model layer, 0 = top (rigid lid) to n-1 = bottom"},
        )
        data_vars["q"] = (
            ("trajectory", "time", "layer", "y", "x"),
            q_out,
            {
                "units": "s-1",
                "long_name": "quasi-geostrophic potential vorticity anomaly",
                "comment": "restart state of QGModel; NaN where not stored",
            },
        )
    attrs = {
        "title": "Multi-layer quasi-geostrophic atmosphere (slams_diffusers.data.qg)",
        "Conventions": "CF-1.8",
        "source": "slams_diffusers.data.qg.simulate_dataset",
        "history": f"{_time.strftime('%Y-%m-%dT%H:%M:%S')} simulated in {seconds:.1f} s",
        "comment": "Temperature = ISA mean at each level + thermal-wind anomaly "
        "f0 T0 (psi_above - psi_below) / (g dz). Doubly periodic domain.",
        "qg_config": json.dumps(config.to_dict()),
        "seed": int(seed),
        "spinup_steps": int(spinup),
        "interval_steps": int(interval),
        "dt_seconds": float(config.dt),
        "store_pv": store_pv,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _stack_pv(kept: dict[int, np.ndarray], trajectories: int, shape: tuple[int, ...]):
    """``(trajectories, *shape)`` PV, NaN for trajectories not kept: a numpy array when all
    are kept, else a dask array whose NaN blocks take no memory (one chunk per trajectory)."""
    if len(kept) == trajectories:
        return np.stack([kept[i] for i in range(trajectories)])
    import dask.array as da

    blocks = [
        da.from_array(kept[i], chunks=shape)
        if i in kept
        else da.full(shape, np.nan, dtype=np.float32, chunks=shape)
        for i in range(trajectories)
    ]
    return da.stack(blocks)


def _snapshots(
    model: QGModel, q0: Tensor, spinup: int, interval: int, steps: int, bar
) -> Iterator[Tensor]:
    """PV after ``spinup``, ``spinup + interval``, … steps (``steps`` snapshots, one AB3 run)."""
    if spinup == 0:
        yield model.to_grid(model.to_spectral(q0))
    state = model.init(q0)
    total = spinup + (steps - 1) * interval
    for i in range(1, total + 1):
        state = model.step(state)
        bar.update(state.qh.shape[0])
        if i >= spinup and (i - spinup) % interval == 0 and i > 0:
            yield model.to_grid(state.qh)


def write_dataset(ds, path: str) -> str:
    """Write ``ds`` to zarr (``path`` ending in ``.zarr``) or netCDF (otherwise). Returns path.

    zarr chunks are one trajectory × up to 32 times × the full field.
    """
    path = str(path)
    if path.rstrip("/").endswith(".zarr"):
        encoding = {
            name: {"chunks": (1, min(var.sizes["time"], 32), *var.shape[2:])}
            for name, var in ds.data_vars.items()
            if var.dims[:2] == ("trajectory", "time")
        }
        ds.to_zarr(path, mode="w", encoding=encoding, zarr_format=2, consolidated=True)
    else:
        ds.to_netcdf(path)
    return path
