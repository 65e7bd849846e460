"""``slams assimilate`` on files: the same analysis as the Python API, the same file from one or two
processes, the background's coordinates and attributes kept; ``slams evaluate`` and ``slams
train`` on the same files."""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from slams_diffusers import SLAMSPipeline
from slams_diffusers.cli import main
from slams_diffusers.data.qg import simulate_dataset, write_dataset
from slams_diffusers.data.testbed import default_observations
from slams_diffusers.io import (
    read_background,
    read_satellite,
    read_stations,
    satellite_dataset,
    station_table,
    window_observations,
)
from slams_diffusers.metrics import crps, level_dims, rmse
from slams_diffusers.seeding import member_generators

REPO = Path(__file__).resolve().parents[1]
MEMBERS, STEPS = 2, 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Ten 6-hourly testbed states (two 5-step windows), a background (truth + 1 K noise), the
    testbed's default stations (CSV) and satellite (netCDF) made from the truth."""
    folder = tmp_path_factory.mktemp("assimilate")
    dataset = simulate_dataset(1, 10, seed=3, spinup=50, splits=(0, 0, 1), store_pv="none")
    write_dataset(dataset, str(folder / "simulated.nc"))
    truth = dataset["t"].isel(trajectory=0).drop_vars(["trajectory", "split"])
    noise = np.random.default_rng(0).standard_normal(truth.shape).astype(np.float32)
    background = truth + noise
    background.attrs = truth.attrs
    xr.Dataset({"t": background}, attrs={"title": "a test background"}).to_netcdf(
        folder / "background.nc"
    )
    xr.Dataset({"t": truth}).to_netcdf(folder / "truth.nc")
    pressures = [float(p) for p in truth["level"].values]
    generator = torch.Generator().manual_seed(0)
    observations = default_observations(torch.from_numpy(truth.values), pressures, generator)
    stations = [o for o in observations if o.modality == "stations"]
    satellite = [o for o in observations if o.modality == "satellite"]
    station_table(stations, truth).to_csv(folder / "stations.csv", index=False)
    satellite_dataset(satellite, truth).to_netcdf(folder / "satellite.nc")
    return {"folder": folder, "observations": observations, "truth": truth}


