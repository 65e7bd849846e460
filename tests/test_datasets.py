"""Data layer: open stores, name mapping, statistics, windows, xarray and HF round trips."""

from __future__ import annotations

import warnings

import dask
import dask.array
import datasets
import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import LevelNormalizer, StateAutoencoder
from slams_diffusers.data.datasets import (
    LevelStatistics,
    WindowDataset,
    add_split,
    from_hf_dataset,
    level_pressures,
    open_store,
    select_split,
    to_hf_dataset,
    to_store,
    to_xarray,
)

pytestmark = pytest.mark.filterwarnings(  # zarr 3: fixed-length strings, consolidated metadata
    "ignore:.*does not have a Zarr V3 specification",
    "ignore:Consolidated metadata is currently not part",
)

LEVELS = [250.0, 500.0, 850.0]
T_ATTRS = {
    "units": "K",
    "long_name": "air temperature",
    "standard_name": "air_temperature",
}


def make_testbed(trajectories: int = 4, steps: int = 7) -> xr.Dataset:
    """Testbed layout: t(trajectory, time, level, y, x) with a split coordinate, plus q."""
    rng = np.random.default_rng(0)
    shape = (trajectories, steps, len(LEVELS), 4, 6)
    base = np.array([220.0, 250.0, 280.0])[:, None, None]
    t = (base + rng.normal(scale=[[[2.0]], [[4.0]], [[6.0]]], size=shape)).astype(np.float32)
    q = rng.normal(size=(trajectories, steps, 2, 4, 6)).astype(np.float32)
    splits = (["train", "train", "val", "test"] * trajectories)[:trajectories]
    return xr.Dataset(
        {
            "t": (("trajectory", "time", "level", "y", "x"), t, T_ATTRS),
            "q": (("trajectory", "time", "layer", "y", "x"), q, {"long_name": "PV"}),
        },
        coords={
            "trajectory": np.arange(trajectories),
            "time": ("time", 0.5 * np.arange(steps), {"units": "days", "long_name": "time"}),
            "level": ("level", LEVELS, {"units": "hPa", "long_name": "pressure"}),
            "y": ("y", 1000.0 * np.arange(4), {"units": "m"}),
            "x": ("x", 1000.0 * np.arange(6), {"units": "m"}),
            "split": ("trajectory", splits),
        },
        attrs={"title": "QG testbed"},
    )


def weatherbench(levels=(50.0, 500.0, 850.0)) -> xr.Dataset:
    """WeatherBench2 / ERA5 layout: temperature(time, level, latitude, longitude), lat 90..-90."""
    rng = np.random.default_rng(1)
    latitude = np.array([90.0, 45.0, 0.0, -45.0, -90.0])
    shape = (5, len(levels), latitude.size, 8)
    values = (250.0 + 10.0 * rng.normal(size=shape)).astype(np.float32)
    return xr.Dataset(
        {"temperature": (("time", "level", "latitude", "longitude"), values, T_ATTRS)},
        coords={
            "time": np.datetime64("2020-01-01", "ns") + np.arange(5) * np.timedelta64(6, "h"),
            "level": ("level", list(levels), {"units": "hPa"}),
            "latitude": ("latitude", latitude, {"units": "degrees_north"}),
            "longitude": ("longitude", 45.0 * np.arange(8), {"units": "degrees_east"}),
        },
    )


def chaosbench() -> xr.Dataset:
    """ChaosBench style: t(time, level, lat, lon)."""
    rng = np.random.default_rng(2)
    values = (260.0 + rng.normal(size=(6, 2, 3, 4))).astype(np.float32)
    return xr.Dataset(
        {"t": (("time", "level", "lat", "lon"), values, {"units": "K"})},
        coords={
            "time": np.arange(6),
            "level": [500, 850],
            "lat": [-30.0, 0.0, 30.0],
            "lon": [0.0, 90.0, 180.0, 270.0],
        },
    )


