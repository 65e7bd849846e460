"""Figures: each writes a PNG on a tiny input, draws what it says, and rejects bad shapes."""

import sys

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers.observations import Background, Gridded, Satellite, Stations
from slams_diffusers.plotting import (
    plot_analysis_maps,
    plot_profiles,
    plot_rank_histogram,
    plot_sweep,
)

pytest.importorskip("matplotlib")

LEVELS, GRID = 3, (8, 8)


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.fixture
def window():
    generator = torch.Generator().manual_seed(0)
    truth = 250.0 + 5.0 * torch.randn(2, LEVELS, *GRID, generator=generator)  # (time, level, y, x)
    background = truth + torch.randn(truth.shape, generator=generator)
    members = truth + 0.5 * torch.randn(4, *truth.shape, generator=generator)
    stations = Stations(
        values=torch.tensor([[240.0, 262.0], [251.0, float("nan")]]),  # NaN: missing
        positions=torch.tensor([[1.0, 2.5], [6.0, 5.0]]),
        levels=[0, 2],
        num_levels=LEVELS,
        grid_shape=GRID,
        noise_std=0.5,
        time_index=1,
    )
    satellite = Satellite(
        values=250.0 + torch.randn(2, 2, 2, generator=generator),
        weights=torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]),
        footprint=4,
        grid_shape=GRID,
        noise_std=1.0,
        time_index=1,
    )
    return truth, background, members, [stations, satellite]


def test_plot_analysis_maps_writes_a_png_with_a_shared_scale_per_level(tmp_path, window):
    truth, background, members, observations = window
    satellite = observations[1]
    path = tmp_path / "maps.png"
    figure = plot_analysis_maps(
        mean=members.mean(0),
        std=members.std(0),
        truth=truth,
        background=background,
        observations=observations,
        level_names=["850 hPa", "500 hPa", "200 hPa"],
        path=path,
    )
    _assert_png(path)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == LEVELS * 5  # truth, background, observations, mean, spread
    assert panels[2].get_title() == "observations, 850 hPa"
    for level in range(LEVELS):  # the last step (time_index=-1) is drawn
        row = panels[5 * level : 5 * level + 5]
        fields = torch.stack([truth[1, level], background[1, level], members.mean(0)[1, level]])
        expected = (fields.min().item(), fields.max().item())
        temperature = [row[0].images[0], row[1].images[0], row[3].images[0]]
        temperature += row[2].collections  # the stations' scatter
        for artist in temperature:
            assert artist.get_clim() == pytest.approx(expected, rel=1e-6)
        # the satellite channel peaking at this level, on its own scale
        channel = [0, 0, 1][level]  # weights peak at levels 0 / 2; level 1 ties -> channel 0
        (image,) = row[2].images
        values = satellite.values[channel]
        limits = (values.min().item(), values.max().item())
        assert image.get_clim() == pytest.approx(limits, rel=1e-6)
        spread = row[4].images[0].get_array()
        np.testing.assert_allclose(spread, members.std(0)[1, level].numpy(), rtol=1e-6)
    # stations observe levels 0 and 2 only (the NaN one is not drawn); none at level 1
    assert [len(c.get_offsets()) for c in panels[2].collections] == [2]
    assert len(panels[7].collections) == 0
    assert [len(c.get_offsets()) for c in panels[12].collections] == [1]


