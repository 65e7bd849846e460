"""A global latitude-longitude grid that the U-Net's halvings do not divide (ERA5's 61 × 120 at
3°): latitude padded with its edge rows on the way in and cropped on the way out, longitude
periodic and never padded; the ERA5 sample that ships with the package and its real-data twin
(docs/method.md §Real grids)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import (
    LevelNormalizer,
    ScoreNet,
    SLAMSPipeline,
    VPPredictorCorrectorScheduler,
    ZonalCovariance,
)
from slams_diffusers.data.datasets import to_store
from slams_diffusers.data.era5 import packaged_era5, twin_case
from slams_diffusers.ensemble import ensemble_covariance
from slams_diffusers.observations import Stations

REPO = Path(__file__).parents[1]
LEVELS = [850.0, 500.0]


def global_field(times: int, seed: int = 0) -> xr.DataArray:
    """``t(time, level, latitude, longitude)`` on a 3° grid from 90°N to 90°S, smooth waves."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, 61)
    lon = np.arange(0.0, 360.0, 3.0)
    phase = rng.uniform(0, 2 * np.pi, size=(times, 1, 1, 1))
    wave = np.cos(np.deg2rad(lat))[:, None] ** 2 * np.sin(np.deg2rad(lon)[None] * 3 + phase)
    base = np.array([270.0, 250.0])[None, :, None, None] + 30 * np.cos(np.deg2rad(lat))[:, None]
    values = (base + 5 * wave).astype(np.float32)
    return xr.DataArray(
        values,
        dims=("time", "level", "latitude", "longitude"),
        coords={
            "time": np.datetime64("2017-01-01", "ns") + np.arange(times) * np.timedelta64(12, "h"),
            "level": ("level", LEVELS, {"units": "hPa"}),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
        name="t",
        attrs={"units": "K"},
    )


def test_the_normaliser_pads_latitude_and_crops_it_back():
    normalizer = LevelNormalizer(
        levels=2, spatial_dims=2, level_mean=[270.0, 250.0], level_std=[10.0, 8.0],
        grid_shape=[61, 120], pad_to_multiple=8,
    )  # fmt: skip
    x = 250.0 + torch.randn(3, 1, 2, 61, 120, generator=torch.Generator().manual_seed(0))
    z = normalizer.encode(x)
    assert z.shape[-2:] == normalizer.latent_shape((61, 120)) == (64, 120)
    torch.testing.assert_close(z[..., 0, :], z[..., 1, :], rtol=0, atol=0)  # 1 row before
    torch.testing.assert_close(z[..., -1, :], z[..., -3, :], rtol=0, atol=0)  # 2 rows after
    torch.testing.assert_close(normalizer.decode(z), x, rtol=0, atol=1e-4)  # float32 of 250 K
    with pytest.raises(ValueError, match="x .periodic longitude. is never padded"):
        LevelNormalizer(levels=1, spatial_dims=2, grid_shape=[61, 122], pad_to_multiple=4)


def test_a_61_by_120_background_runs_end_to_end_on_its_own_grid():
    torch.manual_seed(0)
    field = global_field(2)
    normalizer = LevelNormalizer(
        levels=2, spatial_dims=2, level_mean=[285.0, 265.0], level_std=[12.0, 12.0],
        levels_hpa=LEVELS, grid_shape=[61, 120], pad_to_multiple=4,
    )  # fmt: skip
    net = ScoreNet(in_channels=2, window=1, hidden_channels=(8, 8, 8), layers_per_block=1,
                   periodic=True)  # fmt: skip
    pipe = SLAMSPipeline(
        score_model=net, scheduler=VPPredictorCorrectorScheduler(), autoencoder=normalizer
    )
    pipe.set_progress_bar_config(disable=True)
    truth = torch.from_numpy(field.values[1])
    stations = Stations.simulate(
        truth, torch.tensor([[30.0, 10.0], [45.0, 100.5]]), [0, 1], 0.5,
        periodic="x", generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    out = pipe(
        background=field.isel(time=[0]),
        background_error_std=[1.5, 1.0],
        background_error_length_scale=3.0,
        observations=[stations],
        num_members=2,
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(m) for m in range(2)],
    )
    assert out.mean.dims == ("time", "level", "latitude", "longitude")
    assert out.mean.shape == (1, 2, 61, 120)
    for name in ("latitude", "longitude", "level", "time"):
        np.testing.assert_array_equal(out.mean[name].values, field.isel(time=[0])[name].values)
    assert np.isfinite(out.members.values).all()


def test_training_on_a_grid_the_unet_does_not_divide_pads_it(tmp_path):
    spec = importlib.util.spec_from_file_location("ts", REPO / "training" / "train_score.py")
    train_score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_score)
    store = to_store(global_field(12).isel(latitude=slice(0, 13), longitude=slice(0, 16)),
                     tmp_path / "grid.zarr")  # fmt: skip
    train_score.main([
        "--data", str(store), "--output_dir", str(tmp_path / "run"), "--window", "1",
        "--split_by", "time", "--split_gap", "1", "--hidden_channels", "8", "8",
        "--layers_per_block", "1", "--max_train_steps", "2", "--train_batch_size", "2",
        "--no-progress_bar", "--report_to", "none", "--no-periodic",
    ])  # fmt: skip
    pipe = SLAMSPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipe.autoencoder.config.pad_to_multiple == 2
    assert pipe.autoencoder.latent_shape((13, 16)) == (14, 16)


