"""Errors that explain: every bad input of ``slams assimilate`` / ``demo`` / ``train`` and of the
pipeline API fails before any computing, with one line naming the argument or file, what was found
and what is expected (the CLI: on stderr, exit status 2, no traceback)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import slams_diffusers.data.qg as qg
from slams_diffusers import SLAMSPipeline, Stations
from slams_diffusers.cli import main
from slams_diffusers.hub import EMBEDDED_ROOT
from slams_diffusers.io import read_background, read_stations

LEVELS = [850.0, 700.0, 500.0, 300.0, 200.0]
EMBEDDED_PIPELINE = EMBEDDED_ROOT / "slams-qg-tiny"
MEAN = [278.68, 268.57, 251.92, 228.58, 216.65]  # the embedded pipeline's training level means


def state(times: int = 5, seed: int = 0) -> np.ndarray:
    """A background near the embedded pipeline's climatology, ``(time, level, 64, 64)`` in K."""
    noise = np.random.default_rng(seed).standard_normal((times, 5, 64, 64))
    return (np.asarray(MEAN)[None, :, None, None] + 2.0 * noise).astype(np.float32)


def background_array(values=None, levels=LEVELS, units="K", name="t") -> xr.DataArray:
    values = state() if values is None else values
    return xr.DataArray(
        values,
        dims=("time", "level", "y", "x"),
        coords={
            "time": np.arange(values.shape[0]) * 0.25,
            "level": ("level", np.asarray(levels), {"units": "hPa"}),
            "y": ("y", np.arange(64) * 1e5, {"units": "m"}),
            "x": ("x", np.arange(64) * 1e5, {"units": "m"}),
        },
        attrs={"units": units},
        name=name,
    )


def station_rows(**change) -> pd.DataFrame:
    rows = {
        "station": ["a", "a", "b"],
        "time": [0.0, 0.0, 0.25],
        "y": [1e6, 1e6, 3.05e6],
        "x": [2e6, 2e6, 4.5e6],
        "pressure": [850.0, 500.0, 700.0],
        "value": [279.0, 252.0, 268.0],
        "error": [0.5, 0.5, 0.5],
    }
    rows.update(change)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors")
    background_array().to_dataset().to_netcdf(path / "background.nc")
    station_rows().to_csv(path / "stations.csv", index=False)
    return path


