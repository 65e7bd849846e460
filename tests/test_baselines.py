"""Optimal interpolation / 3D-Var against the exact Kalman posterior mean."""

import pytest
import torch

from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.covariance import DiagonalCovariance, SpectralCovariance
from slams_diffusers.observations import Gridded, Satellite, Stations
from slams_diffusers.testing import GaussianPosterior

F64 = torch.float64
GRID = (8, 8)

# The CG solve is run to a relative residual of 1e-13; the system I + B^{1/2} Aᵀ R⁻¹ A B^{1/2}
# has condition number ≲ 1 + max(B) ‖A‖² / min(R) ≈ 1e2 here, so the analysis error is ≲ 1e-11
# on O(1) fields: 1e-8 leaves ample room for rounding in the dense reference solution.
EXACT = dict(rtol=0, atol=1e-8)
SOLVER = dict(iterations=500, tolerance=1e-13)


def spectral_b() -> SpectralCovariance:
    proto = SpectralCovariance(levels=2, grid_shape=GRID)
    shells = torch.arange(proto.num_shells, dtype=F64)
    levels = torch.tensor([[1.0, 0.7], [0.7, 1.5]], dtype=F64)
    spectrum = (4 * torch.exp(-(shells**2) / 4) + 0.05)[:, None, None] * levels
    return SpectralCovariance.from_spectrum(spectrum, GRID)


def diagonal_b() -> DiagonalCovariance:
    std = 0.5 + torch.rand(2, *GRID, generator=torch.Generator().manual_seed(9), dtype=F64)
    return DiagonalCovariance.from_std(std, 2, GRID)


def problem(cov, steps: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    background = 250 + torch.randn(steps, 2, *GRID, generator=g, dtype=F64)
    truth = background - cov.sample(steps, generator=g, dtype=F64)
    return background, truth, g


def stations(truth, g, time_index=0, count=6):
    positions = torch.rand(count, 2, generator=g, dtype=F64) * 8  # anywhere on the torus
    return Stations.simulate(
        truth,
        positions,
        levels=[0, 1],
        noise_std=0.3,
        periodic=(True, True),
        time_index=time_index,
        generator=g,
    )


def gridded(truth, g, time_index=0):
    return Gridded.simulate(
        truth, coarsen=2, subsample=2, noise_std=0.5, time_index=time_index, generator=g
    )


def exact_mean(background, cov, observations):
    steps = background.shape[0]
    prior = torch.block_diag(*[cov.to_dense()] * steps)
    return GaussianPosterior.from_observations(background, prior, observations).mean


@pytest.mark.parametrize("make_b", [spectral_b, diagonal_b])
def test_oi_is_the_exact_kalman_mean(make_b):
    cov = make_b()
    background, truth, g = problem(cov)
    observations = [stations(truth[0], g), gridded(truth[0], g)]
    analysis = optimal_interpolation(background, observations, cov, **SOLVER)
    assert analysis.shape == background.shape and analysis.dtype == F64
    torch.testing.assert_close(analysis, exact_mean(background, cov, observations), **EXACT)
    # and it is a real update: the analysis moves from the background towards the truth
    assert float((analysis - truth).square().mean()) < float((background - truth).square().mean())


def test_oi_with_a_satellite_and_per_value_noise():
    cov = spectral_b()
    background, truth, g = problem(cov, seed=3)
    weights = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64)
    coarse = Satellite(
        values=torch.zeros(2, 4, 4, dtype=F64),
        weights=weights,
        footprint=2,
        grid_shape=GRID,
        noise_std=0.2,
    )
    satellite = Satellite(
        values=coarse.operator(truth[0]) + 0.2 * torch.randn(2, 4, 4, generator=g, dtype=F64),
        weights=weights,
        footprint=2,
        grid_shape=GRID,
        noise_std=torch.linspace(0.1, 0.4, 16, dtype=F64).reshape(1, 4, 4),
    )
    observations = [satellite, stations(truth[0], g, count=3)]
    analysis = optimal_interpolation(background, observations, cov, **SOLVER)
    torch.testing.assert_close(analysis, exact_mean(background, cov, observations), **EXACT)