def assimilate_argv(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "assimilate",
        "--background", str(folder / "background.nc"),
        "--stations", str(folder / "stations.csv"),
        "--satellite", str(folder / "satellite.nc"),
        "--background-error-std", "1.0",
        "--periodic", "xy",  # the testbed is doubly periodic
        "--members", str(MEMBERS),
        "--steps", str(STEPS),
        "--seed", "7",
        "--out", str(out),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def python_api_window(files, w: int, **kwargs) -> torch.Tensor:
    """The members of window ``w`` from ``pipe(...)`` with what ``assimilate_argv`` says:
    ``background_error_std=1.0``, the window's observations, ``member_generators(7, w, ...)``."""
    pipe = SLAMSPipeline.from_pretrained("slams-qg-tiny")
    pipe.set_progress_bar_config(disable=True)
    background = xr.open_dataset(files["folder"] / "background.nc")["t"]
    window = slice(5 * w, 5 * w + 5)
    return pipe(
        background=background.isel(time=window),
        observations=window_observations(files["observations"], window),
        num_members=MEMBERS,
        num_inference_steps=STEPS,
        background_error_std=1.0,
        generator=member_generators(7, w, MEMBERS),
        output_type="pt",
        **kwargs,
    ).members


@pytest.fixture(scope="module")
def one_process(files):
    folder = files["folder"]
    out = folder / "analysis.nc"
    assert main(assimilate_argv(folder, out, "--plot", str(folder / "analysis.png"))) == 0
    return out


def test_the_file_analysis_is_the_python_api_analysis(files, one_process):
    """Window w of the file is ``pipe(...)`` on the same background and observations with
    ``member_generators(seed, w, members)``: the same numbers (positions only pass through the
    coordinates, a round trip exact to ~1e-15 relative, far below float32's 1.5e-5 K at 250 K)."""
    written = xr.load_dataset(one_process)
    assert written["members"].dims == ("member", "time", "level", "y", "x")
    assert written.sizes == {"member": MEMBERS, "time": 10, "level": 5, "y": 64, "x": 64}
    for w in range(2):
        window = slice(5 * w, 5 * w + 5)
        expected = python_api_window(files, w)
        members = written["members"].isel(time=window).values
        np.testing.assert_allclose(members, expected.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(written["mean"].isel(time=window), members.mean(0), atol=1e-4)
        np.testing.assert_allclose(
            written["std"].isel(time=window), members.std(0, ddof=1), atol=1e-4
        )
    # windows draw from their own seeds: the two windows' noise differs
    assert not np.allclose(written["members"].values[:, :5], written["members"].values[:, 5:])


def test_the_length_scale_flag_reaches_the_pipeline(files, tmp_path):
    """``--background-error-length-scale 4`` is ``background_error_length_scale=4.0`` of the Python
    API: the same first window (to float32 round-off of the positions' round trip, as above)."""
    out = tmp_path / "correlated.nc"
    argv = assimilate_argv(files["folder"], out, "--background-error-length-scale", "4")
    assert main(argv) == 0
    expected = python_api_window(files, 0, background_error_length_scale=4.0)
    written = xr.load_dataset(out)["members"].isel(time=slice(0, 5)).values
    np.testing.assert_allclose(written, expected.numpy(), rtol=0, atol=1e-4)


def test_the_spread_inflation_flag_reaches_the_pipeline(files, tmp_path):
    """``--spread-inflation 1`` is ``spread_inflation=[1.0]`` of the Python API (the embedded
    pipeline's fitted factors switched off): the same first window, as above."""
    out = tmp_path / "uninflated.nc"
    assert main(assimilate_argv(files["folder"], out, "--spread-inflation", "1")) == 0
    expected = python_api_window(files, 0, spread_inflation=1.0)
    written = xr.load_dataset(out)["members"].isel(time=slice(0, 5)).values
    np.testing.assert_allclose(written, expected.numpy(), rtol=0, atol=1e-4)
    inflated = python_api_window(files, 0)
    assert np.abs(inflated.numpy() - written).max() > 1e-2


def test_the_file_carries_the_background_coordinates_and_attributes(files, one_process):
    written = xr.load_dataset(one_process)
    truth = files["truth"]
    for name in ("time", "level", "y", "x"):
        np.testing.assert_array_equal(written[name].values, truth[name].values)
        assert written[name].attrs == truth[name].attrs
    assert written["mean"].attrs["units"] == "K"
    assert written["mean"].attrs["standard_name"] == "air_temperature"
    assert written.attrs["title"] == "a test background"  # the file's global attributes
    assert written.attrs["slams_members"] == MEMBERS and written.attrs["slams_windows"] == 2
    assert "slams assimilate --background" in written.attrs["history"]
    png = files["folder"] / "analysis.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (files["folder"] / ".analysis.nc.parts").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_same_file(files, one_process):
    """``accelerate launch -m slams_diffusers.cli assimilate`` with 2 CPU processes: one window
    each, gathered into one file equal to the 1-process file. (``--multi_gpu`` starts the two
    processes on a CPU-only machine; ``--cpu --num_processes 2`` would start one.)"""
    folder = files["folder"]
    out = folder / "analysis-2.nc"
    launcher = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env = {k: v for k, v in env.items() if not k.startswith("ACCELERATE_")}
    env.update(OMP_NUM_THREADS="1", HF_HOME=str(folder / "hf_home"))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "slams_diffusers.cli", *assimilate_argv(folder, out),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two, one = xr.load_dataset(out), xr.load_dataset(one_process)
    assert two.attrs["slams_processes"] == 2 and one.attrs["slams_processes"] == 1
    for name in ("members", "mean", "std"):
        xr.testing.assert_identical(two[name], one[name])


def test_evaluate_scores_the_file_per_level(files, one_process, capsys):
    folder = files["folder"]
    scores = folder / "scores.json"
    argv = ["evaluate", "--analysis", str(one_process), "--truth", str(folder / "truth.nc")]
    argv += ["--background", str(folder / "background.nc"), "--json", str(scores)]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert "background RMSE" in table[1] and "CRPS" in table[1] and "spread/skill" in table[1]
    assert [row.split()[0] for row in table[2:]] == ["850", "700", "500", "300", "200", "all"]
    members = torch.from_numpy(xr.load_dataset(one_process)["members"].values).double()
    truth = torch.from_numpy(files["truth"].values).double()
    background = torch.from_numpy(xr.load_dataset(folder / "background.nc")["t"].values).double()
    dims = level_dims(truth.ndim)
    record = json.loads(scores.read_text())
    np.testing.assert_allclose(record["rmse"]["per_level"], rmse(members.mean(0), truth, dims))
    np.testing.assert_allclose(record["crps"]["per_level"], crps(members, truth, dims))
    np.testing.assert_allclose(
        record["background_rmse"]["per_level"], rmse(background, truth, dims)
    )
    # the table prints the same numbers, 3 decimals (the background's noise is 1 K white)
    first = table[2].split()
    assert float(first[2]) == pytest.approx(record["background_rmse"]["per_level"][0], abs=5e-4)
    assert float(first[3]) == pytest.approx(record["rmse"]["per_level"][0], abs=5e-4)
    assert 0.95 < record["background_rmse"]["overall"] < 1.05
    assert record["rmse"]["overall"] < record["background_rmse"]["overall"]


def test_an_era5_style_background_keeps_its_names(files, tmp_path):
    """plev in Pa, latitude from north to south (read as a flipped view), longitude, stations by
    lat/lon: the analysis file has the file's dim names, latitude ascending, plev in hPa."""
    truth = files["truth"]
    latitude = np.linspace(87.1875, -87.1875, 64)  # north to south, as ERA5
    longitude = np.arange(64) * 360 / 64
    values = np.asarray(truth.values)[:5, :, ::-1, :] + 0.5
    era5 = xr.DataArray(
        values,
        dims=("time", "plev", "latitude", "longitude"),
        coords={
            "time": pd.date_range("2020-01-01", periods=5, freq="6h"),
            "plev": ("plev", truth["level"].values * 100.0, {"units": "Pa"}),
            "latitude": ("latitude", latitude, {"units": "degrees_north"}),
            "longitude": ("longitude", longitude, {"units": "degrees_east"}),
        },
        attrs={"units": "K", "long_name": "Temperature"},
        name="ta",
    )
    era5.to_dataset().to_netcdf(tmp_path / "era5.nc")
    rows = {
        "station": ["a", "a", "b"],
        "time": [pd.Timestamp("2020-01-01T00:00")] * 3,
        "lat": [45.0, 45.0, -30.0],
        "lon": [10.0, 10.0, 350.0],
        "pressure": [850.0, 500.0, 700.0],
        "value": [float(values[0, 0, 10, 1]), np.nan, float(values[0, 1, 50, 62])],
        "error": [0.5, 0.5, 0.5],
    }
    pd.DataFrame(rows).to_parquet(tmp_path / "stations.parquet")
    out = tmp_path / "analysis.nc"
    argv = [
        "assimilate", "--background", str(tmp_path / "era5.nc"),
        "--stations", str(tmp_path / "stations.parquet"), "--background-error-std", "1.0",
        "--members", "2", "--steps", "2", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    written = xr.load_dataset(out)
    assert written["mean"].dims == ("time", "plev", "latitude", "longitude")
    assert written["time"].values[0] == np.datetime64("2020-01-01T00:00")
    assert np.all(np.diff(written["latitude"].values) > 0)
    np.testing.assert_allclose(written["plev"].values, [850, 700, 500, 300, 200])
    assert written["plev"].attrs["units"] == "hPa"
    assert written["latitude"].attrs["units"] == "degrees_north"
    assert written["mean"].attrs["long_name"] == "Temperature"
    assert np.isfinite(written["members"].values).all()
    # the stations sit where lat/lon say: station b at -30°, 350° is a 700 hPa value
    background = read_background(tmp_path / "era5.nc")
    (stations,) = read_stations(tmp_path / "stations.parquet", background, periodic=(False, True))
    assert stations.levels == (0, 1, 2) and stations.num_observed == 2
    y = np.interp(-30.0, background.data["y"].values, np.arange(64))
    np.testing.assert_allclose(stations.positions[1].numpy(), [y, 350 / 5.625], atol=1e-9)


def test_train_prints_both_stages_checked_by_the_scripts(files, capsys, monkeypatch):
    data = str(files["folder"] / "simulated.nc")
    argv = ["train", "--data", data, "--output-dir", "runs/mine", "--score-args", "--window 3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.replace("\\\n    ", "").splitlines()  # each command on one line
    commands = [line for line in lines if line.startswith("accelerate launch")]
    assert len(commands) == 2
    assert commands[0].startswith("accelerate launch --quiet --config_file ")
    assert "train_autoencoder.py --config " in commands[0]
    assert (
        f"qg-tiny-autoencoder.yaml --data {data} --output_dir runs/mine/autoencoder" in commands[0]
    )
    assert "--autoencoder runs/mine/autoencoder --output_dir runs/mine/score" in commands[1]
    assert commands[1].endswith("--window 3")
    assert lines[2].endswith(": runs/mine/score/pipeline")
    # --run runs them in order and stops at the first failure: one line, exit status 2
    ran = []

    class Stage:
        def __init__(self, command, stderr):
            ran.append(command)
            self.returncode = 3 if len(ran) == 1 else 0
            self.stderr = io.BytesIO(b"\rstep 1\rstep 2\nerror: --data: unreadable\n")

        def wait(self):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", Stage)
    assert main([*argv, "--run"]) == 2
    assert len(ran) == 1 and "train_autoencoder.py" in " ".join(ran[0])
    assert capsys.readouterr().err == (
        "\rstep 1\rstep 2\nslams train: error: stage 1 (train_autoencoder.py) failed, stage 2 not "
        "started: --data: unreadable\n"
    )


def test_a_failing_stage_stops_train_run_with_one_line(files, tmp_path):
    """For real, through accelerate: stage 1 refuses levels the data does not have (after the
    options were checked); ``slams train --run`` says so in one line, exit status 2, without the
    launcher's traceback, and never starts stage 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [
            sys.executable, "-m", "slams_diffusers.cli", "train",
            "--data", str(files["folder"] / "simulated.nc"),
            "--autoencoder-args", f"--levels 123 --output_dir {tmp_path / 'stage1'}", "--run",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "slams train: error: stage 1 (train_autoencoder.py) failed, stage 2 not started: "
        "--levels [123.0]: `levels` do not match the store: found levels [850.0, 700.0, 500.0, "
        "300.0, 200.0] hPa, expected [123.0] hPa; missing [123.0]."
    ]
    assert "train_autoencoder.py" in done.stdout and "train_score.py" not in done.stdout


def test_satellite_clouds_and_errors_per_channel(files, tmp_path):
    """cloud_mask (time, y, x) hides every channel of a footprint; error per channel; the
    weights' level coordinate may list the levels in any order."""
    background = read_background(files["folder"] / "background.nc")
    times = background.data["time"].values[:2]
    radiance = np.full((2, 2, 16, 16), 250.0)
    radiance[1, 0, 3, 4] = np.nan
    clouds = np.zeros((2, 16, 16), dtype=np.int8)
    clouds[0, 5, 6] = 1
    weights = np.array([[0.0, 0.0, 0.0, 1.0, 3.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    xr.Dataset(
        {
            "radiance": (("time", "channel", "y", "x"), radiance),
            "weights": (("channel", "level"), weights[:, ::-1]),  # levels 200 ... 850
            "cloud_mask": (("time", "y", "x"), clouds),
            "error": (("channel",), [1.5, 0.7]),
        },
        coords={"time": times, "level": [200.0, 300.0, 500.0, 700.0, 850.0]},
    ).to_netcdf(tmp_path / "sat.nc")
    first, second = read_satellite(tmp_path / "sat.nc", background)
    assert first.footprint == second.footprint == 4 and second.time_index == 1
    np.testing.assert_allclose(first.weights, weights / weights.sum(1, keepdims=True))
    assert not first.mask[:, 5, 6].any() and int(first.mask.sum()) == 2 * 256 - 2
    assert not second.mask[0, 3, 4] and int(second.mask.sum()) == 2 * 256 - 1
    np.testing.assert_allclose(first.noise_variance()[:, 0, 0], [1.5**2, 0.7**2], rtol=1e-6)


def test_stations_by_level_index(files, tmp_path):
    background = read_background(files["folder"] / "background.nc")
    time = background.data["time"].values[3]
    y, x = background.data["y"].values[[10, 20]], background.data["x"].values[[30, 40]]
    table = pd.DataFrame(
        {
            "station": [7, 7, 8],
            "time": [time] * 3,
            "y": [y[0], y[0], y[1]],
            "x": [x[0], x[0], x[1]],
            "level": [4, 1, 1],
            "value": [210.0, 260.0, 261.0],
            "error": [0.3, 0.4, 0.5],
        }
    )
    table.to_csv(tmp_path / "st.csv", index=False)
    (stations,) = read_stations(tmp_path / "st.csv", background, periodic=(True, True))
    assert stations.time_index == 3 and stations.levels == (1, 4)
    np.testing.assert_allclose(stations.positions.numpy(), [[10, 30], [20, 40]], atol=1e-9)
    assert stations.mask.tolist() == [[True, True], [True, False]]
    np.testing.assert_allclose(stations.values[0], [260.0, 210.0])
    np.testing.assert_allclose(stations.noise_variance()[0], [0.4**2, 0.3**2], rtol=1e-6)
