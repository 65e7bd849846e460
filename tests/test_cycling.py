"""Cycled assimilation (docs/method.md §Cycling): the linear-Gaussian case against the Kalman
filter, stop and resume, the forecast model's checks and the ensemble covariance."""

import dataclasses

import pytest
import torch

from slams_diffusers import SLAMSPipeline, Stations, VPPredictorCorrectorScheduler
from slams_diffusers.covariance import DenseCovariance, SpectralCovariance
from slams_diffusers.cycling import SLAMSFilter
from slams_diffusers.ensemble import ensemble_covariance, localization_matrix
from slams_diffusers.forecast import StateMap, numpy_forecast, run_forecast
from slams_diffusers.models.gaussian_score import GaussianScoreModel
from slams_diffusers.observations import Background
from slams_diffusers.seeding import member_generators
from slams_diffusers.smoothing import record_windows, smooth_record
from slams_diffusers.testing import GaussianPosterior, squared_exponential_covariance

CELLS = 8
POSITIONS = torch.tensor([[0.0], [3.0], [5.0]], dtype=torch.float64)


def shift_model(states: torch.Tensor, steps: int) -> torch.Tensor:
    """``x -> 0.9 · roll(x, 1)`` per step: linear, ``M = 0.9 P``."""
    for _ in range(steps):
        states = 0.9 * torch.roll(states, 1, dims=-1)
    return states


def gaussian_pipeline(window: int = 1) -> tuple[SLAMSPipeline, torch.Tensor, torch.Tensor]:
    """A pixel-space pipeline whose prior is exactly ``N(0, C)`` per frame (independent frames),
    of unit variance like the standard-normal climatology the sampler falls back to."""
    spatial = squared_exponential_covariance((CELLS,), 2.0)
    covariance = torch.kron(torch.eye(window, dtype=torch.float64), spatial)
    mean = torch.zeros(window, 1, CELLS, dtype=torch.float64)
    score = GaussianScoreModel.from_moments(mean, covariance, window=window)
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe, mean[0], spatial


def cycle_observations(truths: torch.Tensor, seed: int) -> list[list[Stations]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        [Stations.simulate(t, POSITIONS, [0], 0.5, periodic="x", generator=generator)]
        for t in truths
    ]


def truth_run(cycles: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, CELLS, generator=generator, dtype=torch.float64)
    states = []
    for _ in range(cycles):
        states.append(x)
        x = shift_model(x, 1)
    return torch.stack(states)


def test_linear_gaussian_cycling_matches_the_kalman_filter():
    pipe, _, climate = gaussian_pipeline()
    cycles, members = 3, 512
    truths = truth_run(cycles, seed=1)
    observations = cycle_observations(truths, seed=2)
    initial = truths[0] + torch.randn(members, 1, CELLS, generator=torch.Generator().manual_seed(3))
    initial = initial.double()
    filter_ = SLAMSFilter(
        pipe,
        shift_model,
        initial,
        num_inference_steps=256,
        corrector_steps=0,  # the Langevin corrector's step (τ = 0.5) is biased in 8 dims
        climatology_snr=None,  # the exact prior, not the standard-normal fallback at high noise
        cg_iterations=16,  # CG solves exactly (8 cells + 3 stations): B_f is stiff (cond. 1e4)
        likelihood_covariance="moment_matching",
    )
    # the Kalman filter of the same model, from the same initial moments; the analysis multiplies
    # in the prior N(0, C) once, as the pipeline's does (docs/method.md §Cycling)
    kalman_mean, kalman_covariance = initial.mean(0), torch.cov(initial.reshape(members, -1).T)
    rolled = 0.9 * torch.roll(torch.eye(CELLS, dtype=torch.float64), 1, dims=0)
    for k in range(cycles):
        out = filter_.step(observations[k])
        # each analysis is the exact posterior given its own forecast ensemble's moments, within
        # the exactness tolerances of tests/test_exactness.py (512 members, 256 steps;
        # measured: mean error 0.02 / 0.04 / 0.03 posterior std, variance ratio 0.96-0.99)
        forecast = out.forecast.reshape(members, -1)
        own = posterior_given(forecast.mean(0), torch.cov(forecast.T), climate, observations[k])
        mean_error, variance_ratio = own.errors(out.analysis[:, None])
        assert mean_error < 0.1 and abs(variance_ratio - 1) < 0.1, (k, mean_error, variance_ratio)
        # and the cycles follow the Kalman filter: the Monte-Carlo error of 512 members (0.044
        # posterior std in the mean) is carried forward by the forecast ensemble and grows in
        # units of a shrinking posterior std (measured: mean error 0.02 / 0.05 / 0.08, variance
        # ratio 0.98 / 0.94 / 0.94), hence twice the mean tolerance by the third cycle
        kalman = posterior_given(kalman_mean, kalman_covariance, climate, observations[k])
        mean_error, variance_ratio = kalman.errors(out.analysis[:, None])
        assert mean_error < 0.1 * (1 + k / 2), (k, mean_error)
        assert abs(variance_ratio - 1) < 0.1, (k, variance_ratio)
        kalman_mean = (rolled @ kalman.mean.reshape(-1)).reshape(1, CELLS)
        kalman_covariance = rolled @ kalman.covariance @ rolled.T
        assert out.smoothed is None


