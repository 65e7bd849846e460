"""The testbed end to end: QG simulation -> zarr -> data layer -> tensors -> xarray, and the
observation simulators on QG states."""

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers.data.datasets import (
    WindowDataset,
    from_hf_dataset,
    open_store,
    to_hf_dataset,
    to_xarray,
)
from slams_diffusers.data.observing import degraded_field, satellite_channels, station_network
from slams_diffusers.data.qg import QGConfig, simulate_dataset, write_dataset


@pytest.fixture(scope="module")
def simulated():
    return simulate_dataset(3, 5, seed=0, config=QGConfig(nx=32), spinup=40, interval=4)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_simulate_zarr_dataset_tensors_xarray_round_trip(simulated, tmp_path):
    path = write_dataset(simulated, str(tmp_path / "qg.zarr"))
    data = open_store(path)
    assert data.dims == ("trajectory", "time", "level", "y", "x")
    assert data.attrs["standard_name"] == "air_temperature" and data.attrs["units"] == "K"
    np.testing.assert_array_equal(data["level"].values, [850.0, 700.0, 500.0, 300.0, 200.0])
    assert data["level"].attrs["units"] == "hPa"

    windows = WindowDataset(data, window=3)
    assert len(windows) == 3 * (5 - 3 + 1)
    trajectory, start = windows.locate(4)
    tensor = windows[4]
    assert tensor.shape == (3, 5, 32, 32)
    expected = simulated["t"].isel(trajectory=trajectory, time=slice(start, start + 3))
    np.testing.assert_allclose(tensor.numpy(), expected.values, rtol=1e-6)

    back = to_xarray(tensor, windows.window_array(4))
    assert back.dims == expected.dims
    for name in ("level", "y", "x", "time"):
        np.testing.assert_array_equal(back[name].values, expected[name].values)
    assert back["level"].attrs == expected["level"].attrs
    assert back.attrs == simulated["t"].attrs


def test_simulated_temperature_exports_to_hf_datasets_and_back(simulated, tmp_path):
    data = open_store(simulated)
    loaded = from_hf_dataset(to_hf_dataset(data, cache_dir=str(tmp_path)))
    xr.testing.assert_identical(loaded.load(), data.load())


def test_observation_simulators_reproduce_their_noise_on_qg_states(simulated):
    truth = torch.as_tensor(simulated["t"].isel(trajectory=0, time=-1).values, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    pressures = [850.0, 700.0, 500.0, 300.0, 200.0]
    observations = [
        station_network(truth, 400, levels=[0, 1, 2, 3, 4], noise_std=0.5, generator=generator),
        satellite_channels(
            truth, pressures, [700.0, 500.0, 300.0], footprint=1, noise_std=1.0, generator=generator
        ),
        degraded_field(truth, coarsen=1, noise_std=2.0, sparsity=1, generator=generator),
    ]
    for observation in observations:
        residual = (observation.values - observation.operator(truth))[observation.mask]
        noise_std = float(torch.as_tensor(observation.noise_std))
        assert residual.numel() >= 2000
        assert residual.std().item() == pytest.approx(noise_std, rel=0.05)
        assert abs(residual.mean().item()) < 4 * noise_std / residual.numel() ** 0.5
