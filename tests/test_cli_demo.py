"""``slams demo``: a fresh testbed window assimilated by OI/3D-Var and SLAMS with the same ``B``; a
per-level table, ``analysis.nc`` and ``demo.png``; offline and quick on the embedded pipeline."""

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import LevelNormalizer, ScoreNet, SLAMSPipeline, VPPredictorCorrectorScheduler
from slams_diffusers.cli import main
from slams_diffusers.metrics import crps, ensemble_spread, level_dims, rmse

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
LEVEL_NAMES = ["850 hPa", "700 hPa", "500 hPa", "300 hPa", "200 hPa"]
COLUMNS = [
    "RMSE background", "RMSE OI/3D-Var", "RMSE SLAMS",
    "CRPS background", "CRPS OI/3D-Var", "CRPS SLAMS", "spread SLAMS",
]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    torch.manual_seed(0)
    pipe = SLAMSPipeline(
        score_model=ScoreNet(in_channels=5, window=5, hidden_channels=(8, 16), layers_per_block=1),
        scheduler=VPPredictorCorrectorScheduler(),
        autoencoder=LevelNormalizer(
            levels=5,
            spatial_dims=2,
            level_mean=[268.0, 258.0, 242.0, 224.0, 217.0],
            level_std=[4.0, 4.0, 3.0, 3.0, 2.0],
        ),
    )
    folder = tmp_path_factory.mktemp("demo-pipe")
    pipe.save_pretrained(folder)
    return folder


def read_table(out: str) -> dict[str, dict[str, float]]:
    """``{level name or 'all': {column: value}}`` from the printed table."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("level"))
    rows = {}
    for line in lines[header + 1 : header + 7]:
        parts = line.split()
        rows[" ".join(parts[: len(parts) - len(COLUMNS)])] = dict(
            zip(COLUMNS, map(float, parts[-len(COLUMNS) :]), strict=True)
        )
    assert " ".join(lines[header].split()[1:]) == " ".join(COLUMNS)
    return rows


def test_demo_prints_a_table_and_writes_the_analysis_and_a_figure(
    pipeline_folder, tmp_path, capsys
):
    argv = ["demo", "--pipeline", str(pipeline_folder), "--members", "2", "--steps", "2"]
    argv += ["--spinup-steps", "50", "--out", str(tmp_path), "--no-progress"]
    status = main(argv)
    out = capsys.readouterr().out
    table = read_table(out)
    assert list(table) == [*LEVEL_NAMES, "all"]
    assert f"wrote {tmp_path / 'analysis.nc'} and {tmp_path / 'demo.png'}" in out
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    written = xr.load_dataset(tmp_path / "analysis.nc")
    assert {"mean", "std", "members", "truth", "background", "oi"} <= set(written.data_vars)
    assert written["members"].dims == ("member", "time", "level", "y", "x")
    assert written.sizes["member"] == 2 and written.sizes["time"] == 5
    np.testing.assert_allclose(written["level"], [850, 700, 500, 300, 200])
    assert written["mean"].attrs["units"] == "K" and written["y"].attrs["units"] == "m"
    # the spread is not a temperature (CF: a statistic over the members, realization)
    assert written["member"].attrs["standard_name"] == "realization"
    assert written["std"].attrs["long_name"] == "ensemble standard deviation of air temperature"
    assert written["std"].attrs["cell_methods"] == "realization: standard_deviation"
    assert "standard_name" not in written["std"].attrs
    assert written["mean"].attrs["standard_name"] == "air_temperature"

    def tensor(name):
        return torch.from_numpy(written[name].values).double()

    truth, members = tensor("truth"), tensor("members")
    dims = level_dims(truth.ndim)
    expected = {
        "RMSE background": rmse(tensor("background"), truth, dims),
        "RMSE OI/3D-Var": rmse(tensor("oi"), truth, dims),
        "RMSE SLAMS": rmse(members.mean(0), truth, dims),
        "CRPS SLAMS": crps(members, truth, dims),
        "CRPS background": crps(tensor("background")[None], truth, dims),
        "spread SLAMS": ensemble_spread(members, dims),
    }
    for column, values in expected.items():  # the table prints 3 decimals
        printed = [table[name][column] for name in LEVEL_NAMES]
        np.testing.assert_allclose(printed, values.float(), atol=5e-4, err_msg=column)
    # a deterministic estimate's CRPS is its mean absolute error
    mae = (tensor("background") - truth).abs().mean(dim=dims)
    np.testing.assert_allclose(expected["CRPS background"], mae, rtol=1e-12)
    # OI/3D-Var with the B estimated on validation windows is the BLUE: better than the background
    assert table["all"]["RMSE OI/3D-Var"] < table["all"]["RMSE background"]
    assert 0.5 < table["all"]["RMSE background"] < 3.0  # a 24-h forecast from a 1.5 K perturbation
    assert status == (0 if table["all"]["RMSE SLAMS"] < table["all"]["RMSE background"] else 1)

    # seeded: the same command, told to overwrite, prints the same numbers
    assert main([*argv, "--overwrite"]) == status
    assert read_table(capsys.readouterr().out) == table


def test_the_demo_on_the_embedded_pipeline_takes_the_time_the_readme_says(tmp_path, capsys):
    """The defaults: 16 members, 32 steps, 100 days of spin-up, on this machine's thread(s), within
    twice the time the README states (a demo that got slower needs the README re-measured)."""
    stated = re.search(r"It took (\d+) s on this project's 2-core", README)
    assert stated, "the README states the demo's time"
    start = time.perf_counter()
    status = main(["demo", "--out", str(tmp_path), "--no-progress"])
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    table = read_table(captured.out)
    assert seconds < 2 * int(stated.group(1)), seconds
    assert "slams demo:" not in captured.err and "%|" not in captured.err  # --no-progress
    assert status == 0
    everything = table["all"]
    # one window: SLAMS beats the background clearly and OI/3D-Var with the same B
    assert everything["RMSE SLAMS"] < 0.9 * everything["RMSE background"]
    assert everything["RMSE SLAMS"] < everything["RMSE OI/3D-Var"]
    assert everything["CRPS SLAMS"] < everything["CRPS OI/3D-Var"]
    assert 0.3 < everything["spread SLAMS"] / everything["RMSE SLAMS"] < 2.0
    # a window of the climate the pipeline was trained on (100 days of spin-up, as the testbed):
    # better than the background at every level (0.57 vs 0.76 K at 200 hPa, the closest; with
    # 50 days the upper levels are not yet in that climate and 200 hPa got 0.96 K)
    for level in LEVEL_NAMES:
        assert table[level]["RMSE SLAMS"] < 0.9 * table[level]["RMSE background"], level