@pytest.fixture(scope="module")
def pipe():
    pipe = SLAMSPipeline.from_pretrained(EMBEDDED_PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def one_line_error(argv, capsys, command="assimilate") -> str:
    """Run ``slams argv``: exit status 2 and exactly one error line on stderr, no traceback."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"slams {command}: error: ")
    return lines[0]


def assimilate(
    folder: Path, *extra: str, background: str = "background.nc", std: bool = True
) -> list[str]:
    argv = ["assimilate", "--background", str(folder / background), "--no-progress"]
    if "--out" not in extra:
        argv += ["--out", str(folder / "never-written.nc")]
    if std and "--background-error-std" not in extra:
        argv += ["--background-error-std", "1.0"]
    return [*argv, *extra]


# ----------------------------------------------------------------------- CLI: files
def write(folder: Path, name: str, array: xr.DataArray) -> str:
    array.to_dataset(name=array.name or "t").to_netcdf(folder / name)
    return name


@pytest.mark.parametrize(
    ("make", "extra", "match"),
    [
        (None, ("--background", "missing.nc"), "no such file"),
        ("garbage", (), "cannot read"),
        (None, ("--variable", "nope"), r"'nope'.*not in the store.*\['t'\]"),
        ("dims", (), r"unexpected \['height'\]"),
        ("no_level", (), r"has 1 level\(s\) and no level coordinate|missing \['level'\]"),
        ("celsius", (), "'degC'; expected K"),
        ("nan", (), "1 NaN or inf values"),
        ("unknown_levels", (), r"levels the pipeline was trained on.*missing \[200.0\]"),
        ("trajectories", (), "2 trajectories; select one with --trajectory"),
        (None, ("--window-length", "3"), "shorter than the score model's window 5"),
        ("seven_times", (), "7 times, not a multiple of 5"),
        (None, ("--pipeline", "./no/such/pipeline"), "does not exist"),
        (None, ("--background-error-std", "1", "2", "3"), "3 values; expected 1 or one per level"),
        (None, ("--background-covariance", "cov"), "give one of them, not both"),
        (None, ("--out", "analysis.txt"), r"suffix '.txt'; expected one of \['.nc'\]"),
    ],
)
def test_assimilate_refuses_a_bad_background_or_option(folder, capsys, make, extra, match):
    name = "background.nc"
    if make == "garbage":
        (folder / "garbage.nc").write_bytes(b"this is not netCDF")
        name = "garbage.nc"
    elif make == "dims":
        bad = xr.DataArray(state()[:, 0], dims=("time", "height", "x"), name="t")
        name = write(folder, "dims.nc", bad)
    elif make == "no_level":
        name = write(folder, "no_level.nc", background_array().isel(level=0, drop=True))
    elif make == "celsius":
        name = write(folder, "celsius.nc", background_array(state() - 273.15, units="degC"))
    elif make == "nan":
        values = state()
        values[1, 2, 3, 4] = np.nan
        name = write(folder, "nan.nc", background_array(values))
    elif make == "unknown_levels":
        name = write(folder, "levels.nc", background_array(levels=[850, 700, 500, 300, 250]))
    elif make == "trajectories":
        array = background_array().expand_dims(trajectory=2)
        name = write(folder, "trajectories.nc", array)
    elif make == "seven_times":
        name = write(folder, "seven.nc", background_array(state(times=7)))
    extra = [str(folder / e) if e in ("missing.nc", "cov", "analysis.txt") else e for e in extra]
    if "--background" in extra:
        argv = assimilate(folder, *extra[2:])
        argv[argv.index("--background") + 1] = extra[1]
    else:
        argv = assimilate(folder, *extra, background=name)
        if "--background-covariance" in extra:
            (folder / "cov").mkdir(exist_ok=True)
    line = one_line_error(argv, capsys)
    assert re.search(match, line), line


def test_an_existing_output_is_never_replaced_without_overwrite(folder, capsys):
    out = folder / "exists.nc"
    out.write_bytes(b"keep me")
    line = one_line_error(assimilate(folder, "--out", str(out)), capsys)
    assert "exists; pass --overwrite to replace it" in line and str(out) in line
    assert out.read_bytes() == b"keep me"


def test_no_background_error_is_refused(folder, capsys):
    line = one_line_error(assimilate(folder, std=False), capsys)
    assert "--background-error-std or --background-covariance" in line


def test_a_length_scale_without_a_background_error_is_refused(folder, capsys):
    line = one_line_error(
        assimilate(folder, "--background-error-length-scale", "4", std=False), capsys
    )
    assert (
        "--background-error-length-scale: correlates the errors of --background-error-std" in line
    )


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_non_positive_background_error_is_an_argument_error(folder, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(assimilate(folder, "--background-error-std", value))
    assert exit_.value.code == 2
    assert "--background-error-std: expected a positive" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(pressure=[850.0, 600.0, 700.0]), r"pressures \[600.0\] are not levels"),
        (dict(pressure=[85000.0, 50000.0, 70000.0]), r"\(in Pa\? expected hPa\)"),
        (dict(y=[1e6, 1e6, 9e6]), "station 'b' at y = 9e\\+06 lies outside the background's grid"),
        (dict(value=[279.0, np.inf, 268.0]), "column 'value' has inf"),
        (dict(error=[0.5, 0.0, 0.5]), "'error' is 0.0 for station 'a'.*expected a positive"),
        (dict(error=[0.5, 0.5, -1.0]), "'error' is -1.0 for station 'b'"),
        (dict(time=[0.0, 0.0, 9.0]), r"times \['9.0'\] are not in the background's time"),
        (dict(pressure=[850.0, 850.0, 700.0]), "station 'a' has 2 rows for time"),
        (dict(x=None), r"no column 'x' \(or 'lon' in degrees\)"),
        (dict(lat=[1.0, 1.0, 2.0], y=None), "column 'lat' is in degrees, but the background's y"),
        (dict(value=None), r"missing columns \['value'\]"),
    ],
)
def test_assimilate_refuses_a_bad_station_file(folder, capsys, change, match):
    table = station_rows(**{k: v for k, v in change.items() if v is not None})
    table = table.drop(columns=[k for k, v in change.items() if v is None])
    table.to_csv(folder / "bad.csv", index=False)
    line = one_line_error(
        assimilate(folder, "--stations", str(folder / "bad.csv"), "--periodic", "none"), capsys
    )
    assert re.search(match, line), line
    assert "--stations" in line and "bad.csv" in line


def satellite(folder: Path, channels=3, coarse=16, levels=LEVELS, error=1.0) -> str:
    values = np.full((5, channels, coarse, coarse), 250.0)
    data = {
        "radiance": (("time", "channel", "y", "x"), values),
        "weights": (("channel", "level"), np.full((channels, len(levels)), 0.2)),
    }
    if error is not None:
        data["error"] = ((), error)
    xr.Dataset(data, coords={"time": np.arange(5) * 0.25, "level": levels}).to_netcdf(
        folder / "satellite.nc"
    )
    return str(folder / "satellite.nc")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(coarse=24), r"radiance grid \(24, 24\) is not the background's grid \(64, 64\)"),
        (dict(levels=[850, 700, 500, 300, 100]), r"pressures \[100.0\] are not levels"),
        (dict(error=0.0), "error must be finite and > 0 K"),
        (dict(error=None), "no variable 'error'; add one .* or pass --satellite-error"),
        (dict(channels=2), "'satellite' have 2 channels but the observation_encoder expects 3"),
    ],
)
def test_assimilate_refuses_a_bad_satellite_file(folder, capsys, kwargs, match):
    path = satellite(folder, **kwargs)
    line = one_line_error(assimilate(folder, "--satellite", path), capsys)
    assert re.search(match, line), line


def test_missing_station_values_are_missing_not_errors(folder):
    """NaN values are missing: they need no error and are masked out."""
    table = station_rows(value=[279.0, np.nan, 268.0], error=[0.5, np.nan, 0.5])
    table.to_csv(folder / "missing.csv", index=False)
    first, second = read_stations(folder / "missing.csv", read_background(folder / "background.nc"))
    assert first.mask.tolist() == [[True, False]] and first.levels == (0, 2)
    assert second.mask.tolist() == [[True]] and second.time_index == 1
    assert float(first.values[0, 0]) == 279.0


def test_levels_in_another_order_are_reordered_to_the_pipeline_levels(folder):
    """A file is labelled: levels 200…850 are read in the model's order 850…200."""
    reversed_file = write(
        folder, "reversed.nc", background_array().isel(level=slice(None, None, -1))
    )
    read = read_background(folder / reversed_file, levels=LEVELS)
    straight = read_background(folder / "background.nc")
    xr.testing.assert_identical(read.data, straight.data)


# ----------------------------------------------------------------------- CLI: demo, train
def test_demo_checks_its_arguments_before_any_work(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("simulated before the arguments were checked")

    monkeypatch.setattr(qg, "simulate_dataset", never)
    (tmp_path / "analysis.nc").write_bytes(b"old")
    line = one_line_error(["demo", "--out", str(tmp_path), "--no-progress"], capsys, "demo")
    assert "analysis.nc' exists; pass --overwrite" in line
    (tmp_path / "file").write_text("")
    line = one_line_error(["demo", "--out", str(tmp_path / "file")], capsys, "demo")
    assert "is a file; expected a folder" in line
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--members", "0"])
    assert exit_.value.code == 2


def test_train_checks_both_stages_before_running_either(folder, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("ran a stage before checking both")

    monkeypatch.setattr(subprocess, "run", never)
    data = str(folder / "background.nc")
    line = one_line_error(
        ["train", "--data", data, "--score-args", "--windw 5", "--run"], capsys, "train"
    )
    assert "train_score.py rejects the options" in line and "--windw" in line
    line = one_line_error(["train", "--data", str(folder / "none.zarr")], capsys, "train")
    assert "--data: no such file or folder" in line
    line = one_line_error(
        ["train", "--data", data, "--score-config", str(folder / "none.yaml")], capsys, "train"
    )
    assert "--score-config: no such file" in line


# ----------------------------------------------------------------------- API: background
def test_levels_in_reverse_order_are_refused(pipe):
    reversed_ = background_array().isel(level=slice(None, None, -1))
    with pytest.raises(ValueError, match=r"levels \[200.0, .*850.0\] hPa \(reversed order"):
        pipe(background=reversed_, num_members=1, num_inference_steps=1)
    # a bare tensor has no labels: its level means give it away
    values = torch.from_numpy(state()).flip(1)
    with pytest.raises(ValueError, match="The levels look reversed"):
        pipe(background=values, num_members=1, num_inference_steps=1)


def test_celsius_is_refused(pipe):
    with pytest.raises(ValueError, match="'degC' .*expected K"):
        pipe(background=background_array(state() - 273.15, units="degC"), num_members=1)
    with pytest.raises(ValueError, match="It looks like °C"):
        pipe(background=torch.from_numpy(state() - 273.15), num_members=1)


def test_a_flipped_latitude_view_assimilates(pipe):
    """ERA5 latitude runs north to south; ``isel(y=slice(None, None, -1))`` is a negative-stride
    view that torch cannot wrap: it gives the analysis of the same values stored forward."""
    forward = background_array()
    flipped = forward.isel(y=slice(None, None, -1))
    assert flipped.values.strides[2] < 0
    copy = flipped.copy(data=np.ascontiguousarray(flipped.values))
    kwargs = dict(num_members=1, num_inference_steps=1, background_error_std=1.0)
    a = pipe(background=flipped, generator=torch.Generator().manual_seed(0), **kwargs)
    b = pipe(background=copy, generator=torch.Generator().manual_seed(0), **kwargs)
    xr.testing.assert_identical(a.dataset, b.dataset)


def _station_on_a_32_grid() -> Stations:
    """One station of a 5-level state on a 32 × 32 grid (the models here use 64 × 64)."""
    return Stations(
        values=torch.ones(1, 1),
        positions=torch.tensor([[3.0, 4.0]]),
        levels=[0],
        num_levels=5,
        grid_shape=(32, 32),
        noise_std=0.5,
    )


def test_observations_on_another_grid_are_refused(pipe):
    coarse = _station_on_a_32_grid()
    with pytest.raises(ValueError, match=r"observations\[0\].*does not fit the state.*\(64, 64\)"):
        pipe(background=torch.from_numpy(state()), observations=[coarse], num_members=1)


def test_a_per_level_background_error_std_is_one_std_per_level(pipe):
    std = [0.5, 0.6, 0.7, 0.8, 0.9]
    kwargs = dict(background=torch.from_numpy(state()), num_members=1, num_inference_steps=1)
    a = pipe(**kwargs, background_error_std=std, generator=torch.Generator().manual_seed(0))
    b = pipe(
        **kwargs,
        background_error_std=torch.tensor(std).reshape(5, 1, 1),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(torch.as_tensor(a.members.values), torch.as_tensor(b.members.values))
    with pytest.raises(ValueError, match=r"`background_error_std` must be a scalar, one value per"):
        pipe(**kwargs, background_error_std=[0.5, 0.6])
    with pytest.raises(ValueError, match="`background_error_std` must be finite and >= 0"):
        pipe(**kwargs, background_error_std=[0.5, 0.6, -0.7, 0.8, 0.9])


def test_nothing_to_assimilate(pipe):
    with pytest.raises(ValueError, match="Nothing to assimilate: pass `background=`"):
        pipe()


def test_infinite_or_negative_observation_values_are_refused():
    kwargs = dict(positions=torch.tensor([[3.0, 4.0]]), levels=[0], num_levels=5)
    with pytest.raises(ValueError, match="values: contains ±inf"):
        Stations(values=torch.tensor([[np.inf]]), grid_shape=(64, 64), noise_std=0.5, **kwargs)
    with pytest.raises(ValueError, match="noise_std: expected finite, non-negative"):
        Stations(values=torch.ones(1, 1), grid_shape=(64, 64), noise_std=-torch.ones(1), **kwargs)


# ----------------------------------------------------------------------- API: pipeline folders
@pytest.fixture
def copy(tmp_path) -> Path:
    target = tmp_path / "pipeline"
    shutil.copytree(EMBEDDED_PIPELINE, target)
    return target


def test_a_missing_local_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("./pipelines/slams", str(tmp_path / "nope"), "path/to/pipeline"):
        with pytest.raises(ValueError, match=r"the folder .* does not exist \(working directory"):
            SLAMSPipeline.from_pretrained(name)


def test_a_folder_without_a_component_is_named(copy):
    shutil.rmtree(copy / "score_model")
    with pytest.raises(ValueError, match=r"component 'score_model' \(ScoreNet\) is listed in"):
        SLAMSPipeline.from_pretrained(copy)
    (copy / "model_index.json").unlink()
    with pytest.raises(ValueError, match="has no model_index.json"):
        SLAMSPipeline.from_pretrained(copy)


def test_a_truncated_weights_file_is_named(copy):
    weights = copy / "score_model" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{weights}: {len(data) // 2} bytes, but its header"):
        SLAMSPipeline.from_pretrained(copy)
    weights.write_bytes(data[:5])
    with pytest.raises(ValueError, match="not a complete safetensors file"):
        SLAMSPipeline.from_pretrained(copy)


def test_a_corrupted_weights_file_is_named(copy):
    weights = copy / "score_model" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    name, entry = next((k, v) for k, v in header.items() if k != "__metadata__")
    assert entry["dtype"] == "F32"
    start = 8 + length + entry["data_offsets"][0]
    data[start : start + 8] = np.array([np.nan, np.inf], dtype="<f4").tobytes()
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match="2 of .* weights of component 'score_model' .* NaN or inf"
    ):
        SLAMSPipeline.from_pretrained(copy)
    data[8:16] = b"{{{{{{{{"  # the header itself
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="header is unreadable"):
        SLAMSPipeline.from_pretrained(copy)


@pytest.mark.parametrize("with_background", [False, True])
def test_inputs_off_the_training_grid_are_refused(with_background):
    """The embedded pipeline records the grid it was trained on (64 × 64): observations alone, or a
    background, on a 32 × 32 grid are refused before any compute."""
    pipe = SLAMSPipeline.from_pretrained(EMBEDDED_PIPELINE)
    assert tuple(pipe.autoencoder.config.grid_shape) == (64, 64)
    stations = _station_on_a_32_grid()
    kwargs = {"observations": [stations]}
    if with_background:
        kwargs["background"] = torch.from_numpy(state()[..., :32, :32].copy())
    source = "`background`" if with_background else "the observations"
    with pytest.raises(ValueError, match=rf"grid of {source}, \(32, 32\), is not the grid"):
        pipe(num_members=1, num_inference_steps=1, **kwargs)
