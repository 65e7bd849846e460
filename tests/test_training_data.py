"""``load_training_data``: a zarr store and a ``datasets`` folder give the same split."""

import argparse
import json
import pathlib

import numpy as np
import pytest
import xarray as xr

from slams_diffusers.data.datasets import open_store, to_hf_dataset
from slams_diffusers.data.qg import QGConfig, simulate_dataset, write_dataset
from slams_diffusers.training import load_training_data


@pytest.fixture(scope="module")
def simulated():
    return simulate_dataset(
        trajectories=4,
        steps=4,
        seed=0,
        config=QGConfig(nx=16),
        spinup=20,
        interval=2,
        splits=(0.5, 0.25, 0.25),
    )


@pytest.fixture(scope="module")
def stores(simulated, tmp_path_factory):
    """The same data as a zarr store (with the PV ``q``) and as a ``save_to_disk`` folder."""
    root = tmp_path_factory.mktemp("stores")
    zarr_path = write_dataset(simulated, str(root / "qg.zarr"))
    hf = to_hf_dataset(open_store(zarr_path), cache_dir=root / "cache")
    hf.save_to_disk(str(root / "qg-hf"))
    return zarr_path, str(root / "qg-hf")


def args(data, variable=None):
    return argparse.Namespace(data=data, variable=variable)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("split, trajectories", [("train", [0, 1]), ("val", [2]), ("test", [3])])
def test_zarr_and_datasets_folder_give_the_same_split(simulated, stores, split, trajectories):
    zarr_path, folder = stores
    from_zarr = load_training_data(args(zarr_path), split)
    from_folder = load_training_data(args(folder), split)
    expected = simulated["t"].isel(trajectory=trajectories)
    for data in (from_zarr, from_folder):
        assert isinstance(data, xr.DataArray)
        assert data.dims == ("trajectory", "time", "level", "y", "x")
        assert data.shape == (len(trajectories), 4, 5, 16, 16)
        assert data.dtype == np.float32
        assert list(data["trajectory"].values) == trajectories
        assert {str(v) for v in data["split"].values} == {split}
        np.testing.assert_array_equal(data.values, expected.values)
        np.testing.assert_array_equal(data["level"].values, [850.0, 700.0, 500.0, 300.0, 200.0])
    np.testing.assert_array_equal(from_zarr.values, from_folder.values)
    for name in ("time", "level", "y", "x"):
        np.testing.assert_array_equal(from_zarr[name].values, from_folder[name].values)
    assert from_zarr.attrs["units"] == from_folder.attrs["units"] == "K"
    # the zarr store is read lazily; the datasets folder is loaded by from_hf_dataset
    assert from_zarr.chunks is not None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_load_training_data_without_split_and_with_a_variable(simulated, stores):
    zarr_path, folder = stores
    everything = load_training_data(args(zarr_path))
    assert everything.sizes["trajectory"] == 4
    np.testing.assert_array_equal(everything.values, simulated["t"].values)
    named = load_training_data(args(zarr_path, variable="t"), "val")
    np.testing.assert_array_equal(named.values, simulated["t"].isel(trajectory=[2]).values)
    renamed = load_training_data(args(folder, variable="air"), "test")
    assert renamed.name == "air"
    np.testing.assert_array_equal(renamed.values, simulated["t"].isel(trajectory=[3]).values)


def test_the_folder_is_recognised_by_its_dataset_info(stores):
    _, folder = stores
    info = pathlib.Path(folder) / "dataset_info.json"
    assert info.is_file()
    metadata = json.loads(json.loads(info.read_text())["description"])
    assert metadata["column"] == "t" and metadata["row_dims"] == ["trajectory", "time"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_load_training_data_errors(stores, tmp_path):
    zarr_path, folder = stores
    for data in (zarr_path, folder):
        with pytest.raises(ValueError, match="selects no trajectory"):
            load_training_data(args(data), "holdout")
    with pytest.raises(ValueError, match="'missing' is not in the store"):
        load_training_data(args(zarr_path, variable="missing"), "train")
