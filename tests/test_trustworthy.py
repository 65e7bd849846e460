"""Trustworthy analyses (docs/method.md): exact with a correlated B, stable with an imperfect
prior at high noise, declared observation errors that count, missing data that changes nothing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from slams_diffusers import (
    Background,
    GaussianScoreModel,
    Gridded,
    LevelNormalizer,
    SLAMSPipeline,
    SpectralCovariance,
    Stations,
    VPPredictorCorrectorScheduler,
)
from slams_diffusers.covariance import estimate_background_covariance
from slams_diffusers.data.qg import simulate_dataset
from slams_diffusers.data.testbed import assimilation_cases
from slams_diffusers.metrics import rmse
from slams_diffusers.testing import GaussianPosterior, squared_exponential_covariance

SIZE = 8


def _field_prior(seed: int):
    generator = torch.Generator().manual_seed(seed)
    covariance = squared_exponential_covariance((SIZE, SIZE), 2.0)
    mean = torch.linspace(-1.0, 1.0, SIZE, dtype=torch.float64).expand(SIZE, SIZE)
    mean = mean.reshape(1, 1, SIZE, SIZE).clone()
    truth = mean.reshape(-1) + torch.linalg.cholesky(covariance) @ torch.randn(
        SIZE * SIZE, generator=generator, dtype=torch.float64
    )
    return mean, covariance, truth.reshape(1, SIZE, SIZE), generator


def _spectral_background_covariance(std: float = 0.5) -> SpectralCovariance:
    """A correlated, homogeneous B on the 8×8 grid: a Gaussian-shaped isotropic spectrum scaled to
    a marginal std ``std``."""
    shells = SpectralCovariance(levels=1, grid_shape=(SIZE, SIZE)).num_shells
    spectrum = torch.exp(-(torch.arange(shells, dtype=torch.float64) ** 2) / 4.0)
    covariance = SpectralCovariance.from_spectrum(spectrum.reshape(-1, 1, 1), (SIZE, SIZE))
    return covariance.scaled(std / float(covariance.variance().mean().sqrt()))


def test_correlated_background_covariance_reproduces_kalman_posterior():
    """Gaussian prior, spectral (non-diagonal) B, sparse observations: the pixel-space posterior
    matches the Kalman posterior within 0.1 posterior std (mean) and 10 % (variance)."""
    mean, covariance, truth, generator = _field_prior(seed=0)
    b = _spectral_background_covariance()
    dense = b.to_dense()
    assert (dense - torch.diag(dense.diagonal())).abs().max() > 0.1 * dense.diagonal().max()
    background = truth + b.sample(1, generator=generator, dtype=torch.float64)[0]
    observation = Gridded.simulate(
        truth, coarsen=1, subsample=2, noise_std=0.3, generator=generator
    )
    score = GaussianScoreModel.from_moments(mean, covariance)
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        background=background[None],
        background_error_covariance=b,
        observations=[observation],
        num_members=512,
        num_inference_steps=256,
        corrector_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    exact = GaussianPosterior.from_observations(
        mean,
        covariance,
        [Background(background, noise_std=b.variance().sqrt(), covariance=b), observation],
    )
    mean_error, variance_ratio = exact.errors(out.members)
    assert mean_error < 0.1
    assert abs(variance_ratio - 1) < 0.1
    # the correlations matter: the same marginal std declared white is another posterior
    white = GaussianPosterior.from_observations(
        mean, covariance, [Background(background, noise_std=0.5), observation]
    )
    assert white.errors(out.members)[0] > 3 * mean_error


class _ImperfectGaussian(nn.Module):
    """The exact Gaussian ε plus an error that grows with t: ``0.5 t⁸ sin(3 z_t)`` (large where
    alpha_t is small, as a trained net's: 0.5 at t = 1, 0.2 at t = 0.9, 0.03 at t = 0.7). A plain
    ``nn.Module`` with ``config`` (the README's "any model" promise)."""

    def __init__(self, exact: GaussianScoreModel) -> None:
        super().__init__()
        self.exact = exact
        self.config = exact.config

    def forward(self, sample, timestep):
        eps = self.exact(sample, timestep).sample
        t = torch.as_tensor(timestep, dtype=sample.dtype).reshape(-1, *[1] * (sample.dim() - 1))
        return type(self.exact(sample, timestep))(sample=eps + 0.5 * t**8 * torch.sin(3 * sample))


@pytest.mark.parametrize("likelihood", ["moment_matching", "diagonal"])
@pytest.mark.parametrize("units", ["normalised", "kelvin"])
def test_imperfect_prior_is_stable_with_dense_observations(likelihood, units):
    """Dense observations (every cell, σ_y = 0.3 normalised), an ε wrong by up to 0.5 at t = 1
    (×1/alpha_1 = 1000 in ẑ): finite analyses near the exact posterior for both covariances, with
    the default γ, whether the state is unit-variance or in K (mean 250, std 5)."""
    mean, covariance, truth, generator = _field_prior(seed=1)
    offset, scale = (0.0, 1.0) if units == "normalised" else (250.0, 5.0)
    observation = Gridded.simulate(
        offset + scale * truth, coarsen=1, subsample=1, noise_std=0.3 * scale, generator=generator
    )
    model = _ImperfectGaussian(GaussianScoreModel.from_moments(mean, covariance))
    normaliser = LevelNormalizer(levels=1, spatial_dims=2, level_mean=[offset], level_std=[scale])
    pipe = SLAMSPipeline(model, VPPredictorCorrectorScheduler(), autoencoder=normaliser)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        observations=[observation],
        num_members=128,
        num_inference_steps=64,
        likelihood_covariance=likelihood,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert torch.isfinite(out.members).all()
    normalised = Gridded((observation.values - offset) / scale, 1, 1, (SIZE, SIZE), noise_std=0.3)
    exact = GaussianPosterior.from_observations(mean, covariance, [normalised])
    mean_error, variance_ratio = exact.errors((out.members.double() - offset) / scale)
    # the model's error is still 0.5 (t = 0.7)² sin(3z) ≈ 0.2 where the blend hands over; dense
    # observations dominate the posterior, so the analysis stays within 0.35 posterior std
    assert mean_error < 0.35, mean_error
    assert 0.7 < variance_ratio < 1.4, variance_ratio


@pytest.fixture(scope="module")
def embedded():
    pipe = SLAMSPipeline.from_pretrained("pipelines/slams-qg-tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _synthetic_window(seed: int = 0):
    """A smooth 5-level 64×64 window near the pipeline's climatology, and a perturbed truth."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor([278.7, 268.6, 251.9, 228.6, 216.6]).reshape(1, 5, 1, 1)
    coarse = torch.randn(5, 5, 8, 8, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic")
    background = mean + 3.0 * field
    truth = background + torch.nn.functional.interpolate(
        torch.randn(5, 5, 8, 8, generator=generator), size=(64, 64), mode="bicubic"
    )
    return background, truth, generator


def _stations(truth, generator, noise_std, time_index=2, count=48):
    positions = torch.rand(count, 2, generator=generator) * 63
    stations = Stations.simulate(
        truth[time_index],
        positions=positions,
        levels=range(5),
        noise_std=0.5,
        periodic=(True, True),
        time_index=time_index,
        generator=generator,
    )
    return dataclasses.replace(stations, noise_std=noise_std)


def _analysis(pipe, background, observations):
    out = pipe(
        background=background,
        observations=observations,
        background_error_std=1.0,
        num_members=2,
        num_inference_steps=8,
        corrector_steps=0,
        generator=[torch.Generator().manual_seed(m) for m in range(2)],
        output_type="pt",
    )
    return out.members.mean(0)


def test_declared_observation_errors_count_on_the_latent_route(embedded):
    """More declared error, less pull: the analysis moves monotonically towards the analysis
    without the stations as their declared ``noise_std`` grows."""
    background, truth, generator = _synthetic_window()
    positions_seed = generator.initial_seed()
    without = _analysis(embedded, background, [])
    distances = []
    for noise_std in (0.1, 1.0, 10.0, 100.0):
        stations = _stations(truth, torch.Generator().manual_seed(positions_seed), noise_std)
        analysis = _analysis(embedded, background, [stations])
        distances.append(float((analysis - without).square().mean().sqrt()))
    assert all(a > b for a, b in zip(distances, distances[1:], strict=False)), distances
    assert distances[-1] < 0.1 * distances[0], distances


def test_an_all_missing_observation_changes_nothing(embedded):
    background, truth, generator = _synthetic_window(seed=1)
    stations = _stations(truth, generator, 0.5)
    missing = stations.replace_values(torch.full_like(stations.values, math.nan))
    assert missing.num_observed == 0
    assert torch.equal(
        _analysis(embedded, background, [missing]), _analysis(embedded, background, [])
    )


def test_an_accurate_background_is_never_made_worse(embedded):
    """The testbed's background error × 0.15, B alike (spectral, estimated on other windows of
    the run and scaled by 0.15²): the default analysis of two held-out windows (a QG run the
    model never saw, default observations) has an RMSE no larger than the background's."""
    dataset = simulate_dataset(  # the testbed's 100 days of spin-up: the training climate
        trajectories=1, steps=24, seed=20_000, splits=(0.0, 0.0, 1.0), store_pv="all"
    )
    cases = assimilation_cases(dataset, "test", 5, 4, lead_hours=24.0, seed=3)
    scored, reference = cases[:2], cases[2:]
    covariance = estimate_background_covariance(
        torch.stack([c.background for c in reference]), torch.stack([c.truth for c in reference])
    ).scaled(0.15)
    for index, case in enumerate(scored):
        background = case.truth + 0.15 * (case.background - case.truth)
        out = embedded(
            background=background,
            observations=case.observations,
            background_error_covariance=covariance,
            num_members=16,
            num_inference_steps=32,
            generator=[torch.Generator().manual_seed(100 * index + m) for m in range(16)],
            output_type="pt",
        )
        analysis = float(rmse(out.members.mean(0), case.truth))
        assert analysis <= float(rmse(background, case.truth)), (index, analysis)


@pytest.mark.parametrize("background_error_std", [1.0, 0.3])
def test_diagonal_covariance_is_stable_on_the_latent_route(embedded, background_error_std):
    """The diagonal (SDA) covariance through the embedded autoencoder with a tight background
    term: finite, and no farther from the truth than 1.5× the background (unbounded, its updates
    overshoot: 3.8 K at σ_b = 1 K and NaN at 0.3 K for a 0.85 K background)."""
    background, truth, _ = _synthetic_window()
    out = embedded(
        background=background,
        background_error_std=background_error_std,
        likelihood_covariance="diagonal",
        num_members=2,
        num_inference_steps=16,
        generator=[torch.Generator().manual_seed(m) for m in range(2)],
        output_type="pt",
    )
    assert torch.isfinite(out.members).all()
    error = float(rmse(out.members.mean(0), truth))
    assert error < 1.5 * float(rmse(background, truth)), error


def test_a_length_scale_correlates_the_background_error_and_a_white_b_warns(embedded, caplog):
    """``background_error_length_scale`` makes ``B`` the Gaussian-correlated
    ``SpectralCovariance.from_length_scale`` (the same members as passing that covariance), with
    no warning; ``background_error_std`` alone (white ``B``) on a gridded state warns in one line
    and says what to pass instead; misuse raises ValueErrors naming the argument."""
    background, truth, generator = _synthetic_window(seed=2)
    stations = _stations(truth, generator, 0.5)
    std = [2.0, 1.5, 1.0, 0.8, 0.7]

    def run(**kwargs):
        return embedded(
            background=background,
            observations=[stations],
            num_members=2,
            num_inference_steps=4,
            corrector_steps=0,
            generator=[torch.Generator().manual_seed(m) for m in range(2)],
            output_type="pt",
            **kwargs,
        ).members

    shorthand = run(background_error_std=std, background_error_length_scale=4.0)
    assert not [r for r in caplog.records if "white" in r.getMessage()]
    declared = SpectralCovariance.from_length_scale(std, 4.0, (64, 64))
    assert torch.equal(shorthand, run(background_error_covariance=declared))
    white = run(background_error_std=std)
    message = [r.getMessage() for r in caplog.records if "white" in r.getMessage()]
    assert len(message) == 1 and "background_error_length_scale" in message[0], message
    assert "\n" not in message[0] and message[0].startswith("A white background-error")
    assert not torch.allclose(white, shorthand, atol=1e-3)
    for kwargs, match in (
        ({"background_error_std": 1.0, "background_error_length_scale": -1.0}, "length_scale"),
        ({"background_error_std": [1.0, 2.0], "background_error_length_scale": 4.0}, "per level"),
        (
            {"background_error_covariance": declared, "background_error_length_scale": 4.0},
            "background_error_length_scale",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            run(**kwargs)