# ----------------------------------------------------------------------------- open_store
def test_open_testbed_zarr_lazy_and_identical(tmp_path):
    ds = make_testbed()
    ds.to_zarr(tmp_path / "qg.zarr")
    data = open_store(tmp_path / "qg.zarr")
    assert data.dims == ("trajectory", "time", "level", "y", "x")
    assert isinstance(data.data, dask.array.Array)
    xr.testing.assert_identical(data.load(), ds["t"])


def test_open_without_dask_is_lazy_indexing(tmp_path):
    make_testbed().to_zarr(tmp_path / "qg.zarr")
    data = open_store(tmp_path / "qg.zarr", chunks=None)
    assert data.chunks is None  # xarray's lazy backend indexing, no dask
    assert WindowDataset(data, 3)[0].shape == (3, 3, 4, 6)


@pytest.mark.parametrize("fmt", ["zarr", "netcdf"])
def test_open_weatherbench_flips_latitude(tmp_path, fmt):
    ds = weatherbench()
    path = tmp_path / ("wb2.zarr" if fmt == "zarr" else "wb2.nc")
    if fmt == "zarr":
        ds.to_zarr(path)
    else:
        ds.to_netcdf(path, engine="scipy")
    data = open_store(path)
    assert data.name == "temperature"
    assert data.dims == ("time", "level", "y", "x")
    assert isinstance(data.data, dask.array.Array)
    np.testing.assert_array_equal(data["y"].values, [-90.0, -45.0, 0.0, 45.0, 90.0])
    assert data["y"].attrs == {"units": "degrees_north"}
    assert data["x"].attrs == {"units": "degrees_east"}
    assert data.attrs == T_ATTRS
    for lat in (45.0, -45.0, 90.0):
        np.testing.assert_array_equal(
            data.sel(y=lat).values, ds["temperature"].sel(latitude=lat).values
        )
    np.testing.assert_array_equal(data["time"].values, ds["time"].values)


def test_open_chaosbench_and_pa_levels():
    data = open_store(chaosbench())
    assert data.dims == ("time", "level", "y", "x")
    np.testing.assert_array_equal(data["y"].values, [-30.0, 0.0, 30.0])
    np.testing.assert_array_equal(data.values, chaosbench()["t"].values)

    cmip = chaosbench().rename(level="plev", t="ta")
    cmip["plev"] = ("plev", [50000.0, 85000.0], {"units": "Pa"})
    data = open_store(cmip, levels=[850, 500])
    np.testing.assert_array_equal(data["level"].values, [850.0, 500.0])
    assert data["level"].attrs["units"] == "hPa"
    np.testing.assert_array_equal(data.isel(level=0).values, cmip["ta"].isel(plev=1).values)


def test_open_by_standard_name_and_variable():
    ds = chaosbench().rename(t="temp_k")
    ds["temp_k"].attrs["standard_name"] = "air_temperature"
    assert open_store(ds).name == "temp_k"
    assert open_store(make_testbed(), "t").name == "t"


def test_open_levels_subset_and_mismatch():
    data = open_store(weatherbench(), levels=[850, 50])
    np.testing.assert_array_equal(data["level"].values, [850.0, 50.0])
    with pytest.raises(ValueError, match=r"found levels \[50.0, 500.0, 850.0\].*expected") as err:
        open_store(weatherbench(), levels=[500, 700])
    assert "missing [700.0]" in str(err.value)


def test_open_missing_variable():
    ds = make_testbed()[["q"]].assign(u=lambda d: d.q + 1)
    with pytest.raises(ValueError, match=r"found variables \['q', 'u'\].*expected") as err:
        open_store(ds)
    message = str(err.value)
    assert "'temperature'" in message and "air_temperature" in message
    assert "a single data variable" in message and "--variable" in message
    with pytest.raises(ValueError, match=r"`variable`='v'.*found variables \['q', 'u'\]"):
        open_store(ds, "v")