def posterior_given(mean, covariance, climate, observations) -> GaussianPosterior:
    """The exact analysis of the climatology ``N(0, C)``, a background ``N(mean, covariance)``
    and the observations."""
    background = Background(
        values=mean.reshape(1, CELLS),
        noise_std=covariance.diagonal().sqrt().reshape(1, CELLS),
        covariance=DenseCovariance.from_matrix(covariance, 1, (CELLS,)),
    )
    prior_mean = torch.zeros(1, 1, CELLS, dtype=torch.float64)
    return GaussianPosterior.from_observations(prior_mean, climate, [background, *observations])


def test_stop_save_resume_is_identical_to_an_uninterrupted_run():
    pipe, _, _ = gaussian_pipeline(window=3)
    truths = truth_run(5, seed=4)
    observations = cycle_observations(truths, seed=5)
    initial = truths[0] + torch.randn(6, 1, CELLS, generator=torch.Generator().manual_seed(6))
    options = dict(lag=1, localization_radius=3.0, seed=7, num_inference_steps=8)
    whole = SLAMSFilter(pipe, shift_model, initial.double(), **options)
    outputs = list(whole.cycles(observations))
    assert [o.cycle for o in outputs] == [0, 1, 2, 3, 4]
    assert outputs[0].smoothed is None and outputs[1].smoothed is not None

    first = SLAMSFilter(pipe, shift_model, initial.double(), **options)
    for obs in observations[:2]:
        first.step(obs)
    saved = first.state_dict()
    resumed = SLAMSFilter(pipe, shift_model, torch.zeros(6, 1, CELLS).double(), **options)
    resumed.load_state_dict(saved)
    for k, obs in enumerate(observations[2:], start=2):
        out = resumed.step(obs)
        assert out.cycle == k
        torch.testing.assert_close(out.analysis, outputs[k].analysis, rtol=0, atol=0)
        torch.testing.assert_close(out.smoothed, outputs[k].smoothed, rtol=0, atol=0)


def test_the_smoother_uses_later_observations():
    """With a lag the smoothed frame of cycle k − 1 moves with y_k (through the prior's frames)."""
    pipe, _, _ = gaussian_pipeline(window=1)
    # an AR(1) prior over 2 frames links x_{k-1} and x_k
    spatial = squared_exponential_covariance((CELLS,), 2.0)
    temporal = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    score = GaussianScoreModel.from_moments(
        torch.zeros(2, 1, CELLS, dtype=torch.float64), torch.kron(temporal, spatial), window=2
    )
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.set_progress_bar_config(disable=True)
    truths = truth_run(2, seed=8)
    observations = cycle_observations(truths, seed=9)
    initial = (truths[0] + torch.randn(64, 1, CELLS, generator=torch.Generator())).double()
    filter_ = SLAMSFilter(pipe, shift_model, initial, lag=1, num_inference_steps=16)
    first = filter_.step(observations[0])
    second = filter_.step(observations[1])
    assert second.smoothed is not None
    # not the filter analysis of cycle 0: the observation of cycle 1 moved it
    assert (second.smoothed.mean(0) - first.analysis.mean(0)).abs().max() > 0.05


