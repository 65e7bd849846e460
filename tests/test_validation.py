"""The shared argument checks: one meaning of ``periodic`` across the package."""

import pytest
import torch

from slams_diffusers.baselines.localization import grid_distance
from slams_diffusers.observations import Stations, station_periodic_axes
from slams_diffusers.validation import as_grid_shape, as_int, periodic_axes


def test_periodic_axes_forms():
    assert periodic_axes(True, 2) == (True, True)
    assert periodic_axes(False, 1) == (False,)
    assert periodic_axes("x", 2) == (False, True)
    assert periodic_axes("xy", 2) == periodic_axes(("y", "x"), 2) == (True, True)
    assert periodic_axes("none", 2) == (False, False)
    assert periodic_axes((True, False), 2) == (True, False)
    for bad in [(True,), 3, (True, False, True)]:
        with pytest.raises(ValueError, match="periodic: expected a bool or 2 bools"):
            periodic_axes(bad, 2)
    with pytest.raises(ValueError, match="axis names"):
        periodic_axes("z", 2)


def test_stations_take_axis_names_and_keep_the_old_bool_with_a_warning():
    assert station_periodic_axes("xy", 2) == (True, True)
    assert station_periodic_axes(True, 1) == (True,)  # x only = every axis: no warning
    with pytest.warns(FutureWarning, match="pass periodic='x' .* or periodic='xy'"):
        assert station_periodic_axes(True, 2) == (False, True)  # the old form: x only
    pos = [[3.5, 7.5]]
    named = Stations(torch.zeros(1, 1), pos, [0], 2, (4, 8), 0.1, periodic="xy")
    tupled = Stations(torch.zeros(1, 1), pos, [0], 2, (4, 8), 0.1, periodic=(True, True))
    assert named.periodic == tupled.periodic == (True, True)  # stored one bool per axis
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(named.operator(x), tupled.operator(x))
    with pytest.warns(FutureWarning):
        old = Stations(torch.zeros(1, 1), [[2.5, 7.5]], [0], 2, (4, 8), 0.1, periodic=True)
    longitude = Stations(torch.zeros(1, 1), [[2.5, 7.5]], [0], 2, (4, 8), 0.1, periodic="x")
    assert old.periodic == longitude.periodic == (False, True)
    torch.testing.assert_close(old.operator(x), longitude.operator(x))
    with pytest.raises(ValueError, match=r"positions.*\[0, 3\]"):  # y does not wrap
        Stations(torch.zeros(1, 1), [[3.5, 1.0]], [0], 2, (4, 8), 0.1, periodic="x")


def test_grid_distance_reads_axis_names():
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[7.0, 7.0]])
    only_x = grid_distance(a, b, (8, 8), "x")
    torch.testing.assert_close(only_x, torch.tensor([[(49.0 + 1.0) ** 0.5]]))
    torch.testing.assert_close(grid_distance(a, b, (8, 8), True), grid_distance(a, b, (8, 8), "xy"))


def test_integer_checks():
    assert as_int(3, "n", minimum=1) == 3
    with pytest.raises(ValueError, match="n: expected an int, got a bool"):
        as_int(True, "n")
    with pytest.raises(ValueError, match="grid_shape: expected 1 or 2 spatial dimensions"):
        as_grid_shape((2, 2, 2))
