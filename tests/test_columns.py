"""States without horizontal extent, a column ``(level,)``: the sampler against the exact posterior,
the column network, the pipeline, OI and the command line on column files."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from slams_diffusers import LevelNormalizer, ScoreNet, SLAMSPipeline, VPPredictorCorrectorScheduler
from slams_diffusers.baselines import letkf, optimal_interpolation, stochastic_enkf
from slams_diffusers.cli import main
from slams_diffusers.covariance import DenseCovariance, DiagonalCovariance
from slams_diffusers.observations import Profile, Satellite, Stations, gaussian_weighting_functions
from slams_diffusers.testing import GaussianPosterior, column_problem

PRESSURES = [850.0, 700.0, 500.0, 300.0, 200.0]


def test_the_sampler_reproduces_the_exact_posterior_of_a_column():
    """A Gaussian column prior (exact score), a surface report below the lowest level and three
    sounder channels. Measured (seed 0, 512 members × 64 steps): mean error 0.17 posterior std,
    variance ratio 0.98. The mean's sampling error is 1/√512 = 0.04 std; the rest is moment
    matching's approximation where the climatology blend acts (docs/method.md §Guidance)."""
    problem = column_problem(seed=0)
    mean_error, variance_ratio = problem.errors("moment_matching", 512, 64, corrector_steps=0)
    assert mean_error < 0.25
    assert abs(variance_ratio - 1) < 0.1
    prior_std = problem.pipeline.autoencoder.norm_std.double()
    posterior_std = problem.posterior.covariance.diagonal().sqrt()
    assert (posterior_std < 0.5 * prior_std).any()  # the observations do constrain the column


def test_the_column_network_round_trips(tmp_path):
    torch.manual_seed(0)
    net = ScoreNet(in_channels=5, window=1, spatial_dims=0, hidden_channels=(16, 16))
    sample, t = torch.randn(3, 1, 5), torch.rand(3)
    eps = net(sample, t).sample
    assert eps.shape == sample.shape
    net.save_pretrained(tmp_path)
    loaded = ScoreNet.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(sample, t).sample, eps, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"`sample` must be a 3-D tensor \(B, window, C\)"):
        net(torch.randn(3, 1, 5, 4), t)


