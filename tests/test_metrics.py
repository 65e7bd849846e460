"""Scores of analyses (rmse, bias, fair CRPS, spread-skill, rank histogram, Wasserstein-1, power
spectra), by hand, against direct formulas and on known distributions."""

import json
import math

import pytest
import torch
from scipy.stats import chisquare, wasserstein_distance

from slams_diffusers.covariance import SpectralCovariance
from slams_diffusers.metrics import (
    area_weights,
    bias,
    crps,
    ensemble_spread,
    level_dims,
    power_spectrum,
    rank_histogram,
    rmse,
    score_ensemble,
    spread_skill_ratio,
    wasserstein1,
)


def test_rmse_hand_values():
    estimate = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    truth = torch.tensor([[1.0, 0.0, 3.0], [4.0, 5.0, 2.0]])  # errors 0 2 0 / 0 0 4
    value = rmse(estimate, truth)
    assert value.dtype == torch.float64 and value.shape == ()
    assert value.item() == pytest.approx(math.sqrt(20 / 6), rel=1e-15)
    torch.testing.assert_close(
        rmse(estimate, truth, dims=[1]),
        torch.tensor([math.sqrt(4 / 3), math.sqrt(16 / 3)], dtype=torch.float64),
    )
    torch.testing.assert_close(
        rmse(estimate, truth, dims=(0,)),
        torch.tensor([0.0, math.sqrt(2), math.sqrt(8)], dtype=torch.float64),
    )
    torch.testing.assert_close(rmse(estimate, truth, dims=(0, 1)), value)
    assert rmse(truth, truth).item() == 0.0
    assert rmse(estimate, truth).item() == rmse(truth, estimate).item()


def test_rmse_per_level_of_a_window():
    # (members? no: time, level, y, x); a constant error c_l per level gives rmse c_l per level
    errors = torch.tensor([0.5, 1.0, 2.0]).reshape(1, 3, 1, 1)
    truth = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0)) + 250.0
    per_level = rmse(truth + errors, truth, dims=(0, 2, 3))
    torch.testing.assert_close(
        per_level, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=0, atol=2e-5
    )
    assert rmse(truth + errors, truth).item() == pytest.approx(math.sqrt(5.25 / 3), abs=2e-5)


def test_rmse_accumulates_in_float64():
    # squares that float32 cannot hold: 1e40 overflows to inf, 1e-50 underflows to 0
    huge = torch.tensor([1e20, -1e20], dtype=torch.float32)
    tiny = torch.tensor([1e-25, 1e-25], dtype=torch.float32)
    zeros = torch.zeros(2, dtype=torch.float32)
    assert torch.isinf(huge.pow(2).mean()) and tiny.pow(2).mean() == 0  # the float32 result
    assert rmse(huge, zeros).item() == pytest.approx(float(huge[0]), rel=1e-15)
    assert rmse(tiny, zeros).item() == pytest.approx(float(tiny[0]), rel=1e-15)
    # the difference is taken in float64 too: no cancellation of nearby float32 values
    truth = torch.full((1000,), 8192.0, dtype=torch.float32)
    estimate = truth + torch.tensor(2.0**-10, dtype=torch.float32)  # float32 spacing at 8192
    assert rmse(estimate, truth).item() == 2.0**-10
    half = torch.tensor([1.0, 3.0], dtype=torch.float16)
    assert rmse(half, torch.zeros_like(half)).dtype == torch.float64
    assert rmse(half, torch.zeros_like(half)).item() == math.sqrt(5.0)


def test_rmse_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\).*same shape"):
        rmse(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        rmse(torch.zeros(1, 3), torch.zeros(3))  # broadcastable is not enough


def test_ensemble_spread_hand_values():
    members = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 6.0]])  # (3 members, 2 values)
    # unbiased variances: [4, 12]; spread = sqrt(mean) = sqrt(8)
    spread = ensemble_spread(members)
    assert spread.dtype == torch.float64 and spread.shape == ()
    assert spread.item() == pytest.approx(math.sqrt(8.0), rel=1e-15)
    two = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # variances with N - 1 = 1: [2, 0]
    torch.testing.assert_close(
        ensemble_spread(two, dims=[0]), torch.tensor(1.0, dtype=torch.float64)
    )
    assert ensemble_spread(torch.ones(4, 3)).item() == 0.0


