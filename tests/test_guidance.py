"""Guidance units: conjugate gradients, each route's likelihood score against autograd of the
closed-form Gaussian log-likelihood, the climatology blend (docs/method.md §Guidance)."""

from __future__ import annotations

import math

import pytest
import torch

from slams_diffusers import (
    GaussianScoreModel,
    LevelNormalizer,
    Stations,
    VPPredictorCorrectorScheduler,
)
from slams_diffusers.guidance import (
    GaussianTerm,
    GuidedScore,
    conjugate_gradient,
    decoded_term,
    likelihood_score,
    tweedie_denoise,
)
from slams_diffusers.models import MarkovBlanketScore
from slams_diffusers.testing import squared_exponential_covariance

SCHEDULE = VPPredictorCorrectorScheduler()


def test_conjugate_gradient_solves_a_known_spd_system():
    generator = torch.Generator().manual_seed(0)
    n, batch = 12, 3
    factors = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    matrices = factors @ factors.transpose(1, 2) + n * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(batch, n, generator=generator, dtype=torch.float64)

    def matvec(vectors):
        return [torch.einsum("bij,bj->bi", matrices, vectors[0])]

    (solution,) = conjugate_gradient(matvec, [rhs], iterations=n)
    exact = torch.linalg.solve(matrices, rhs)
    # n iterations solve an n-dimensional SPD system exactly in exact arithmetic; float64 round-off
    # with condition number ~10 leaves ~1e-13
    torch.testing.assert_close(solution, exact, rtol=1e-9, atol=1e-9)
    # samples do not interact: solving one alone gives the same answer
    (single,) = conjugate_gradient(
        lambda v: [torch.einsum("ij,bj->bi", matrices[1], v[0])], [rhs[1:2]], iterations=n
    )
    torch.testing.assert_close(single[0], solution[1], rtol=1e-12, atol=1e-12)


def test_conjugate_gradient_stops_on_negative_curvature():
    matrix = torch.diag(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    rhs = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    (solution,) = conjugate_gradient(lambda v: [v[0] @ matrix], [rhs], iterations=3)
    assert torch.equal(solution, torch.zeros_like(rhs))


def _gaussian_prior(levels: int = 2, size: int = 4):
    """A window-1 Gaussian prior over ``(1, levels, size, size)`` in normalised units, float64."""
    spatial = squared_exponential_covariance((size, size), 1.5)
    levels_cov = torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64)[:levels, :levels]
    covariance = torch.kron(levels_cov, spatial)
    mean = 0.3 * torch.ones(1, levels, size, size, dtype=torch.float64)
    model = GaussianScoreModel.from_moments(mean, covariance, in_channels=levels).double()
    return model, mean.reshape(-1), covariance


def _posterior_moments(z_t, t, mean, covariance):
    """``E[z | z_t]`` (differentiable in ``z_t``) and ``Cov[z | z_t]`` of the Gaussian prior."""
    alpha, sigma = (v.double() for v in SCHEDULE.alpha_sigma(float(t)))
    eye = torch.eye(len(mean), dtype=torch.float64)
    gain = alpha * covariance @ torch.linalg.inv(alpha**2 * covariance + sigma**2 * eye)
    z_mean = mean + (z_t.reshape(-1) - alpha * mean) @ gain.T
    z_cov = covariance - alpha * gain @ covariance
    return z_mean, z_cov, alpha, sigma


