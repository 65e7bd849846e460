"""Quality control of observations (docs/method.md §Quality control): a gross error is rejected
before any guidance and reported, a plausible innovation is kept, ``diag(A B Aᵀ)`` is exact, and
without quality control an absurd value is refused rather than passed into every member."""

import json
import logging

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import (
    Background,
    DiagonalCovariance,
    Gridded,
    Satellite,
    SLAMSPipeline,
    SpectralCovariance,
    Stations,
    gaussian_weighting_functions,
)
from slams_diffusers.cli import main
from slams_diffusers.data.observing import station_network
from slams_diffusers.data.qg import simulate_dataset
from slams_diffusers.data.testbed import assimilation_cases, background_error_std
from slams_diffusers.io import station_table
from slams_diffusers.quality_control import (
    QC_THRESHOLD,
    background_error_variance,
    quality_control,
)

MEMBERS = 2


@pytest.fixture(scope="module")
def testbed():
    """The embedded pipeline, one testbed window (5 steps) and 32 stations (0.5 K) at step 2, the
    background error declared honestly: its per-level rms, correlated over 4 cells."""
    pipe = SLAMSPipeline.from_pretrained("slams-qg-tiny")
    pipe.set_progress_bar_config(disable=True)
    run = simulate_dataset(1, 12, seed=7, spinup=100, splits=(0, 0, 1), store_pv="all")
    (case,) = assimilation_cases(run, "test", window=5, cases_per_trajectory=1, observations=False)
    generator = torch.Generator().manual_seed(3)
    stations = station_network(
        case.truth[2], 32, noise_std=0.5, periodic="xy", time_index=2, generator=generator
    )
    std = background_error_std([case]).reshape(-1).tolist()
    return pipe, case, stations, std


def assimilate(testbed, observations, steps: int = 4, **kwargs):
    pipe, case, _, std = testbed
    arguments = dict(
        background=case.background,
        observations=observations,
        background_error_std=std,
        background_error_length_scale=4.0,
        num_members=MEMBERS,
        num_inference_steps=steps,
        generator=[torch.Generator().manual_seed(m) for m in range(MEMBERS)],
        output_type="pt",
    )
    return pipe(**{**arguments, **kwargs})


def with_value(stations: Stations, index: tuple[int, int], value: float) -> Stations:
    values = stations.values.clone()
    values[index] = value
    return stations.replace_values(values)


def test_one_absurd_station_is_rejected_and_the_analysis_is_the_one_without_it(testbed, caplog):
    """One station of 32 reports 1e6 K: quality control makes that value missing, so the analysis
    is the one with the value withheld (NaN), to the bit (same generators); the output reports 1
    rejection in "stations" with its index, one warning line says so, and the caller's
    observation is unchanged."""
    _, _, stations, _ = testbed
    absurd = with_value(stations, (5, 1), 1e6)
    with caplog.at_level(logging.WARNING):
        out = assimilate(testbed, [absurd])
    withheld = assimilate(testbed, [with_value(stations, (5, 1), float("nan"))])
    assert torch.equal(out.members, withheld.members)
    report = out.quality_control
    assert report.rejected == {"stations": 1} and report.checked == {"stations": 160}
    assert report.indices == {0: [(5, 1)]}
    (rejection,) = report.rejections
    assert rejection.value == 1e6 and rejection.reference == "background"
    assert withheld.quality_control.rejected == {"stations": 0}
    lines = [r.getMessage() for r in caplog.records if "Quality control" in r.getMessage()]
    assert len(lines) == 1 and "1 of 160 stations values" in lines[0] and "\n" not in lines[0]
    assert float(absurd.values[5, 1]) == 1e6 and bool(absurd.mask[5, 1])  # not changed in place


def background_check(observations, std: float = 2.0, length_scale: float = 4.0):
    """Quality control against a background (the testbed's, step 0) whose declared error is
    ``std`` K, correlated over ``length_scale`` cells; returns the background and the report."""
    run = simulate_dataset(1, 1, seed=5, spinup=20, splits=(0, 0, 1), store_pv="none")
    state = torch.from_numpy(run["t"].values[0, 0]).double()
    covariance = SpectralCovariance.from_length_scale(
        torch.full((5,), std, dtype=torch.float64), length_scale, (64, 64), levels=5
    )
    background = Background(values=state, noise_std=std, covariance=covariance)
    return state, quality_control([*observations(state), background])[1]