@pytest.fixture(scope="module")
def column_pipeline():
    """An untrained pixel-space column pipeline: the checks below need its shapes, not skill."""
    torch.manual_seed(0)
    normalizer = LevelNormalizer(
        levels=5,
        spatial_dims=0,
        level_mean=[285.0, 275.0, 255.0, 230.0, 218.0],
        level_std=[4.0, 3.5, 3.5, 4.0, 4.0],
        levels_hpa=PRESSURES,
        grid_shape=[],
    )
    net = ScoreNet(in_channels=5, window=1, spatial_dims=0, hidden_channels=(16, 16))
    pipe = SLAMSPipeline(
        score_model=net, scheduler=VPPredictorCorrectorScheduler(), autoencoder=normalizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _observations():
    truth = torch.tensor([286.0, 276.0, 254.0, 231.0, 217.0])
    weights = gaussian_weighting_functions(PRESSURES, [600.0, 300.0])
    return truth, [
        Profile(values=[290.0], pressures=[960.0], model_pressures=PRESSURES, noise_std=2.0),
        Satellite(weights @ truth, weights, 1, (), 0.5),
        Stations(truth[None, [2]], torch.zeros(1, 0), [2], 5, (), 0.5),
    ]


def test_a_column_assimilates_with_a_dense_background_covariance(column_pipeline, tmp_path):
    truth, observations = _observations()
    background = torch.tensor([[284.0, 274.0, 256.0, 229.0, 219.0]])
    level = torch.tensor(PRESSURES).log()
    matrix = 9.0 * torch.exp(-((level[:, None] - level[None]) ** 2) / 0.5)
    covariance = DenseCovariance.from_matrix(matrix, 5, ())
    template = xr.DataArray(
        background.numpy(),
        dims=("time", "level"),
        coords={"time": [0], "level": ("level", PRESSURES, {"units": "hPa"})},
        attrs={"units": "K"},
    )
    kwargs = dict(
        background=template,
        observations=observations,
        background_error_covariance=covariance,
        num_members=3,
        num_inference_steps=4,
    )
    out = column_pipeline(**kwargs, generator=[torch.Generator().manual_seed(m) for m in range(3)])
    assert out.members.dims == ("member", "time", "level")
    assert out.mean.level.values.tolist() == PRESSURES
    assert np.isfinite(out.members.values).all()
    column_pipeline.save_pretrained(tmp_path)
    loaded = SLAMSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    again = loaded(**kwargs, generator=[torch.Generator().manual_seed(m) for m in range(3)])
    np.testing.assert_array_equal(again.members.values, out.members.values)
    # OI on the column is the exact BLUE with the dense B (to the float32 rounding of the
    # observed values' innovations: 290 K × 2⁻²⁴ ≈ 2e-5 K)
    analysis = optimal_interpolation(background.double(), observations, covariance, tolerance=1e-12)
    blue = GaussianPosterior.from_observations(background.double(), matrix.double(), observations)
    torch.testing.assert_close(analysis, blue.mean, rtol=0, atol=1e-4)


def test_a_length_scale_is_refused_for_a_column(column_pipeline):
    _, observations = _observations()
    with pytest.raises(ValueError, match="background_error_length_scale.*column"):
        column_pipeline(
            background=torch.tensor([[284.0, 274.0, 256.0, 229.0, 219.0]]),
            observations=observations,
            background_error_std=2.0,
            background_error_length_scale=3.0,
            num_members=1,
            num_inference_steps=2,
        )
    # a per-level std is a diagonal B on the column, with no white-B warning
    cov = DiagonalCovariance.from_std([1.0, 2.0, 2.0, 2.0, 1.0], 5, ())
    assert cov.variance().tolist() == [1.0, 4.0, 4.0, 4.0, 1.0]


def test_slams_assimilate_and_evaluate_a_column_file(column_pipeline, tmp_path, capsys):
    column_pipeline.save_pretrained(tmp_path / "pipe")
    truth, observations = _observations()
    coords = {
        "time": np.array(["2005-05-01T00"], dtype="datetime64[ns]"),
        "level": ("level", PRESSURES, {"units": "hPa"}),
    }
    background = xr.DataArray(
        np.array([[284.0, 274.0, 256.0, 229.0, 219.0]], dtype=np.float32),
        dims=("time", "level"),
        coords=coords,
        name="t",
        attrs={"units": "K"},
    )
    background.to_netcdf(tmp_path / "background.nc")
    background.copy(data=truth.numpy()[None]).to_netcdf(tmp_path / "truth.nc")
    pd.DataFrame(
        {
            "station": ["SFC", "RAOB"],
            "time": ["2005-05-01T00", "2005-05-01T00"],
            "pressure": [960.0, 500.0],  # a surface report between no levels, and a level
            "value": [290.0, 254.0],
            "error": [2.0, 0.5],
        }
    ).to_csv(tmp_path / "stations.csv", index=False)
    satellite = observations[1]
    xr.Dataset(
        {
            "radiance": (("time", "channel"), satellite.values.numpy()[None]),
            "weights": (("channel", "level"), satellite.weights.numpy()),
            "error": 0.5,
        },
        coords=coords,
    ).to_netcdf(tmp_path / "satellite.nc")
    argv = [
        "assimilate",
        "--pipeline", str(tmp_path / "pipe"),
        "--background", str(tmp_path / "background.nc"),
        "--background-error-std", "3",
        "--stations", str(tmp_path / "stations.csv"),
        "--satellite", str(tmp_path / "satellite.nc"),
        "--members", "2", "--steps", "3", "--no-progress",
        "--out", str(tmp_path / "analysis.nc"),
    ]  # fmt: skip
    assert main(argv) == 0
    with xr.open_dataset(tmp_path / "analysis.nc") as analysis:
        assert analysis["mean"].dims == ("time", "level")
        assert analysis["level"].values.tolist() == PRESSURES
    capsys.readouterr()
    evaluate = ["evaluate", "--analysis", str(tmp_path / "analysis.nc")]
    assert main([*evaluate, "--truth", str(tmp_path / "truth.nc")]) == 0
    printed = capsys.readouterr().out
    assert "500 hPa" in printed and "all" in printed


def test_the_ensemble_filters_update_a_column():
    """The ETKF's mean is the Kalman mean with the ensemble's own mean and covariance; the
    perturbed-observation EnKF's is the same up to its perturbations' sampling error."""
    truth, observations = _observations()
    generator = torch.Generator().manual_seed(0)
    ensemble = (truth + 3.0 * torch.randn(400, 5, generator=generator)).double()
    exact = GaussianPosterior.from_observations(
        ensemble.mean(0, keepdim=True), torch.cov(ensemble.T), observations
    ).mean[0]
    torch.testing.assert_close(letkf(ensemble, observations).mean(0), exact, rtol=0, atol=1e-6)
    perturbed = stochastic_enkf(ensemble, observations, generator=generator).mean(0)
    # the mean of 400 perturbations is off by σ_y / 20 ≤ 0.1 K, carried through a gain below one
    assert float((perturbed - exact).abs().max()) < 0.2
    with pytest.raises(ValueError, match="localization_radius: a column has no horizontal"):
        letkf(ensemble, observations, localization_radius=2.0)