def test_plot_analysis_maps_says_what_it_draws_in_the_files_units(tmp_path, window):
    """The title names the time step, a legend explains the grey ground and the stations' colours,
    and the axes are the file's coordinates (a station at grid position (1, 2.5) is drawn at
    y = 1.5e6 m, x = 3e6 m on a 1000-km grid starting at 0.5e6 m)."""
    truth, _, members, observations = window
    x = xr.DataArray(np.arange(GRID[1]) * 1.0e6 + 0.5e6, dims="x", name="x", attrs={"units": "m"})
    y = x.rename({"x": "y"}).rename("y")
    figure = plot_analysis_maps(
        mean=members.mean(0),
        std=members.std(0),
        truth=truth,
        observations=observations,
        x=x,
        y=y,
        title="a window",
        path=tmp_path / "titled.png",
    )
    _assert_png(tmp_path / "titled.png")
    assert figure.get_suptitle() == "a window, time step 2 of 2"
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "not observed (or cloudy)",
        "station, coloured on the row's temperature scale (analysis mean's bar)",
    ]
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert panels[0].get_ylabel() == "y [m]" and panels[-1].get_xlabel() == "x [m]"
    assert panels[0].images[0].get_extent() == pytest.approx([0.0, 8.0e6, 0.0, 8.0e6])
    np.testing.assert_allclose(
        panels[1].collections[0].get_offsets(), [[3.0e6, 1.5e6], [5.5e6, 6.5e6]]
    )
    without = plot_analysis_maps(mean=members.mean(0)[1], std=members.std(0)[1])
    assert without.get_suptitle() == "" and not without.legends  # no time axis, no observations
    assert without.axes[0].get_ylabel() == "y (grid index)"
    with pytest.raises(ValueError, match=r"x: expected 8 coordinates \(one per cell\), got \(7,\)"):
        plot_analysis_maps(mean=members.mean(0), std=members.std(0), x=np.arange(7.0))
    with pytest.raises(ValueError, match="y: expected evenly spaced coordinates"):
        plot_analysis_maps(mean=members.mean(0), std=members.std(0), y=np.arange(8.0) ** 2)


def test_plot_analysis_maps_selects_the_step_and_uses_a_background_observation(tmp_path, window):
    truth, _, members, observations = window
    background = Background(values=truth[0] + 1.0, noise_std=1.0, time_index=0)
    figure = plot_analysis_maps(
        mean=members.mean(0),
        std=members.std(0),
        observations=[*observations, background],
        levels=[1],
        time_index=0,  # the stations and satellite observe step 1: not drawn
        path=tmp_path / "step0.png",
    )
    _assert_png(tmp_path / "step0.png")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["background, level 1", "analysis mean, level 1", "spread, level 1"]
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, truth[0, 1].numpy() + 1.0, rtol=1e-6)
    # 3-d inputs (level, y, x) and a gridded product
    gridded = Gridded(
        values=truth[1, :, ::2, ::2][:, ::2, ::2],
        coarsen=2,
        subsample=2,
        grid_shape=GRID,
        noise_std=0.5,
    )
    plot_analysis_maps(
        mean=members.mean(0)[1],
        std=members.std(0)[1],
        observations=[gridded],
        path=tmp_path / "gridded.png",
    )
    _assert_png(tmp_path / "gridded.png")


def test_plot_analysis_maps_rejects_bad_input(window):
    truth, background, members, observations = window
    mean, std = members.mean(0), members.std(0)
    with pytest.raises(ValueError, match=r"std: expected the shape of mean \(2, 3, 8, 8\)"):
        plot_analysis_maps(mean=mean, std=std[:, :2])
    with pytest.raises(ValueError, match="truth: expected the shape of mean"):
        plot_analysis_maps(mean=mean, std=std, truth=truth[0])
    with pytest.raises(ValueError, match=r"mean: expected shape \(level, y, x\)"):
        plot_analysis_maps(mean=mean[0, 0], std=std[0, 0])
    with pytest.raises(ValueError, match=r"levels: expected indices in \[0, 3\)"):
        plot_analysis_maps(mean=mean, std=std, levels=[3])
    with pytest.raises(ValueError, match="level_names: expected 2 names"):
        plot_analysis_maps(mean=mean, std=std, levels=[0, 1], level_names=["850 hPa"])
    with pytest.raises(ValueError, match="time_index"):
        plot_analysis_maps(mean=mean, std=std, time_index=2)
    other = Background(values=torch.zeros(LEVELS, 4, 4), noise_std=1.0)
    with pytest.raises(ValueError, match=r"observations\[1\]: grid_shape \(4, 4\) does not match"):
        plot_analysis_maps(mean=mean, std=std, observations=[observations[0], other])
    with pytest.raises(ValueError, match=r"observations\[0\]: expected an Observation"):
        plot_analysis_maps(mean=mean, std=std, observations=[truth])