def test_forecast_model_output_is_checked():
    states = torch.zeros(4, 1, CELLS)
    with pytest.raises(ValueError, match=r"forecast_model: returned shape \(4, 8\) .* expected"):
        run_forecast(lambda x, n: x[:, 0], states, 1)
    with pytest.raises(ValueError, match="forecast_model: returned NaN or inf in 4 of 4 members"):
        run_forecast(lambda x, n: x / 0.0, states, 1)
    with pytest.raises(ValueError, match="forecast_model: expected it to return a torch.Tensor"):
        run_forecast(lambda x, n: x.tolist(), states, 1)
    doubled = run_forecast(numpy_forecast(lambda x, n: 2.0 * x + n), states + 1, 3)
    assert doubled.dtype == torch.float32
    torch.testing.assert_close(doubled, torch.full_like(states, 5.0))

    pipe, _, _ = gaussian_pipeline()
    filter_ = SLAMSFilter(pipe, lambda x, n: x[:1], torch.randn(4, 1, CELLS).double())
    with pytest.raises(ValueError, match="forecast_model: returned shape"):
        filter_.step([])
    with pytest.raises(ValueError, match="forecast_model: expected a callable"):
        SLAMSFilter(pipe, None, torch.randn(4, 1, CELLS))
    with pytest.raises(ValueError, match=r"initial_ensemble: expected a tensor \(members >= 2"):
        SLAMSFilter(pipe, shift_model, torch.randn(1, 1, CELLS))
    with pytest.raises(ValueError, match="pipeline_kwargs: \\['num_members'\\] are set by"):
        SLAMSFilter(pipe, shift_model, torch.randn(4, 1, CELLS), num_members=3)


