"""ZonalCovariance: errors homogeneous in longitude only (a global latitude–longitude grid), and
the zonal ensemble B of ensemble_covariance (docs/method.md §Real grids)."""

import pytest
import torch

from slams_diffusers.covariance import (
    DENSE_MAX_SIZE,
    ZonalCovariance,
    estimate_background_covariance,
)
from slams_diffusers.ensemble import ensemble_covariance

F64 = torch.float64


def tilted_samples(num: int, levels: int, ny: int, nx: int, seed: int = 0) -> torch.Tensor:
    """Errors correlated in x, y and between levels, with a tilt (x-lagged between levels and
    rows) so that C_m has an imaginary part, and a pole row (y = 0) constant along x."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(num, levels, ny, nx, generator=g, dtype=F64)
    e = e + 0.6 * torch.roll(e, 1, -1) + 0.4 * torch.roll(e, 1, -2) + 0.3 * torch.roll(e, 2, -3)
    e[:, :, 0] = e[:, :, 0].mean(-1, keepdim=True)
    return e * torch.linspace(0.5, 2.0, ny, dtype=F64)[:, None]  # std changes with latitude


def shift_averaged_covariance(errors: torch.Tensor) -> torch.Tensor:
    """(1 / nx) Σ_s R_s P R_sᵀ with P the sample covariance (/ (N − 1)) and R_s the shift by s
    along x: the projection of P on the covariances homogeneous in x."""
    num, nx = errors.shape[0], errors.shape[-1]
    centred = (errors - errors.mean(0)).reshape(num, -1)
    sample = centred.T @ centred / (num - 1)
    size = sample.shape[0]
    total = torch.zeros_like(sample)
    for s in range(nx):
        shift = torch.roll(torch.eye(size, dtype=F64).reshape(size, *errors.shape[1:]), s, -1)
        shift = shift.reshape(size, size)
        total += shift @ sample @ shift.T
    return total / nx


@pytest.mark.parametrize("grid", [(5, 8), (4, 7)])  # even and odd nx (with and without Nyquist)
def test_from_samples_is_the_longitude_average_of_the_sample_covariance(grid):
    errors = tilted_samples(12, 2, *grid)
    cov = ZonalCovariance.from_samples(errors, remove_mean=True)
    b = cov.to_dense()
    # float64 FFTs and eigendecompositions of O(1) matrices: rounding ~1e-15
    torch.testing.assert_close(b, shift_averaged_covariance(errors), rtol=0, atol=1e-12)
    assert float(cov.matrices()[1:].imag.abs().max()) > 1e-3  # the tilt is kept, not dropped
    torch.testing.assert_close(cov.variance().reshape(-1), b.diagonal(), rtol=0, atol=1e-12)
    root = cov.apply_sqrt(torch.eye(cov.size, dtype=F64).reshape(-1, *cov.state_shape))
    root = root.reshape(cov.size, cov.size)
    torch.testing.assert_close(root @ root, b, rtol=0, atol=1e-12)


def test_apply_and_solve_are_exact_with_per_member_shifts():
    cov = ZonalCovariance.from_samples(tilted_samples(30, 2, 5, 8), remove_mean=True)
    b = cov.to_dense()
    x = torch.randn(3, 2, 2, 5, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    shift = torch.tensor([0.1, 1.0, 3.0], dtype=F64).reshape(3, 1, 1, 1, 1)
    solved = cov.solve(x, shift=shift)
    for i in range(3):
        matrix = b + float(shift[i]) * torch.eye(cov.size, dtype=F64)
        for j in range(2):
            expected = torch.linalg.solve(matrix, x[i, j].reshape(-1))
            # condition number ≤ ~1e3 (smallest eigenvalue + shift ≥ 0.1): error ~1e-13
            torch.testing.assert_close(solved[i, j].reshape(-1), expected, rtol=0, atol=1e-11)
    torch.testing.assert_close(cov.apply(x).reshape(6, -1), x.reshape(6, -1) @ b, atol=1e-12,
                               rtol=0)  # fmt: skip
    assert cov.apply(x.float()).dtype == torch.float32
    y = x.clone().requires_grad_()
    cov.solve(y, shift=0.5).square().sum().backward()
    assert y.grad is not None and bool(torch.isfinite(y.grad).all())


def test_a_pole_row_stays_one_point():
    cov = ZonalCovariance.from_samples(tilted_samples(20, 1, 5, 8), remove_mean=True)
    out = cov.apply(torch.randn(4, 1, 5, 8, generator=torch.Generator().manual_seed(2), dtype=F64))
    spread = out[..., 0, :].max(-1).values - out[..., 0, :].min(-1).values
    assert float(spread.max()) < 1e-12 * float(out.abs().max())


def test_taper_save_load_and_scaled(tmp_path):
    errors = tilted_samples(12, 2, 5, 8)
    rows = torch.arange(5, dtype=F64)
    taper_rows = torch.exp(-((rows[:, None] - rows[None, :]) ** 2) / 2)
    taper = torch.kron(torch.ones(2, 2, dtype=F64), taper_rows)
    cov = ZonalCovariance.from_samples(errors, remove_mean=True, taper=taper)
    expected = shift_averaged_covariance(errors).reshape(2, 5, 8, 2, 5, 8)
    expected = expected * taper_rows[None, :, None, None, :, None]
    torch.testing.assert_close(cov.to_dense(), expected.reshape(80, 80), rtol=0, atol=1e-12)
    cov.save_pretrained(tmp_path)
    loaded = ZonalCovariance.from_pretrained(tmp_path)
    assert torch.equal(loaded.to_dense(), cov.to_dense())
    torch.testing.assert_close(cov.scaled(3.0).to_dense(), 9 * cov.to_dense(), rtol=0, atol=1e-12)


def test_bad_input_raises_value_errors():
    with pytest.raises(ValueError, match=r"grid_shape: a zonal covariance needs a grid \(y, x\)"):
        ZonalCovariance(levels=2, grid_shape=(8,))
    with pytest.raises(ValueError, match=r"matrices: expected shape .* \(5, 10, 10\)"):
        ZonalCovariance.from_matrices(torch.eye(10).expand(4, 10, 10), 2, (5, 8))
    lopsided = torch.eye(5, dtype=torch.complex128).expand(5, 5, 5).clone()
    lopsided[2, 0, 1] = 1j
    with pytest.raises(ValueError, match="matrices: expected Hermitian matrices"):
        ZonalCovariance.from_matrices(lopsided, 1, (5, 8))
    imaginary = torch.eye(5, dtype=torch.complex128).expand(5, 5, 5).clone()
    imaginary[0, 0, 1], imaginary[0, 1, 0] = 0.5j, -0.5j
    with pytest.raises(ValueError, match=r"wavenumbers \[0, 4\] of a real field need real"):
        ZonalCovariance.from_matrices(imaginary, 1, (5, 8))
    with pytest.raises(ValueError, match="matrices: expected positive semi-definite"):
        ZonalCovariance.from_matrices(-torch.eye(5).expand(5, 5, 5), 1, (5, 8))
    with pytest.raises(ValueError, match=r"taper: expected shape \(levels \* ny, levels \* ny\)"):
        ZonalCovariance.from_samples(tilted_samples(4, 2, 5, 8), taper=torch.eye(5))


def test_the_zonal_ensemble_covariance():
    members = tilted_samples(9, 2, 5, 8)
    plain = ensemble_covariance(members, periodic="x", structure="zonal", inflation=1.5)
    assert isinstance(plain, ZonalCovariance)
    expected = 1.5 * shift_averaged_covariance(members)
    torch.testing.assert_close(plain.to_dense(), expected, rtol=0, atol=1e-12)
    # localised in latitude: nothing beyond 2c = 2 rows, the same at every level pair and lag
    local = ensemble_covariance(members, periodic="x", localization_radius=1.0, structure="zonal")
    b = local.to_dense().reshape(2, 5, 8, 2, 5, 8)
    assert float(b[:, 0, :, :, 3:].abs().max()) < 1e-12  # zero up to the eigh round trip
    torch.testing.assert_close(b[:, 0, :, :, 0], shift_averaged_covariance(members).reshape(
        2, 5, 8, 2, 5, 8)[:, 0, :, :, 0], rtol=0, atol=1e-12)  # fmt: skip
    hybrid = ensemble_covariance(members, periodic="x", structure="zonal", static=plain)
    torch.testing.assert_close(hybrid.to_dense(), expected / 1.5 + expected, rtol=0, atol=1e-12)
    # a grid too large for a dense B that wraps in x only gets a zonal one by default
    big = torch.randn(3, 2, 61, 40, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert 2 * 61 * 40 > DENSE_MAX_SIZE
    assert isinstance(ensemble_covariance(big, periodic="x"), ZonalCovariance)
    with pytest.raises(ValueError, match="periodic: a zonal B wraps x .longitude. only"):
        ensemble_covariance(members, periodic=True, structure="zonal")
    with pytest.raises(ValueError, match="static: with structure='zonal', expected a Zonal"):
        ensemble_covariance(members, periodic="x", structure="zonal", static=torch.eye(80))


def test_estimate_background_covariance_zonal():
    errors = tilted_samples(10, 2, 5, 8)
    cov = estimate_background_covariance(errors, torch.zeros_like(errors), kind="zonal")
    centred_free = errors.reshape(10, -1)  # remove_mean=False: / N about zero
    sample = centred_free.T @ centred_free / 10
    assert isinstance(cov, ZonalCovariance)
    torch.testing.assert_close(cov.variance().mean(), sample.diagonal().mean(), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="kind: expected 'spectral', 'zonal' or 'diagonal'"):
        estimate_background_covariance(errors, errors, kind="dense")
