"""Lorenz-96: the RK4 model, its twins, the generic ensemble cycling and ``slams simulate l96``."""

import math

import pytest
import torch

from slams_diffusers.baselines import cycle_ensemble_filter, letkf, stochastic_enkf
from slams_diffusers.cli import main
from slams_diffusers.data.datasets import open_store
from slams_diffusers.data.l96_twin import L96_TWINS, l96_twin
from slams_diffusers.data.lorenz96 import Lorenz96, lorenz96_tendency


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- the model
def test_tendency_is_the_lorenz96_formula():
    x = torch.randn(3, 7, generator=generator(), dtype=torch.float64)
    i = torch.arange(7)
    expected = (x[:, (i + 1) % 7] - x[:, (i - 2) % 7]) * x[:, (i - 1) % 7] - x + 8.0
    torch.testing.assert_close(lorenz96_tendency(x, 8.0), expected, rtol=0, atol=1e-12)
    # the advection conserves the energy sum x^2 / 2: sum_i x_i (x_{i+1} - x_{i-2}) x_{i-1} = 0
    advection = lorenz96_tendency(x, 0.0) + x
    assert float((x * advection).sum(-1).abs().max()) < 1e-12


def test_energy_decays_as_exp_minus_2t_without_forcing():
    """With F = 0, d/dt sum x^2/2 = -sum x^2 (the advection conserves it), so E(t) = E(0) e^{-2t}
    exactly; RK4 with dt = 0.01 keeps it to 4e-9 relative over one time unit (measured for these
    N(0, 1) states; 9e-7 for states 3 times larger, whose time scales are 3 times shorter)."""
    x = torch.randn(6, 40, generator=generator(), dtype=torch.float64)
    model = Lorenz96(forcing=0.0)
    energy = (model.run(x, 100) ** 2).sum(-1) / 2
    expected = (x**2).sum(-1) / 2 * math.exp(-2.0)
    torch.testing.assert_close(energy, expected, rtol=1e-7, atol=0)


def test_rk4_global_error_is_fourth_order():
    """The error at t = 0.5 against dt = 1/3200 falls by 2^4 = 16 when dt halves (16.4 and 16.2
    measured for dt = 0.01 -> 0.005 -> 0.0025 from an attractor state: 4.7e-5, 2.9e-6, 1.8e-7)."""
    x = Lorenz96().initial_state((4,), generator(1))

    def at_half(dt: float) -> torch.Tensor:
        return Lorenz96(dt=dt).run(x, round(0.5 / dt))

    reference = at_half(0.5 / 1600)
    errors = [float((at_half(dt) - reference).abs().max()) for dt in (0.01, 0.005, 0.0025)]
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 13 < coarse / fine < 19


def test_climatology_of_f8():
    """Lorenz (1996) / Lorenz & Emanuel (1998): mean ~2.3, std ~3.6 at F = 8; 4 runs of 100 time
    units (decorrelation ~0.4): the sampling error of the mean is ~0.05."""
    runs = Lorenz96().simulate(4, 5, 2000, generator(2))
    assert runs.shape == (4, 2000, 1, 40) and runs.dtype == torch.float64
    assert float(runs.mean()) == pytest.approx(2.3, abs=0.15)
    assert float(runs.std()) == pytest.approx(3.6, abs=0.15)


def test_batched_equals_unbatched_and_the_forecast_interface():
    model = Lorenz96()
    x = model.initial_state((2, 3), generator(3))
    batched = model.run(x, 20)
    one_by_one = torch.stack([model.run(s, 20) for s in x.reshape(6, 40)]).reshape(2, 3, 40)
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-12)
    assert torch.equal(model(x, 20), batched)  # (states, steps) -> states
    states = x.reshape(6, 1, 40)  # (members, levels = 1, x)
    assert torch.equal(model(states, 7), model.run(model.run(states, 3), 4))
    runs = model.simulate(2, 5, 3, generator(4))
    torch.testing.assert_close(runs[:, 2], model.run(runs[:, 0], 10), rtol=0, atol=1e-12)


def test_model_bad_input():
    with pytest.raises(ValueError, match="dt: expected a positive time step"):
        Lorenz96(dt=0.0)
    with pytest.raises(ValueError, match="num_variables: expected an int >= 4"):
        Lorenz96(num_variables=3)
    with pytest.raises(ValueError, match=r"x: expected states \(\.\.\., 40\).*\(2, 39\)"):
        Lorenz96().run(torch.zeros(2, 39), 1)
    with pytest.raises(ValueError, match="steps: expected an int >= 0"):
        Lorenz96().run(torch.zeros(40), -1)


