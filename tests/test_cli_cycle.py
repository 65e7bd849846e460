"""``slams cycle`` on files: the same members as ``SLAMSFilter`` on the same inputs, the initial
file's coordinates and attributes kept, the cycles read off the observation times, and bad input
stopped before any work with one line."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from slams_diffusers import SLAMSPipeline, Stations, VPPredictorCorrectorScheduler
from slams_diffusers.cli import main
from slams_diffusers.cycling import SLAMSFilter
from slams_diffusers.data.lorenz96 import Lorenz96
from slams_diffusers.io import cycle_times
from slams_diffusers.models.gaussian_score import GaussianScoreModel
from slams_diffusers.testing import squared_exponential_covariance

CELLS, MEMBERS, USED = 8, 6, 4
TIMES = [0.0, 0.05, 0.1]  # three cycles, 5 RK4 steps of 0.01 apart
POSITIONS = [0, 3, 5]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pixel-space pipeline (a Gaussian AR(1) prior over 2 frames of an 8-variable ring, near
    Lorenz-96's climate), an initial ensemble ``u(member, level, x)`` at time 0 and a station
    table of 3 stations at 3 times."""
    folder = tmp_path_factory.mktemp("cycle")
    spatial = squared_exponential_covariance((CELLS,), 2.0, variance=9.0)
    temporal = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    score = GaussianScoreModel.from_moments(
        torch.full((2, 1, CELLS), 2.5, dtype=torch.float64),
        torch.kron(temporal, spatial),
        window=2,
    )
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.save_pretrained(folder / "pipeline")

    model = Lorenz96(num_variables=CELLS)
    truth = [model.initial_state((1, 1), torch.Generator().manual_seed(0), spinup_time=2.0)]
    for _ in TIMES[1:]:
        truth.append(model.run(truth[-1], 5))
    noise = torch.randn(MEMBERS, 1, CELLS, generator=torch.Generator().manual_seed(1))
    initial = (truth[0] + noise).float().numpy()
    u = xr.DataArray(
        initial,
        dims=("member", "level", "x"),
        coords={"x": ("x", np.arange(CELLS), {"long_name": "ring position"}), "time": 0.0},
        attrs={"long_name": "Lorenz-96 state", "units": "1"},
    )
    xr.Dataset({"u": u}, attrs={"title": "an initial ensemble"}).to_netcdf(folder / "initial.nc")

    rng = np.random.default_rng(2)
    rows = []
    for t, state in zip(TIMES, truth, strict=True):
        for s, x in enumerate(POSITIONS):
            value = round(float(state[0, 0, x]) + 0.5 * rng.standard_normal(), 3)
            rows.append({"station": f"s{s}", "time": t, "x": x, "level": 0, "value": value})
    table = pd.DataFrame(rows).assign(error=0.5)
    table.to_csv(folder / "stations.csv", index=False)
    return {"folder": folder, "table": table}