def test_a_plausible_gross_error_is_rejected_and_a_true_innovation_is_kept():
    """Against a background with a 2 K error: +15 K at one station (noise 0.5 K) is 7 σ_d away
    and rejected; a true +3 K innovation (1.5 σ_d) is kept."""
    positions = torch.tensor([[10.3, 20.7], [40.5, 5.25], [30.0, 30.0]])

    def stations(state):
        seen = Stations(state.new_zeros(3, 1), positions, [1], 5, (64, 64), 0.5, periodic="xy")
        offsets = torch.tensor([[15.0], [3.0], [0.0]], dtype=torch.float64)
        return [seen.replace_values(seen.operator(state) + offsets)]

    _, report = background_check(stations)
    assert report.rejected == {"stations": 1} and report.indices == {0: [(0, 0)]}
    (rejection,) = report.rejections
    # σ_d² = 0.25 + (A B Aᵀ)_ii, at most 0.25 + 4 (interpolation averages correlated errors)
    assert 15.0 / np.sqrt(0.25 + 4.0) <= rejection.departure < 15.0 / 0.5


def test_satellite_channels_and_gridded_values_are_checked_value_by_value():
    """One satellite channel in one footprint and one gridded value 20 K off: exactly those two
    values are rejected, their neighbours (same footprint, other channels) kept."""
    weights = gaussian_weighting_functions([850.0, 700.0, 500.0, 300.0, 200.0], [700, 500, 300])

    def observations(state):
        satellite = Satellite(state.new_zeros(3, 16, 16), weights, 4, (64, 64), 1.0)
        gridded = Gridded(state.new_zeros(5, 8, 8), 4, 2, (64, 64), 0.5)
        out = []
        for o, index in ((satellite, (1, 3, 7)), (gridded, (4, 2, 2))):
            values = o.operator(state)
            values[index] += 20.0
            out.append(o.replace_values(values))
        return out

    _, report = background_check(observations)
    assert report.rejected == {"satellite": 1, "gridded": 1}
    assert report.indices == {0: [(1, 3, 7)], 1: [(4, 2, 2)]}
    assert report.checked == {"satellite": 3 * 16 * 16, "gridded": 5 * 8 * 8}


@pytest.mark.parametrize("kind", ["spectral", "diagonal"])
def test_the_background_variance_is_the_diagonal_of_a_b_a_transpose(kind):
    """``background_error_variance`` is ``diag(A B Aᵀ)`` of the dense matrices, to round-off:
    stations between grid nodes (bilinear, wrapping), a satellite footprint (weighted vertical
    sum, block mean), gridded blocks; a spectral B (lag covariance) and a diagonal one
    (``apply``)."""
    levels, grid = 3, (8, 8)
    generator = torch.Generator().manual_seed(0)
    if kind == "spectral":
        covariance = SpectralCovariance.from_length_scale(
            torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), 1.5, grid, levels=levels
        )
    else:
        std = 0.5 + torch.rand(levels, *grid, generator=generator, dtype=torch.float64)
        covariance = DiagonalCovariance.from_std(std, levels, grid)
    state = torch.zeros(levels, *grid, dtype=torch.float64)
    observations = [
        Stations(
            torch.zeros(3, 2),
            torch.tensor([[0.0, 0.0], [7.5, 3.25], [2.6, 6.9]]),
            [0, 2],
            levels,
            grid,
            0.5,
            periodic="xy",
        ),
        Satellite(
            torch.zeros(2, 4, 4),
            gaussian_weighting_functions([850.0, 500.0, 200.0], [700.0, 300.0]),
            2,
            grid,
            1.0,
        ),
        Gridded(torch.zeros(levels, 2, 2), 2, 2, grid, 0.3),
    ]
    dense = covariance.to_dense()
    for o in observations:
        o = o.to(dtype=torch.float64)
        rows = torch.autograd.functional.jacobian(o.operator, state).reshape(o.values.numel(), -1)
        expected = torch.einsum("ij,jk,ik->i", rows, dense, rows).reshape(o.values.shape)
        torch.testing.assert_close(
            background_error_variance(o, covariance, state), expected, rtol=1e-10, atol=1e-12
        )


def test_without_a_background_values_are_checked_against_the_climatology(testbed):
    """No background: a station is compared with the level mean, its σ_d from the level std (the
    model's training climatology); 1e6 K is rejected, a value 3 std off kept."""
    pipe, _, stations, _ = testbed
    config = pipe.autoencoder.config
    mean = torch.tensor(config.level_mean)[list(stations.levels)]
    spread = torch.tensor(config.level_std)[list(stations.levels)]
    values = (mean + 3 * spread).expand_as(stations.values).clone()
    values[0, 0] = 1e6
    (_, report) = quality_control(
        [stations.replace_values(values)], level_mean=config.level_mean, level_std=config.level_std
    )
    assert report.indices == {0: [(0, 0)]} and report.rejections[0].reference == "climatology"