# ------------------------------------------------------------------------------- the twins
@pytest.mark.parametrize("name", ["all", "sparse", "nonlinear"])
def test_twin_truth_and_observation_noise(name):
    twin = l96_twin(name, 300, generator(5))
    config = L96_TWINS[name]
    assert twin.truth.shape == (300, 1, 40) and len(twin.observations) == 300
    torch.testing.assert_close(
        twin.truth[1:], twin.model.run(twin.truth[:-1], config.interval), rtol=0, atol=1e-10
    )
    seen = twin.truth if twin.operator is None else twin.operator(twin.truth)
    errors = []
    for t, (observation,) in enumerate(twin.observations):
        assert observation.time_index == t
        errors.append(observation.values - observation.operator(seen[t]))
    errors = torch.stack(errors)
    assert errors.numel() == 300 * len(range(0, 40, config.stride))
    # N(0, 1) noise: 6000 or 12000 draws, the standard error of the mean and of the std <= 0.013
    assert float(errors.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(errors.std()) == pytest.approx(config.noise_std, abs=0.05)


def test_twin_bad_config():
    with pytest.raises(ValueError, match=r"config: expected one of \['all', 'nonlinear'"):
        l96_twin("dense", 3)


# --------------------------------------------------------------------------- generic cycling
@pytest.mark.parametrize("method", ["letkf", "enkf"])
def test_cycling_is_the_filter_then_the_forecast(method):
    twin = l96_twin("all", 2, generator(6))
    ensemble = twin.truth[0] + torch.randn(10, 1, 40, generator=generator(7), dtype=torch.float64)
    options = dict(inflation=1.05, localization_radius=3.0, periodic=True)
    result = cycle_ensemble_filter(
        twin.model, ensemble, twin.observations, 5, method=method, generator=generator(8),
        return_ensembles=True, **options,
    )  # fmt: skip
    draws = generator(8)  # the EnKF's perturbations: same generator, same order
    if method == "letkf":
        first = letkf(ensemble, twin.observations[0], **options)
    else:
        first = stochastic_enkf(ensemble, twin.observations[0], generator=draws, **options)
    torch.testing.assert_close(result.analyses[:, 0], first, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.means[0], first.mean(0), rtol=0, atol=1e-12)
    assert torch.equal(result.forecasts[:, 0], ensemble)
    torch.testing.assert_close(result.forecasts[:, 1], twin.model.run(first, 5))
    assert result.means.shape == (2, 1, 40) and result.spreads.shape == (2,)
    assert float(result.spreads[0]) == pytest.approx(float(first.var(0).mean().sqrt()))


@pytest.mark.parametrize("name", ["all", "nonlinear"])
def test_etkf_beats_the_observation_noise(name):
    """200 cycles of 0.05 with N = 20 members from truth + N(0, 1): the analysis RMSE after 50
    cycles is ~0.2 (the benchmark's 0.20 for "all"), well under the noise std of 1."""
    twin = l96_twin(name, 200, generator(9))
    ensemble = twin.truth[0] + torch.randn(20, 1, 40, generator=generator(10), dtype=torch.float64)
    result = cycle_ensemble_filter(
        twin.model, ensemble, twin.observations, 5, inflation=1.05, operator=twin.operator
    )
    rmse = (result.means - twin.truth).pow(2).mean(dim=(1, 2)).sqrt()[50:].mean()
    assert float(rmse) < 0.5


def test_a_forecast_of_the_wrong_shape_is_named():
    twin = l96_twin("all", 2, generator(11))
    ensemble = twin.truth[0].expand(4, 1, 40).clone()
    ensemble += torch.randn(ensemble.shape, generator=generator(12), dtype=ensemble.dtype)

    def flat(states, steps):
        return twin.model(states, steps).reshape(4, 40)

    expected = r"forecast_model: returned shape \(4, 40\) for states of shape \(4, 1, 40\)"
    with pytest.raises(ValueError, match=expected):
        cycle_ensemble_filter(flat, ensemble, twin.observations, 5)


def test_cycling_bad_input():
    twin = l96_twin("all", 2, generator(13))
    ensemble = twin.truth[0].expand(4, 1, 40).clone()
    with pytest.raises(ValueError, match="method: expected one of"):
        cycle_ensemble_filter(twin.model, ensemble, twin.observations, 5, method="4dvar")
    with pytest.raises(ValueError, match="localization_radius: the ETKF is not localised"):
        cycle_ensemble_filter(twin.model, ensemble, twin.observations, 5, localization_radius=2)
    with pytest.raises(ValueError, match="observations_per_cycle: expected at least one"):
        cycle_ensemble_filter(twin.model, ensemble, [], 5)


# --------------------------------------------------------------------------- the training store
def test_slams_simulate_l96_writes_a_store(tmp_path, capsys):
    out = tmp_path / "l96.zarr"
    args = ["simulate", "l96", "--out", str(out), "--trajectories", "5", "--snapshots", "6"]
    assert main([*args, "--seed", "3"]) == 0
    assert '"trajectory": 5' in capsys.readouterr().out
    store = open_store(out)
    assert store.dims == ("trajectory", "time", "level", "x") and store.name == "u"
    assert store.shape == (5, 6, 1, 40) and store.attrs["forcing"] == 8.0
    assert sorted(str(s) for s in store.split.values) == ["test", "train", "train", "train", "val"]
    runs = Lorenz96().simulate(5, 5, 6, generator(3))
    torch.testing.assert_close(torch.from_numpy(store.values), runs.float())
    assert main([*args, "--split", "train"]) == 2  # exists: refused, nothing replaced
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--split", "train", "--overwrite", "--forcing", "10"]) == 0
    again = open_store(out)
    assert set(map(str, again.split.values)) == {"train"} and again.attrs["forcing"] == 10.0
