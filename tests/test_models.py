"""Tests of the diffusers models (autoencoder, level normaliser, observation encoder, score net)
and their shared layers (tiny configs, CPU)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch.func import jvp, vjp

from slams_diffusers.models import (
    LevelNormalizer,
    ObservationEncoder,
    ObservationEncoderOutput,
    ScoreNet,
    ScoreNetOutput,
    StateAutoencoder,
    StateAutoencoderOutput,
    fuse_gaussians,
    fuse_likelihoods,
    fuse_posteriors,
)
from slams_diffusers.models.layers import PaddedConv, sinusoidal_embedding
from slams_diffusers.models.observation_encoder import posterior_to_likelihood
from slams_diffusers.training import fit_likelihood_calibration


def tiny_ae(**kw) -> StateAutoencoder:
    cfg = dict(
        levels=3,
        latent_channels=2,
        spatial_dims=2,
        downsample_factor=4,
        hidden_channels=(4, 8, 8, 8),
        layers_per_block=1,
    )
    cfg.update(kw)
    torch.manual_seed(0)
    return StateAutoencoder(**cfg).eval()


def tiny_score(**kw) -> ScoreNet:
    cfg = dict(
        in_channels=2,
        window=3,
        spatial_dims=2,
        hidden_channels=(8, 16),
        layers_per_block=1,
        time_embedding_dim=16,
    )
    cfg.update(kw)
    torch.manual_seed(0)
    return ScoreNet(**cfg).eval()


MODALITIES = {
    "stations": {"in_channels": 2, "input_mean": [250.0, 260.0], "input_std": [10.0, 5.0]},
    "satellite": {"in_channels": 1, "input_mean": None, "input_std": None},
}


def tiny_obs(**kw) -> ObservationEncoder:
    cfg = dict(modalities=MODALITIES, latent_channels=2, spatial_dims=2, hidden_channels=8)
    cfg.update(kw)
    torch.manual_seed(0)
    return ObservationEncoder(**cfg).eval()


def obs_inputs(sd: int = 2, stations_grid: int = 16, satellite_grid: int = 2):
    g = torch.Generator().manual_seed(1)
    vs = 250.0 + 10.0 * torch.randn(2, 2, *([stations_grid] * sd), generator=g)
    ms = (torch.rand(vs.shape, generator=g) < 0.3).float()
    vt = torch.randn(2, 1, *([satellite_grid] * sd), generator=g)
    mt = torch.ones_like(vt)
    return {"stations": (vs * ms, ms), "satellite": (vt, mt)}


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_periodic_conv_is_circular_along_x_only(spatial_dims):
    torch.manual_seed(0)
    conv = PaddedConv(spatial_dims, 2, 3, 3, periodic=True)
    x = torch.randn(1, 2, *([8] * spatial_dims))
    # equivariant to rolls along x
    assert torch.allclose(conv(x.roll(3, -1)), conv(x).roll(3, -1), atol=1e-6)
    if spatial_dims == 2:  # zero padding along y: not equivariant there
        assert not torch.allclose(conv(x.roll(3, -2)), conv(x).roll(3, -2), atol=1e-3)
    plain = PaddedConv(spatial_dims, 2, 3, 3, periodic=False)
    plain.load_state_dict(conv.state_dict())
    assert not torch.allclose(plain(x.roll(3, -1)), plain(x).roll(3, -1), atol=1e-3)
    # interior cells agree with the zero-padded conv
    assert torch.allclose(conv(x)[..., 1:-1], plain(x)[..., 1:-1], atol=1e-6)


def test_sinusoidal_embedding():
    t = torch.tensor([0.0, 1.0, 250.0])
    emb = sinusoidal_embedding(t, 9)
    assert emb.shape == (3, 9)
    assert torch.allclose(emb[0, :4], torch.ones(4)) and torch.all(emb[0, 4:] == 0)
    assert torch.allclose(emb[1, 0], torch.cos(torch.tensor(1.0)))
    assert torch.allclose(emb[1, 4], torch.sin(torch.tensor(1.0)))


# --------------------------------------------------------------------------- StateAutoencoder


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_autoencoder_shapes(spatial_dims, f):
    ae = tiny_ae(spatial_dims=spatial_dims, downsample_factor=f)
    space = (16,) * spatial_dims
    x = torch.randn(2, 3, 3, *space)
    out = ae(x)
    assert isinstance(out, StateAutoencoderOutput)
    assert out.latent.shape == (2, 3, 2, *(s // f for s in space))
    assert out.sample.shape == x.shape
    assert ae.latent_shape(space) == tuple(s // f for s in space)
    assert ae.decode(ae.encode(x)).shape == x.shape
    sample, latent = ae(x, return_dict=False)
    assert torch.equal(sample, out.sample) and torch.equal(latent, out.latent)


def test_autoencoder_non_square_and_time_independence():
    ae = tiny_ae(downsample_factor=2)
    x = torch.randn(2, 3, 3, 8, 12)
    z = ae.encode(x)
    assert z.shape == (2, 3, 2, 4, 6)
    # frames are encoded independently; in float64, since float32 conv kernels (oneDNN) may differ
    # with the batch size and the CPU, which changes the round-off
    ae64, x64 = ae.double(), x.double()
    assert torch.allclose(ae64.encode(x64[:, 1:2]), ae64.encode(x64)[:, 1:2], rtol=0, atol=1e-10)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_autoencoder_periodic_roll(spatial_dims):
    f = 4
    ae = tiny_ae(spatial_dims=spatial_dims, downsample_factor=f, periodic=True)
    x = torch.randn(1, 1, 3, *([16] * spatial_dims))
    z = ae.encode(x)
    assert torch.allclose(ae.encode(x.roll(f, -1)), z.roll(1, -1), atol=1e-5)
    assert torch.allclose(ae.decode(z.roll(1, -1)), ae.decode(z).roll(f, -1), atol=1e-5)
    plain = tiny_ae(spatial_dims=spatial_dims, downsample_factor=f, periodic=False)
    plain.load_state_dict(ae.state_dict())
    assert not torch.allclose(plain.encode(x.roll(f, -1)), plain.encode(x).roll(1, -1), atol=1e-3)


def test_autoencoder_normalisation_and_scaling():
    mean, std = [250.0, 230.0, 210.0], [10.0, 5.0, 2.0]
    stats = tiny_ae(level_mean=mean, level_std=std, scaling_factor=0.5)
    plain = tiny_ae()
    plain.load_state_dict(stats.state_dict())
    m = torch.tensor(mean).reshape(3, 1, 1)
    s = torch.tensor(std).reshape(3, 1, 1)
    x = m + s * torch.randn(2, 1, 3, 8, 8)
    assert torch.allclose(stats.encode(x), 0.5 * plain.encode((x - m) / s), atol=1e-5)
    z = torch.randn(2, 1, 2, 2, 2)
    assert torch.allclose(stats.decode(z), plain.decode(z / 0.5) * s + m, atol=1e-4)
    # a constant level_mean state encodes like zeros in the un-normalised model
    xm = m.expand(1, 1, 3, 8, 8)
    assert torch.allclose(stats.encode(xm), 0.5 * plain.encode(torch.zeros_like(xm)), atol=1e-5)
    assert not torch.allclose(stats.encode(xm), 0.5 * plain.encode(xm), atol=1e-2)


def test_autoencoder_validation():
    with pytest.raises(ValueError, match="hidden_channels"):
        StateAutoencoder(downsample_factor=8, hidden_channels=(4, 8, 8))
    with pytest.raises(ValueError, match="downsample_factor"):
        StateAutoencoder(downsample_factor=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        StateAutoencoder(spatial_dims=3)
    with pytest.raises(ValueError, match="level_mean"):
        StateAutoencoder(levels=3, level_mean=[1.0, 2.0])
    with pytest.raises(ValueError, match="level_std"):
        StateAutoencoder(levels=2, level_std=[1.0, 0.0])
    ae = tiny_ae()
    with pytest.raises(ValueError, match=r"`x`.*5-D.*\(3, 3, 8, 8\)"):
        ae.encode(torch.randn(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`x`.*3 levels.*\(1, 1, 4, 8, 8\)"):
        ae.encode(torch.randn(1, 1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"`x`.*\(8, 6\).*downsample_factor=4"):
        ae.encode(torch.randn(1, 1, 3, 8, 6))
    with pytest.raises(ValueError, match=r"`z`.*2 latent_channels"):
        ae.decode(torch.randn(1, 1, 3, 2, 2))
    with pytest.raises(ValueError, match="spatial_shape"):
        ae.latent_shape((8, 6))


def test_autoencoder_gradients_and_func_transforms():
    ae = tiny_ae(periodic=True, level_mean=[250.0, 240.0, 230.0], level_std=[5.0, 5.0, 5.0])
    x = (250.0 + torch.randn(1, 2, 3, 8, 8)).requires_grad_(True)
    (gx,) = torch.autograd.grad(ae.encode(x).square().sum(), x)
    assert gx.shape == x.shape and torch.isfinite(gx).all() and gx.abs().sum() > 0
    z = torch.randn(1, 2, 2, 2, 2, requires_grad=True)
    (gz,) = torch.autograd.grad(ae.decode(z).sum(), z)
    assert torch.isfinite(gz).all() and gz.abs().sum() > 0
    # forward-mode agrees with reverse mode on <v, J^T u> = <J v, u>
    v = torch.randn_like(z)
    u = torch.randn(1, 2, 3, 8, 8)
    _, jv = jvp(ae.decode, (z.detach(),), (v,))
    _, pullback = vjp(ae.decode, z.detach())
    (ju,) = pullback(u)
    assert torch.allclose((jv * u).sum(), (v * ju).sum(), rtol=1e-4, atol=1e-4)
    _, jx = jvp(ae.encode, (x.detach(),), (torch.randn_like(x),))
    assert jx.shape == (1, 2, 2, 2, 2)


# --------------------------------------------------------------------------- fusion


def test_fuse_gaussians_exact():
    m1 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    m2 = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    var1, var2 = 1.0, 4.0
    lv1 = torch.full_like(m1, math.log(var1))
    lv2 = torch.full_like(m2, math.log(var2))
    mean, logvar = fuse_gaussians([m1, m2], [lv1, lv2])
    precision = 1 / var1 + 1 / var2  # 1.25
    expected = (m1 / var1 + m2 / var2) / precision  # [[1.4, -0.8]]
    assert torch.allclose(mean, expected, rtol=0, atol=1e-12)
    assert torch.allclose(mean, torch.tensor([[1.4, -0.8]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(logvar, torch.full_like(m1, -math.log(precision)), atol=1e-12)
    # one input comes back unchanged; very confident inputs do not overflow
    mean1, lv1_out = fuse_gaussians([m1], [lv1])
    assert torch.equal(mean1, m1) and torch.equal(lv1_out, lv1)
    mean_b, lv_b = fuse_gaussians([m1, m2], [lv1 - 900.0, lv2 - 900.0])
    assert torch.allclose(mean_b, expected, atol=1e-9)
    assert torch.isfinite(lv_b).all()
    with pytest.raises(ValueError, match="means"):
        fuse_gaussians([m1, m2], [lv1])
    with pytest.raises(ValueError, match="means"):
        fuse_gaussians([], [])


# --------------------------------------------------------------------------- ObservationEncoder


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_observation_encoder_shapes_any_resolution(spatial_dims):
    enc = tiny_obs(spatial_dims=spatial_dims)
    assert enc.modality_names == ["satellite", "stations"]
    latent_shape = (4,) * spatial_dims
    # stations finer than the latent grid, satellite coarser
    inputs = obs_inputs(spatial_dims, stations_grid=16, satellite_grid=2)
    out = enc(inputs, latent_shape)
    assert isinstance(out, ObservationEncoderOutput)
    assert out.mean.shape == out.logvar.shape == (2, 2, *latent_shape)
    assert out.logvar.abs().max() < 10.0
    for name, (values, mask) in inputs.items():
        mean, logvar = enc.encode_modality(name, values, mask, latent_shape)
        assert mean.shape == logvar.shape == (2, 2, *latent_shape)
    # odd, non-multiple grids
    vals = torch.randn(1, 1, *([7] * spatial_dims))
    mean, _ = enc.encode_modality("satellite", vals, torch.ones_like(vals), (3,) * spatial_dims)
    assert mean.shape == (1, 2, *([3] * spatial_dims))


def test_observation_encoder_missing_modality_and_fusion():
    # a tiny prior variance: the untrained encoders are surer than it nowhere, so compare with
    # a prior they beat everywhere (std 10) and one they never beat (std 1e-3)
    for prior_std, informative in ((10.0, True), (1e-3, False)):
        enc = tiny_obs(latent_prior_mean=[0.5, -0.5], latent_prior_std=[prior_std] * 2)
        inputs = obs_inputs()
        alone = enc({"stations": inputs["stations"]}, (4, 4))
        mean_s, lv_s = enc.encode_modality("stations", *inputs["stations"], (4, 4))
        if not informative:  # an encoder no surer than the prior adds nothing
            prior = torch.tensor([0.5, -0.5]).reshape(1, 2, 1, 1).expand_as(mean_s)
            assert torch.allclose(alone.mean, prior, atol=1e-6)
            assert torch.allclose(alone.logvar, torch.full_like(lv_s, 2 * math.log(1e-3)))
            continue
        # one posterior under the prior comes back as it is
        assert torch.allclose(alone.mean, mean_s, atol=1e-5)
        assert torch.allclose(alone.logvar, lv_s, atol=1e-5)
        both = enc(inputs, (4, 4))
        mean_t, lv_t = enc.encode_modality("satellite", *inputs["satellite"], (4, 4))
        prior_mean, prior_logvar = enc.latent_prior()
        exp_mean, exp_lv = fuse_posteriors([mean_s, mean_t], [lv_s, lv_t], prior_mean, prior_logvar)
        assert torch.allclose(both.mean, exp_mean) and torch.allclose(both.logvar, exp_lv)
        # fused precision exceeds each modality's, and is less than the plain product's
        assert torch.all(both.logvar <= torch.minimum(lv_s, lv_t) + 1e-6)
        assert torch.all(both.logvar >= fuse_gaussians([mean_s, mean_t], [lv_s, lv_t])[1] - 1e-6)
        mean, logvar = enc(inputs, (4, 4), return_dict=False)
        assert torch.equal(mean, both.mean)
    with pytest.raises(ValueError, match="latent_prior_std"):
        tiny_obs(latent_prior_std=[1.0, 0.0])
    with pytest.raises(ValueError, match="latent_prior_mean"):
        tiny_obs(latent_prior_mean=[1.0, 0.0, 2.0])


def test_fuse_posteriors_is_calibrated_when_errors_correlate():
    """Two synthetic modalities, each the exact posterior of z ~ N(m0, v0) given its own noisy
    view y_m = z + n_m: their errors correlate through the prior (correlation sqrt(v1 v2 / v0²)
    per unit prior). The fused Gaussian must be the exact posterior given both: mean z² of its
    errors 1 (within 10 %: 20 000 draws give a standard error of 1 %), and no smaller error when a
    modality is removed. The plain product is over-confident here."""
    g = torch.Generator().manual_seed(0)
    n, m0, v0 = 20_000, 0.7, 2.0
    noise_var = torch.tensor([0.5, 3.0])[:, None, None].expand(2, n, 3)  # per modality
    noise_var = noise_var * torch.tensor([1.0, 0.5, 4.0])  # and per latent channel
    z = m0 + v0**0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = z + noise_var.double().sqrt() * torch.randn(2, n, 3, generator=g, dtype=torch.float64)
    post_var = 1 / (1 / v0 + 1 / noise_var.double())
    post_mean = post_var * (m0 / v0 + y / noise_var.double())
    errors = post_mean - z
    assert float(torch.corrcoef(errors[:, :, 0])[0, 1]) > 0.2  # the errors really correlate
    logvars = list(post_var.log())
    prior = (torch.tensor(m0), torch.tensor(math.log(v0)))
    mean, logvar = fuse_posteriors(list(post_mean), logvars, *prior)
    z2 = float(((mean - z) ** 2 / logvar.exp()).mean())
    assert abs(z2 - 1) < 0.1
    mse_both = float(((mean - z) ** 2).mean())
    for alone in range(2):
        assert mse_both < float(((post_mean[alone] - z) ** 2).mean())
        single = fuse_posteriors([post_mean[alone]], [logvars[alone]], *prior)
        assert torch.allclose(single[0], post_mean[alone]) and torch.allclose(
            single[1], logvars[alone]
        )
    naive_mean, naive_logvar = fuse_gaussians(list(post_mean), logvars)
    assert float(((naive_mean - z) ** 2 / naive_logvar.exp()).mean()) > 1.3  # over-confident
    # the likelihood alone: dividing the fused posterior by the prior gives the noise's Gaussian
    like_mean, like_logvar = fuse_posteriors(list(post_mean), logvars, *prior, include_prior=False)
    exact_var = 1 / (1 / noise_var.double()).sum(0)
    assert torch.allclose(like_logvar.exp(), exact_var, rtol=1e-9)
    expected = exact_var * (y / noise_var.double()).sum(0)
    # (the information P_m − P_0 and P_m mean_m − P_0 m_0 cancel: 1e-6 is far from any real error)
    assert torch.allclose(like_mean, expected, rtol=0, atol=1e-6)


def _correlated_views(n: int, rho: float, noise_std=(0.8, 1.2), seed: int = 0):
    """``z ~ N(m0, v0)`` (3 channels) and two views ``u_m = z + e_m`` whose errors have stds
    ``noise_std`` and correlation ``rho``, with each view's exact posterior (what a calibrated
    encoder gives), in float64."""
    g = torch.Generator().manual_seed(seed)
    m0, v0 = 0.7, 2.0
    z = m0 + v0**0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    e1 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    e2 = rho * e1 + (1 - rho**2) ** 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    std = torch.tensor(noise_std, dtype=torch.float64)
    u = torch.stack([z + std[0] * e1, z + std[1] * e2])
    post_var = 1 / (1 / v0 + 1 / std[:, None, None] ** 2)
    post_mean = post_var * (m0 / v0 + u / std[:, None, None] ** 2)
    return z, u, post_mean, post_var.log().expand_as(post_mean), (m0, v0), std


def test_fuse_posteriors_with_correlated_errors_of_known_covariance():
    """Two modalities whose errors correlate beyond the prior they share (``ρ = 0.6``): fused with
    that correlation (generalised least squares on the likelihoods), the posterior is the exact
    Gaussian conditional given both views (to float64 round-off), its mean z² is 1 within 10 %
    (20 000 × 3 draws: standard error 0.6 %), and removing a modality never gives a smaller
    error. Assuming them independent is over-confident."""
    rho = 0.6
    z, u, post_mean, post_logvar, (m0, v0), std = _correlated_views(20_000, rho)
    correlation = [[1.0, rho], [rho, 1.0]]
    mean, logvar = fuse_posteriors(
        list(post_mean), list(post_logvar), m0, math.log(v0), correlation
    )
    # exact: condition (z, u1, u2) jointly Gaussian on (u1, u2)
    c = torch.tensor([[std[0] ** 2, rho * std[0] * std[1]], [rho * std[0] * std[1], std[1] ** 2]])
    s = v0 + c  # Cov(u), with Cov(z, u) = v0 [1, 1]
    gain = v0 * torch.linalg.solve(s, torch.ones(2, dtype=torch.float64))
    exact_mean = m0 + torch.einsum("m,mnc->nc", gain, u - m0)
    exact_var = v0 - v0 * gain.sum()
    assert torch.allclose(mean, exact_mean, rtol=0, atol=1e-9)
    assert torch.allclose(logvar.exp(), exact_var.expand_as(mean), rtol=1e-9)
    z2 = float(((mean - z) ** 2 / logvar.exp()).mean())
    assert abs(z2 - 1) < 0.1, z2
    mse_both = float(((mean - z) ** 2).mean())
    for alone in range(2):
        assert mse_both < float(((post_mean[alone] - z) ** 2).mean())
    independent = fuse_posteriors(list(post_mean), list(post_logvar), m0, math.log(v0))
    assert float(((independent[0] - z) ** 2 / independent[1].exp()).mean()) > 1.2


def test_removing_a_modality_never_helps_on_average():
    """For correlations from strongly negative to nearly 1 and unequal noise, the fused error
    (correlation known) is never larger than either modality's alone (the Gaussian conditional
    given more data), and its mean z² stays within 10 % of 1."""
    for rho in (-0.5, 0.0, 0.3, 0.6, 0.9):
        for noise_std in ((0.8, 1.2), (0.5, 3.0)):
            z, _, post_mean, post_logvar, (m0, v0), _ = _correlated_views(20_000, rho, noise_std)
            mean, logvar = fuse_posteriors(
                list(post_mean), list(post_logvar), m0, math.log(v0), [[1, rho], [rho, 1]]
            )
            mse_both = float(((mean - z) ** 2).mean())
            singles = [float(((m - z) ** 2).mean()) for m in post_mean]
            assert mse_both <= min(singles) * 1.005, (rho, noise_std, mse_both, singles)
            assert abs(float(((mean - z) ** 2 / logvar.exp()).mean()) - 1) < 0.1


def test_fuse_likelihoods_drops_uninformed_modalities():
    """A modality that informs nothing in a cell (precision 0) leaves the others' estimate there
    exactly as it is, whatever its correlation; with no correlation given it is the product."""
    u = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 5.0])]
    precision = [torch.tensor([4.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 0.0])]
    mean, total = fuse_likelihoods(u, precision, [[1.0, 0.5], [0.5, 1.0]])
    assert float(mean[1]) == pytest.approx(2.0, abs=1e-12)
    assert float(total[1]) == pytest.approx(4.0, abs=1e-12)
    # informed cell: C = [[1/4, .5 * .5 * 1], [., 1]]; 1ᵀC⁻¹1 = (1/4 + 1 - 2 * .25) / det
    det = 0.25 * 1.0 - 0.25**2
    assert float(total[0]) == pytest.approx((1.0 + 0.25 - 0.5) / det, rel=1e-12)
    plain, plain_total = fuse_likelihoods(u, precision)
    assert torch.allclose(plain_total, torch.tensor([5.0, 4.0], dtype=torch.float64))
    assert torch.allclose(plain, torch.tensor([(4 + 3) / 5, 2.0], dtype=torch.float64))
    for bad, match in (([[1.0, 1.0], [1.0, 1.0]], "positive definite"), ([[1.0, 0.2]], "2 x 2")):
        with pytest.raises(ValueError, match=match):
            fuse_likelihoods(u, precision, bad)


def test_observation_encoder_error_correlation_config(tmp_path):
    """The fitted correlation lives in the encoder's config, survives save/load, is used by
    ``forward`` (positive correlation: less information than the plain product) and is
    checked at construction."""
    plain = tiny_obs(latent_prior_std=[10.0, 10.0])
    correlated = tiny_obs(
        latent_prior_std=[10.0, 10.0], modality_error_correlation={"stations": {"satellite": 0.5}}
    )
    assert correlated.config.modality_error_correlation == {
        "satellite": {"stations": 0.5},
        "stations": {"satellite": 0.5},
    }
    assert torch.equal(
        correlated.error_correlation(["stations", "satellite"]),
        torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64),
    )
    assert correlated.error_correlation(["stations", "stations"]) is None  # two networks
    assert plain.error_correlation(["stations", "satellite"]) is None
    inputs = obs_inputs()
    with torch.no_grad():
        both_plain, both = plain(inputs, (4, 4)), correlated(inputs, (4, 4))
    assert torch.all(both.logvar >= both_plain.logvar - 1e-6)
    assert float((both.logvar - both_plain.logvar).max()) > 1e-3
    correlated.save_pretrained(tmp_path / "enc")
    loaded = ObservationEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.config.modality_error_correlation == correlated.config.modality_error_correlation
    assert torch.equal(loaded(inputs, (4, 4)).mean, both.mean)
    for bad, match in (
        ({"radar": {"stations": 0.1}}, "modality_error_correlation"),
        ({"stations": {"satellite": 1.0}}, "positive definite"),
        (
            {"stations": {"satellite": 0.1}, "satellite": {"stations": 0.2}},
            "symmetric",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            tiny_obs(modality_error_correlation=bad)
    # the approximation variance: saved, checked, and it weakens the modality (never strengthens)
    approximate = tiny_obs(
        latent_prior_std=[10.0, 10.0], modality_approximation_variance={"stations": 0.5}
    )
    assert approximate.approximation_variance("stations") == 0.5
    assert approximate.approximation_variance("satellite") == 0.0
    with torch.no_grad():
        weaker = approximate({"stations": inputs["stations"]}, (4, 4))
        alone = plain({"stations": inputs["stations"]}, (4, 4))
    assert torch.all(weaker.logvar >= alone.logvar - 1e-6)
    assert float((weaker.logvar - alone.logvar).max()) > 1e-3
    approximate.save_pretrained(tmp_path / "approximate")
    again = ObservationEncoder.from_pretrained(tmp_path / "approximate")
    assert again.config.modality_approximation_variance == {"stations": 0.5}
    for bad in ({"radar": 0.1}, {"stations": -0.1}, {"stations": float("nan")}):
        with pytest.raises(ValueError, match="modality_approximation_variance"):
            tiny_obs(modality_approximation_variance=bad)


class _Views:
    """A stand-in observation: its ``to_grid()`` is the case index (the stand-in encoder below
    looks the posterior up by it)."""

    def __init__(self, modality: str, case: int) -> None:
        self.modality, self.case = modality, case

    def to_grid(self):
        return torch.full((1, 1), float(self.case)), torch.ones(1, 1)


class _KnownPosteriors(torch.nn.Module):
    """An encoder whose posteriors are given: case ``b`` of modality ``m`` -> ``(mean, logvar)``."""

    def __init__(self, means, logvars, prior) -> None:
        super().__init__()
        self.means, self.logvars, self.prior = means, logvars, prior
        self.config = type("Config", (), {"modalities": {"a": {}, "b": {}}})()

    def latent_prior(self, dtype=None, device=None):
        return tuple(torch.tensor(v, dtype=dtype) for v in self.prior)

    def encode_modality(self, name, values, mask, latent_shape):
        case, m = int(values.flatten()[0]), "ab".index(name)
        return self.means[m][case][None], self.logvars[m][case][None]


def test_fit_likelihood_calibration_recovers_the_correlation_and_the_approximation_error():
    """Exact posteriors: the approximation variance comes out ~0 and the correlation within
    sampling error (3000 cases × 3 cells: standard error (1 − ρ²)/√9000 ≈ 0.007). Posterior means
    with an added error of variance τ² = 0.05: τ² is recovered within 20 % (the normalised
    squared errors' mean has a standard error of ~2 %, and τ² carries ~1/4 of it), and the
    likelihoods with it are calibrated (mean ε² = 1 by construction of the fit, checked through
    posterior_to_likelihood) while without it they are over-confident."""
    rho, tau2 = 0.6, 0.05
    z, _, post_mean, post_logvar, (m0, v0), _ = _correlated_views(3000, rho)
    observations = [[_Views("a", b), _Views("b", b)] for b in range(len(z))]
    exact = _KnownPosteriors(post_mean, post_logvar, (m0, math.log(v0)))
    variances, correlation = fit_likelihood_calibration(exact, z, observations)
    assert set(correlation) == {"a", "b"} and correlation["a"]["b"] == correlation["b"]["a"]
    assert abs(correlation["a"]["b"] - rho) < 0.04, correlation
    assert all(v < 0.01 for v in variances.values()), variances
    noise = tau2**0.5 * torch.randn(post_mean.shape, generator=torch.Generator().manual_seed(5))
    noisy = _KnownPosteriors(post_mean + noise.double(), post_logvar, (m0, math.log(v0)))
    variances, correlation = fit_likelihood_calibration(noisy, z, observations)
    assert all(abs(v / tau2 - 1) < 0.2 for v in variances.values()), variances
    for m, name in enumerate("ab"):
        for fitted in (variances[name], 0.0):
            u, information = posterior_to_likelihood(
                post_mean[m] + noise[m].double(), post_logvar[m], m0, math.log(v0), fitted
            )
            z2 = float(((u - z) ** 2 * information).mean())
            assert abs(z2 - 1) < 0.02 if fitted else z2 > 1.05, (name, fitted, z2)


def test_observation_encoder_normalisation_and_mask():
    enc = tiny_obs()
    values, mask = obs_inputs()["stations"]
    m = torch.tensor([250.0, 260.0]).reshape(2, 1, 1)
    s = torch.tensor([10.0, 5.0]).reshape(2, 1, 1)
    raw = tiny_obs(modalities={"stations": {"in_channels": 2}})
    raw.load_state_dict(enc.state_dict(), strict=False)
    raw.encoders["stations"].load_state_dict(enc.encoders["stations"].state_dict())
    a = enc.encode_modality("stations", values, mask, (4, 4))
    b = raw.encode_modality("stations", (values - m) / s, mask, (4, 4))
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    # values at unobserved cells do not matter; observed ones do
    junk = values + 1e3 * (1 - mask)
    c = enc.encode_modality("stations", junk, mask, (4, 4))
    assert torch.allclose(a[0], c[0], atol=1e-5)
    d = enc.encode_modality("stations", values + mask, mask, (4, 4))
    assert not torch.allclose(a[0], d[0], atol=1e-4)


def test_observation_encoder_validation():
    enc = tiny_obs()
    inputs = obs_inputs()
    with pytest.raises(ValueError, match=r"radar.*satellite.*stations"):
        enc({"radar": inputs["satellite"]}, (4, 4))
    with pytest.raises(ValueError, match=r"radar.*stations"):
        enc.encode_modality("radar", *inputs["satellite"], (4, 4))
    values, mask = inputs["stations"]
    with pytest.raises(ValueError, match=r"`values`.*stations.*\(B, 2"):
        enc.encode_modality("stations", values[:, :1], mask[:, :1], (4, 4))
    with pytest.raises(ValueError, match="`mask`"):
        enc.encode_modality("stations", values, mask[..., :8], (4, 4))
    with pytest.raises(ValueError, match="`latent_shape`"):
        enc(inputs, (4,))
    with pytest.raises(ValueError, match="`inputs`"):
        enc({}, (4, 4))
    with pytest.raises(ValueError, match="input_std"):
        ObservationEncoder({"a": {"in_channels": 2, "input_std": [1.0]}})
    with pytest.raises(ValueError, match="in_channels"):
        ObservationEncoder({"a": {"channels": 2}})
    with pytest.raises(ValueError, match="modalities"):
        ObservationEncoder({})


def test_observation_encoder_gradients():
    enc = tiny_obs(periodic=True)
    values, mask = obs_inputs()["stations"]
    values = values.clone().requires_grad_(True)
    mean, logvar = enc.encode_modality("stations", values, mask, (4, 4))
    (g,) = torch.autograd.grad(mean.sum() + logvar.sum(), values)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.all(g[mask == 0] == 0)


# --------------------------------------------------------------------------- ScoreNet


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_score_net_shapes_and_timesteps(spatial_dims):
    net = tiny_score(spatial_dims=spatial_dims, hidden_channels=(8, 8, 16))
    x = torch.randn(2, 3, 2, *([8] * spatial_dims))
    out = net(x, 0.3)
    assert isinstance(out, ScoreNetOutput) and out.sample.shape == x.shape
    (eps,) = net(x, 0.3, return_dict=False)
    assert torch.equal(eps, out.sample)
    assert torch.allclose(net(x, torch.tensor(0.3)).sample, out.sample, atol=1e-6)
    assert torch.allclose(net(x, torch.full((2,), 0.3)).sample, out.sample, atol=1e-6)
    assert out.sample.abs().mean() > 1e-3  # output layer not zero-initialised
    # per-sample times, and batch independence: in float64, since float32 conv kernels (oneDNN)
    # depend on the batch size and the CPU (1e-4 apart on AMD EPYC), which changes the round-off
    net64, x64 = net.double(), x.double()
    single = net64(x64, 0.3).sample
    mixed = net64(x64, torch.tensor([0.3, 0.9], dtype=torch.float64)).sample
    assert torch.allclose(mixed[:1], single[:1], rtol=0, atol=1e-10)
    assert torch.allclose(mixed[1:], net64(x64[1:], 0.9).sample, rtol=0, atol=1e-10)
    assert torch.allclose(net64(x64[:1], 0.3).sample, single[:1], rtol=0, atol=1e-10)
    assert not torch.allclose(mixed[1:], single[1:], atol=1e-4)


def test_score_net_periodic_equivariance():
    net = tiny_score(periodic=True, hidden_channels=(8, 16))
    x = torch.randn(1, 3, 2, 8, 8)
    # a roll by 2 (one coarse cell at the bottom level) commutes with the periodic U-Net
    assert torch.allclose(net(x.roll(2, -1), 0.5).sample, net(x, 0.5).sample.roll(2, -1), atol=1e-5)


def test_score_net_validation():
    with pytest.raises(ValueError, match="window"):
        ScoreNet(window=2)
    net = tiny_score(hidden_channels=(8, 8, 16))
    with pytest.raises(ValueError, match=r"`sample`.*divisible.*4"):
        net(torch.randn(1, 3, 2, 8, 6), 0.5)
    with pytest.raises(ValueError, match=r"`sample`.*window=3"):
        net(torch.randn(1, 1, 2, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"`sample`.*C=2"):
        net(torch.randn(1, 3, 4, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"`sample`.*5-D"):
        net(torch.randn(3, 2, 8, 8), 0.5)
    with pytest.raises(ValueError, match="`timestep`"):
        net(torch.randn(2, 3, 2, 8, 8), torch.rand(3))
    # the level statistics belong to the autoencoder (LevelNormalizer in pixel space)
    with pytest.raises(TypeError, match="level_mean"):
        ScoreNet(in_channels=2, level_mean=[1.0, 2.0])


def test_score_net_gradients_and_jvp():
    net = tiny_score(periodic=True)
    x = torch.randn(2, 3, 2, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(net(x, 0.5).sample.square().sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    v = torch.randn_like(x)
    u = torch.randn_like(x)
    _, jv = jvp(lambda s: net(s, torch.tensor(0.5)).sample, (x.detach(),), (v,))
    (ju,) = torch.autograd.grad((net(x, 0.5).sample * u).sum(), x)
    assert torch.allclose((jv * u).sum(), (v * ju).sum(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- save / load


def _assert_safetensors_only(path):
    files = os.listdir(path)
    assert "diffusion_pytorch_model.safetensors" in files
    assert "config.json" in files
    assert not any(f.endswith(".bin") for f in files)


def test_autoencoder_save_load(tmp_path):
    ae = tiny_ae(periodic=True, level_mean=[250.0, 240.0, 230.0], level_std=[5.0, 4.0, 3.0])
    x = 240.0 + 5.0 * torch.randn(1, 2, 3, 8, 8)
    ae.save_pretrained(tmp_path)
    _assert_safetensors_only(tmp_path)
    loaded = StateAutoencoder.from_pretrained(tmp_path).eval()
    assert list(loaded.config.hidden_channels) == [4, 8, 8, 8]
    assert loaded.config.level_std == [5.0, 4.0, 3.0]
    with torch.no_grad():
        a, b = ae(x), loaded(x)
    assert torch.equal(a.latent, b.latent) and torch.equal(a.sample, b.sample)


def test_observation_encoder_save_load(tmp_path):
    enc = tiny_obs()
    enc.save_pretrained(tmp_path)
    _assert_safetensors_only(tmp_path)
    loaded = ObservationEncoder.from_pretrained(tmp_path).eval()
    assert loaded.modality_names == enc.modality_names
    assert loaded.config.modalities["stations"]["input_std"] == [10.0, 5.0]
    inputs = obs_inputs()
    with torch.no_grad():
        a, b = enc(inputs, (4, 4)), loaded(inputs, (4, 4))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)


def test_score_net_save_load(tmp_path):
    net = tiny_score()
    net.save_pretrained(tmp_path)
    _assert_safetensors_only(tmp_path)
    loaded = ScoreNet.from_pretrained(tmp_path).eval()
    assert "level_mean" not in loaded.config and "level_std" not in loaded.config
    x = torch.randn(2, 3, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x, 0.25).sample, loaded(x, 0.25).sample)


def test_level_normalizer_save_load(tmp_path):
    norm = LevelNormalizer(
        levels=3, spatial_dims=1, level_mean=[250, 240, 230], level_std=[5, 4, 3]
    )
    norm.save_pretrained(tmp_path)
    _assert_safetensors_only(tmp_path)
    loaded = LevelNormalizer.from_pretrained(tmp_path)
    public = {k: v for k, v in norm.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == public
    assert loaded.config.level_mean == [250.0, 240.0, 230.0]
    assert loaded.config.level_std == [5.0, 4.0, 3.0]
    assert loaded.config.levels == 3 and loaded.config.spatial_dims == 1
    x = 240.0 + 5.0 * torch.randn(2, 3, 3, 16)
    assert torch.equal(norm.encode(x), loaded.encode(x))
    # no statistics: None in the config, and back as None
    LevelNormalizer(levels=2).save_pretrained(tmp_path / "plain")
    plain = LevelNormalizer.from_pretrained(tmp_path / "plain")
    assert plain.config.level_mean is None and plain.config.level_std is None


# --------------------------------------------------------------------------- LevelNormalizer


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_level_normalizer_encode_decode(spatial_dims):
    mean, std = [250.0, 230.0, 210.0], [10.0, 5.0, 2.0]
    norm = LevelNormalizer(levels=3, spatial_dims=spatial_dims, level_mean=mean, level_std=std)
    assert norm.latent_channels == 3
    space = (8, 12)[-spatial_dims:]
    assert norm.latent_shape(space) == space
    view = (3,) + (1,) * spatial_dims
    m, s = torch.tensor(mean).reshape(view), torch.tensor(std).reshape(view)
    x = m + s * torch.randn(2, 4, 3, *space)
    z = norm.encode(x)
    assert z.shape == x.shape and z.dtype == x.dtype
    torch.testing.assert_close(z, (x - m) / s, rtol=0, atol=0)
    # the identity to float32 round-off (values ~250 K: ulp 1.5e-5)
    torch.testing.assert_close(norm.decode(z), x, rtol=2e-7, atol=0)
    torch.testing.assert_close(norm(x), x, rtol=2e-7, atol=0)
    x64 = x.double()
    torch.testing.assert_close(norm.decode(norm.encode(x64)), x64, rtol=1e-15, atol=0)
    assert norm.encode(x64).dtype == torch.float64
    # without statistics: the identity
    plain = LevelNormalizer(levels=3, spatial_dims=spatial_dims)
    assert torch.equal(plain.encode(x), x) and torch.equal(plain.decode(x), x)
    assert not list(plain.parameters())


def test_level_normalizer_gradients():
    norm = LevelNormalizer(levels=2, spatial_dims=2, level_mean=[1.0, 2.0], level_std=[2.0, 4.0])
    z = torch.randn(1, 1, 2, 4, 4, requires_grad=True)
    (g,) = torch.autograd.grad(norm.decode(z).sum(), z)
    torch.testing.assert_close(g, torch.tensor([2.0, 4.0]).reshape(2, 1, 1).expand_as(z))


def test_level_normalizer_validation():
    with pytest.raises(ValueError, match=r"`level_mean` must have 3 values.*got 2"):
        LevelNormalizer(levels=3, level_mean=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"`level_std` must have 2 values.*got 3"):
        LevelNormalizer(levels=2, level_std=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"`level_std` must be positive"):
        LevelNormalizer(levels=2, level_std=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"`level_std` must be positive"):
        LevelNormalizer(levels=2, level_std=[-1.0, 1.0])
    with pytest.raises(ValueError, match="spatial_dims"):
        LevelNormalizer(spatial_dims=3)
    with pytest.raises(ValueError, match="levels"):
        LevelNormalizer(levels=0)
    norm = LevelNormalizer(levels=3, spatial_dims=2)
    with pytest.raises(ValueError, match=r"`x`.*5-D.*\(3, 3, 8, 8\)"):
        norm.encode(torch.randn(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`x`.*levels=3.*\(1, 1, 4, 8, 8\)"):
        norm.encode(torch.randn(1, 1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"`z`.*levels=3"):
        norm.decode(torch.randn(1, 1, 2, 8, 8))
    with pytest.raises(ValueError, match="spatial_shape"):
        norm.latent_shape((8,))
