"""Background-error covariances: DiagonalCovariance, SpectralCovariance and their estimation."""

import math

import pytest
import torch

from slams_diffusers.covariance import (
    EIGENVALUE_FLOOR,
    DiagonalCovariance,
    SpectralCovariance,
    estimate_background_covariance,
    nmc_covariance,
)

F64 = torch.float64
LEVEL_CORRELATION = torch.tensor([[1.0, 0.6, 0.3], [0.6, 1.0, 0.6], [0.3, 0.6, 1.0]], dtype=F64)


def gaussian_spectrum(cov: SpectralCovariance, width: float, correlation: torch.Tensor):
    """Isotropic C(s) = exp(-s² / 2 width²) · diag(σ) R diag(σ) per shell s."""
    shells = torch.arange(cov.num_shells, dtype=F64)
    sigma = torch.linspace(1.0, 2.0, correlation.shape[0], dtype=F64)
    levels = sigma[:, None] * correlation * sigma[None, :]
    return torch.exp(-(shells**2) / (2 * width**2))[:, None, None] * levels


def known_covariance(levels: int, grid: tuple[int, ...], width: float = 2.0):
    correlation = LEVEL_CORRELATION[:levels, :levels]
    proto = SpectralCovariance(levels=levels, grid_shape=grid)
    return SpectralCovariance.from_spectrum(gaussian_spectrum(proto, width, correlation), grid)


def anisotropic_covariance(seed: int = 0) -> SpectralCovariance:
    """A random per-wavenumber spectrum, not symmetric between k and -k (symmetrised on use)."""
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(6, 8, 2, 2, generator=g, dtype=F64)
    return SpectralCovariance.from_spectrum(root @ root.transpose(-1, -2), (6, 8), isotropic=False)


def all_covariances():
    g = torch.Generator().manual_seed(1)
    return [
        known_covariance(2, (8, 8)),
        known_covariance(3, (16,)),
        known_covariance(2, (6, 10)),
        anisotropic_covariance(),
        DiagonalCovariance.from_std(torch.rand(2, 8, 8, generator=g, dtype=F64) + 0.1, 2, (8, 8)),
    ]


def dense(operator, cov) -> torch.Tensor:
    basis = torch.eye(cov.size, dtype=F64).reshape(-1, *cov.state_shape)
    return operator(basis).reshape(cov.size, cov.size).T


def spectral_error_bound(cov: SpectralCovariance, num: int) -> torch.Tensor:
    """5 standard errors per shell of a normalised entry C_lm / sqrt(C_ll C_mm).

    An entry averaged over num samples and the M_s wavenumbers of a shell has relative standard
    error ≤ sqrt(2 / N_eff) with N_eff = num · max(1, M_s / 2) (k and -k carry the same
    information; a real wavenumber, k = -k, has a χ²₁ periodogram of relative variance 2).
    """
    count = torch.bincount(cov.shells().reshape(-1), minlength=cov.num_shells).to(F64)
    effective = num * torch.clamp(count / 2, min=1.0)
    return 5 * torch.sqrt(2 / effective)


def normalised(spectrum: torch.Tensor) -> torch.Tensor:
    d = spectrum.diagonal(dim1=-2, dim2=-1).sqrt()
    return spectrum / (d[..., :, None] * d[..., None, :])


@pytest.mark.parametrize("grid", [(16,), (16, 16)])
def test_from_samples_recovers_a_known_spectrum(grid):
    truth = known_covariance(3, grid)
    num = 4000
    errors = truth.sample(num, generator=torch.Generator().manual_seed(0), dtype=F64)
    estimate = SpectralCovariance.from_samples(errors)
    assert estimate.spectrum.shape == truth.spectrum.shape
    assert estimate.spectrum.dtype == F64
    scale = torch.sqrt(
        truth.spectrum.diagonal(dim1=-2, dim2=-1)[..., :, None]
        * truth.spectrum.diagonal(dim1=-2, dim2=-1)[..., None, :]
    )
    error = ((estimate.spectrum - truth.spectrum) / scale).abs().amax(dim=(-1, -2))
    bound = spectral_error_bound(truth, num)
    assert bool((error <= bound).all()), (error, bound)
    # the level correlations themselves (5 standard errors, as above)
    assert bool(
        (
            (normalised(estimate.spectrum) - normalised(truth.spectrum)).abs().amax((-1, -2))
            <= bound
        ).all()
    )
    # diag(B) averages the per-wavenumber estimates, so its relative error is ≤ sqrt(2 / num)
    torch.testing.assert_close(
        estimate.variance(), truth.variance(), rtol=5 * math.sqrt(2 / num), atol=0
    )