def test_ensemble_covariance_is_the_tapered_sample_covariance():
    generator = torch.Generator().manual_seed(0)
    members = torch.randn(10, 2, CELLS, generator=generator, dtype=torch.float64)
    flat = members.reshape(10, -1)
    sample = torch.cov(flat.T)
    plain = ensemble_covariance(members, inflation=1.5)
    torch.testing.assert_close(plain.to_dense(), 1.5 * sample)
    taper = localization_matrix((CELLS,), 2.0, periodic=True)
    assert taper[0, 0] == 1 and taper[0, 4] == 0  # 4 cells >= 2c away: cut off
    assert taper[0, 1] == taper[0, CELLS - 1]  # wraps
    local = ensemble_covariance(members, localization_radius=2.0)
    torch.testing.assert_close(local.to_dense(), sample * torch.kron(torch.ones(2, 2), taper))
    x = torch.randn(3, 2, CELLS, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(local.solve(local.apply(x), shift=0.0), x, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="members: expected a tensor"):
        ensemble_covariance(members[:1])
    with pytest.raises(ValueError, match="localization_radius: expected a number > 0"):
        ensemble_covariance(members, localization_radius=0.0)


def test_spectral_ensemble_covariance_is_the_homogeneous_sample_covariance():
    generator = torch.Generator().manual_seed(0)
    members = torch.randn(6, 2, 8, 8, generator=generator, dtype=torch.float64)
    static = SpectralCovariance.from_length_scale(0.5, 2.0, levels=2, grid_shape=(8, 8))
    b = ensemble_covariance(members, structure="spectral", inflation=1.2, static=static)
    sample = SpectralCovariance.from_samples(members, remove_mean=True)
    expected = 1.2 * sample.spectrum[sample.shells()]
    static_spectrum = static.spectrum[static.shells()] if static.isotropic else static.spectrum
    expected = expected + static_spectrum
    torch.testing.assert_close(b.spectrum, expected)
    # the marginal variance is the ensemble's averaged over the grid (homogeneous)
    variance = 1.2 * members.var(dim=0).mean(dim=(-2, -1)) + static.variance()[:, 0, 0]
    torch.testing.assert_close(b.variance()[:, 0, 0], variance)
    assert ensemble_covariance(torch.randn(4, 5, 32, 32)).config.isotropic  # > 4096: spectral
    with pytest.raises(ValueError, match="localization_radius: a spectral B is localised"):
        ensemble_covariance(members, structure="spectral", localization_radius=2.0)
    with pytest.raises(ValueError, match="structure: a dense B of states .* pass structure="):
        ensemble_covariance(torch.randn(3, 5, 32, 32), structure="dense")
    with pytest.raises(ValueError, match="static: with structure='spectral', expected"):
        ensemble_covariance(members, structure="spectral", static=DenseCovariance(2, (8, 8)))
    with pytest.raises(ValueError, match="periodic: a spectral B wraps every axis"):
        ensemble_covariance(members, structure="spectral", periodic="x")
    with pytest.raises(ValueError, match="structure: expected one of"):
        ensemble_covariance(members, structure="banded")


def coupled_model(states: torch.Tensor, steps: int) -> torch.Tensor:
    """A visible level driven by a hidden one the pipeline does not see: ``x_0 -> 0.9 roll(x_0)
    + 0.1 x_1``, ``x_1 -> x_1``."""
    for _ in range(steps):
        visible = 0.9 * torch.roll(states[:, :1], 1, dims=-1) + 0.1 * states[:, 1:]
        states = torch.cat([visible, states[:, 1:]], dim=1)
    return states


def test_a_state_map_cycles_a_model_state_the_pipeline_sees_in_part():
    pipe, _, _ = gaussian_pipeline()
    truths = truth_run(2, seed=10)
    observations = cycle_observations(truths, seed=11)
    hidden = torch.randn(6, 1, CELLS, generator=torch.Generator().manual_seed(12)).double()
    visible = truths[0] + torch.randn(6, 1, CELLS, generator=torch.Generator().manual_seed(13))
    initial = torch.cat([visible.double(), hidden], dim=1)
    state_map = StateMap(
        observe=lambda x: x[:, :1], update=lambda f, a: torch.cat([a, f[:, 1:]], dim=1)
    )
    options = dict(seed=3, num_inference_steps=8)
    mapped = SLAMSFilter(pipe, coupled_model, initial, state_map=state_map, **options)
    plain = SLAMSFilter(pipe, shift_model, visible.double(), **options)
    first, reference = mapped.step(observations[0]), plain.step(observations[0])
    # the same background and observations give the same draws
    torch.testing.assert_close(first.analysis, reference.analysis, rtol=0, atol=0)
    torch.testing.assert_close(first.forecast, visible.double())
    # the hidden level is the forecast's, advanced by the model; the visible level is forecast
    # from the analysis with the hidden level's forcing
    torch.testing.assert_close(mapped.forecast[:, 1:], hidden)
    expected = 0.9 * torch.roll(first.analysis, 1, dims=-1) + 0.1 * hidden
    torch.testing.assert_close(mapped.forecast[:, :1], expected)
    second = mapped.step(observations[1])
    torch.testing.assert_close(second.forecast, expected)

    broken = StateMap(observe=lambda x: x[:, :1], update=lambda f, a: a)
    with pytest.raises(ValueError, match=r"state_map.update: expected finite model states"):
        SLAMSFilter(pipe, coupled_model, initial, state_map=broken, **options).step([])
    with pytest.raises(ValueError, match=r"initial_ensemble: expected the states state_map"):
        SLAMSFilter(pipe, coupled_model, initial, state_map=StateMap(lambda x: x, lambda f, a: a))
    with pytest.raises(ValueError, match="state_map: expected a StateMap"):
        SLAMSFilter(pipe, coupled_model, initial, state_map=lambda x: x)
    with pytest.raises(ValueError, match="observe: expected a callable"):
        StateMap(observe=None, update=lambda f, a: a)


def test_dense_covariance_round_trips_and_refuses_what_is_not_a_covariance(tmp_path):
    generator = torch.Generator().manual_seed(1)
    factor = torch.randn(CELLS, CELLS, generator=generator, dtype=torch.float64)
    covariance = DenseCovariance.from_matrix(factor @ factor.T, 1, (CELLS,))
    covariance.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = DenseCovariance.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.to_dense(), covariance.to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(covariance.to_dense(), factor @ factor.T)
    with pytest.raises(ValueError, match="matrix: expected a symmetric matrix"):
        DenseCovariance.from_matrix(factor, 1, (CELLS,))
    with pytest.raises(ValueError, match="matrix: expected a positive semi-definite matrix"):
        DenseCovariance.from_matrix(-factor @ factor.T, 1, (CELLS,))
    with pytest.raises(ValueError, match=r"matrix: expected shape \(8, 8\)"):
        DenseCovariance.from_matrix(torch.eye(4), 1, (CELLS,))
    with pytest.raises(ValueError, match="expected at most 4096"):
        DenseCovariance(levels=5, grid_shape=(64, 64))


def test_record_windows_tile_the_record_and_drop_inner_edges():
    assert record_windows(9, 5, 1) == [(0, 0, 4), (3, 4, 7), (4, 7, 9)]
    assert record_windows(7, 5, 1) == [(0, 0, 4), (2, 4, 7)]
    assert record_windows(5, 5, 2) == [(0, 0, 5)]
    for frames, length, margin in [(100, 12, 3), (37, 9, 2), (10, 3, 0)]:
        windows = record_windows(frames, length, margin)
        assert windows[0][1] == 0 and windows[-1][2] == frames
        for (start, keep_from, keep_to), following in zip(windows, windows[1:], strict=False):
            assert keep_to == following[1]  # contiguous
            assert keep_from >= start and keep_to <= start + length
            assert keep_to - start <= length - margin  # the inner edge is dropped
    with pytest.raises(ValueError, match="margin: expected 2 · margin < length = 5"):
        record_windows(9, 5, 3)
    with pytest.raises(ValueError, match="length: expected at most the record's 4 states"):
        record_windows(4, 5, 1)


def test_smooth_record_keeps_each_window_interior():
    spatial = squared_exponential_covariance((CELLS,), 2.0)
    temporal = torch.tensor([[1.0, 0.8, 0.64], [0.8, 1.0, 0.8], [0.64, 0.8, 1.0]])
    score = GaussianScoreModel.from_moments(
        torch.zeros(3, 1, CELLS, dtype=torch.float64),
        torch.kron(temporal.double(), spatial),
        window=3,
    )
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.set_progress_bar_config(disable=True)
    observations = cycle_observations(truth_run(7, seed=10), seed=11)
    members = smooth_record(
        pipe, observations, length=5, margin=1, num_members=4, seed=3, num_inference_steps=8
    )
    assert members.shape == (4, 7, 1, CELLS)
    # the second window (start 2) supplies states 4-6: its own assimilation, same seeds
    window = [dataclasses.replace(o, time_index=t) for t in range(5) for o in observations[2 + t]]
    generators = member_generators(3, 1, 4)
    direct = pipe(
        observations=window,
        num_frames=5,
        num_members=4,
        generator=generators,
        output_type="pt",
        num_inference_steps=8,
    ).members
    torch.testing.assert_close(members[:, 4:], direct[:, 2:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="length: expected at least the score model's window 3"):
        smooth_record(pipe, observations, length=2)
    with pytest.raises(ValueError, match=r"pipeline_kwargs: \['num_frames'\]"):
        smooth_record(pipe, observations, num_frames=3)


def test_an_analysis_worse_than_the_observations_says_so(caplog):
    """Departures from accurate observations (σ = 0.1) of an untrained latent prior's analysis
    are many σ: after a spin-up of 10 cycles and 10 more the filter warns once, with the numbers
    and its autoencoder's error; the exact Gaussian prior, whose analysis is better than the
    observations, never."""
    from test_pipeline import tiny_pipeline

    latent = tiny_pipeline(window=1, latent=True, spatial_dims=1)
    truth = torch.tensor([280.0, 250.0, 220.0])[:, None] + torch.zeros(3, 8)
    generator = torch.Generator().manual_seed(0)
    ensemble = truth + torch.randn(4, 3, 8, generator=generator)
    observed = [
        [Stations.simulate(truth, POSITIONS, [0, 1, 2], 0.1, periodic="x", generator=generator)]
        for _ in range(22)
    ]
    filter_ = SLAMSFilter(latent, lambda x, n: x, ensemble, num_inference_steps=2)
    list(filter_.cycles(observed))
    messages = [r.getMessage() for r in caplog.records if "worse than the obs" in r.getMessage()]
    assert len(messages) == 1
    assert "cycles 10-19" in messages[0] and "autoencoder reconstructs this analysis" in messages[0]
    caplog.clear()
    pipe, _, _ = gaussian_pipeline()
    truths = truth_run(22, seed=12)
    initial = (truths[0] + torch.randn(8, 1, CELLS, generator=generator)).double()
    exact = SLAMSFilter(pipe, shift_model, initial, num_inference_steps=16)
    list(exact.cycles(cycle_observations(truths, seed=13)))
    assert not [r for r in caplog.records if "worse than the obs" in r.getMessage()]
