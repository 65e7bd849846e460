"""Real radiosonde profiles: parsing, fixed pressure levels, the packaged store, the column
observation operator and the column cases (docs/method.md §Columns and real radiosondes)."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slams_diffusers import SLAMSPipeline
from slams_diffusers.data.soundings import (
    COLUMN_LEVELS_HPA,
    column_cases,
    complete_profiles,
    packaged_soundings,
    read_sharppy,
    sounding_columns,
    surface_report_error,
    to_pressure_levels,
)
from slams_diffusers.metrics import rmse
from slams_diffusers.observations import Profile

SOUNDINGS = Path(__file__).parent / "data" / "soundings"
PIPELINES = Path(__file__).parents[1] / "pipelines"
LZK = SOUNDINGS / "00021400.LZK"  # an observed launch at Little Rock, 2000-02-14 00 UTC


def test_a_shipped_sounding_parses_to_its_known_values():
    sounding = read_sharppy(LZK.read_text())
    assert sounding.site == "LZK"
    assert sounding.time == np.datetime64("2000-02-14T00:00")
    # the first row, 1000 hPa, is below ground: its temperature is -9999 in the file
    assert sounding.pressure[0] == 1000.0 and math.isnan(sounding.temperature[0])
    row = int(np.flatnonzero(sounding.pressure == 850.0)[0])
    assert sounding.temperature[row] == pytest.approx(9.80 + 273.15, abs=1e-9)
    assert sounding.height[row] == 1382.0
    assert sounding.surface == pytest.approx((980.0, 21.20 + 273.15, 165.0))


def test_levels_are_linear_in_log_pressure_and_nothing_is_extrapolated():
    sounding = read_sharppy(LZK.read_text())
    levels = [1000.0, 850.0, 800.0, 5.0]
    t = to_pressure_levels(sounding.pressure, sounding.temperature, levels)
    # 1000 hPa is below the surface report (980 hPa): missing, NaN, never zero
    assert math.isnan(t[0])
    assert t[1] == pytest.approx(9.80 + 273.15, abs=1e-9)  # a reported level keeps its value
    # 800 hPa between the reports at 805.18 (6.12 °C) and 775.22 hPa (3.30 °C)
    w = math.log(800 / 805.18) / math.log(775.22 / 805.18)
    assert t[2] == pytest.approx(273.15 + 6.12 + w * (3.30 - 6.12), abs=1e-9)
    assert math.isnan(t[3])  # above the balloon's last report
    # a hole wider than max_log_gap in the sounding leaves the level empty
    hole = to_pressure_levels([900.0, 500.0], [280.0, 250.0], [700.0], max_log_gap=0.3)
    assert math.isnan(hole[0])
    assert to_pressure_levels([900.0, 500.0], [280.0, 250.0], [700.0], max_log_gap=1.0)[0] > 0


def test_a_file_that_is_not_a_sounding_is_refused():
    with pytest.raises(ValueError, match="not a SHARPpy sounding"):
        read_sharppy("LEVEL HGHT TEMP\n1000 5 20\n", where="bad.txt")


def test_the_store_of_a_folder_of_soundings(tmp_path):
    for kind in ("hail", "supercell"):
        (tmp_path / kind).mkdir()
    shutil.copy(LZK, tmp_path / "hail")
    shutil.copy(SOUNDINGS / "00010319f0.gwo", tmp_path / "supercell")
    store = sounding_columns(tmp_path, split_years=(2000, 2001))
    assert store.t.dims == ("trajectory", "time", "level")
    assert store.level.values.tolist() == list(COLUMN_LEVELS_HPA)
    # sorted by launch time: the RUC analysis of 2000-01-03 19 UTC, then the launch
    assert store.kind.values.tolist() == ["analysis", "raob"]
    assert store.site.values.tolist() == ["GWO", "LZK"]
    assert store.split.values.tolist() == ["val", "val"]
    assert float(store.surface_pressure[1]) == 980.0
    expected = to_pressure_levels(*_pt(read_sharppy(LZK.read_text())), COLUMN_LEVELS_HPA)
    np.testing.assert_allclose(store.t.values[1, 0], expected, rtol=1e-6)


def _pt(sounding):
    return sounding.pressure, sounding.temperature


def test_the_packaged_store_holds_the_shipped_launch_and_marks_empty_levels_nan():
    store = packaged_soundings()
    assert store.sizes["trajectory"] == 2142  # 1,148 launches and 994 analysis profiles
    assert int((store.kind.values == "raob").sum()) == 1148
    row = np.flatnonzero(
        (store.site.values == "LZK") & (store.launch_time.values == np.datetime64("2000-02-14"))
    )
    assert len(row) == 1
    expected = to_pressure_levels(*_pt(read_sharppy(LZK.read_text())), COLUMN_LEVELS_HPA)
    np.testing.assert_allclose(store.t.values[row[0], 0], expected, rtol=1e-6)
    values = store.t.values
    assert np.isnan(values).any() and not (values == 0).any()
    complete = complete_profiles(store, "test", "raob")
    assert np.isfinite(complete.t.values).all()
    years = complete.launch_time.values.astype("datetime64[Y]").astype(int) + 1970
    assert years.min() >= 2005


def test_profile_interpolates_and_extrapolates_a_log_linear_column_exactly():
    levels = [850.0, 700.0, 500.0, 300.0]
    column = torch.tensor([290.0 + 20.0 * math.log(p / 850.0) for p in levels], dtype=torch.float64)
    points = [1000.0, 850.0, 600.0, 250.0]
    expected = torch.tensor(
        [290.0 + 20.0 * math.log(p / 850.0) for p in points], dtype=torch.float64
    )
    obs = Profile(values=expected, pressures=points, model_pressures=levels, noise_std=1.0)
    torch.testing.assert_close(obs.operator(column), expected.double(), rtol=0, atol=1e-10)
    # a missing value is masked and stored as 0
    nan = [float("nan")]
    missing = Profile(values=nan, pressures=[900.0], model_pressures=levels, noise_std=1.0)
    assert missing.num_observed == 0
    with pytest.raises(ValueError, match="pressures: .*max_extrapolation"):
        Profile(values=[280.0], pressures=[1200.0], model_pressures=levels, noise_std=1.0)


def test_column_cases_observe_the_real_surface_report_and_the_sounder():
    store = packaged_soundings()
    bias, std = surface_report_error(complete_profiles(store, "train", "raob"))
    assert 1.0 < std < 5.0 and 0.0 < bias < 6.0  # warmer than the free atmosphere continued down
    cases = column_cases(store, "test", "raob")
    assert len(cases) == len(complete_profiles(store, "test", "raob").trajectory)
    case = cases[0]
    surface = case.observations["surface"]
    assert surface.modality == "surface" and surface.noise_std == pytest.approx(std)
    satellite = case.observations["satellite"]
    assert satellite.grid_shape == () and satellite.values.shape == (6,)
    # the sounder is the truth's channels with noise of the declared size
    innovations = torch.cat(
        [
            c.observations["satellite"].values - c.observations["satellite"].operator(c.truth)[0]
            for c in cases
        ]
    )
    assert float(innovations.std()) == pytest.approx(0.5, rel=0.1)  # 1000+ draws: ±5 %


def test_the_column_pipeline_beats_climatology_on_a_held_out_launch(monkeypatch):
    """``pipelines/sda-raob-column`` on the first launch of the test years (2005 on; the prior
    trained on launches before 2003): the real surface report and the sounder, no background
    term (the prior is the climatology). Climatology is 8 K off at this winter launch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = SLAMSPipeline.from_pretrained(PIPELINES / "sda-raob-column")
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.levels, pipe.spatial_dims, pipe.window) == (16, 0, 1)
    store = packaged_soundings()
    case = column_cases(store, "test", "raob")[0]
    climatology = torch.as_tensor(complete_profiles(store, "train").t.values.mean(0))
    out = pipe(
        observations=list(case.observations.values()),
        num_members=8,
        num_inference_steps=16,
        generator=[torch.Generator().manual_seed(m) for m in range(8)],
        output_type="pt",
    )
    analysis = float(rmse(out.mean, case.truth))
    background = float(rmse(climatology.float(), case.truth))
    assert analysis < 0.5 * background