def test_plot_profiles(tmp_path):
    pressures = [850.0, 500.0, 200.0]
    errors = {"background": [1.0, 1.2, 1.6], "SLAMS": torch.tensor([0.5, 0.7, 0.9])}
    figure = plot_profiles(errors, {"SLAMS": [0.4, 0.7, 1.0]}, pressures, path=tmp_path / "p.png")
    _assert_png(tmp_path / "p.png")
    (ax,) = figure.axes
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    assert bottom > 850 and top < 200  # inverted: the surface at the bottom
    lines = ax.get_lines()
    assert len(lines) == 3 and lines[2].get_linestyle() == "--"
    assert lines[1].get_color() == lines[2].get_color()  # a method's spread in its colour
    np.testing.assert_array_equal(lines[0].get_ydata(), pressures)
    with pytest.raises(ValueError, match=r"errors_by_method\['SLAMS'\]: expected 3 values"):
        plot_profiles({"SLAMS": [1.0, 2.0]}, None, pressures)
    with pytest.raises(ValueError, match=r"spreads_by_method: methods \['EnKF'\] are not"):
        plot_profiles(errors, {"EnKF": [1.0, 1.0, 1.0]}, pressures)
    with pytest.raises(ValueError, match="pressures: expected a 1-d sequence of positive"):
        plot_profiles(errors, None, [850.0, 0.0, 200.0])


def test_plot_rank_histogram(tmp_path):
    figure = plot_rank_histogram([3, 1, 1, 5], path=tmp_path / "r.png")
    _assert_png(tmp_path / "r.png")
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    assert heights == pytest.approx([0.3, 0.1, 0.1, 0.5])
    both = plot_rank_histogram({"SLAMS": [2, 2, 2], "EnKF": np.array([5, 0, 1, 0, 4])})
    assert [ax.get_title() for ax in both.axes] == ["SLAMS", "EnKF"]
    assert both.axes[1].get_lines()[0].get_ydata()[0] == pytest.approx(1 / 5)  # flat level
    with pytest.raises(ValueError, match=r"counts\['EnKF'\]: expected N \+ 1 >= 2 non-negative"):
        plot_rank_histogram({"EnKF": [1, -1, 2]})
    with pytest.raises(ValueError, match=r"counts\[''\]: expected 1-d"):
        plot_rank_histogram(np.ones((2, 3)))


def test_plot_sweep(tmp_path):
    figure = plot_sweep(
        [2, 4, 8, 16],
        {"OI": [0.8, 1.0, 1.3, 1.6], "SLAMS": [0.6, 0.7, 0.9, 1.1]},
        "coarsening factor r",
        "RMSE [K]",
        tmp_path / "s.png",
        logx=True,
    )
    _assert_png(tmp_path / "s.png")
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.get_lines()] == ["OI", "SLAMS"]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "coarsening factor r"
    with pytest.raises(ValueError, match=r"y_by_method\['OI'\]: expected 4 values"):
        plot_sweep([2, 4, 8, 16], {"OI": [0.8, 1.0]}, "r", "RMSE")
    with pytest.raises(ValueError, match="y_by_method: expected a non-empty dict"):
        plot_sweep([2, 4], {}, "r", "RMSE")


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    hint = (
        r'pip install matplotlib \(in a checkout of slams-diffusers: pip install -e "\.\[plot\]"\)'
    )
    with pytest.raises(ImportError, match=hint):
        plot_sweep([1, 2], {"a": [1.0, 2.0]}, "x", "y")