@pytest.mark.parametrize("t", [0.3, 0.7])
def test_decoded_route_moment_matching_equals_closed_form(t):
    """``∇_{z_t} log N(y | H E[z|z_t] + b, H Cov[z|z_t] H^T + R)`` for stations seen through a
    level normaliser (affine decoder): moment matching with as many CG iterations as
    observations is this closed form (float64)."""
    model, mean, covariance = _gaussian_prior()
    normaliser = LevelNormalizer(
        levels=2, spatial_dims=2, level_mean=[250.0, 240.0], level_std=[5.0, 4.0]
    ).double()
    generator = torch.Generator().manual_seed(1)
    positions = torch.tensor([[0.5, 1.2], [2.7, 3.1], [1.0, 0.0]], dtype=torch.float64)
    values = torch.tensor(
        [[251.0, 243.0], [247.0, float("nan")], [255.0, 238.0]], dtype=torch.float64
    )
    stations = Stations(
        values,
        positions,
        levels=[0, 1],
        num_levels=2,
        grid_shape=(4, 4),
        noise_std=torch.tensor([0.5, 0.8], dtype=torch.float64),
        periodic="x",
    )
    level_std = torch.tensor([5.0, 4.0], dtype=torch.float64)
    term = decoded_term(stations, normaliser.decode, level_std)
    z_t = torch.randn(1, 1, 2, 4, 4, generator=generator, dtype=torch.float64)

    z = z_t.clone().requires_grad_(True)
    alpha, sigma = (v.double() for v in SCHEDULE.alpha_sigma(float(t)))
    eps = MarkovBlanketScore(model)(z, torch.tensor(t, dtype=torch.float64)).sample
    z_hat = tweedie_denoise(z, eps, alpha, sigma)
    score = likelihood_score(z, z_hat, [term], alpha, sigma, "moment_matching", cg_iterations=5)

    basis = torch.eye(32, dtype=torch.float64).reshape(32, 1, 2, 4, 4)
    offset = stations.operator(
        normaliser.decode(torch.zeros(1, 1, 2, 4, 4, dtype=torch.float64))[:, 0]
    )
    dense = (stations.operator(normaliser.decode(basis)[:, 0]) - offset).reshape(32, -1).T
    observed = stations.mask.reshape(-1)
    dense, offset = dense[observed], offset.reshape(-1)[observed]
    y = stations.values.reshape(-1)[observed]
    noise = stations.noise_variance().reshape(-1)[observed]
    z = z_t.clone().requires_grad_(True)
    z_mean, z_cov, _, _ = _posterior_moments(z, t, mean, covariance)
    innovation = y - dense @ z_mean - offset
    gram = dense @ z_cov @ dense.T + torch.diag(noise)
    log_p = -0.5 * innovation @ torch.linalg.solve(gram, innovation)
    (expected,) = torch.autograd.grad(log_p, z)
    # 5 observed values, 5 CG iterations: exact up to float64 round-off amplified by 1/alpha_t
    torch.testing.assert_close(score, expected, rtol=1e-7, atol=1e-9)