def test_with_qc_off_an_absurd_value_raises_and_a_plausible_one_stays_in_range(testbed, caplog):
    """qc=False: 1e6 K is refused before any compute, naming the observation and qc=True; +15 K at
    one station is assimilated and the analysis stays finite, within the out-of-range warning's
    bounds (level mean ± 8 level std), without that warning."""
    pipe, _, stations, _ = testbed
    with pytest.raises(ValueError, match=r"observations\[0\] \('stations'\).*qc=True"):
        assimilate(testbed, [with_value(stations, (5, 1), 1e6)], qc=False)
    gross = with_value(stations, (5, 1), float(stations.values[5, 1]) + 15.0)
    with caplog.at_level(logging.WARNING):
        out = assimilate(testbed, [gross], steps=8, qc=False)
    assert out.quality_control is None
    config = pipe.autoencoder.config
    mean = torch.tensor(config.level_mean).reshape(1, 1, -1, 1, 1)
    spread = torch.tensor(config.level_std).reshape(1, 1, -1, 1, 1)
    assert torch.isfinite(out.members).all()
    assert float(((out.members - mean) / spread).abs().max()) < 8.0
    assert not [r for r in caplog.records if "leaves the range" in r.getMessage()]


def test_nothing_to_assimilate_raises(testbed):
    """No background and no valid value (all NaN), or every value rejected: a ValueError naming
    `observations`, not a prior draw."""
    pipe, _, stations, _ = testbed
    missing = stations.replace_values(torch.full_like(stations.values, float("nan")))
    with pytest.raises(ValueError, match=r"Nothing to assimilate.*`observations`.*no valid value"):
        pipe(observations=[missing], num_members=1, num_inference_steps=1)
    absurd = stations.replace_values(torch.full_like(stations.values, 1e6))
    with pytest.raises(ValueError, match=r"quality control rejected every value of `observations`"):
        pipe(observations=[absurd], num_members=1, num_inference_steps=1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(qc_threshold=0.0), "qc_threshold"),
        (dict(qc_threshold=float("nan")), "qc_threshold"),
        (dict(qc_threshold="5"), "qc_threshold"),
        (dict(qc="yes"), "`qc`"),
    ],
)
def test_qc_arguments_are_checked(testbed, change, match):
    _, _, stations, _ = testbed
    with pytest.raises(ValueError, match=match):
        assimilate(testbed, [stations], **change)


def test_the_cli_reports_rejections_in_the_file_and_the_summary(tmp_path, capsys):
    """``slams assimilate``: a 1e6 K station value is rejected; the file's attributes count it per
    modality and locate it (time, grid position, level), the printed summary counts it; with
    ``--no-qc`` the run stops with the error naming qc=True."""
    run = simulate_dataset(1, 5, seed=3, spinup=50, splits=(0, 0, 1), store_pv="none")
    truth = run["t"].isel(trajectory=0).drop_vars(["trajectory", "split"])
    noise = np.random.default_rng(0).standard_normal(truth.shape).astype(np.float32)
    background = (truth + noise).assign_attrs(truth.attrs)
    xr.Dataset({"t": background}).to_netcdf(tmp_path / "background.nc")
    generator = torch.Generator().manual_seed(0)
    state = torch.from_numpy(truth.values)
    first = station_network(state[0], 16, periodic="xy", generator=generator)
    stations = [
        station_network(
            state[t],
            None,
            positions=first.positions,
            periodic="xy",
            time_index=t,
            generator=generator,
        )
        for t in range(5)
    ]
    stations[3] = with_value(stations[3], (4, 2), 1e6)
    station_table(stations, truth).to_csv(tmp_path / "stations.csv", index=False)
    argv = [
        "assimilate",
        "--background", str(tmp_path / "background.nc"),
        "--stations", str(tmp_path / "stations.csv"),
        "--background-error-std", "1.0",
        "--periodic", "xy",
        "--members", str(MEMBERS),
        "--steps", "2",
        "--out", str(tmp_path / "analysis.nc"),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["qc_rejected"] == {"stations": 1}
    attrs = xr.load_dataset(tmp_path / "analysis.nc").attrs
    assert attrs["slams_qc"] == "on" and attrs["slams_qc_threshold"] == QC_THRESHOLD
    assert attrs["slams_qc_rejected_stations"] == 1
    assert attrs["slams_qc_checked_stations"] == 5 * 16 * 5
    (rejection,) = json.loads(attrs["slams_qc_rejections"])
    assert rejection["time_index"] == 3 and rejection["level"] == 2 and rejection["value"] == 1e6
    np.testing.assert_allclose(rejection["position"], first.positions[4].tolist(), atol=1e-6)
    no_qc = [*argv[:-3], "--out", str(tmp_path / "off.nc"), "--no-progress", "--no-qc"]
    assert main(no_qc) == 2
    assert "qc=True" in capsys.readouterr().err