def test_ensemble_spread_dims_are_those_of_one_member():
    # members (N, time, level, y, x): dims index a member's axes (time, level, y, x)
    scales = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1, 1)
    members = scales * torch.randn(50, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    per_level = ensemble_spread(members, dims=(0, 2, 3))
    assert per_level.shape == (3,)
    by_hand = members.double().var(dim=0, correction=1).mean(dim=(0, 2, 3)).sqrt()
    torch.testing.assert_close(per_level, by_hand, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        ensemble_spread(members), members.double().var(dim=0).mean().sqrt(), rtol=1e-12, atol=0
    )


def test_ensemble_spread_needs_two_members():
    with pytest.raises(ValueError, match="at least 2 members.*got 1"):
        ensemble_spread(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="got 0"):
        ensemble_spread(torch.zeros(0, 3))


@pytest.mark.parametrize("members", [2, 5, 20])
def test_ensemble_spread_of_gaussian_members_is_their_std(members):
    """Members N(0, s^2), unbiased variance: spread^2 is an unbiased estimate of s^2 with
    relative std sqrt(2 / ((N - 1) n)) over n independent values."""
    s, values = 1.7, 4096
    generator = torch.Generator().manual_seed(members)
    draws = s * torch.randn(members, 4, 32, 32, generator=generator)
    spread = ensemble_spread(draws).item()
    relative = math.sqrt(2 / ((members - 1) * values))  # std of spread^2 / s^2
    assert abs(spread**2 / s**2 - 1) < 4 * relative
    # the biased (1/N) variance would be low by (N - 1) / N: 29 % of s^2 for 2 members
    biased = draws.double().var(dim=0, correction=0).mean().sqrt().item()
    assert biased == pytest.approx(spread * math.sqrt((members - 1) / members), rel=1e-12)


def test_spread_skill_of_a_calibrated_ensemble():
    """Truth and members drawn from the same N(m, s^2): rmse of the ensemble mean is
    s sqrt(1 + 1/N), comparable to the spread (spread-skill ratio sqrt(N / (N + 1)))."""
    generator = torch.Generator().manual_seed(3)
    n, s = 8, 0.8
    mean = 250.0 + torch.randn(5, 64, 64, generator=generator)
    truth = mean + s * torch.randn(5, 64, 64, generator=generator)
    members = mean + s * torch.randn(n, 5, 64, 64, generator=generator)
    skill = rmse(members.mean(0), truth).item()
    spread = ensemble_spread(members).item()
    assert skill == pytest.approx(s * math.sqrt(1 + 1 / n), rel=0.03)
    assert spread == pytest.approx(s, rel=0.03)


def test_empty_dims_reduce_nothing():
    estimate, truth = torch.tensor([[3.0, -4.0]]), torch.zeros(1, 2)
    torch.testing.assert_close(rmse(estimate, truth, dims=()), torch.tensor([[3.0, 4.0]]).double())


# --------------------------------------------------------------------------- proper scores


def _fair_crps_pairwise(members: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Direct formula: mean_i |x_i - y| - 1/(2N(N-1)) sum_{i,j} |x_i - x_j|, per cell."""
    n = members.shape[0]
    x, y = members.double(), truth.double()
    pairs = (x[:, None] - x[None, :]).abs().sum(dim=(0, 1))
    return (x - y).abs().mean(0) - pairs / (2 * n * (n - 1))


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_crps_matches_the_pairwise_fair_formula(n):
    generator = torch.Generator().manual_seed(n)
    truth = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    members = 1.3 * torch.randn(n, 3, 4, 5, generator=generator, dtype=torch.float64) + 0.2
    members[0, 0] = truth[0]  # an exact hit and ties among members
    members[1, 1] = members[0, 1]
    direct = _fair_crps_pairwise(members, truth)
    torch.testing.assert_close(crps(members, truth, dims=()), direct, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(crps(members, truth), direct.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        crps(members, truth, dims=(0, 2)), direct.mean(dim=(0, 2)), rtol=1e-12, atol=0
    )
    # members and truth in float32 are scored in float64, the same numbers
    assert crps(members.float(), truth.float()).dtype == torch.float64


def test_crps_hand_values_and_a_point_forecast():
    # members {0, 2}, truth 1: mean |x - y| = 1, pairs sum 4 / (2 * 2 * 1) = 1 -> 0
    assert crps(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0])).item() == 0.0
    # members {0, 2}, truth 3: 2 - 1 = 1
    assert crps(torch.tensor([[0.0], [2.0]]), torch.tensor([3.0])).item() == pytest.approx(1.0)
    # one member: a point forecast, CRPS = |x - y|
    point = torch.tensor([[1.0, -2.0, 0.5]])
    truth = torch.tensor([0.0, 0.0, 0.0])
    assert crps(point, truth).item() == pytest.approx(3.5 / 3, rel=1e-15)


def test_crps_is_unbiased_for_two_members():
    """Members and truth iid N(0, 1): E CRPS_fair = E|X - y| - E|X - X'| / 2 = 1/sqrt(pi) for any
    N; the plain (energy, 1/N^2) estimator would give 2/sqrt(pi) - 1/(2 sqrt(pi)) = 0.846 at N = 2.
    Tolerance: 5 standard errors of the mean over 40000 independent cells."""
    generator = torch.Generator().manual_seed(11)
    truth = torch.randn(40_000, generator=generator, dtype=torch.float64)
    members = torch.randn(2, 40_000, generator=generator, dtype=torch.float64)
    per_cell = crps(members, truth, dims=())
    standard_error = per_cell.std().item() / math.sqrt(per_cell.numel())
    assert abs(per_cell.mean().item() - 1 / math.sqrt(math.pi)) < 5 * standard_error
    assert 5 * standard_error < 0.02  # far from the biased 0.846 - 0.564 = 0.28


def test_rmse_bias_and_crps_with_area_weights():
    latitude = torch.tensor([-60.0, 0.0, 60.0])  # cos: 1/2, 1, 1/2
    w = area_weights(latitude)
    assert w.shape == (3, 1)
    torch.testing.assert_close(w[:, 0], torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64))
    row_errors = torch.tensor([2.0, -1.0, 4.0]).reshape(3, 1).expand(3, 4)  # (lat, lon)
    truth = torch.zeros(2, 3, 4)  # (level, lat, lon)
    estimate = truth + row_errors
    # weighted: (0.5 * 4 + 1 * 1 + 0.5 * 16) / 2 = 5.5; bias (0.5 * 2 - 1 + 0.5 * 4) / 2 = 1
    assert rmse(estimate, truth, weights=w).item() == pytest.approx(math.sqrt(5.5), rel=1e-15)
    assert bias(estimate, truth, weights=w).item() == pytest.approx(1.0, rel=1e-15)
    assert bias(estimate, truth).item() == pytest.approx(5 / 3, rel=1e-15)  # unweighted
    torch.testing.assert_close(
        rmse(estimate, truth, dims=(1, 2), weights=w),
        torch.full((2,), math.sqrt(5.5), dtype=torch.float64),
    )
    one_member = estimate[None]  # CRPS of a point forecast: weighted mean absolute error
    # (0.5 * 2 + 1 * 1 + 0.5 * 4) / 2 = 2
    assert crps(one_member, truth, weights=w).item() == pytest.approx(2.0, rel=1e-15)


def test_weights_and_dims_are_validated():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"weights: .*broadcastable to \(2, 3, 4\).*\(4, 1\)"):
        rmse(x, x, weights=torch.ones(4, 1))
    with pytest.raises(ValueError, match="weights: expected finite, non-negative"):
        bias(x, x, weights=-torch.ones(3, 1))
    with pytest.raises(ValueError, match="weights: .*not all zero"):
        bias(x, x, weights=torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"dims: expected axes of a 3-d tensor"):
        rmse(x, x, dims=(3,))
    with pytest.raises(ValueError, match="dims: expected distinct axes"):
        rmse(x, x, dims=(0, -3))
    with pytest.raises(ValueError, match=r"latitude: expected finite degrees in \[-90, 90\]"):
        area_weights(torch.tensor([0.0, 91.0]))
    with pytest.raises(ValueError, match="latitude: expected a 1-d tensor"):
        area_weights(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"`members` \(3, 2, 4\) must be \(N, \*truth.shape\)"):
        crps(torch.zeros(3, 2, 4), x)
    with pytest.raises(ValueError, match="`members` needs at least 1 member on axis 0, got 0"):
        crps(torch.zeros(0, 2, 3, 4), x)
    with pytest.raises(ValueError, match="`members` needs at least 2 members.*got 1"):
        spread_skill_ratio(torch.zeros(1, 2, 3, 4), x)


# --------------------------------------------------------------------------- spread-skill


def test_spread_skill_ratio_hand_value():
    members = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 6.0]])  # variances 4, 12 -> spread^2 8
    truth = torch.tensor([1.0, 0.0])  # mean (3, 2): squared errors 4, 4 -> rmse 2
    ratio = spread_skill_ratio(members, truth)
    assert ratio.item() == pytest.approx(math.sqrt(4 / 3) * math.sqrt(8) / 2, rel=1e-15)


@pytest.mark.parametrize("n", [3, 10])
def test_spread_skill_ratio_of_a_calibrated_ensemble_is_one(n):
    """Truth and members exchangeable: E spread^2 = s^2, E (mean - truth)^2 = s^2 (N + 1) / N, so
    the corrected ratio is 1; without the correction it would be sqrt(N / (N + 1)) (0.87 at N = 3,
    0.95 at N = 10). Relative std of the ratio over 20480 cells: about
    0.5 sqrt(2 / ((N - 1) 20480) + 2 / 20480) < 0.009; tolerance 0.03."""
    generator = torch.Generator().manual_seed(n)
    centre = 250.0 + 3.0 * torch.randn(5, 64, 64, generator=generator)
    truth = centre + 0.7 * torch.randn(5, 64, 64, generator=generator)
    members = centre + 0.7 * torch.randn(n, 5, 64, 64, generator=generator)
    ratio = spread_skill_ratio(members, truth, dims=level_dims(3, spatial_dims=2))
    assert ratio.shape == (5,)
    assert spread_skill_ratio(members, truth).item() == pytest.approx(1.0, abs=0.03)
    assert ((ratio - 1).abs() < 0.06).all()  # per level: 4096 cells, std about 0.02
    under = centre + 0.35 * torch.randn(n, 5, 64, 64, generator=generator)
    assert spread_skill_ratio(under, truth).item() < 0.6  # half the spread, ratio about 0.45


# --------------------------------------------------------------------------- rank histogram


def test_rank_histogram_hand_ranks():
    members = torch.tensor([[0.0, 5.0, 2.0], [1.0, 6.0, 2.0], [2.0, 7.0, 2.0]])  # N = 3
    truth = torch.tensor([1.5, 9.0, -1.0])  # ranks 2, 3, 0
    counts = rank_histogram(members, truth)
    assert counts.dtype == torch.long
    assert counts.tolist() == [1, 0, 1, 1]
    assert rank_histogram(members, truth, dims=()).tolist() == [
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [1, 0, 0, 0],
    ]


def test_rank_histogram_breaks_ties_at_random():
    """Truth equal to all N = 4 members: the rank is uniform on {0, ..., 4}; chi-square test of
    flatness at the 0.1 % level over 10000 cells; the same generator gives the same counts."""
    truth = torch.zeros(10_000)
    members = torch.zeros(4, 10_000)
    counts = rank_histogram(members, truth, generator=torch.Generator().manual_seed(0))
    assert counts.sum().item() == 10_000
    assert chisquare(counts.numpy()).pvalue > 1e-3
    again = rank_histogram(members, truth, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts, again)
    # ties with some members only: truth 1 among {0, 1, 1, 2} -> rank 1, 2 or 3, never 0 or 4
    partial = rank_histogram(
        torch.tensor([0.0, 1.0, 1.0, 2.0]).reshape(4, 1).expand(4, 3000),
        torch.ones(3000),
        generator=torch.Generator().manual_seed(1),
    )
    assert partial[0].item() == 0 and partial[4].item() == 0
    assert chisquare(partial[1:4].numpy()).pvalue > 1e-3


def test_rank_histogram_of_a_calibrated_ensemble_is_flat():
    """Truth and N = 9 members iid given a random centre: each rank has probability 1/10. The
    chi-square statistic over the 10 bins (9 dof) rejects a flat histogram at the 0.1 % level only
    by chance (seed fixed); an under-dispersive ensemble (half the std) is rejected outright."""
    generator = torch.Generator().manual_seed(5)
    centre = 3.0 * torch.randn(2, 4, 32, 32, generator=generator)
    truth = centre + torch.randn(2, 4, 32, 32, generator=generator)
    members = centre + torch.randn(9, 2, 4, 32, 32, generator=generator)
    per_level = rank_histogram(members, truth, dims=level_dims(4, 2))
    assert per_level.shape == (4, 10)
    assert (per_level.sum(1) == 2 * 32 * 32).all()
    overall = per_level.sum(0)
    assert torch.equal(overall, rank_histogram(members, truth))
    assert chisquare(overall.numpy()).pvalue > 1e-3
    narrow = centre + 0.5 * torch.randn(9, 2, 4, 32, 32, generator=generator)
    counts = rank_histogram(narrow, truth)
    assert chisquare(counts.numpy()).pvalue < 1e-10
    assert min(counts[0], counts[-1]) > 2 * counts[1:-1].max()  # U-shape


def test_rank_histogram_rejects_non_finite_values():
    with pytest.raises(ValueError, match="members, truth: contain NaN"):
        rank_histogram(torch.zeros(3, 2), torch.tensor([0.0, math.nan]))


# --------------------------------------------------------------------------- Wasserstein-1


def test_wasserstein1_per_level():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64)  # (t, lev, y, x)
    shifts = torch.tensor([0.0, 0.5, -2.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    estimate = truth.flip(0, 3) + shifts  # the same values per level, moved in time and space
    # a shift by c moves the distribution by c: W1 = |c|; positions are ignored
    per_level = wasserstein1(estimate, truth, dims=(0, 2, 3))
    torch.testing.assert_close(per_level, shifts.abs().flatten(), rtol=0, atol=1e-12)
    assert wasserstein1(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])).item() == 1.0
    a = torch.randn(50, generator=generator, dtype=torch.float64)
    b = 2 * torch.randn(50, generator=generator, dtype=torch.float64)
    assert wasserstein1(a, b).item() == wasserstein_distance(a.numpy(), b.numpy())
    # weights weigh both distributions: a zero weight removes the value 10
    weighted = wasserstein1(
        torch.tensor([0.0, 10.0]), torch.tensor([0.0, 0.0]), weights=torch.tensor([1.0, 0.0])
    )
    assert weighted.item() == 0.0


# --------------------------------------------------------------------------- spectra


def _mode(shape, ky, kx, amplitude):
    y = torch.arange(shape[0], dtype=torch.float64)[:, None]
    x = torch.arange(shape[1], dtype=torch.float64)[None, :]
    return amplitude * torch.cos(2 * math.pi * (ky * y / shape[0] + kx * x / shape[1]) + 0.3)


@pytest.mark.parametrize(
    "shape, ky, kx, shell",
    [((16, 16), 3, 4, 5), ((16, 16), 1, 1, 1), ((16, 16), 1, 2, 2), ((8, 16), 1, 0, 2)],
)
def test_power_spectrum_of_one_fourier_mode(shape, ky, kx, shell):
    """A cos(k.x + phase) has mean square A^2 / 2 (Parseval), all of it in shell
    floor(|kappa| + 1/2): |(3, 4)| = 5, |(1, 1)| = 1.41 -> 1, |(1, 2)| = 2.24 -> 2; on 8 x 16 one
    wave along y of length 8 is kappa = 1 * 16 / 8 = 2 in units of the longest axis."""
    spectrum = power_spectrum(_mode(shape, ky, kx, 2.5))
    assert spectrum.dtype == torch.float64
    assert spectrum.shape == (SpectralCovariance(levels=1, grid_shape=shape).num_shells,)
    expected = torch.zeros_like(spectrum)
    expected[shell] = 2.5**2 / 2
    torch.testing.assert_close(spectrum, expected, rtol=1e-12, atol=1e-12)


def test_power_spectrum_parseval_per_level_and_1d():
    generator = torch.Generator().manual_seed(0)
    field = torch.randn(2, 3, 12, 10, generator=generator, dtype=torch.float64)  # (time, lev, y, x)
    spectrum = power_spectrum(field)
    assert spectrum.shape[:2] == (2, 3)
    torch.testing.assert_close(
        spectrum.sum(-1), field.square().mean(dim=(-2, -1)), rtol=1e-12, atol=0
    )
    constant = power_spectrum(torch.full((4, 4), 3.0))
    assert constant[0].item() == pytest.approx(9.0) and constant[1:].abs().max() < 1e-12
    line = torch.cos(2 * math.pi * 3 * torch.arange(16, dtype=torch.float64) / 16)
    one_d = power_spectrum(line, spatial_dims=1)
    assert one_d.argmax().item() == 3 and one_d[3].item() == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError, match="spatial_dims: expected 1 or 2"):
        power_spectrum(field, spatial_dims=3)


# --------------------------------------------------------------------------- score_ensemble


def test_score_ensemble_per_level_and_overall():
    generator = torch.Generator().manual_seed(2)
    truth = 250.0 + torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    members = truth + 0.5 + torch.randn(4, 2, 3, 8, 8, generator=generator, dtype=torch.float64)
    scores = score_ensemble(members, truth, generator=torch.Generator().manual_seed(0))
    json.dumps(scores)  # plain Python numbers
    assert scores["members"] == 4 and scores["levels"] == 3
    per_level, mean = (0, 2, 3), members.mean(0)
    for name, value in [
        ("rmse", rmse(mean, truth, per_level)),
        ("bias", bias(mean, truth, per_level)),
        ("crps", crps(members, truth, per_level)),
        ("spread", ensemble_spread(members, per_level)),
        ("spread_skill_ratio", spread_skill_ratio(members, truth, per_level)),
        ("wasserstein1", wasserstein1(mean, truth, per_level)),
    ]:
        assert scores[name]["per_level"] == pytest.approx(value.tolist(), rel=1e-12), name
    assert scores["rmse"]["overall"] == pytest.approx(rmse(mean, truth).item(), rel=1e-12)
    assert scores["crps"]["overall"] == pytest.approx(crps(members, truth).item(), rel=1e-12)
    assert scores["wasserstein1"]["overall"] == pytest.approx(
        sum(scores["wasserstein1"]["per_level"]) / 3, rel=1e-12
    )
    assert scores["bias"]["overall"] == pytest.approx(0.5, abs=0.1)  # 384 cells, std 0.5/sqrt(384)
    counts = scores["rank_histogram"]
    assert len(counts["per_level"]) == 3 and all(sum(c) == 128 for c in counts["per_level"])
    assert counts["overall"] == [sum(c[i] for c in counts["per_level"]) for i in range(5)]
    spectrum = scores["error_spectrum"]
    assert len(spectrum["per_level"]) == 3
    # Parseval: the error spectrum of each level sums to its mean square error
    assert [sum(s) for s in spectrum["per_level"]] == pytest.approx(
        [r**2 for r in scores["rmse"]["per_level"]], rel=1e-12
    )


def test_score_ensemble_deterministic_and_latitude():
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(1, 2, 4, 5, generator=generator)
    analysis = truth + torch.randn(1, 2, 4, 5, generator=generator)
    scores = score_ensemble(analysis[None], truth)
    assert scores["members"] == 1
    assert scores["spread"] is None and scores["rank_histogram"] is None
    assert scores["crps"]["overall"] == pytest.approx((analysis - truth).abs().mean().item())
    latitude = torch.tensor([-45.0, -15.0, 15.0, 45.0])
    weighted = score_ensemble(analysis[None], truth, latitude=latitude)
    assert weighted["error_spectrum"] is None  # not a periodic grid
    assert weighted["rmse"]["overall"] == pytest.approx(
        rmse(analysis, truth, weights=area_weights(latitude)).item(), rel=1e-12
    )
    with pytest.raises(ValueError, match=r"latitude: expected 4 values .* got 3"):
        score_ensemble(analysis[None], truth, latitude=latitude[:3])
    with pytest.raises(ValueError, match="spatial_dims: expected 0, 1 or 2"):
        score_ensemble(analysis[None], truth, spatial_dims=4)
    column = score_ensemble(torch.randn(3, 6, generator=generator), torch.zeros(6), spatial_dims=0)
    assert len(column["rmse"]["per_level"]) == 6 and column["error_spectrum"] is None