def cycle_argv(folder, out, *extra: str) -> list[str]:
    return [
        "cycle",
        "--pipeline", str(folder / "pipeline"),
        "--model", "l96",
        "--initial", str(folder / "initial.nc"),
        "--stations", str(folder / "stations.csv"),
        "--steps-per-cycle", "5",
        "--members", str(USED),
        "--num-inference-steps", "4",
        "--seed", "3",
        "--out", str(out),
        "--no-progress",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def smoothed_run(files):
    out = files["folder"] / "analyses.nc"
    argv = cycle_argv(files["folder"], out, "--lag", "1")
    assert main([*argv, "--localization-radius", "3", "--inflation", "1.05"]) == 0
    return out


def python_api_outputs(files, **options):
    """``SLAMSFilter(...).cycles(...)`` on what the files hold, with what ``cycle_argv`` says."""
    folder = files["folder"]
    pipe = SLAMSPipeline.from_pretrained(folder / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    initial = torch.from_numpy(xr.load_dataset(folder / "initial.nc")["u"].values[:USED])
    table = files["table"]
    observations = []
    for t in TIMES:
        rows = table[table["time"] == t]
        stations = Stations(
            values=torch.tensor(rows["value"].to_numpy()[:, None]).float(),
            positions=torch.from_numpy(rows["x"].to_numpy(dtype=float)[:, None]),
            levels=[0],
            num_levels=1,
            grid_shape=(CELLS,),
            noise_std=torch.tensor(rows["error"].to_numpy()[:, None]).float(),
            periodic=(True,),
        )
        observations.append([stations])
    filter_ = SLAMSFilter(
        pipe,
        Lorenz96(num_variables=CELLS),
        initial,
        steps_per_cycle=5,
        periodic=(True,),
        seed=3,
        num_inference_steps=4,
        **options,
    )
    return list(filter_.cycles(observations))


def test_the_file_holds_the_python_api_cycles(files, smoothed_run):
    """Cycle k of the file is cycle k of ``SLAMSFilter`` with the same options and seed: the same
    members, exactly (the station rows reach the same ``Stations``)."""
    written = xr.load_dataset(smoothed_run)
    outputs = python_api_outputs(files, lag=1, localization_radius=3.0, covariance_inflation=1.05)
    assert written["members"].dims == ("member", "time", "level", "x")
    assert written.sizes == {"member": USED, "time": 3, "level": 1, "x": CELLS}
    for k, output in enumerate(outputs):
        np.testing.assert_array_equal(written["members"].values[:, k], output.analysis.numpy())
        np.testing.assert_array_equal(
            written["forecast_mean"].values[k], output.forecast.double().mean(0).float().numpy()
        )
    np.testing.assert_allclose(written["mean"], written["members"].mean("member"), atol=1e-6)
    np.testing.assert_allclose(
        written["std"], written["members"].std("member", ddof=1), rtol=1e-5, atol=1e-6
    )
    # with --lag 1 cycle k - 1 is smoothed at cycle k; the last cycle has no smoothed members
    for k in (0, 1):
        np.testing.assert_array_equal(
            written["smoothed_members"].values[:, k], outputs[k + 1].smoothed.numpy()
        )
    assert np.isnan(written["smoothed_members"].values[:, 2]).all()
    assert not np.allclose(written["smoothed_mean"][0], written["mean"][0])


def test_the_file_carries_the_initial_coordinates_and_attributes(smoothed_run):
    written = xr.load_dataset(smoothed_run)
    np.testing.assert_allclose(written["time"].values, TIMES)
    assert written["cycle"].values.tolist() == [0, 1, 2]
    assert written["x"].values.tolist() == list(range(CELLS))
    assert written["x"].attrs["long_name"] == "ring position"
    assert written["mean"].attrs["units"] == "1"
    assert "standard_name" not in written["mean"].attrs  # not declared air temperature
    assert written["std"].attrs["long_name"] == "ensemble standard deviation of Lorenz-96 state"
    assert written["std"].attrs["cell_methods"] == "realization: standard_deviation"
    assert written["mean"].attrs["cell_methods"] == "realization: mean"
    assert written["forecast_std"].attrs["long_name"] == (
        "ensemble standard deviation of forecast (background) of Lorenz-96 state"
    )
    assert written["member"].attrs == {
        "standard_name": "realization",
        "long_name": "ensemble member",
    }
    assert written.attrs["title"] == "an initial ensemble"
    assert written.attrs["slams_cycles"] == 3 and written.attrs["slams_lag"] == 1
    assert written.attrs["slams_cycle_interval"] == "0.05"
    assert "slams cycle --pipeline" in written.attrs["history"]
    assert {"forecast_mean", "forecast_std", "smoothed_mean", "smoothed_std"} <= set(written)


def test_a_users_forecast_model_by_import_path(files, tmp_path, monkeypatch, capsys):
    """``--model module:callable`` imports the user's module from the current folder: a module
    holding the same Lorenz-96 gives the file of ``--model l96``; --overwrite replaces it."""
    (tmp_path / "my_l96.py").write_text(
        "from slams_diffusers.data.lorenz96 import Lorenz96\n"
        f"forecast = Lorenz96(num_variables={CELLS})\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "filter.nc"
    assert main(cycle_argv(files["folder"], out)) == 0
    reference = xr.load_dataset(out)["members"].values
    argv = cycle_argv(files["folder"], out, "--overwrite")
    argv[argv.index("l96")] = "my_l96:forecast"
    assert main(argv) == 0
    np.testing.assert_array_equal(xr.load_dataset(out)["members"].values, reference)
    assert "smoothed_members" not in xr.load_dataset(out)
    outputs = python_api_outputs(files)
    np.testing.assert_array_equal(reference[:, -1], outputs[-1].analysis.numpy())
    capsys.readouterr()
    assert main(cycle_argv(files["folder"], out)) == 2  # no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def error_of(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("slams cycle: error: ")
    return err


def test_an_initial_file_without_members_stops(files, tmp_path, capsys):
    initial = xr.load_dataset(files["folder"] / "initial.nc")
    initial.rename(member="ensemble").to_netcdf(tmp_path / "no-member.nc")
    argv = cycle_argv(files["folder"], tmp_path / "out.nc")
    argv[argv.index("--initial") + 1] = str(tmp_path / "no-member.nc")
    err = error_of(argv, capsys)
    assert "--initial" in err and "('ensemble', 'level', 'x')" in err
    assert "expected (member, level, y?, x?)" in err
    assert not (tmp_path / "out.nc").exists()


def test_too_many_members_stop(files, tmp_path, capsys):
    argv = cycle_argv(files["folder"], tmp_path / "out.nc")
    argv[argv.index("--members") + 1] = "7"
    assert "--members: 7" in error_of(argv, capsys)


def test_a_model_that_cannot_be_imported_stops(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = cycle_argv(files["folder"], tmp_path / "out.nc")
    argv[argv.index("l96")] = "no_such_module_here:forecast"
    err = error_of(argv, capsys)
    assert "--model 'no_such_module_here:forecast': cannot import" in err
    argv[argv.index("no_such_module_here:forecast")] = "l96-model"
    assert "expected 'l96' or a Python import path module:callable" in error_of(argv, capsys)
    (tmp_path / "shape_model.py").write_text("def forecast(states, steps):\n    return states[0]\n")
    argv[argv.index("l96-model")] = "shape_model:forecast"
    err = error_of(argv, capsys)
    assert "--model 'shape_model:forecast': returned shape (1, 8)" in err
    argv += ["--forcing", "10"]
    assert "--forcing: sets the Lorenz-96 model" in error_of(argv, capsys)
    assert not (tmp_path / "out.nc").exists()


def test_observation_times_off_the_cycles_stop(files, tmp_path, capsys):
    table = files["table"]
    early = table.assign(time=table["time"] - 0.05)  # -0.05: before the initial time 0
    early.to_csv(tmp_path / "early.csv", index=False)
    argv = cycle_argv(files["folder"], tmp_path / "out.nc")
    argv[argv.index("--stations") + 1] = str(tmp_path / "early.csv")
    err = error_of(argv, capsys)
    assert "early.csv" in err and "time -0.05 is before the initial ensemble's time 0.0" in err
    uneven = table.assign(time=table["time"].replace(0.1, 0.12))
    uneven.to_csv(tmp_path / "uneven.csv", index=False)
    argv[argv.index("--stations") + 1] = str(tmp_path / "uneven.csv")
    err = error_of(argv, capsys)
    assert "uneven.csv" in err and "time 0.12 is not a whole number of cycle intervals" in err
    assert not (tmp_path / "out.nc").exists()


def test_cycle_times_fill_gaps_and_take_dates():
    times, interval = cycle_times({"a": np.array([0.0, 0.15]), "b": np.array([0.05])})
    np.testing.assert_allclose(times, [0.0, 0.05, 0.1, 0.15])
    assert interval == pytest.approx(0.05)
    times, interval = cycle_times({"a": np.array([2.0])}, start=1.0)
    assert times.tolist() == [1.0, 2.0] and interval == 1.0
    dates = np.array(["2020-01-01T06:00", "2020-01-02T00:00"], dtype=object)
    times, interval = cycle_times({"a": dates}, start=np.datetime64("2020-01-01T00:00"))
    assert len(times) == 5 and interval == np.timedelta64(6, "h")
    assert times[-1] == np.datetime64("2020-01-02T00:00")
    with pytest.raises(ValueError, match="dates mixed with numbers"):
        cycle_times({"a": dates, "b": np.array([1.0])})


def test_dated_cycles_with_a_gap(files, tmp_path):
    """Dates: the initial time and the station times (strings in the CSV) make 6-hourly cycles
    00, 06, 12, 18; cycle 12 has no observations (its analysis is the forecast's, assimilated
    with no data). The time coordinate's attributes are kept."""
    initial = xr.load_dataset(files["folder"] / "initial.nc")
    start = np.datetime64("2020-01-01T00:00", "ns")
    initial = initial.assign_coords(time=((), start, {"long_name": "valid time"}))
    initial.to_netcdf(tmp_path / "dated.nc")
    table = files["table"].copy()
    table["time"] = (
        table["time"]
        .map({0.0: "2020-01-01 00:00", 0.05: "2020-01-01 06:00"})
        .fillna("2020-01-01 18:00")
    )
    table.to_csv(tmp_path / "dated.csv", index=False)
    out = tmp_path / "dated-out.nc"
    argv = cycle_argv(files["folder"], out)
    argv[argv.index("--initial") + 1] = str(tmp_path / "dated.nc")
    argv[argv.index("--stations") + 1] = str(tmp_path / "dated.csv")
    assert main(argv) == 0
    written = xr.load_dataset(out)
    expected = start + np.arange(4) * np.timedelta64(6, "h")
    np.testing.assert_array_equal(written["time"].values, expected)
    assert written["time"].attrs["long_name"] == "valid time"
    assert written.attrs["slams_cycle_interval"] == "0 days 06:00:00"
    assert np.isfinite(written["members"].values).all()


def test_the_cli_cycle_reports_the_rejections_of_each_cycle(files, tmp_path, capsys):
    """``slams cycle``: a 1000 station value at the second cycle is rejected against that cycle's
    forecast ensemble; the file's attributes and the printed summary count it, at its cycle and
    position."""
    table = files["table"].copy()
    table.loc[4, "value"] = 1000.0  # time 0.05, station s1 at x = 3
    table.to_csv(tmp_path / "stations.csv", index=False)
    argv = cycle_argv(files["folder"], tmp_path / "qc.nc")
    argv[argv.index("--stations") + 1] = str(tmp_path / "stations.csv")
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["qc_rejected"] == {"stations": 1}
    attrs = xr.load_dataset(tmp_path / "qc.nc").attrs
    assert attrs["slams_qc_rejected_stations"] == 1 and attrs["slams_qc_checked_stations"] == 9
    (rejection,) = json.loads(attrs["slams_qc_rejections"])
    assert rejection["time_index"] == 1 and rejection["position"] == [3.0]
    assert rejection["value"] == 1000.0 and rejection["reference"] == "background"