def test_the_packaged_era5_twin_runs_on_its_grid_with_a_zonal_b():
    data = packaged_era5()
    assert data.dims == ("trajectory", "time", "level", "y", "x")
    assert data.shape == (10, 4, 2, 61, 120)
    np.testing.assert_array_equal(data.y.values, np.linspace(-90.0, 90.0, 61))
    np.testing.assert_array_equal(data.x.values, np.arange(0.0, 360.0, 3.0))
    assert [str(s, "ascii") for s in data.split.values] == ["train"] * 3 + ["test"]
    assert 200.0 < float(data.min()) and float(data.max()) < 310.0
    case = twin_case(data, 4)
    assert torch.equal(case.truth, torch.from_numpy(data.values[4, -1].astype(np.float64)))
    assert case.members.shape == (9, 2, 61, 120) and case.error_inflation == pytest.approx(10 / 9)
    covariance = ensemble_covariance(
        case.members, periodic="x", localization_radius=4.0, inflation=case.error_inflation
    )
    assert isinstance(covariance, ZonalCovariance)
    # the members' spread is a real error estimate: the mean's error is of its size
    error = (case.background - case.truth).square().mean().sqrt()
    spread = covariance.variance().mean().sqrt()
    assert 0.5 < float(error / spread) < 2.0

    torch.manual_seed(0)
    net = ScoreNet(in_channels=2, window=1, hidden_channels=(8, 8, 8), layers_per_block=1,
                   periodic=True)  # fmt: skip
    normalizer = LevelNormalizer(
        levels=2, spatial_dims=2, level_mean=[265.0, 245.0], level_std=[15.0, 12.0],
        levels_hpa=LEVELS, grid_shape=[61, 120], pad_to_multiple=4,
    )  # fmt: skip
    pipe = SLAMSPipeline(
        score_model=net, scheduler=VPPredictorCorrectorScheduler(), autoencoder=normalizer
    )
    pipe.set_progress_bar_config(disable=True)
    stations = Stations.simulate(
        case.truth, torch.tensor([[10.0, 5.0], [30.5, 119.5], [55.0, 60.0]]), [0, 1], 0.5,
        periodic="x", generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    background = data.isel(trajectory=slice(0, 4), time=[3]).mean("trajectory")
    out = pipe(
        background=background,
        background_error_covariance=covariance,
        observations=[stations],
        num_members=2,
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(m) for m in range(2)],
    )
    assert out.mean.dims == background.dims and out.mean.shape == background.shape
    for name in background.coords:
        np.testing.assert_array_equal(out.mean[name].values, background[name].values)
    assert out.quality_control.rejected == {"stations": 0}
    assert np.isfinite(out.members.values).all()
