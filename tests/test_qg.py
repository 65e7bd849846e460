"""The multi-layer QG simulator: pyqg-jax cross-check, conservation, temperatures, datasets,
forecast backgrounds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from slams_diffusers.data.qg import (
    QGConfig,
    QGModel,
    background_observation,
    simulate_dataset,
    split_counts,
    standard_atmosphere,
    write_dataset,
)
from slams_diffusers.observations import Background

# pyqg's default two-layer ocean, matched parameter by parameter (F1 = rd^-2 / (1 + delta))
RD, DELTA, H1, F0, DT = 15000.0, 0.25, 500.0, 1e-4, 3600.0
PYQG = dict(nx=64, L=1e6, rek=5.787e-7, filterfac=23.6, beta=1.5e-11, U1=0.025, U2=0.0)
CROSS_CHECK_STEPS = 200
CROSS_CHECK_TOL = 1e-10  # measured 2.2e-15 (float64, 200 steps; 1.5e-12 after 2000 steps)


def two_layer_config() -> QGConfig:
    return QGConfig(
        n_layers=2,
        nx=PYQG["nx"],
        L=PYQG["L"],
        H=(H1, H1 / DELTA),
        reduced_gravity=(F0**2 * RD**2 * (1 + DELTA) / H1,),
        U=(PYQG["U1"], PYQG["U2"]),
        f0=F0,
        beta=PYQG["beta"],
        rek=PYQG["rek"],
        thermal_damping=0.0,
        dt=DT,
        filterfac=PYQG["filterfac"],
    )


def random_pv(model: QGModel, batch: int, velocity: float, seed: int = 0, scale=6.0):
    psi = model.random_streamfunction(batch, torch.Generator().manual_seed(seed), scale=scale)
    psi = psi * (velocity / model.rms_velocity(psi)).reshape(-1, 1, 1, 1)
    return model.pv_from_streamfunction(psi.to(model.dtype))


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# --------------------------------------------------------------------------- pyqg-jax


def test_two_layer_matches_pyqg_jax():
    """Same grid, parameters, AB3 stepper and filter as pyqg_jax.QGModel: the PV after
    200 steps (the state changes by ~80 %) agrees to round-off (float64)."""
    pyqg_jax = pytest.importorskip("pyqg_jax")
    import jax
    import jax.numpy as jnp

    model = QGModel(two_layer_config(), dtype=torch.float64)
    q0 = random_pv(model, 1, velocity=0.1)[0]
    with jax.enable_x64(True):
        reference = pyqg_jax.qg_model.QGModel(
            **PYQG, rd=RD, delta=DELTA, H1=H1, precision=pyqg_jax.state.Precision.DOUBLE
        )
        stepped = pyqg_jax.steppers.SteppedModel(reference, pyqg_jax.steppers.AB3Stepper(dt=DT))
        state = reference.create_initial_state(jax.random.key(0)).update(q=jnp.asarray(q0.numpy()))
        tendency = np.array(reference.get_updates(state).qh)
        carry = stepped.initialize_stepper_state(state)
        carry, _ = jax.lax.scan(
            lambda c, _: (stepped.step_model(c), None), carry, None, length=CROSS_CHECK_STEPS
        )
        q_ref = np.array(carry.state.q)
    ours = model.tendency(model.to_spectral(q0[None]))[0].numpy()
    assert relative(ours, tendency) < 1e-12  # continuous tendency, measured 4.5e-15
    q = model.run(q0[None], CROSS_CHECK_STEPS)[0].numpy()
    assert relative(q_ref, q0.numpy()) > 0.5  # the flow really evolved
    assert relative(q, q_ref) < CROSS_CHECK_TOL


def test_float32_tracks_float64():
    config = two_layer_config()
    m64, m32 = QGModel(config, dtype=torch.float64), QGModel(config, dtype=torch.float32)
    q0 = random_pv(m64, 2, velocity=0.1)
    q64 = m64.run(q0, 100)
    q32 = m32.run(q0.float(), 100)
    assert q32.dtype == torch.float32
    assert relative(q32.double(), q64) < 1e-4


# --------------------------------------------------------------------------- dynamics


def test_inversion_round_trip_and_modes():
    model = QGModel(QGConfig(nx=32), dtype=torch.float64)
    psi = model.random_streamfunction(3, torch.Generator().manual_seed(1))
    psi = psi - psi.mean(dim=(-2, -1), keepdim=True)
    q = model.pv_from_streamfunction(psi)
    assert relative(model.streamfunction(q), psi) < 1e-12
    assert relative(model.pv_from_streamfunction(model.streamfunction(q)), q) < 1e-12
    # q = ∇²ψ + Sψ, checked independently with a finite-sum Laplacian in spectral space
    lap = model.to_grid(-model.wv2 * model.to_spectral(psi))
    stretch = torch.einsum("ij,bjyx->biyx", model.S.double(), psi)
    assert relative(q, lap + stretch) < 1e-12
    radii = QGConfig().deformation_radii
    assert 600e3 < radii[0] < 1000e3 and np.all(np.diff(radii) < 0)


def test_energy_conserved_without_forcing_and_dissipation():
    """No β, no shear, no drag, no cooling: dE/dt = 0 for a field resolved without aliasing,
    and over 20 AB3 steps (dominated by the forward-Euler first step)."""
    config = QGConfig(nx=32, beta=0.0, U=(0.0,) * 6, rek=0.0, thermal_damping=0.0)
    model = QGModel(config, dtype=torch.float64)
    psi = model.random_streamfunction(2, torch.Generator().manual_seed(0), scale=3.0)
    kappa = model.wv2.sqrt() * config.L / (2 * math.pi)
    psi = model.to_grid(model.to_spectral(psi) * (kappa < 32 / 3))  # alias-free products
    psi = psi * (10.0 / model.rms_velocity(psi)).reshape(-1, 1, 1, 1)
    q = model.pv_from_streamfunction(psi)
    dq = model.to_grid(model.tendency(model.to_spectral(q)))
    energy = model.energy(q)
    de_dt = -((model.streamfunction(q) * dq).mean(dim=(-2, -1)) * model.layer_weights).sum(-1)
    timescale = q.abs().amax() / dq.abs().amax()
    assert torch.all((de_dt * timescale / energy).abs() < 1e-12)  # measured ~1e-16
    q20 = model.run(q, 20)
    assert relative(q20, q) > 0.05
    assert torch.all(((model.energy(q20) - energy) / energy).abs() < 1e-4)  # measured 3e-5


def test_drag_and_cooling_dissipate():
    config = QGConfig(nx=16, beta=0.0, U=(0.0,) * 6)
    model = QGModel(config)
    q = random_pv(model, 2, velocity=10.0)
    assert torch.all(model.energy(model.run(q, 48)) < model.energy(q))


def test_default_config_is_baroclinically_unstable_and_grows():
    model = QGModel(QGConfig(nx=32))
    rates = model.linear_growth_rates()
    index = int(rates.argmax())
    kappa = float(model.wv2.reshape(-1)[index].sqrt())
    assert 1.0 < 1 / (float(rates.max()) * 86400) < 15.0  # e-folding time, days (5.4)
    assert 2000e3 < 2 * math.pi / kappa < 10000e3  # most unstable wavelength (5000 km)
    q = model.initial_state(2, torch.Generator().manual_seed(0), velocity=0.5)
    later = model.run(q, round(10 * 86400 / model.config.dt))
    assert torch.all(model.energy(later) > 2 * model.energy(q))
    assert torch.isfinite(later).all()
    stable = QGModel(QGConfig(nx=32, U=(0.0,) * 6))
    assert float(stable.linear_growth_rates().max()) <= 1e-12


# --------------------------------------------------------------------------- temperature


def test_temperature_levels_units_and_thermal_wind():
    config = QGConfig(nx=16)
    model = QGModel(config, dtype=torch.float64)
    assert config.pressure_levels == (850.0, 700.0, 500.0, 300.0, 200.0)
    atmosphere = standard_atmosphere(pressure=config.pressure_levels)
    isa = atmosphere["temperature"]  # ICAO table: 1457, 3012, 5574, 9164, 11784 m
    np.testing.assert_allclose(atmosphere["height"], [1457, 3012, 5574, 9164, 11784], atol=2)
    np.testing.assert_allclose(isa, [278.68, 268.57, 251.92, 228.58, 216.65], atol=0.02)
    back = standard_atmosphere(height=atmosphere["height"])["pressure"]
    np.testing.assert_allclose(back, config.pressure_levels, rtol=1e-12)
    q = model.initial_state(3, torch.Generator().manual_seed(0))
    t = model.temperature(q)
    assert t.shape == (3, 5, 16, 16)
    np.testing.assert_allclose(t.mean(dim=(0, 2, 3)).numpy(), isa, atol=1e-9)
    # ψ larger in the layer above an interface = warm anomaly: T' = T0 f0 Δψ / (g Δz)
    psi = torch.zeros(1, 6, 16, 16, dtype=torch.float64)
    psi[:, 4] = 1e6  # layer above the 850 hPa interface (layers run top -> bottom)
    t = model.temperature_from_streamfunction(psi)[0, :, 0, 0]
    dz = 0.5 * (config.H[4] + config.H[5])
    assert t[0] - isa[0] == pytest.approx(isa[0] * config.f0 * 1e6 / (9.80665 * dz), rel=1e-9)
    assert t[1] < isa[1]  # the same layer is below the 700 hPa interface: cold there
    np.testing.assert_allclose(t[2:].numpy(), isa[2:], atol=1e-9)


def test_with_temperature_sets_the_temperature_and_keeps_the_barotropic_flow():
    model = QGModel(QGConfig(nx=16), dtype=torch.float64)
    q = model.initial_state(2, torch.Generator().manual_seed(1))
    other = model.initial_state(2, torch.Generator().manual_seed(2))
    target = model.temperature(other)
    updated = model.with_temperature(q, target)
    # float64 spectral inversions of fields of order 1e-5 s^-1: exact to rounding
    torch.testing.assert_close(model.temperature(updated), target, rtol=0, atol=1e-9)
    weights = model.layer_weights[:, None, None]

    def barotropic(pv):
        return (weights * model.streamfunction(pv)).sum(dim=-3)

    torch.testing.assert_close(barotropic(updated), barotropic(q), rtol=1e-9, atol=1e-3)
    assert float((barotropic(other) - barotropic(q)).abs().max()) > 1e5  # m^2/s: a real change
    torch.testing.assert_close(model.with_temperature(q, model.temperature(q)), q)


def test_config_validation():
    with pytest.raises(ValueError, match="pressure_levels"):
        QGConfig(n_layers=3, pressure_levels=(500.0,))
    with pytest.raises(ValueError, match="decreasing"):
        QGConfig(n_layers=3, pressure_levels=(500.0, 700.0))
    with pytest.raises(ValueError, match="H"):
        QGConfig(n_layers=2, H=(1.0, 2.0, 3.0))
    assert QGConfig(nx=128).dt == pytest.approx(QGConfig().dt / 2)
    assert len(QGConfig(n_layers=4).pressure_levels) == 3
    json.dumps(QGConfig().to_dict())
    with pytest.raises(ValueError, match="dtype"):
        QGModel(QGConfig(nx=8), dtype=torch.float16)
    with pytest.raises(ValueError, match="shape"):
        QGModel(QGConfig(nx=8)).run(torch.zeros(1, 5, 8, 8), 1)


# --------------------------------------------------------------------------- datasets


def test_split_counts():
    assert split_counts(32, (0.8, 0.1, 0.1)) == [26, 3, 3]
    assert split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    assert sum(split_counts(7, (0.5, 0.25, 0.25))) == 7


@pytest.fixture(scope="module")
def tiny_dataset():
    return simulate_dataset(3, 4, seed=1, config=QGConfig(nx=16), spinup=20, interval=3)


def test_dataset_dims_attrs_and_splits(tiny_dataset):
    ds = tiny_dataset
    assert ds.t.dims == ("trajectory", "time", "level", "y", "x")
    assert ds.t.shape == (3, 4, 5, 16, 16)
    assert ds.t.attrs["units"] == "K" and ds.t.attrs["standard_name"] == "air_temperature"
    assert ds.level.attrs["units"] == "hPa" and ds.level.attrs["long_name"] == "pressure"
    assert ds.level.values.tolist() == [850.0, 700.0, 500.0, 300.0, 200.0]
    assert ds.x.attrs["units"] == "m" and ds.y.attrs["units"] == "m"
    assert ds.split.dims == ("trajectory",)
    assert ds.split.values.tolist() == ["train", "val", "test"]
    np.testing.assert_allclose(np.diff(ds.time.values), 3 * 3600 / 86400)
    assert json.loads(ds.attrs["qg_config"])["nx"] == 16
    assert ds.attrs["Conventions"].startswith("CF")
    # PV kept for val/test only (store_pv="eval"), and it restarts the temperatures
    assert ds.q.dims == ("trajectory", "time", "layer", "y", "x")
    assert np.isnan(ds.q.values[0]).all() and np.isfinite(ds.q.values[1:]).all()
    model = QGModel(QGConfig(nx=16))
    t = model.temperature(torch.from_numpy(ds.q.values[1:]))
    np.testing.assert_allclose(t.numpy(), ds.t.values[1:], atol=1e-3)
    assert 0.0 < float(ds.t.std(dim=("y", "x")).mean()) < 20.0


def test_dataset_reproducible_and_batch_independent(tiny_dataset):
    again = simulate_dataset(
        3, 4, seed=1, config=QGConfig(nx=16), spinup=20, interval=3, batch_size=2
    )
    np.testing.assert_allclose(again.t.values, tiny_dataset.t.values, atol=1e-4)
    other = simulate_dataset(1, 1, seed=2, config=QGConfig(nx=16), spinup=20, interval=3)
    assert not np.allclose(other.t.values[0], tiny_dataset.t.values[0])


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_dataset_round_trip(tiny_dataset, tmp_path, suffix):
    import xarray as xr

    path = write_dataset(tiny_dataset, tmp_path / f"qg{suffix}")
    with xr.open_dataset(path, engine="zarr" if suffix == ".zarr" else None) as back:
        xr.testing.assert_identical(back.load(), tiny_dataset)


def test_simulate_main_cli(tmp_path):
    import argparse

    import xarray as xr

    from slams_diffusers.cli import add_simulate_qg_arguments, simulate_qg

    parser = argparse.ArgumentParser()
    add_simulate_qg_arguments(parser)
    out = tmp_path / "qg.zarr"
    args = parser.parse_args(
        ["--out", str(out), "--trajectories", "2", "--steps", "2", "--nx", "16"]
        + ["--spinup-days", "1", "--interval-hours", "3", "--no-progress"]
    )
    assert simulate_qg(args) == 0
    with xr.open_zarr(out) as ds:
        assert ds.t.shape == (2, 2, 5, 16, 16)


# --------------------------------------------------------------------------- backgrounds


@pytest.fixture(scope="module")
def spun_up():
    model = QGModel(QGConfig(nx=32))
    q = model.initial_state(1, torch.Generator().manual_seed(3))
    return model, model.run(q, round(40 * 86400 / model.config.dt))[0]


def test_forecast_background_error_grows_with_lead(spun_up):
    """The random perturbation first adjusts (its damped part decays for ~3 days), then the
    error grows: measured rms 0.50 K at 0 d, 0.43 at 3 d, 0.58 at 6 d, 1.0 at 12 d."""
    model, q_truth = spun_up
    per_day = round(86400 / model.config.dt)
    errors = []
    for days in (0, 3, 6, 10):
        truth = model.temperature(model.run(q_truth[None], days * per_day))[0]
        background = model.forecast_background(
            q_truth, days * per_day, 0.5, torch.Generator().manual_seed(0)
        )
        assert background.shape == truth.shape == (5, 32, 32)
        errors.append(float((background - truth).pow(2).mean().sqrt()))
    assert errors[0] == pytest.approx(0.5, rel=1e-3)
    assert errors[1] < errors[2] < errors[3]
    assert errors[3] > 1.2 * errors[0]
    same = model.forecast_background(q_truth, per_day, 0.0)
    truth = model.temperature(model.run(q_truth[None], per_day))[0]
    assert float((same - truth).abs().max()) < 1e-4
    batched = model.forecast_background(q_truth.expand(2, -1, -1, -1), 1, 0.5)
    assert batched.shape == (2, 5, 32, 32)


def test_background_observation(spun_up):
    model, q_truth = spun_up
    obs = background_observation(
        model, q_truth, 24, 0.5, ensemble_size=4, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(obs, Background)
    assert obs.values.shape == (5, 32, 32) and obs.noise_std.shape == (5, 1, 1)
    assert torch.all(obs.noise_std > 0.1) and torch.all(obs.noise_std < 5)
    fixed = background_observation(model, q_truth, 24, 0.5, noise_std=1.0)
    assert fixed.noise_std == 1.0