def test_missing_value_is_the_same_as_dropping_it():
    cov = spectral_b()
    background, truth, g = problem(cov, seed=1)
    full = stations(truth[0], g, count=5)
    values = full.values.clone()
    values[2] = float("nan")  # station 2 reported nothing
    values[4, 1] = float("nan")  # station 4 lost its upper level
    with_nan = Stations(values, full.positions, [0, 1], 2, GRID, 0.3, periodic=(True, True))
    keep = [0, 1, 3, 4]
    mask = torch.ones(4, 2, dtype=torch.bool)
    mask[3, 1] = False
    dropped = Stations(
        full.values[keep],
        full.positions[keep],
        [0, 1],
        2,
        GRID,
        0.3,
        periodic=(True, True),
        mask=mask,
    )
    grid_obs = gridded(truth[0], g)
    a = optimal_interpolation(background, [with_nan, grid_obs], cov, **SOLVER)
    b = optimal_interpolation(background, [dropped, grid_obs], cov, **SOLVER)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, exact_mean(background, cov, [with_nan, grid_obs]), **EXACT)
    # an observation with nothing observed, or no observation at all, leaves the background
    empty = Stations(torch.full((2, 2), float("nan")), full.positions[:2], [0, 1], 2, GRID, 0.3)
    assert torch.equal(optimal_interpolation(background, [empty], cov), background)
    assert torch.equal(optimal_interpolation(background, [], cov), background)


def test_multi_step_window_uses_each_steps_observations():
    cov = spectral_b()
    background, truth, g = problem(cov, steps=3, seed=2)
    observations = [
        stations(truth[0], g, time_index=0),
        gridded(truth[2], g, time_index=2),
        stations(truth[2], g, time_index=2, count=3),
    ]
    analysis = optimal_interpolation(background, observations, cov, **SOLVER)
    torch.testing.assert_close(analysis, exact_mean(background, cov, observations), **EXACT)
    assert torch.equal(analysis[1], background[1])  # step 1 has no observation
    # steps are independent: analysing step 2 alone gives the same result
    alone = optimal_interpolation(
        background[2:],
        [Gridded(o.values, 2, 2, GRID, 0.5) for o in observations[1:2]]
        + [
            Stations(
                observations[2].values,
                observations[2].positions,
                [0, 1],
                2,
                GRID,
                0.3,
                periodic=(True, True),
            )
        ],
        cov,
        **SOLVER,
    )
    torch.testing.assert_close(analysis[2:], alone, rtol=0, atol=1e-10)
    # a batch of backgrounds shares the observations
    batch = torch.stack([background, background + 0.1])
    both = optimal_interpolation(batch, observations, cov, **SOLVER)
    torch.testing.assert_close(both[0], analysis, rtol=0, atol=1e-10)
    torch.testing.assert_close(both[1], exact_mean(background + 0.1, cov, observations), **EXACT)


def test_zero_innovation_and_perfect_observations():
    cov = spectral_b()
    background, truth, g = problem(cov, seed=4)
    exact = Gridded(Gridded.simulate(background[0], 2, 2, 0.0).values, 2, 2, GRID, 0.5)
    assert torch.equal(optimal_interpolation(background, [exact], cov), background)
    perfect = Gridded.simulate(truth[0], 2, 2, 0.0)
    analysis = optimal_interpolation(background, [perfect], cov, iterations=200, tolerance=1e-14)
    assert bool(torch.isfinite(analysis).all())
    # R is floored at 1e-10 · max(diag B) ≈ 4e-10 against A B Aᵀ = O(1): the analysis fits the
    # perfect values to ~1e-10 times the innovation (O(1)); 1e-6 leaves room for the CG tolerance
    torch.testing.assert_close(perfect.operator(analysis[0]), perfect.values, rtol=0, atol=1e-6)


def test_float32_background():
    cov = spectral_b()
    background, truth, g = problem(cov, seed=5)
    observations = [stations(truth[0], g)]
    analysis = optimal_interpolation(background.float(), observations, cov)
    assert analysis.dtype == torch.float32
    expected = exact_mean(background, cov, observations)
    # float32 rounding on values ~250 K: ~1e-4 absolute
    torch.testing.assert_close(analysis.double(), expected, rtol=0, atol=1e-3)


def test_bad_input_raises_value_errors():
    cov = spectral_b()
    background, truth, g = problem(cov)
    obs = stations(truth[0], g)
    with pytest.raises(ValueError, match=r"background: expected shape .*ending in \(2, 8, 8\)"):
        optimal_interpolation(background[:, :1], [obs], cov)
    with pytest.raises(ValueError, match=r"background: expected shape"):
        optimal_interpolation(background[0], [obs], cov)
    late = stations(truth[0], g, time_index=3)
    with pytest.raises(ValueError, match=r"observations\[1\]: time_index 3 out of range .*T=1"):
        optimal_interpolation(background, [obs, late], cov)
    with pytest.raises(ValueError, match="covariance: expected a BackgroundCovariance"):
        optimal_interpolation(background, [obs], torch.eye(128))
    with pytest.raises(ValueError, match=r"observations\[0\]: expected an Observation"):
        optimal_interpolation(background, [truth], cov)
    with pytest.raises(ValueError, match="iterations: expected an int >= 0"):
        optimal_interpolation(background, [obs], cov, iterations=-1)
    other = SpectralCovariance(levels=2, grid_shape=(4, 4))
    with pytest.raises(ValueError, match="spatial_shape"):
        optimal_interpolation(background[:, :, :4, :4], [obs], other)
