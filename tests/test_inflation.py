"""Spread inflation (docs/method.md §Spread inflation): the mean kept, the spread scaled by
exactly ρ_l, the fit recovering a known under-dispersion, and the pipeline's config default."""

import math

import pytest
import torch
from test_pipeline import LEVELS, run, tiny_pipeline

from slams_diffusers import SLAMSPipeline
from slams_diffusers.inflation import fit_spread_inflation, inflate_spread
from slams_diffusers.metrics import ensemble_spread, spread_skill_ratio


def test_inflation_keeps_the_mean_and_scales_each_level_spread():
    generator = torch.Generator().manual_seed(0)
    members = torch.randn(6, 2, 3, 4, 4, generator=generator, dtype=torch.float64)
    factors = [1.5, 0.5, 2.0]
    inflated = inflate_spread(members, factors, level_dim=2)
    torch.testing.assert_close(inflated.mean(0), members.mean(0), rtol=0, atol=1e-14)
    ratio = ensemble_spread(inflated, dims=(0, 2, 3)) / ensemble_spread(members, dims=(0, 2, 3))
    torch.testing.assert_close(
        ratio, torch.tensor(factors, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert torch.equal(inflate_spread(members[:1], 3.0, level_dim=2), members[:1])
    for bad in ([1.0, 2.0], -1.0, float("nan")):
        with pytest.raises(ValueError, match="spread_inflation"):
            inflate_spread(members, bad, level_dim=2)


def test_fit_recovers_a_known_under_dispersion():
    """Truth and 8 members exchangeable draws of N(μ_w, 1) per cell, the members' deviations then
    shrunk by c_l: the fit gives ρ_l = 1/c_l, and the inflated ensembles have spread-skill 1.
    Pooled over 400 windows × 64 cells the squared errors' relative standard error is
    sqrt(2/25600) ≈ 0.9 %, half that on ρ: 3 % is over six standard errors."""
    generator = torch.Generator().manual_seed(1)
    shrink = torch.tensor([0.5, 0.8, 1.0], dtype=torch.float64).reshape(1, 3, 1)
    ensembles, truths = [], []
    for _ in range(400):
        centre = 5 * torch.randn(1, 3, 1, generator=generator, dtype=torch.float64)
        draws = centre + torch.randn(9, 3, 64, generator=generator, dtype=torch.float64)
        members, truth = draws[1:], draws[0]
        mean = members.mean(0, keepdim=True)
        ensembles.append(mean + shrink * (members - mean))
        truths.append(truth)
    factors = fit_spread_inflation(ensembles, truths, level_dim=0)
    torch.testing.assert_close(
        torch.tensor(factors), torch.tensor([2.0, 1.25, 1.0]), rtol=0.03, atol=0
    )
    inflated = torch.stack([inflate_spread(e, factors, level_dim=1) for e in ensembles], dim=1)
    ratio = spread_skill_ratio(inflated, torch.stack(truths), dims=(0, 2))
    torch.testing.assert_close(ratio, torch.ones(3, dtype=torch.float64), rtol=0.03, atol=0)
    with pytest.raises(ValueError, match="ensembles"):
        fit_spread_inflation([ensembles[0][:1]], [truths[0]], level_dim=0)


def test_pipeline_applies_its_saved_inflation_by_default(tmp_path):
    """A fitted ``spread_inflation`` survives save/load and is the call's default; 1 switches it
    off; the mean is that of the uninflated members; a bad value is a ValueError naming it."""
    pipe = tiny_pipeline()
    plain = run(pipe, spread_inflation=1.0).members
    assert torch.equal(plain, run(pipe).members)
    factors = [2.0, 1.0, 0.5]
    pipe.register_to_config(spread_inflation=factors)
    pipe.save_pretrained(tmp_path)
    loaded = SLAMSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert list(loaded.config.spread_inflation) == factors
    inflated = run(loaded).members
    torch.testing.assert_close(inflated.mean(0), plain.mean(0), rtol=0, atol=1e-4)
    ratio = ensemble_spread(inflated, dims=(0, 2, 3)) / ensemble_spread(plain, dims=(0, 2, 3))
    torch.testing.assert_close(ratio, torch.tensor(factors, dtype=ratio.dtype), rtol=1e-4, atol=0)
    assert torch.equal(run(loaded, spread_inflation=1.0).members, plain)
    with pytest.raises(ValueError, match=f"one per level \\({LEVELS}\\)"):
        run(loaded, spread_inflation=[1.0, 2.0])
    assert math.isfinite(float(inflated.abs().max()))
