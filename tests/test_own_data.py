"""Training on the user's own data: one continuous ``ta(time, plev, y, x)`` run in Pa trained
with the README's commands end to end to an assimilation, a 1-D field without levels as a twin
experiment, recorded pressure levels, and the settings the data cannot support refused."""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import (
    LevelNormalizer,
    ScoreNet,
    SLAMSPipeline,
    StateAutoencoder,
    Stations,
    gaussian_weighting_functions,
)
from slams_diffusers.data.datasets import select_split, to_store
from slams_diffusers.data.observing import random_observations
from slams_diffusers.data.twin import LinearObservation, observations_from_array
from slams_diffusers.observations import pressures_hpa
from slams_diffusers.training import load_training_data

REPO = Path(__file__).parents[1]
PIPELINES = REPO / "pipelines"
TIMEOUT = 300  # seconds per script run, a guard only


def smooth_run(steps: int = 72, size: int = 16, seed: int = 0) -> xr.Dataset:
    """A user's single run, CMIP layout: ``ta(time, plev, y, x)`` in K, ``plev`` in Pa
    (850 and 300 hPa), smooth travelling waves plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None, None, None]
    y = np.arange(size)[None, None, :, None] * 2 * np.pi / size
    x = np.arange(size)[None, None, None, :] * 2 * np.pi / size
    wave = np.sin(x - 0.3 * t) * np.cos(y + 0.1 * t) + 0.5 * np.sin(2 * x + y - 0.2 * t)
    values = np.array([280.0, 230.0])[:, None, None] + np.array([4.0, 2.0])[:, None, None] * wave
    values = values + 0.2 * rng.standard_normal(values.shape)
    return xr.Dataset(
        {"ta": (("time", "plev", "y", "x"), values.astype(np.float32), {"units": "K"})},
        coords={
            "time": np.datetime64("2001-01-01", "ns") + np.arange(steps) * np.timedelta64(6, "h"),
            "plev": ("plev", [85000.0, 30000.0], {"units": "Pa", "standard_name": "air_pressure"}),
        },
    )


def lorenz96(trajectories: int = 4, steps: int = 40, n: int = 16, seed: int = 0) -> np.ndarray:
    """Lorenz-96 runs ``(trajectory, time, x)`` (F = 8, RK4 with dt = 0.05, after a spin-up)."""
    rng = np.random.default_rng(seed)
    x = 8.0 + rng.standard_normal((trajectories, n))

    def tendency(x):
        return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + 8.0

    out = []
    for k in range(100 + steps):
        k1 = tendency(x)
        k2 = tendency(x + 0.025 * k1)
        k3 = tendency(x + 0.025 * k2)
        k4 = tendency(x + 0.05 * k3)
        x = x + 0.05 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if k >= 100:
            out.append(x)
    return np.stack(out, axis=1)


def script(name: str):
    """``training/<name>.py`` as a module (its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, *args) -> str:
    """``accelerate launch --config_file training/configs/accelerate.yaml ARGS`` as the README
    says, in a clean environment (no user accelerate config); the output, failing with it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HOME=str(tmp / "hf_home"))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "training/configs/accelerate.yaml",
        "--main_process_port", str(free_port()),
        *map(str, args),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-6000:]}"
    return result.stdout


TINY_STAGE1 = [
    "--autoencoder_steps", "6", "--encoder_steps", "6", "--train_batch_size", "4",
    "--hidden_channels", "8", "8", "8", "--encoder_hidden_channels", "8",
    "--checkpointing_steps", "100", "--logging_steps", "3", "--lr_warmup_steps", "2",
    "--no-progress_bar", "--report_to", "none",
]  # fmt: skip
TINY_SCORE = [
    "--max_train_steps", "6", "--train_batch_size", "4", "--hidden_channels", "8", "16",
    "--layers_per_block", "1", "--time_embedding_dim", "16", "--checkpointing_steps", "100",
    "--logging_steps", "3", "--lr_warmup_steps", "2", "--no-progress_bar", "--report_to", "none",
]  # fmt: skip


# ------------------------------------------------------------------- end to end, README way
def test_single_run_in_pa_trains_with_the_readme_commands_and_assimilates(tmp_path):
    """The README's two commands with the data path changed (and tiny sizes, own output
    folders): a single run ``ta(time, plev, y, x)``, plev in Pa, no ``trajectory``, no split."""
    data = tmp_path / "my_run.nc"
    smooth_run().to_netcdf(data)
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    logs = launch(
        tmp_path, "training/train_autoencoder.py",
        "--config", "training/configs/qg-tiny-autoencoder.yaml", "--data", data,
        "--output_dir", stage1, *TINY_STAGE1,
    )  # fmt: skip
    logs += launch(
        tmp_path, "training/train_score.py", "--config", "training/configs/qg-tiny-score.yaml",
        "--data", data, "--autoencoder", stage1, "--output_dir", stage2, *TINY_SCORE,
        "--snapshot_steps", "3",
    )  # fmt: skip
    # quiet logs: no accelerate "defaults used", no non-writable array, no zarr warning
    assert not re.search(r"warn", logs, re.IGNORECASE), logs

    # split by time with 8 gap times: 72 - 16 = 56 -> 45 / 6 / 5; stage 1 evaluated on val
    record = json.loads((stage1 / "autoencoder_training.json").read_text())
    evaluation = record["evaluation"]
    assert evaluation["split"] == "val" and evaluation["states"] == 6
    assert evaluation["units"] == "K"
    rmse = evaluation["reconstruction_rmse"]
    assert list(rmse) == ["850 hPa", "300 hPa"]
    # an untrained-ish autoencoder: errors of the order of the level's spread (4 K, 2 K)
    assert all(0 < value < 20 for value in rmse.values()), rmse
    z2 = evaluation["encoder_mean_z2"]
    assert set(z2) == {"stations", "satellite", "gridded"}
    assert all(np.isfinite(value) and value > 0 for value in z2.values()), z2
    # the modalities' error correlation is fitted on val and every subset's fusion reported
    fused = evaluation["fused"]
    assert set(fused) == {
        "gridded", "satellite", "stations", "gridded+satellite", "gridded+stations",
        "satellite+stations", "gridded+satellite+stations",
    }  # fmt: skip
    assert all(np.isfinite(v["mean_z2"]) and v["mse"] > 0 for v in fused.values()), fused
    encoder_config = json.loads((stage1 / "observation_encoder" / "config.json").read_text())
    correlation = encoder_config["modality_error_correlation"]
    assert set(correlation) == {"gridded", "satellite", "stations"}
    assert all(-1 < rho < 1 for row in correlation.values() for rho in row.values())
    assert "stage-1 evaluation on 6 'val' states" in logs and "850 hPa" in logs
    card = " ".join((stage2 / "pipeline" / "README.md").read_text().split())
    assert "autoencoder reconstruction RMSE, 850 hPa [K] (val, 6 states)" in card
    assert "stations encoder calibration, mean z²" in card

    pipe = SLAMSPipeline.from_pretrained(stage2 / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.autoencoder.config.levels_hpa == [850.0, 300.0]  # recorded, in hPa
    # the training-budget snapshots: the EMA weights at steps 3 and 6; the last is the pipeline's
    assert sorted(p.name for p in (stage2 / "snapshots").iterdir()) == ["step-3", "step-6"]
    last = ScoreNet.from_pretrained(stage2 / "snapshots" / "step-6")
    for name, value in pipe.score_model.state_dict().items():
        assert torch.equal(value, last.state_dict()[name]), name
    earlier = ScoreNet.from_pretrained(stage2 / "snapshots" / "step-3").state_dict()
    assert any(not torch.equal(v, earlier[k]) for k, v in last.state_dict().items())
    test = select_split(load_training_data(_Args(data), None), "test").load()
    assert test.sizes["time"] == 5 and test["time"].values[0] == smooth_run()["time"].values[67]
    truth = torch.as_tensor(test.values)
    generator = torch.Generator().manual_seed(0)
    background = test + 1.0
    positions = torch.tensor([[4.0, 5.0], [11.0, 2.5], [8.0, 13.0]])
    values = Stations.from_pressures(
        torch.zeros(3, 1), positions, [85000.0], pipe, (16, 16), 0.0
    ).operator(truth[2])
    stations = Stations.from_pressures(
        values + 0.5 * torch.randn(values.shape, generator=generator),
        positions,
        pressures=[85000.0],  # Pa, against the pipeline's recorded hPa
        model_pressures=pipe,
        grid_shape=(16, 16),
        noise_std=0.5,
        time_index=2,
    )
    assert stations.levels == (0,) and stations.num_levels == 2
    out = pipe(
        background=background,
        background_error_std=1.0,
        observations=[stations],
        num_members=2,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert out.members.shape == (2, 5, 2, 16, 16)
    assert torch.isfinite(out.members).all()
    # plausible temperatures: each level's mean within 10 K of the truth's (280 K vs 230 K)
    level_means = out.members.mean(dim=(0, 1, 3, 4)).double()
    assert torch.allclose(level_means, truth.mean(dim=(0, 2, 3)).double(), atol=10.0)


class _Args:
    """The options ``load_training_data`` reads, at their defaults."""

    def __init__(self, data):
        self.data, self.variable = str(data), None


# ------------------------------------------------------------------ 1-D field, twin experiment
def test_a_1d_field_without_levels_trains_and_assimilates_twin_observations(tmp_path):
    """Lorenz-96 ``u(trajectory, time, x)``: not named like temperature, no level dim."""
    runs = lorenz96()
    store = to_store(
        runs, tmp_path / "l96.zarr", split=["train", "train", "val", "test"],
        dims=("trajectory", "time", "x"), name="u",
    )  # fmt: skip
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    common = ["--data", store, "--no-progress_bar", "--report_to", "none"]
    with pytest.raises(ValueError, match="not pressure levels.*--modalities stations gridded"):
        script("train_autoencoder").main([*common, "--output_dir", str(stage1)])
    stage1_args = [*TINY_STAGE1, "--modalities", "stations", "gridded", "--output_dir", stage1]
    script("train_autoencoder").main([*common, *map(str, stage1_args)])
    script("train_score").main(
        [*common, "--autoencoder", str(stage1), "--output_dir", str(stage2), *TINY_SCORE]
    )
    evaluation = json.loads((stage1 / "autoencoder_training.json").read_text())["evaluation"]
    assert evaluation["states"] == 40 and list(evaluation["reconstruction_rmse"]) == ["level 0"]

    pipe = SLAMSPipeline.from_pretrained(stage2 / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.autoencoder.config.levels_hpa is None and pipe.autoencoder.config.levels == 1
    truth = torch.from_numpy(runs[3, :5, None])  # (time, level = 1, x)
    generator = torch.Generator().manual_seed(1)
    every_second = list(range(0, 16, 2))
    y = truth.reshape(5, 16)[:, every_second]
    y = y + 0.5 * torch.randn(y.shape, generator=generator, dtype=y.dtype)
    observations = observations_from_array(y, every_second, (1, 16), 0.5, periodic=True)
    means = torch.zeros(2, 16, dtype=torch.float64)  # two block means of 8 cells
    means[0, :8] = means[1, 8:] = 1 / 8
    observations += observations_from_array(truth.reshape(5, 16)[:1] @ means.T, means, (1, 16), 0.2)
    assert [type(o).__name__ for o in observations] == ["Stations"] * 5 + ["LinearObservation"]
    out = pipe(
        background=truth + 1.0,
        background_error_std=1.0,
        observations=observations,
        num_members=2,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert out.members.shape == (2, 5, 1, 16) and torch.isfinite(out.members).all()


# --------------------------------------------------------------------- what training refuses
def test_training_refuses_satellite_peaks_outside_the_levels(tmp_path):
    data = tmp_path / "run.nc"
    smooth_run(steps=24, size=12).to_netcdf(data)
    main = script("train_autoencoder").main
    common = ["--data", str(data), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    with pytest.raises(ValueError, match=r"--satellite_peaks \[700.0, 200.0\] hPa: \[200.0\] lie"):
        main([*common, "--satellite_peaks", "70000", "20000"])  # Pa understood
    with pytest.raises(ValueError, match="e.g. --satellite_peaks 850 300"):
        main([*common, "--satellite_peaks", "500", "100"])
    with pytest.raises(ValueError, match=r"--levels \[500.0\].*missing \[500.0\]"):
        main([*common, "--levels", "500"])
    with pytest.raises(ValueError, match=r"--downsample_factor 8: the grid \{'y': 12, 'x': 12\}"):
        main([*common, "--downsample_factor", "8"])
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_split_options_on_a_single_run(tmp_path):
    data = tmp_path / "run.nc"
    smooth_run(steps=40).to_netcdf(data)
    parser = script("train_score").build_parser()
    from slams_diffusers.training import parse_args

    def load(*flags, split="train", **kwargs):
        args = parse_args(parser, ["--data", str(data), "--output_dir", "x", *flags])
        return load_training_data(args, split, **kwargs)

    # default: by time, 0.8 / 0.1 / 0.1 of 40 - 16 = 24 times, 8 gap times between splits
    assert load().sizes["time"] == 19 and load(split="val").sizes["time"] == 3
    assert load(split=None).sizes["time"] == 40
    assert load("--split_fractions", "0.5", "0.5", "--split_gap", "0").sizes["time"] == 20
    assert load("--levels", "30000").sizes["level"] == 1  # in Pa
    with pytest.raises(ValueError, match="--split_gap 8 is shorter than --window 9"):
        load(window=9)
    with pytest.raises(ValueError, match=r"--split_by trajectory.*has no 'trajectory' dim"):
        load("--split_by", "trajectory")
    with pytest.raises(ValueError, match="--split_fractions: expected 1 to 3"):
        load("--split_fractions", "0.5", "0.2", "0.2", "0.1")
    with pytest.raises(ValueError, match="--data: no such file"):
        load_training_data(_Args(tmp_path / "missing.nc"))


# ----------------------------------------------------------------- pressures and the models
def test_models_record_their_levels_in_hpa(tmp_path):
    model = StateAutoencoder(levels=2, hidden_channels=(8, 8, 8), levels_hpa=[850, 300])
    model.save_pretrained(tmp_path / "ae")
    assert StateAutoencoder.from_pretrained(tmp_path / "ae").config.levels_hpa == [850.0, 300.0]
    assert LevelNormalizer(levels=2, levels_hpa=(500.0, 250.0)).config.levels_hpa == [500, 250]
    assert LevelNormalizer(levels=2).config.levels_hpa is None
    with pytest.raises(ValueError, match="these look like Pa; expected hPa"):
        LevelNormalizer(levels=2, levels_hpa=[85000.0, 30000.0])
    with pytest.raises(ValueError, match="one per level"):
        StateAutoencoder(levels=3, levels_hpa=[850.0, 300.0])
    for name in ("slams-qg-tiny", "sda-qg-tiny"):  # the embedded pipelines: 850 ... 200 hPa
        config = json.loads((PIPELINES / name / "autoencoder" / "config.json").read_text())
        assert config["levels_hpa"] == [850.0, 700.0, 500.0, 300.0, 200.0]


def test_pressures_from_a_pipeline_and_in_pa():
    pipe = SLAMSPipeline.from_pretrained(PIPELINES / "sda-qg-tiny")
    assert pressures_hpa(pipe) == [850.0, 700.0, 500.0, 300.0, 200.0]
    assert pressures_hpa(pipe.autoencoder) == pressures_hpa(pipe)
    assert pressures_hpa(np.array([85000.0, 50000.0])) == [850.0, 500.0]
    with pytest.raises(ValueError, match="mixes units.*all in hPa.*or all in Pa"):
        pressures_hpa([85000.0, 500.0], "pressures")
    with pytest.raises(ValueError, match="records no pressure levels"):
        pressures_hpa(LevelNormalizer(levels=2))
    stations = Stations.from_pressures(
        torch.zeros(1, 2), torch.tensor([[1.0, 2.0]]), [30000.0, 85000.0], pipe, (64, 64), 0.5
    )
    assert stations.levels == (3, 0) and stations.num_levels == 5
    with pytest.raises(ValueError, match="400 hPa is not a model level"):
        Stations.from_pressures(torch.zeros(1, 1), torch.zeros(1, 2), [400.0], pipe, (64, 64), 0.5)
    hpa = torch.tensor([850.0, 700.0, 500.0, 300.0, 200.0], dtype=torch.float64)
    from_pipe = gaussian_weighting_functions(pipe, torch.tensor([70000.0, 30000.0]).double())
    exact = gaussian_weighting_functions(hpa, torch.tensor([700.0, 300.0], dtype=torch.float64))
    # the same log-pressure differences up to the rounding of p / 100 (float64)
    torch.testing.assert_close(from_pipe, exact, rtol=1e-12, atol=1e-15)


def test_simulators_take_read_only_pressures_quietly():
    pressures = np.array([850.0, 500.0])
    pressures.setflags(write=False)  # as xarray hands out coordinate values
    truth = 250.0 + torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        observations = random_observations(
            truth, torch.Generator().manual_seed(0), model_pressures=pressures, keep_probability=1
        )
    assert [o.modality for o in observations] == ["stations", "satellite", "gridded"]


# --------------------------------------------------------------------------- twin helper
def test_observations_from_index_lists_and_matrices():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, 2, 4, 5, generator=generator, dtype=torch.float64)  # (time, 2, y, x)
    flat = states.reshape(3, -1)
    entries = [0, 7, 21, 27, 39]  # (level, y, x): (0,0,0) (0,1,2) (1,0,1) (1,1,2) (1,3,4)
    y = flat[:, entries].clone()
    y[1, 2] = float("nan")  # missing
    observations = observations_from_array(y, entries, (2, 4, 5), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert [o.time_index for o in observations] == [0, 1, 2]
    first = observations[0]
    assert isinstance(first, Stations) and first.levels == (0, 1)
    assert first.positions.tolist() == [[0, 0], [1, 2], [0, 1], [3, 4]]  # cell (1, 2) shared
    for t, observation in enumerate(observations):  # exact at grid points (float64)
        predicted = observation.operator(states[t])[observation.mask]
        torch.testing.assert_close(predicted, observation.values[observation.mask])
    assert observations[1].num_observed == 4 and observations[0].num_observed == 5
    assert observations[0].noise_std[1].tolist() == [0.2, 0.4]  # station at (1, 2)
    one_hot = torch.zeros(5, 40, dtype=torch.float64)
    one_hot[list(range(5)), entries] = 1.0
    same = observations_from_array(y, one_hot, (2, 4, 5), 0.3)[2]
    assert isinstance(same, Stations) and same.positions.tolist() == first.positions.tolist()

    matrix = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    linear = observations_from_array(flat @ matrix.T, matrix, (2, 4, 5), 0.1, time_offset=4)
    assert all(isinstance(o, LinearObservation) for o in linear)
    assert [o.time_index for o in linear] == [4, 5, 6] and linear[0].modality == "linear"
    torch.testing.assert_close(linear[1].operator(states[1]), flat[1] @ matrix.T)
    weights = torch.zeros(2, 40, dtype=torch.float64)
    weights[0, :20], weights[1, 10:30] = 0.25, 0.25  # level 0; half of each level
    grid, mask = observations_from_array([[1.0, 3.0]], weights, (2, 4, 5), 0.1)[0].to_grid()
    assert grid.shape == mask.shape == (2, 4, 5) and mask.sum() == 30
    # each cell: the mean of the observations that see it
    assert grid.reshape(-1)[:10].tolist() == [1.0] * 10
    assert grid.reshape(-1)[10:20].tolist() == [2.0] * 10
    assert grid.reshape(-1)[20:30].tolist() == [3.0] * 10

    with pytest.raises(ValueError, match=r"H must have shape \(n, prod\(state_shape\)\)"):
        observations_from_array(y, torch.zeros(5, 39), (2, 4, 5), 0.1)
    with pytest.raises(ValueError, match="out of range for a state"):
        observations_from_array(y, [0, 1, 2, 3, 40], (2, 4, 5), 0.1)
    with pytest.raises(ValueError, match="repeated indices"):
        observations_from_array(y, [0, 1, 2, 3, 3], (2, 4, 5), 0.1)
    with pytest.raises(ValueError, match="must hold ints"):
        observations_from_array(y, [0.0, 1.0, 2.0, 3.0, 4.0], (2, 4, 5), 0.1)
    with pytest.raises(ValueError, match=r"a 1-D field is \(1, x\)"):
        observations_from_array(y, entries, (40,), 0.1)