def test_open_the_single_variable_whatever_its_name():
    ds = make_testbed().rename(t="streamfunction").drop_vars("q")
    ds["time_bnds"] = xr.DataArray(np.zeros((4, 2)), dims=("trajectory", "bnds"))  # no time dim
    array = open_store(ds)
    assert array.name == "streamfunction"
    np.testing.assert_array_equal(array.values, ds["streamfunction"].values)


def test_open_missing_and_unexpected_dims():
    flat = weatherbench().isel(level=0, drop=True).drop_vars("time")
    with pytest.raises(ValueError, match=r"missing \['time'\].*Expected \(trajectory\?, time"):
        open_store(flat.rename(time="step"))
    with pytest.raises(ValueError, match=r"unexpected \['layer'\]"):
        open_store(make_testbed(), "q")
    both = xr.DataArray(np.zeros((2, 2, 2, 2, 2)), dims=("time", "level", "lat", "latitude", "x"))
    with pytest.raises(ValueError, match="several dims that map to 'y'"):
        open_store(both)


# -------------------------------------------------------------------------- statistics
def test_level_statistics_equal_numpy_and_fit_models():
    ds = make_testbed()
    stats = LevelStatistics.compute(ds)
    values = ds["t"].values.astype(np.float64)
    np.testing.assert_allclose(stats.mean, values.mean(axis=(0, 1, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(stats.std, values.std(axis=(0, 1, 3, 4)), rtol=1e-10)
    assert stats.levels == LEVELS
    assert all(type(v) is float for v in stats.mean + stats.std)

    train = LevelStatistics.compute(ds, split="train")
    np.testing.assert_allclose(train.mean, values[:2].mean(axis=(0, 1, 3, 4)), rtol=1e-12)

    config = stats.as_config()
    ae = StateAutoencoder(
        levels=3, latent_channels=2, downsample_factor=1, hidden_channels=(4,), **config
    )
    assert LevelStatistics.from_config(ae.config).as_config() == config
    normalizer = LevelNormalizer(levels=3, spatial_dims=2, **config)
    assert list(normalizer.config.level_std) == stats.std
    assert LevelStatistics.from_config(normalizer.config).as_config() == config
    assert LevelStatistics.from_dict(stats.to_dict()) == stats


def test_level_statistics_one_pass_over_chunks():
    ds = make_testbed()
    reads = []

    def count(block):
        if block.size > 1:  # skip dask's meta inference on empty / 1-element blocks
            reads.append(block.shape)
        return block

    lazy = dask.array.from_array(ds["t"].values, chunks=(1, 7, 3, 4, 6)).map_blocks(count)
    data = ds["t"].copy(data=lazy)
    with dask.config.set(scheduler="synchronous"):
        stats = LevelStatistics.compute(data)
    assert reads == [(1, 7, 3, 4, 6)] * 4  # each chunk read once for mean and std together
    np.testing.assert_allclose(stats.mean, LevelStatistics.compute(ds).mean, rtol=1e-12)


def test_level_statistics_zero_spread():
    ds = make_testbed()
    ds["t"][:, :, 1] = 250.0
    with pytest.raises(ValueError, match="expected std > 0"):
        LevelStatistics.compute(ds)


# ------------------------------------------------------------------------ WindowDataset
@pytest.mark.parametrize(("window", "stride"), [(3, 1), (3, 2), (7, 1), (1, 3)])
def test_window_dataset_lengths_and_values(window, stride):
    ds = make_testbed()
    dataset = WindowDataset(ds, window, stride=stride)
    per = (7 - window) // stride + 1
    assert len(dataset) == 4 * per
    values = ds["t"].values
    for index in range(len(dataset)):
        trajectory, position = divmod(index, per)
        start = position * stride
        item = dataset[index]
        assert item.dtype == torch.float32 and item.shape == (window, 3, 4, 6)
        np.testing.assert_array_equal(item.numpy(), values[trajectory, start : start + window])
    np.testing.assert_array_equal(dataset[-1].numpy(), values[3, -window:])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_window_dataset_split_and_errors():
    ds = make_testbed()
    val = WindowDataset(ds, 5, split="val")
    assert len(val) == 3
    np.testing.assert_array_equal(val[1].numpy(), ds["t"].values[2, 1:6])
    assert len(WindowDataset(ds, 5, split="train")) == 6
    with pytest.raises(ValueError, match=r"found splits \['test', 'train', 'val'\]"):
        WindowDataset(ds, 5, split="validation")
    with pytest.raises(ValueError, match="needs a `split` coordinate"):
        select_split(open_store(weatherbench()), "train")
    with pytest.raises(ValueError, match="found 7 time steps, expected window <= 7"):
        WindowDataset(ds, 8)
    with pytest.raises(ValueError, match="`stride`"):
        WindowDataset(ds, 3, stride=0)


def test_window_dataset_reanalysis_and_dataloader(tmp_path):
    weatherbench().to_zarr(tmp_path / "wb2.zarr")
    dataset = WindowDataset(tmp_path / "wb2.zarr", 3, levels=[500, 850])
    assert len(dataset) == 3
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch.shape == (2, 3, 2, 5, 8)
    expected = weatherbench()["temperature"].sel(level=[500, 850])
    expected = expected.isel(latitude=slice(None, None, -1))
    np.testing.assert_array_equal(batch[1].numpy(), expected.values[1:4])


def test_window_dataset_reads_only_its_slice():
    ds = make_testbed()

    def poisoned():
        raise RuntimeError("read a trajectory it did not need")

    good = dask.array.from_array(ds["t"].values[:3], chunks=(1, 7, 3, 4, 6))
    bad = dask.array.from_delayed(dask.delayed(poisoned)(), (1, 7, 3, 4, 6), np.float32)
    data = ds["t"].copy(data=dask.array.concatenate([good, bad]))
    dataset = WindowDataset(data, 3)
    assert isinstance(dataset.data.data, dask.array.Array)
    np.testing.assert_array_equal(dataset[5].numpy(), ds["t"].values[1, 0:3])
    assert isinstance(dataset.data.data, dask.array.Array)  # nothing cached or loaded
    with pytest.raises(RuntimeError, match="did not need"):
        dataset[len(dataset) - 1]


# ---------------------------------------------------------------------------- to_xarray
def test_simulate_zarr_dataset_tensors_xarray_round_trip(tmp_path):
    ds = make_testbed()
    ds.to_zarr(tmp_path / "qg.zarr")
    dataset = WindowDataset(tmp_path / "qg.zarr", 3, stride=2, split="val")
    for index in (0, len(dataset) - 1):
        template = dataset.window_array(index)
        back = to_xarray(dataset[index], template)
        xr.testing.assert_identical(back, template.load())
        assert back.attrs == T_ATTRS and back["level"].attrs["units"] == "hPa"
        assert back["split"].item() == "val"

    whole = open_store(tmp_path / "qg.zarr")
    back = to_xarray(torch.as_tensor(whole.values), whole)
    xr.testing.assert_identical(back, ds["t"])

    members = torch.stack([dataset[0], dataset[0] + 1.0])
    ensemble = to_xarray(members, dataset.window_array(0), leading_dims=("member",))
    assert ensemble.dims == ("member", "time", "level", "y", "x")
    xr.testing.assert_identical(ensemble.isel(member=0), dataset.window_array(0).load())


def test_to_xarray_errors():
    template = open_store(make_testbed()).isel(trajectory=0)
    with pytest.raises(ValueError, match=r"expected trailing sizes \(7, 3, 4, 6\)"):
        to_xarray(torch.zeros(7, 2, 4, 6), template)
    with pytest.raises(ValueError, match="`leading_dims` has 2 names"):
        to_xarray(torch.zeros(2, 7, 3, 4, 6), template, leading_dims=("a", "b"))
    assert to_xarray(torch.zeros(2, 7, 3, 4, 6), template).dims[0] == "sample"


# --------------------------------------------------------------------------- HF datasets
def test_hf_round_trip_testbed(tmp_path):
    ds = make_testbed(trajectories=3, steps=4)
    ds.to_zarr(tmp_path / "qg.zarr")
    data = open_store(tmp_path / "qg.zarr")
    hf = to_hf_dataset(data, cache_dir=tmp_path / "cache", block_size=3)
    assert hf.num_rows == 12
    assert set(hf.column_names) == {"t", "trajectory", "time", "split"}
    assert isinstance(hf.features["t"], datasets.Array3D)
    row = hf.with_format("numpy")[5]
    assert row["split"] == "train" and row["trajectory"] == 1 and row["time"] == 0.5
    np.testing.assert_array_equal(row["t"], ds["t"].values[1, 1])

    xr.testing.assert_identical(from_hf_dataset(hf), ds["t"])
    hf.save_to_disk(tmp_path / "hf")
    loaded = datasets.load_from_disk(tmp_path / "hf")
    xr.testing.assert_identical(from_hf_dataset(loaded), ds["t"])


def test_hf_round_trip_reanalysis_times_and_metadata_argument(tmp_path):
    data = open_store(weatherbench())
    hf = to_hf_dataset(data, cache_dir=tmp_path / "cache")
    assert hf.num_rows == 5 and set(hf.column_names) == {"temperature", "time"}
    hf.save_to_disk(tmp_path / "hf")
    loaded = datasets.load_from_disk(tmp_path / "hf")
    back = from_hf_dataset(loaded)
    xr.testing.assert_identical(back, data.load())
    assert back["time"].dtype == data["time"].dtype

    metadata = hf.info.description
    loaded.info.description = ""
    with pytest.raises(ValueError, match="no slams_diffusers metadata"):
        from_hf_dataset(loaded)
    xr.testing.assert_identical(from_hf_dataset(loaded, metadata=metadata), data.load())


def test_hf_column_and_rank_one_snapshots(tmp_path):
    column = open_store(chaosbench()).isel(y=0, x=0)  # a single column (time, level)
    hf = to_hf_dataset(column, cache_dir=tmp_path / "cache", keep_in_memory=True)
    xr.testing.assert_identical(from_hf_dataset(hf), column)


def test_hf_rejects_reordered_rows(tmp_path):
    ds = make_testbed(trajectories=2, steps=3)
    hf = to_hf_dataset(ds["t"], cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="expected the rows in the order"):
        from_hf_dataset(hf.select([1, 0, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="has 5 rows; expected 6"):
        from_hf_dataset(hf.select(range(5)))


# ------------------------------------------------------------- other fields, levels in Pa
def single_run(steps: int = 30, plev=(85000.0, 50000.0), units: str | None = "Pa") -> xr.Dataset:
    """One continuous run, CMIP layout: ta(time, plev, lat, lon), plev in Pa."""
    rng = np.random.default_rng(3)
    values = 250.0 + rng.normal(size=(steps, len(plev), 3, 4))
    attrs = {} if units is None else {"units": units}
    return xr.Dataset(
        {"ta": (("time", "plev", "lat", "lon"), values, {"units": "K"})},
        coords={"plev": ("plev", list(plev), attrs), "lat": [-10.0, 0.0, 10.0]},
    )


def test_open_fields_without_a_level_dim():
    rng = np.random.default_rng(4)
    u = rng.normal(size=(3, 5, 8))  # a 1-D model (Lorenz-96 like): (trajectory, time, x)
    ds = xr.Dataset({"u": (("trajectory", "time", "x"), u)})
    array = open_store(ds)
    assert array.dims == ("trajectory", "time", "level", "x") and array.sizes["level"] == 1
    np.testing.assert_array_equal(array.values[:, :, 0], u)
    assert level_pressures(array) is None
    surface = weatherbench().isel(level=0, drop=True)  # (time, latitude, longitude)
    flat = open_store(surface)
    assert flat.dims == ("time", "level", "y", "x") and flat.sizes["level"] == 1
    np.testing.assert_array_equal(flat.values[:, 0], surface["temperature"].values[:, ::-1])
    chosen = open_store(weatherbench().sel(level=500.0))  # a scalar level coordinate
    assert chosen.sizes["level"] == 1 and chosen["level"].values.tolist() == [500.0]


def test_levels_in_pa_and_level_pressures():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # units say Pa: converted silently
        array = open_store(single_run())
    assert array.dims == ("time", "level", "y", "x")
    assert array["level"].values.tolist() == [850.0, 500.0]
    assert array["level"].attrs["units"] == "hPa"
    assert level_pressures(array) == [850.0, 500.0]
    # no units, values only Pa can have: read as Pa, with a warning
    with pytest.warns(UserWarning, match="no units and values above 1100: read as Pa"):
        bare = open_store(single_run(units=None))
    assert level_pressures(bare) == [850.0, 500.0]
    # the levels asked for may be in Pa too
    assert open_store(single_run(), levels=[50000.0])["level"].values.tolist() == [500.0]
    assert open_store(single_run(), levels=[500.0, 850.0])["level"].values.tolist() == [
        500.0,
        850.0,
    ]
    numbered = xr.DataArray(np.zeros((2, 3)), dims=("time", "level"), coords={"level": [1, 2, 3]})
    assert level_pressures(open_store(numbered)) is None  # model level numbers
    heights = single_run(plev=(1500.0, 3000.0), units="m")  # not pressure: kept as is
    assert level_pressures(open_store(heights)) is None
    assert open_store(heights, levels=[3000.0])["level"].values.tolist() == [3000.0]


# ----------------------------------------------------------------------------------- splits
def test_add_split_by_time_leaves_gaps_between_blocks():
    run = open_store(single_run(steps=30))
    split = add_split(run, (0.8, 0.1, 0.1), gap=3)
    # 30 - 2 gaps of 3 = 24 times: largest remainder of 19.2 / 2.4 / 2.4 gives 19 / 3 / 2
    expected = ["train"] * 19 + ["gap"] * 3 + ["val"] * 3 + ["gap"] * 3 + ["test"] * 2
    assert split["split"].dims == ("time",) and split["split"].values.tolist() == expected
    assert split["split"].dtype == object and split["split"].attrs["gap"] == 3
    for name, (start, stop) in {"train": (0, 19), "val": (22, 25), "test": (28, 30)}.items():
        part = select_split(split, name)
        np.testing.assert_array_equal(part.values, run.values[start:stop])
    windows = WindowDataset(split, window=3, split="val")
    assert len(windows) == 1
    np.testing.assert_array_equal(windows[0].numpy(), run.values[22:25].astype(np.float32))
    assert add_split(run, (1.0,))["split"].values.tolist() == ["train"] * 30
    # zero fractions give no block and no gap
    assert add_split(run, (0.5, 0.0, 0.5), gap=2)["split"].values.tolist() == (
        ["train"] * 14 + ["gap"] * 2 + ["test"] * 14
    )


def test_add_split_by_trajectory_and_the_automatic_choice():
    testbed = open_store(make_testbed(trajectories=5, steps=4))
    split = add_split(testbed, (0.6, 0.2, 0.2))
    assert split["split"].dims == ("trajectory",)
    assert split["split"].values.tolist() == ["train", "train", "train", "val", "test"]
    assert select_split(split, "test")["trajectory"].values.tolist() == [4]
    two = open_store(make_testbed(trajectories=2, steps=9)).drop_vars("split")
    assert add_split(two, (0.8, 0.1, 0.1))["split"].dims == ("time",)  # too few trajectories
    with pytest.raises(ValueError, match="applies to by='time' only"):
        add_split(testbed, gap=2, by="trajectory")
    with pytest.raises(ValueError, match=r"has 9 time entries.*needs at least 11"):
        add_split(two, (0.8, 0.1, 0.1), gap=4, by="time")
    with pytest.raises(ValueError, match="`fractions` must be 1 to 3 non-negative"):
        add_split(two, (0.5, -0.5))
    with pytest.raises(ValueError, match="`by` must be"):
        add_split(two, by="level")
    with pytest.raises(ValueError, match="`gap` must be an integer"):
        add_split(two, gap=1.5)


def test_select_split_says_how_to_split_a_single_run():
    run = open_store(single_run())
    with pytest.raises(ValueError, match="needs a `split` coordinate") as err:
        select_split(run, "train")
    message = str(err.value)
    assert "add_split(data, fractions=(0.8, 0.1, 0.1), gap=8)" in message
    assert "--split_by time --split_fractions 0.8 0.1 0.1 --split_gap 8" in message
    assert "--split None" in message
    scattered = run.assign_coords(split=("time", ["train", "val"] * 15))
    with pytest.raises(ValueError, match="not one block of consecutive times"):
        select_split(scattered, "train")
    with pytest.raises(ValueError, match=r"selects no time; found splits \['train', 'val'\]"):
        select_split(scattered, "test")


# ---------------------------------------------------------------------------------- to_store
@pytest.mark.parametrize("name", ["run.zarr", "run.nc"])
def test_to_store_round_trip_without_warnings(tmp_path, name):
    source = single_run(steps=12)
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zarr warning about the split strings
        to_store(source["ta"], path, split=(0.5, 0.25, 0.25), gap=2)
        back = open_store(path)
    expected = add_split(open_store(source), (0.5, 0.25, 0.25), gap=2)  # 4 | 2 | 2 | 2 | 2
    np.testing.assert_array_equal(back.values, expected.values)
    assert back.dims == expected.dims and back.name == "ta" and back.attrs == {"units": "K"}
    assert back["level"].values.tolist() == [850.0, 500.0]
    assert [str(v) for v in back["split"].values] == list(expected["split"].values)
    np.testing.assert_array_equal(select_split(back, "val").values, expected.values[6:8])
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        to_store(source["ta"], path)
    to_store(source["ta"], path, split="train", overwrite=True)
    assert {str(v) for v in open_store(path)["split"].values} == {"train"}


def test_to_store_arrays_and_labels(tmp_path):
    rng = np.random.default_rng(5)
    runs = rng.normal(size=(3, 6, 8))
    path = to_store(
        torch.from_numpy(runs), tmp_path / "l96.zarr", split=["train", "val", "test"],
        dims=("trajectory", "time", "x"), name="u", attrs={"long_name": "Lorenz-96"},
    )  # fmt: skip
    back = open_store(path)
    assert back.dims == ("trajectory", "time", "level", "x") and back.name == "u"
    np.testing.assert_array_equal(back.values[:, :, 0], runs)
    assert back.attrs["long_name"] == "Lorenz-96"
    np.testing.assert_array_equal(select_split(back, "val").values[0, :, 0], runs[1])
    # the labels survive the datasets export
    hf = to_hf_dataset(back, cache_dir=tmp_path / "cache")
    assert [str(v) for v in from_hf_dataset(hf)["split"].values] == ["train", "val", "test"]
    default = open_store(to_store(runs[0], tmp_path / "one.nc"))  # (time, x) by default
    assert default.dims == ("time", "level", "x") and default.name == "state"
    with pytest.raises(ValueError, match="needs `dims`"):
        to_store(runs, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="one label per trajectory or per time"):
        to_store(runs, tmp_path / "y.zarr", split=["train"] * 4, dims=("trajectory", "time", "x"))


@pytest.mark.parametrize("name", ["x", "time", "split"])
def test_to_store_refuses_a_variable_named_like_a_dimension(tmp_path, name):
    """A variable named like a dim or coordinate (Lorenz-96's ``x``) cannot be written: one
    ``ValueError`` naming ``name`` and ``dims`` (xarray's own is a ``MergeError``), before any
    writing."""
    runs = np.zeros((3, 4, 8))
    path = tmp_path / "l96.zarr"
    expected = rf"`name`='{name}' is also the name of a dimension or coordinate.*'trajectory'"
    expected += r".*`dims`"
    with pytest.raises(ValueError, match=expected):
        to_store(runs, path, split="train", dims=("trajectory", "time", "x"), name=name)
    assert not path.exists()
