"""Tests of VPPredictorCorrectorScheduler (ideas ported from diffusers' scheduler tests)."""

from __future__ import annotations

import math

import pytest
import torch

from slams_diffusers.schedulers import (
    VPPredictorCorrectorScheduler,
    VPPredictorCorrectorSchedulerOutput,
)

CONFIGS = [
    {},
    {"schedule": "cosine", "eta": 1e-2, "tau": 0.1, "corrector_steps": 0},
    {"schedule": "linear", "eta": 1e-3, "beta_min": 0.2, "beta_max": 15.0, "corrector_steps": 3},
    {"schedule": "linear", "tau": 1.0, "sampling_eps": 0.0},
]


def _sample(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config round trip


def _public(config) -> dict:
    """Config without bookkeeping keys (``_use_default_values`` etc.)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


@pytest.mark.parametrize("config", CONFIGS)
def test_save_load_round_trip(tmp_path, config):
    sched = VPPredictorCorrectorScheduler(**config)
    sched.save_pretrained(tmp_path)
    loaded = VPPredictorCorrectorScheduler.from_pretrained(tmp_path)
    assert type(loaded) is VPPredictorCorrectorScheduler
    assert _public(loaded.config) == _public(sched.config)
    assert loaded.config["_class_name"] == "VPPredictorCorrectorScheduler"
    for key, value in config.items():
        assert loaded.config[key] == value

    x, eps = _sample((3, 4, 5), 1), _sample((3, 4, 5), 2)
    outs = []
    for s in (sched, loaded):
        s.set_timesteps(7)
        t = s.timesteps[2]
        pred = s.step(eps, t, x)
        corr = s.step_correct(eps, t, x, generator=torch.Generator().manual_seed(3))
        outs.append((pred.prev_sample, pred.pred_original_sample, corr.prev_sample))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_from_config_identical():
    sched = VPPredictorCorrectorScheduler(schedule="linear", tau=0.3)
    other = VPPredictorCorrectorScheduler.from_config(sched.config)
    assert _public(other.config) == _public(sched.config)


# ---------------------------------------------------------------- shapes and outputs


@pytest.mark.parametrize("shape", [(6,), (2, 8), (2, 3, 4), (2, 2, 3, 4, 5)])
def test_step_shapes(shape):
    sched = VPPredictorCorrectorScheduler()
    sched.set_timesteps(10)
    x, eps = _sample(shape, 0), _sample(shape, 1)
    t = sched.timesteps[0]
    for out in (sched.step(eps, t, x), sched.step_correct(eps, t, x)):
        assert isinstance(out, VPPredictorCorrectorSchedulerOutput)
        assert out.prev_sample.shape == shape
        assert out.pred_original_sample.shape == shape
        assert out.prev_sample.dtype == x.dtype


def test_step_dtype_follows_sample():
    sched = VPPredictorCorrectorScheduler()
    sched.set_timesteps(4)
    x = _sample((2, 3)).double()
    eps = _sample((2, 3), 1).float()
    out = sched.step(eps, sched.timesteps[1], x)
    assert out.prev_sample.dtype == torch.float64
    out = sched.step_correct(eps, sched.timesteps[1], x)
    assert out.prev_sample.dtype == torch.float64


def test_dict_vs_tuple_outputs():
    sched = VPPredictorCorrectorScheduler()
    sched.set_timesteps(5)
    x, eps = _sample((2, 3, 4), 0), _sample((2, 3, 4), 1)
    t = sched.timesteps[3]
    d = sched.step(eps, t, x)
    tup = sched.step(eps, t, x, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 2
    torch.testing.assert_close(d.prev_sample, tup[0], rtol=0, atol=0)
    torch.testing.assert_close(d.pred_original_sample, tup[1], rtol=0, atol=0)
    torch.testing.assert_close(d[0], d.prev_sample, rtol=0, atol=0)

    d = sched.step_correct(eps, t, x, generator=torch.Generator().manual_seed(0))
    tup = sched.step_correct(
        eps, t, x, generator=torch.Generator().manual_seed(0), return_dict=False
    )
    torch.testing.assert_close(d.prev_sample, tup[0], rtol=0, atol=0)
    torch.testing.assert_close(d.pred_original_sample, tup[1], rtol=0, atol=0)


def test_scale_model_input_identity_and_init_sigma():
    sched = VPPredictorCorrectorScheduler()
    x = _sample((2, 3))
    assert sched.scale_model_input(x) is x
    assert sched.scale_model_input(x, 0.5) is x
    assert sched.init_noise_sigma == 1.0
    assert sched.order == 1


# ---------------------------------------------------------------- timesteps


def test_set_timesteps_grid():
    sched = VPPredictorCorrectorScheduler(sampling_eps=1e-3)
    sched.set_timesteps(8)
    assert sched.num_inference_steps == 8
    assert sched.timesteps.shape == (8,)
    assert sched.timesteps.dtype == torch.float32
    grid = torch.linspace(1.0, 1e-3, 9, dtype=torch.float64)
    torch.testing.assert_close(sched.timesteps.double(), grid[:-1], rtol=0, atol=1e-7)
    for i, t in enumerate(sched.timesteps):
        assert sched.index_for_timestep(t) == i
        assert sched.next_timestep(t) == pytest.approx(float(grid[i + 1]), abs=1e-15)
        # float64 value, python float, (B,) tensor all find the same point
        assert sched.index_for_timestep(float(grid[i])) == i
        assert sched.index_for_timestep(t.double()) == i
        assert sched.index_for_timestep(t.repeat(4)) == i
    assert sched.next_timestep(sched.timesteps[-1]) == pytest.approx(1e-3, abs=1e-15)


def test_timestep_forms_give_equal_steps():
    sched = VPPredictorCorrectorScheduler()
    sched.set_timesteps(6)
    x, eps = _sample((3, 5), 0), _sample((3, 5), 1)
    t = sched.timesteps[2]
    ref = sched.step(eps, t, x).prev_sample
    for form in (float(t), t.double(), t.repeat(3), t.reshape(1)):
        torch.testing.assert_close(sched.step(eps, form, x).prev_sample, ref, rtol=0, atol=0)


def test_bad_timesteps():
    sched = VPPredictorCorrectorScheduler()
    sched.set_timesteps(6)
    x = _sample((2, 3))
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, torch.tensor([[1.0]]), x)
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, torch.tensor([1.0, 0.5]), x)
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, "1.0", x)
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, 0.4321, x)  # off the grid
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, 1e-3, x)  # the last grid point has no successor


# ---------------------------------------------------------------- schedules


def test_cosine_boundaries():
    eta = 1e-3
    sched = VPPredictorCorrectorScheduler(schedule="cosine", eta=eta)
    a0, s0 = sched.alpha_sigma(0.0)
    a1, s1 = sched.alpha_sigma(1.0)
    assert a0.dtype == torch.float64 and a0.ndim == 0
    assert a0.item() == pytest.approx(1.0, abs=1e-12)
    assert s0.item() == pytest.approx(eta, rel=1e-9)
    assert a1.item() == pytest.approx(eta, rel=1e-9)
    assert s1.item() == pytest.approx(1.0, abs=1e-12)


def test_linear_boundaries():
    eta, b0, b1 = 1e-3, 0.1, 20.0
    sched = VPPredictorCorrectorScheduler(schedule="linear", eta=eta, beta_min=b0, beta_max=b1)
    a0, s0 = sched.alpha_sigma(0.0)
    a1, s1 = sched.alpha_sigma(1.0)
    assert a0.item() == pytest.approx(1.0, abs=1e-12)
    assert s0.item() == pytest.approx(eta, rel=1e-9)
    assert a1.item() == pytest.approx(math.exp(-0.25 * (b1 - b0) - 0.5 * b0), rel=1e-12)
    assert s1.item() == pytest.approx(math.sqrt(1 - a1.item() ** 2 + eta**2), rel=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_alpha_sigma_monotone_and_dtype(schedule):
    sched = VPPredictorCorrectorScheduler(schedule=schedule)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha, sigma = sched.alpha_sigma(t)
    assert alpha.dtype == torch.float64 and alpha.shape == t.shape
    assert (alpha.diff() < 0).all()
    assert (sigma.diff() > 0).all()
    assert (alpha > 0).all() and (sigma > 0).all()
    # VP: alpha² + sigma² = 1 + eta² everywhere
    torch.testing.assert_close(alpha**2 + sigma**2, torch.full_like(t, 1 + 1e-6))
    a32, s32 = sched.alpha_sigma(t.float())
    assert a32.dtype == torch.float32 and s32.dtype == torch.float32


# ---------------------------------------------------------------- add_noise


@pytest.mark.parametrize("shape", [(4,), (4, 3), (4, 2, 3), (4, 2, 3, 2, 2)])
def test_add_noise_any_rank(shape):
    sched = VPPredictorCorrectorScheduler()
    x, noise = _sample(shape, 0), _sample(shape, 1)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    z = sched.add_noise(x, noise, t)
    assert z.shape == shape and z.dtype == x.dtype
    for b in range(shape[0]):
        a, s = sched.alpha_sigma(float(t[b]))
        expected = a.item() * x[b] + s.item() * noise[b]
        torch.testing.assert_close(z[b], expected)
    # scalar timesteps (float and 0-d tensor) broadcast over everything
    a, s = sched.alpha_sigma(0.3)
    expected = a.item() * x + s.item() * noise
    torch.testing.assert_close(sched.add_noise(x, noise, 0.3), expected)
    torch.testing.assert_close(sched.add_noise(x, noise, torch.tensor(0.3)), expected)
    with pytest.raises(ValueError, match="timesteps"):
        sched.add_noise(x, noise, torch.zeros(shape[0] + 1))


# ---------------------------------------------------------------- sampling quality


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_predictor_loop_gaussian_data(schedule):
    """Exact ε of N(0, 1) data: ε = sigma_t z_t / (alpha_t² + sigma_t²); the deterministic
    predictor maps z_1 ~ N(0, I) to samples of variance ≈ 1."""
    sched = VPPredictorCorrectorScheduler(schedule=schedule)
    sched.set_timesteps(256)
    z = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = z * sched.init_noise_sigma
    for t in sched.timesteps:
        alpha, sigma = sched.alpha_sigma(float(t))
        eps = sigma * z / (alpha**2 + sigma**2)
        out = sched.step(eps, t, z)
        z = out.prev_sample
    x0 = out.pred_original_sample
    assert torch.isfinite(z).all()
    assert z.var().item() == pytest.approx(1.0, abs=0.04)
    assert x0.var().item() == pytest.approx(1.0, abs=0.04)
    assert abs(z.mean().item()) < 0.03


def _gaussian_eps(sched, z: torch.Tensor, t: float, v: float) -> torch.Tensor:
    """Exact ε of N(0, v I) data at time t: ε = sigma_t z / (alpha_t² v + sigma_t²)."""
    alpha, sigma = sched.alpha_sigma(t)
    return (sigma * z / (alpha**2 * v + sigma**2)).to(z.dtype)


def test_step_correct_per_sample_and_batch_independent():
    sched = VPPredictorCorrectorScheduler(tau=0.5)
    t = 0.4
    x = _sample((4, 3, 5), 0)
    eps = _sample((4, 3, 5), 1)

    def gens(n=4):
        return [torch.Generator().manual_seed(100 + i) for i in range(n)]

    ref = sched.step_correct(eps, t, x, generator=gens()).prev_sample

    # changing one batch element (its sample and its ε) leaves the others untouched
    x2, eps2 = x.clone(), eps.clone()
    x2[2] *= 10.0
    eps2[2] *= 0.01
    out = sched.step_correct(eps2, t, x2, generator=gens()).prev_sample
    keep = [0, 1, 3]
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
    assert not torch.allclose(out[2], ref[2])

    # batch run equals per-sample runs with the same generators
    for b in range(4):
        single = sched.step_correct(
            eps[b : b + 1], t, x[b : b + 1], generator=[torch.Generator().manual_seed(100 + b)]
        ).prev_sample
        torch.testing.assert_close(single, ref[b : b + 1], rtol=1e-6, atol=1e-6)

    # a (B,) timestep tensor gives the same result
    out = sched.step_correct(eps, torch.full((4,), t), x, generator=gens()).prev_sample
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)

    with pytest.raises(ValueError, match="generator"):
        sched.step_correct(eps, t, x, generator=gens(3))


def test_step_correct_formula():
    """One step equals z + δ s + √(2δ) ξ with δ_b = τ / mean(s_b²)."""
    sched = VPPredictorCorrectorScheduler(tau=0.3)
    t = 0.7
    x, eps = _sample((3, 2, 4), 0).double(), _sample((3, 2, 4), 1).double()
    out = sched.step_correct(eps, t, x, generator=torch.Generator().manual_seed(5), tau=0.2)
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    alpha, sigma = sched.alpha_sigma(t)
    s = -eps / sigma
    delta = 0.2 / s.square().mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out.prev_sample, x + delta * s + (2 * delta).sqrt() * xi)
    torch.testing.assert_close(out.pred_original_sample, (x - sigma * eps) / alpha)


def test_corrector_keeps_gaussian_stationary():
    """Langevin with the exact score of N(0, v I) data at a fixed t keeps a N(0, v_t) ensemble
    (v_t = alpha_t² v + sigma_t²) at variance ≈ v_t (small τ: the ULA bias is ≈ τ/2)."""
    sched = VPPredictorCorrectorScheduler(tau=0.02)
    v, t = 2.5, 0.3
    alpha, sigma = sched.alpha_sigma(t)
    v_t = (alpha**2 * v + sigma**2).item()
    g = torch.Generator().manual_seed(0)
    # δ_b depends on the sample's own norm, which tilts the stationary law by |z|²/D:
    # a (D + 2) / D variance factor, so use large D (as for real latents).
    z = math.sqrt(v_t) * torch.randn(512, 1024, generator=g, dtype=torch.float64)
    for _ in range(30):
        eps = _gaussian_eps(sched, z, t, v)
        z = sched.step_correct(eps, t, z, generator=g).prev_sample
    assert z.var().item() == pytest.approx(v_t, rel=0.02)
    assert abs(z.mean().item()) < 0.02 * math.sqrt(v_t)


# ---------------------------------------------------------------- errors


def test_set_timesteps_zero_raises():
    sched = VPPredictorCorrectorScheduler()
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.set_timesteps(0)


def test_step_before_set_timesteps_raises():
    sched = VPPredictorCorrectorScheduler()
    x = _sample((2, 3))
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(x, 1.0, x)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"schedule": "sigmoid"}, "schedule"),
        ({"eta": 0.0}, "eta"),
        ({"eta": -1e-3}, "eta"),
        ({"tau": 0.0}, "tau"),
        ({"corrector_steps": -1}, "corrector_steps"),
        ({"sampling_eps": 1.0}, "sampling_eps"),
        ({"sampling_eps": -0.1}, "sampling_eps"),
        ({"beta_min": 5.0, "beta_max": 1.0}, "beta_max"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VPPredictorCorrectorScheduler(**kwargs)