def test_from_samples_per_wavenumber_and_leading_dims():
    truth = known_covariance(2, (8, 8))
    num = 4000
    errors = truth.sample(num, generator=torch.Generator().manual_seed(1), dtype=F64)
    estimate = SpectralCovariance.from_samples(errors.reshape(40, 100, 2, 8, 8), isotropic=False)
    assert estimate.spectrum.shape == (8, 8, 2, 2)
    per_wavenumber = truth.spectrum[truth.shells()]
    scale = torch.sqrt(
        per_wavenumber.diagonal(dim1=-2, dim2=-1)[..., :, None]
        * per_wavenumber.diagonal(dim1=-2, dim2=-1)[..., None, :]
    )
    # one wavenumber: N_eff = num samples, 5 standard errors of sqrt(2 / num)
    error = ((estimate.spectrum - per_wavenumber) / scale).abs().max()
    assert float(error) <= 5 * math.sqrt(2 / num)
    # the periodogram of a real field is the same at k and -k (up to FFT rounding)
    flipped = torch.roll(torch.flip(estimate.spectrum, (0, 1)), (1, 1), (0, 1))
    torch.testing.assert_close(estimate.spectrum, flipped, rtol=1e-12, atol=1e-12)


def test_from_samples_is_the_even_translation_average_of_the_sample_covariance():
    """B_lm(0, s) = ½ (S̄_lm(s) + S̄_lm(-s)) with S̄ the sample covariance averaged over
    translations (unbiased, / (N - 1), with remove_mean). The part odd in the displacement s
    (cross-level tilt) is dropped: C(k) = Re(ê ê^H) is real."""
    errors = torch.randn(5, 2, 8, dtype=F64, generator=torch.Generator().manual_seed(2)) + 3.0
    cov = SpectralCovariance.from_samples(errors, isotropic=False, remove_mean=True)
    centred = errors - errors.mean(0)
    sample = torch.einsum("nli,nmj->limj", centred, centred) / 4  # (l, i, m, j)
    b = cov.to_dense().reshape(2, 8, 2, 8)
    for s in range(8):
        forward = torch.stack([sample[:, i, :, (i + s) % 8] for i in range(8)]).mean(0)
        backward = torch.stack([sample[:, i, :, (i - s) % 8] for i in range(8)]).mean(0)
        torch.testing.assert_close(b[:, 0, :, s], (forward + backward) / 2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("index", range(5))
def test_apply_and_solve_are_inverse(index):
    cov = all_covariances()[index]
    g = torch.Generator().manual_seed(index)
    x = torch.randn(4, *cov.state_shape, generator=g, dtype=F64)
    # relative to ‖x‖ = O(1): condition numbers here are ≤ 1e4, rounding ~1e-16 · cond
    torch.testing.assert_close(cov.solve(cov.apply(x)), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(cov.apply(cov.solve(x)), x, rtol=0, atol=1e-10)
    for c in (0.5, torch.tensor(2.0, dtype=F64)):
        torch.testing.assert_close(cov.solve(cov.apply(x) + c * x, shift=c), x, rtol=0, atol=1e-10)
    per_sample = torch.tensor([0.0, 0.3, 1.0, 5.0], dtype=F64).reshape(
        4, *[1] * len(cov.state_shape)
    )
    torch.testing.assert_close(
        cov.solve(cov.apply(x) + per_sample * x, shift=per_sample), x, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        cov.solve(x, shift=per_sample)[2], cov.solve(x[2], shift=1.0), rtol=0, atol=1e-13
    )
    y = torch.randn(4, *cov.state_shape, generator=g, dtype=F64)
    bx, by = cov.apply(x), cov.apply(y)
    assert bx.dtype == F64 and not bx.is_complex()
    torch.testing.assert_close((bx * y).sum(), (x * by).sum(), rtol=1e-12, atol=0)
    # float32 inputs give float32 outputs
    assert cov.apply(x.float()).dtype == torch.float32


@pytest.mark.parametrize("index", [0, 1, 3])
def test_spectral_apply_of_a_real_field_is_real(index):
    cov = all_covariances()[index]
    x = torch.randn(3, *cov.state_shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    sd = cov.spatial_dims
    dims = tuple(range(-sd, 0))
    spectral = torch.fft.fftn(x, dim=dims, norm="ortho").movedim(-sd - 1, -1)
    matrices = cov._wavenumber_spectrum().to(spectral.dtype)
    product = (matrices @ spectral.unsqueeze(-1)).squeeze(-1).movedim(-1, -sd - 1)
    full = torch.fft.ifftn(product, dim=dims, norm="ortho")
    assert float(full.imag.abs().max()) < 1e-13 * float(full.real.abs().max())
    torch.testing.assert_close(cov.apply(x), full.real, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("index", range(5))
def test_dense_square_root_variance_and_symmetry(index):
    cov = all_covariances()[index]
    matrix = cov.to_dense()
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=1e-13)
    assert float(torch.linalg.eigvalsh(matrix).min()) > -1e-12
    root = dense(cov.apply_sqrt, cov)
    torch.testing.assert_close(root, root.T, rtol=0, atol=1e-13)
    torch.testing.assert_close(root @ root, matrix, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov.variance().reshape(-1), matrix.diagonal(), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        dense(cov.solve, cov) @ matrix, torch.eye(cov.size, dtype=F64), rtol=0, atol=1e-9
    )


def test_sample_has_the_claimed_covariance():
    cov = known_covariance(2, (8, 8))
    num = 20000
    draws = cov.sample(num, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert draws.shape == (num, 2, 8, 8) and draws.dtype == F64
    flat = draws.reshape(num, -1)
    matrix = cov.to_dense()
    empirical = flat.T @ flat / num
    std = matrix.diagonal().sqrt()
    # Var of an empirical entry = (B_ii B_jj + B_ij²) / N ≤ 2 B_ii B_jj / N: allow 6 standard
    # errors over the 128² entries.
    error = ((empirical - matrix) / (std[:, None] * std[None, :])).abs().max()
    assert float(error) < 6 * math.sqrt(2 / num)
    # the mean is zero within 6 standard errors sqrt(B_ii / N)
    assert float((flat.mean(0) / std).abs().max()) < 6 / math.sqrt(num)
    assert cov.sample(2).dtype == torch.float32
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(cov.sample(3, generator=g1), cov.sample(3, generator=g2))


def test_operators_are_differentiable():
    cov = known_covariance(2, (8, 8))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 8, generator=g, dtype=F64, requires_grad=True)
    y = torch.randn(2, 8, 8, generator=g, dtype=F64)
    (grad,) = torch.autograd.grad((cov.apply(x) * y).sum(), x)
    torch.testing.assert_close(grad, cov.apply(y), rtol=0, atol=1e-12)
    shift = torch.tensor(0.7, dtype=F64, requires_grad=True)
    (dshift,) = torch.autograd.grad((cov.solve(y, shift=shift) * y).sum(), shift)
    # d/ds yᵀ (B + s)^{-1} y = -‖(B + s)^{-1} y‖²
    expected = -cov.solve(y, shift=0.7).square().sum()
    torch.testing.assert_close(dshift, expected, rtol=1e-10, atol=0)
    fresh = known_covariance(2, (8, 8))
    with torch.inference_mode():  # a cache filled under inference mode stays usable in autograd
        fresh.apply(y)
    assert torch.autograd.grad(fresh.apply(x).sum(), x)[0].shape == x.shape


def test_module_apply_with_a_function_is_still_torch_apply():
    cov = known_covariance(2, (8, 8))
    seen = []
    assert cov.apply(seen.append) is cov
    assert seen == [cov]


def test_diagonal_from_std_forms():
    grid = (4, 6)
    scalar = DiagonalCovariance.from_std(0.5, 2, grid)
    assert torch.equal(scalar.std, torch.full((2, 4, 6), 0.5, dtype=F64))
    per_level = DiagonalCovariance.from_std([1.0, 2.0], 2, grid)
    assert torch.equal(per_level.std[:, 3, 5], torch.tensor([1.0, 2.0], dtype=F64))
    column = DiagonalCovariance.from_std(torch.tensor([1.0, 2.0]).reshape(2, 1, 1), 2, grid)
    assert torch.equal(column.std, per_level.std)
    cells = torch.rand(2, 4, 6, dtype=F64)
    assert torch.equal(DiagonalCovariance.from_std(cells, 2, grid).std, cells)
    one_d = DiagonalCovariance.from_std([1.0, 2.0, 3.0], 3, (5,))
    assert one_d.std.shape == (3, 5) and float(one_d.std[2, 4]) == 3.0
    x = torch.randn(3, 2, 4, 6, dtype=F64)
    torch.testing.assert_close(per_level.apply(x), x * per_level.std**2)
    torch.testing.assert_close(per_level.apply_sqrt(x), x * per_level.std)
    half = per_level.scaled(0.15)
    torch.testing.assert_close(half.to_dense(), 0.15**2 * per_level.to_dense())


def test_scaled_spectral_is_factor_squared():
    cov = known_covariance(2, (8, 8))
    torch.testing.assert_close(cov.scaled(0.15).to_dense(), 0.0225 * cov.to_dense())
    torch.testing.assert_close(cov.scaled(3.0).variance(), 9 * cov.variance())


def test_zero_eigenvalues_are_floored():
    std = torch.ones(2, 4, 4, dtype=F64)
    std[1, 2, 3] = 0.0
    cov = DiagonalCovariance.from_std(std, 2, (4, 4))
    x = torch.ones(2, 4, 4, dtype=F64)
    solved = cov.solve(x)
    assert bool(torch.isfinite(solved).all())
    assert float(solved[1, 2, 3]) == pytest.approx(1 / EIGENVALUE_FLOOR)
    spectrum = torch.zeros(SpectralCovariance(levels=1, grid_shape=(8,)).num_shells, 1, 1)
    spectrum[0] = 1.0  # only the mean is uncertain: B is rank one
    singular = SpectralCovariance.from_spectrum(spectrum, (8,))
    assert bool(torch.isfinite(singular.solve(torch.randn(1, 8, dtype=F64))).all())
    zero = SpectralCovariance.from_spectrum(torch.zeros_like(spectrum), (8,))
    assert bool(torch.isfinite(zero.solve(torch.randn(1, 8, dtype=F64))).all())


def test_shells():
    square = SpectralCovariance(levels=1, grid_shape=(8, 8))
    assert square.num_shells == 7  # |k| up to sqrt(4² + 4²) = 5.66 -> 6
    shells = square.shells()
    assert int(shells[0, 0]) == 0 and int(shells[0, 1]) == 1 and int(shells[1, 1]) == 1
    assert int(shells[2, 1]) == 2 and int(shells[4, 4]) == 6  # sqrt(5) = 2.24, 5.66
    assert int(shells[0, 7]) == 1  # index 7 is the frequency -1
    line = SpectralCovariance(levels=1, grid_shape=(10,))
    assert line.shells().tolist() == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    rectangle = SpectralCovariance(levels=1, grid_shape=(4, 8))
    # y frequencies are scaled by 8 / 4: (1, 0) has the physical wavenumber of x frequency 2
    assert int(rectangle.shells()[1, 0]) == 2 and int(rectangle.shells()[0, 2]) == 2


@pytest.mark.parametrize("index", [0, 1, 3, 4])
def test_save_load_round_trip(index, tmp_path):
    cov = all_covariances()[index]
    cov.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(cov).from_pretrained(tmp_path)
    assert (loaded.levels, loaded.grid_shape) == (cov.levels, cov.grid_shape)
    assert getattr(loaded, "isotropic", None) == getattr(cov, "isotropic", None)
    for name, buffer in cov.named_buffers():
        assert getattr(loaded, name).dtype == F64
        assert torch.equal(getattr(loaded, name), buffer)
    x = torch.randn(2, *cov.state_shape, dtype=F64)
    assert torch.equal(loaded.apply(x), cov.apply(x))
    assert torch.equal(loaded.solve(x, 0.1), cov.solve(x, 0.1))


def test_estimate_background_covariance_recovers_b():
    truth_b = known_covariance(3, (16, 16))
    g = torch.Generator().manual_seed(4)
    cases, steps = 40, 50
    errors = truth_b.sample(cases * steps, generator=g, dtype=F64).reshape(cases, steps, 3, 16, 16)
    truths = torch.randn(cases, steps, 3, 16, 16, generator=g, dtype=F64) * 5 + 250
    backgrounds = truths + errors
    num = cases * steps
    spectral = estimate_background_covariance(backgrounds, truths)
    assert isinstance(spectral, SpectralCovariance)
    # the same bias-free errors through from_samples: identical up to rounding
    direct = SpectralCovariance.from_samples(errors)
    torch.testing.assert_close(spectral.spectrum, direct.spectrum, rtol=1e-9, atol=1e-12)
    error = (spectral.spectrum - truth_b.spectrum).abs().amax((-1, -2))
    scale = truth_b.spectrum.diagonal(dim1=-2, dim2=-1).amax(-1)
    assert bool((error / scale <= spectral_error_bound(truth_b, num)).all())
    diagonal = estimate_background_covariance(backgrounds, truths, kind="diagonal")
    assert isinstance(diagonal, DiagonalCovariance)
    # std per level: relative error ≈ half that of the variance, ≤ 5 · sqrt(2 / num) / 2
    torch.testing.assert_close(
        diagonal.std, truth_b.variance().sqrt(), rtol=2.5 * math.sqrt(2 / num), atol=0
    )
    assert torch.equal(diagonal.std[:, 0, 0][:, None, None].expand(3, 16, 16), diagonal.std)


def test_nmc_covariance_recovers_scaled_differences():
    truth_b = known_covariance(2, (32,))
    g = torch.Generator().manual_seed(6)
    num = 3000
    short = torch.randn(num, 2, 32, generator=g, dtype=F64)
    # long − short = e / 0.5 with e ~ N(0, B): the NMC estimate with scale 0.5 is B
    long = short + truth_b.sample(num, generator=g, dtype=F64) / 0.5
    cov = nmc_covariance(long, short, scale=0.5)
    error = (cov.spectrum - truth_b.spectrum).abs().amax((-1, -2))
    scale = truth_b.spectrum.diagonal(dim1=-2, dim2=-1).amax(-1)
    assert bool((error / scale <= spectral_error_bound(truth_b, num)).all())
    torch.testing.assert_close(
        cov.variance(), truth_b.variance(), rtol=5 * math.sqrt(2 / num), atol=0
    )
    diagonal = nmc_covariance(long, short, scale=0.5, kind="diagonal")
    torch.testing.assert_close(
        diagonal.variance(), truth_b.variance(), rtol=5 * math.sqrt(2 / num), atol=0
    )


def test_bad_input_raises_value_errors():
    cov = known_covariance(2, (8, 8))
    with pytest.raises(
        ValueError, match=r"x: expected shape .* ending in \(2, 8, 8\).*\(3, 8, 8\)"
    ):
        cov.apply(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="x: expected a floating tensor"):
        cov.apply(torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="shift: expected a finite float >= 0, got -1"):
        cov.solve(torch.zeros(2, 8, 8), shift=-1.0)
    with pytest.raises(ValueError, match="shift: expected finite values >= 0"):
        cov.solve(torch.zeros(2, 8, 8), shift=torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"shift: expected a float, a 0-d tensor or one value per"):
        cov.solve(torch.zeros(2, 8, 8), shift=torch.ones(2))
    with pytest.raises(ValueError, match=r"got a tensor of shape \(3, 1, 1, 1\)"):
        cov.solve(torch.zeros(2, 2, 8, 8), shift=torch.ones(3, 1, 1, 1))
    for bad in (-1.0, 0.0, float("nan"), "big"):
        with pytest.raises(ValueError, match="factor: expected a positive finite number"):
            cov.scaled(bad)
    with pytest.raises(ValueError, match="std: expected finite values >= 0"):
        DiagonalCovariance.from_std([1.0, -1.0], 2, (8, 8))
    with pytest.raises(ValueError, match=r"std: expected .* broadcastable .*got shape \(3,\)"):
        DiagonalCovariance.from_std([1.0, 2.0, 3.0], 2, (8, 8))
    with pytest.raises(ValueError, match="grid_shape: expected 0 .a column., 1 or 2 spatial dim"):
        DiagonalCovariance(levels=1, grid_shape=(2, 2, 2))
    with pytest.raises(ValueError, match="grid_shape: a spectral covariance needs a grid"):
        SpectralCovariance(levels=2, grid_shape=())
    with pytest.raises(ValueError, match="levels: expected an int >= 1, got 0"):
        SpectralCovariance(levels=0, grid_shape=(8,))
    with pytest.raises(
        ValueError, match=r"spectrum: expected shape \(num_shells, levels, levels\)"
    ):
        SpectralCovariance.from_spectrum(torch.eye(2).expand(5, 2, 2), (8, 8))
    with pytest.raises(ValueError, match="spectrum: expected symmetric positive semi-definite"):
        SpectralCovariance.from_spectrum(-torch.eye(2).expand(7, 2, 2), (8, 8))
    with pytest.raises(ValueError, match="num: expected an int >= 1, got 0"):
        cov.sample(0)
    zeros = torch.zeros(10, 2, 8, 8)
    with pytest.raises(ValueError, match=r"truths: expected the shape of backgrounds"):
        estimate_background_covariance(zeros, torch.zeros(10, 2, 8, 4))
    with pytest.raises(ValueError, match="kind: expected 'spectral', 'zonal' or 'diagonal', got"):
        estimate_background_covariance(zeros, zeros, kind="full")
    with pytest.raises(ValueError, match="scale: expected a positive finite number, got -2"):
        nmc_covariance(zeros, zeros, scale=-2.0)
    nan = zeros.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or inf"):
        nmc_covariance(nan, zeros)
    with pytest.raises(ValueError, match=r"errors: expected shape \(samples, levels, \*space\)"):
        SpectralCovariance.from_samples(torch.zeros(2, 8))


# --------------------------------------------------------------------------- length scale


def _declared(correlation: str, r: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * r**2) if correlation == "gaussian" else (1 + r) * torch.exp(-r)


@pytest.mark.parametrize("correlation", ["gaussian", "soar"])
def test_from_length_scale_is_the_declared_correlation(correlation):
    """B's entries are σ_l σ_m R_lm c(r / L) at every lag, up to the periodic images' share
    c((N − r) / L) (2e-3 here for SOAR, 1e-19 for the Gaussian), and a length in km with the
    grid spacing in km is the same B as the length in cells."""
    grid, length, sigma = (32, 32), 3.0, torch.tensor([2.0, 0.5], dtype=F64)
    rho = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
    cov = SpectralCovariance.from_length_scale(
        sigma, length, grid, correlation=correlation, level_correlation=rho
    )
    assert not cov.isotropic and cov.levels == 2 and cov.grid_shape == grid
    torch.testing.assert_close(cov.variance()[:, 0, 0], sigma**2, rtol=1e-12, atol=0)
    # covariance of cell (0, 0) with cells (y, x), y, x < 16: rows of the dense matrix
    row = cov.apply(torch.eye(cov.size, dtype=F64)[:: 32 * 32 + 1][:1].reshape(1, 2, *grid))[0]
    yy, xx = torch.meshgrid(
        torch.arange(16.0, dtype=F64), torch.arange(16.0, dtype=F64), indexing="ij"
    )
    r = torch.sqrt(yy**2 + xx**2)
    images = _declared(correlation, (32 - r.clamp(max=16)) / length)
    expected = _declared(correlation, r / length)
    for level, scale in ((0, sigma[0] ** 2), (1, sigma[0] * sigma[1] * 0.5)):
        error = (row[level, :16, :16] / scale - expected).abs()
        assert bool((error <= 2 * images + 1e-12).all()), float(error.max())
    in_km = SpectralCovariance.from_length_scale(
        sigma, 3 * 125.0, grid, correlation=correlation, grid_spacing=125.0, level_correlation=rho
    )
    torch.testing.assert_close(in_km.spectrum, cov.spectrum, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("correlation", ["gaussian", "soar"])
def test_from_length_scale_draws_have_the_declared_correlation(correlation):
    """Draws: the sample correlation at lags 0–8 along x and y and along the diagonal matches
    c(r / L) within 5 standard errors, the standard error measured from 20 independent batches
    of 50 draws (the images' share, below 1e-3 at r <= 8 here, is added to the bound)."""
    grid, length = (48, 48), 3.0
    cov = SpectralCovariance.from_length_scale(1.5, length, grid, correlation=correlation)
    draws = cov.sample(1000, generator=torch.Generator().manual_seed(0), dtype=F64)[:, 0] / 1.5
    lags = [(0, d) for d in range(9)] + [(d, 0) for d in range(1, 9)] + [(d, d) for d in (2, 4)]
    for dy, dx in lags:
        products = (draws * draws.roll((-dy, -dx), dims=(-2, -1))).mean(dim=(-2, -1))
        batches = products.reshape(20, 50).mean(1)
        estimate, error = float(batches.mean()), float(batches.std() / math.sqrt(20))
        r = math.hypot(dy, dx)
        declared = float(_declared(correlation, torch.tensor(r / length)))
        images = float(_declared(correlation, torch.tensor((48 - r) / length)))
        assert abs(estimate - declared) < 5 * error + 2 * images, (dy, dx, estimate, declared)


def test_from_length_scale_apply_solve_and_bad_input():
    """apply and solve are inverse for 1-d and 2-d grids (the condition number of a SOAR B with
    L = 2 cells on 16 x 16 is 5e4: rounding ~1e-11); bad arguments raise ValueErrors naming
    them."""
    g = torch.Generator().manual_seed(0)
    for grid in ((16, 16), (24,)):
        cov = SpectralCovariance.from_length_scale([1.0, 2.0], 2.0, grid, correlation="soar")
        x = torch.randn(3, *cov.state_shape, generator=g, dtype=F64)
        torch.testing.assert_close(cov.solve(cov.apply(x)), x, rtol=0, atol=1e-9)
        torch.testing.assert_close(cov.apply(cov.solve(x)), x, rtol=0, atol=1e-9)
    for kwargs, match in (
        ({"length_scale": 0.0}, "length_scale"),
        ({"length_scale": float("nan")}, "length_scale"),
        ({"correlation": "exponential"}, "correlation"),
        ({"std": [1.0, 2.0, 3.0], "levels": 2}, "std"),
        ({"std": -1.0}, "std"),
        ({"grid_spacing": -2.0}, "grid_spacing"),
        ({"level_correlation": [[1.0, 2.0], [2.0, 1.0]]}, "level_correlation"),
    ):
        arguments = {"std": [1.0, 1.0], "length_scale": 2.0, "grid_shape": (8, 8), **kwargs}
        with pytest.raises(ValueError, match=match):
            SpectralCovariance.from_length_scale(**arguments)
