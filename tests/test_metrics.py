"""Scores of analyses: rmse and ensemble spread, by hand and on known distributions."""

import math

import pytest
import torch

from slams_diffusers.metrics import ensemble_spread, rmse


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