def test_latent_route_terms_and_diagonal_covariance_equal_closed_form():
    """Latent route (``h(ẑ) = ẑ_i``), moment matching and the diagonal covariance with its
    ``scale``, each against autograd of the closed-form Gaussian log-likelihood."""
    model, mean, covariance = _gaussian_prior()
    generator = torch.Generator().manual_seed(2)
    target = torch.randn(2, 4, 4, generator=generator, dtype=torch.float64)
    variance = 0.2 + torch.rand(2, 4, 4, generator=generator, dtype=torch.float64)
    mask = torch.rand(2, 4, 4, generator=generator) > 0.5
    term = GaussianTerm(
        lambda latent: latent[:, 0], target, variance=variance, mask=mask, scale=2.0
    )
    z_t = torch.randn(1, 1, 2, 4, 4, generator=generator, dtype=torch.float64)
    t, gamma = 0.5, 0.05
    observed = mask.reshape(-1)

    def guided(kind, iterations):
        z = z_t.clone().requires_grad_(True)
        alpha, sigma = (v.double() for v in SCHEDULE.alpha_sigma(t))
        eps = model(z, torch.tensor(t, dtype=torch.float64)).sample
        z_hat = tweedie_denoise(z, eps, alpha, sigma)
        return likelihood_score(z, z_hat, [term], alpha, sigma, kind, gamma, iterations)

    def closed_form(extra):
        z = z_t.clone().requires_grad_(True)
        z_mean, z_cov, alpha, sigma = _posterior_moments(z, t, mean, covariance)
        innovation = (target.reshape(-1) - z_mean)[observed]
        if extra is None:
            gram = z_cov[observed][:, observed] + torch.diag(variance.reshape(-1)[observed])
        else:
            inflation = gamma * (sigma / alpha) ** 2 * 2.0**2
            gram = torch.diag(variance.reshape(-1)[observed] + inflation)
        log_p = -0.5 * innovation @ torch.linalg.solve(gram, innovation)
        return torch.autograd.grad(log_p, z)[0]

    count = int(observed.sum())
    torch.testing.assert_close(
        guided("moment_matching", count), closed_form(None), rtol=1e-7, atol=1e-9
    )
    torch.testing.assert_close(guided("tweedie", count), closed_form(None), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(
        guided("diagonal", 1), closed_form("diagonal"), rtol=1e-10, atol=1e-12
    )
    with pytest.raises(ValueError, match="likelihood_covariance"):
        guided("exact", 1)


def test_guided_score_uses_the_climatology_at_low_snr():
    """Below ``climatology_snr[0]`` the ε is the standard normal's ``sigma z/(alpha²+sigma²)``;
    above ``climatology_snr[1]`` the model's; a linear blend in log-SNR between."""

    class Constant(torch.nn.Module):
        def forward(self, sample, timestep):
            return type("Out", (), {"sample": torch.full_like(sample, 7.0)})()

    guided = GuidedScore(Constant(), SCHEDULE.alpha_sigma, climatology_snr=(0.05, 0.2))
    z_t = torch.randn(2, 1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    for t in (0.99, 0.8, 0.5):  # weight 0, between 0 and 1, 1
        alpha, sigma = (v.float() for v in SCHEDULE.alpha_sigma(t))
        eps = guided(z_t, torch.tensor(t))
        snr = float(alpha / sigma)
        climatology = sigma * z_t / (alpha**2 + sigma**2)
        weight = min(max(math.log(snr / 0.05) / math.log(0.2 / 0.05), 0.0), 1.0)
        expected = weight * 7.0 + (1 - weight) * climatology
        torch.testing.assert_close(eps, expected, rtol=1e-5, atol=1e-6)
    assert float(SCHEDULE.alpha_sigma(0.99)[0] / SCHEDULE.alpha_sigma(0.99)[1]) < 0.05
    assert float(SCHEDULE.alpha_sigma(0.5)[0] / SCHEDULE.alpha_sigma(0.5)[1]) > 0.2
    plain = GuidedScore(Constant(), SCHEDULE.alpha_sigma, climatology_snr=None)
    assert torch.equal(plain(z_t, torch.tensor(0.99)), torch.full_like(z_t, 7.0))


def test_kalman_bound_weighs_each_residual_by_its_error():
    """An update that goes three times past a tight observation (σ² = 0.01) is scaled back to it
    even when a weak pseudo-observation (σ² = 1e4, as an encoded cell the encoder barely informs)
    has a residual of 100: in the metric ``(Σ + c_t I)^{-1}`` the bound is
    ``|r|_M / |Δ|_M = sqrt(1/0.01 + 100²/1e4) / (3/0.1) = sqrt(101)/30``; in the Euclidean norm
    (``|r| ≈ 100 > |Δ| = 3``) the overshoot would pass."""
    from slams_diffusers.guidance.likelihood import _kalman_bound

    variance = torch.tensor([0.01, 1e4], dtype=torch.float64)
    term = GaussianTerm(lambda latent: latent[:, 0], torch.tensor([1.0, 100.0]).double(), variance)
    residuals = [torch.tensor([[1.0, 100.0]], dtype=torch.float64)]
    masks = [term.mask]

    def metric(vectors):
        return [term.noise_solve(v, 0.0) for v in vectors]

    update = torch.tensor([[[3.0, 0.0]]], dtype=torch.float64)
    factor = _kalman_bound(
        lambda latent: (latent[:, 0],), torch.zeros_like(update), update, residuals, masks, metric
    )
    torch.testing.assert_close(factor.reshape(()), torch.tensor(math.sqrt(101) / 30).double())
    away = _kalman_bound(
        lambda latent: (latent[:, 0],), torch.zeros_like(update), -update, residuals, masks, metric
    )
    assert float(away) == 0.0


def test_a_likelihood_covariance_is_one_registry_entry(monkeypatch):
    """``LIKELIHOOD_COVARIANCES`` picks the score function by name: a new entry is accepted by
    name (and by ``likelihood_score``) with nothing else changed; an unknown name is refused."""
    from slams_diffusers.guidance import LIKELIHOOD_COVARIANCES, canonical_covariance

    calls = []

    def zero_score(z_t, z_hat, terms, alpha, sigma, gamma, cg_iterations):
        calls.append((gamma, cg_iterations))
        return torch.zeros_like(z_t)

    monkeypatch.setitem(LIKELIHOOD_COVARIANCES, "zero", zero_score)
    z = torch.ones(1, 1, 1, 2, 2)
    assert canonical_covariance("zero") == "zero"
    score = likelihood_score(z, z, [], torch.tensor(1.0), torch.tensor(0.5), "zero", 0.3, 7)
    assert torch.equal(score, torch.zeros_like(z)) and calls == [(0.3, 7)]
    assert canonical_covariance("tweedie") == "moment_matching"
    with pytest.raises(ValueError, match="`likelihood_covariance` must be one of"):
        canonical_covariance("exact")
