import math

import pytest
import torch

from slams_diffusers.data.observing import (
    MODALITIES,
    cloud_mask,
    degraded_field,
    random_observations,
    satellite_channels,
    station_network,
    station_positions,
)
from slams_diffusers.observations import (
    Gridded,
    Satellite,
    Stations,
    gaussian_weighting_functions,
)

PRESSURES = [850.0, 700.0, 500.0, 300.0, 200.0]
P = PRESSURES


def _testbed(shape=(64, 64), dtype=torch.float64):
    """A smooth testbed-like state: lapse-rate mean profile 288 → 220 K plus a few waves."""
    mean = torch.linspace(288.0, 220.0, len(PRESSURES), dtype=dtype)
    if len(shape) == 1:
        x = torch.arange(shape[0], dtype=dtype) / shape[0]
        y = torch.zeros_like(x)
    else:
        y, x = torch.meshgrid(
            torch.arange(shape[0], dtype=dtype) / shape[0],
            torch.arange(shape[1], dtype=dtype) / shape[1],
            indexing="ij",
        )
    levels = []
    for lev in range(len(PRESSURES)):
        wave = (
            4.0 * torch.sin(2 * math.pi * ((lev + 1) * x + 2 * y))
            + 2.0 * torch.cos(2 * math.pi * (3 - lev % 2) * y + 0.3 * lev)
            + 1.0 * torch.sin(2 * math.pi * (5 * x - 3 * y))
        )
        levels.append(mean[lev] + wave)
    return torch.stack(levels)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _check_residuals(obs, truth, noise_std, min_count=5000, rel=0.04):
    """``values - operator(truth)`` on observed entries: std ≈ noise_std, mean ≈ 0."""
    res = (obs.values - obs.operator(truth))[obs.mask].double()
    n = res.numel()
    assert n >= min_count
    assert abs(res.std().item() / noise_std - 1) < rel, (res.std().item(), noise_std)
    assert abs(res.mean().item()) < 4 * noise_std / math.sqrt(n)


def _same(a, b):
    return (
        type(a) is type(b)
        and a.values.shape == b.values.shape
        and torch.equal(a.values, b.values)
        and torch.equal(a.mask, b.mask)
    )


# ----------------------------------------------------------------------------- stations


def test_station_positions_in_range():
    for grid in [(64, 64), (16, 48), (100,)]:
        for layout in ["uniform", "clustered"]:
            for periodic in [False, "x", (True,) * len(grid)]:
                pos = station_positions(
                    grid, 3000, layout, spread=10.0, periodic=periodic, generator=_gen(0)
                )
                assert pos.shape == (3000, len(grid))
                per = (
                    (False,) * (len(grid) - 1) + (periodic == "x",)
                    if not isinstance(periodic, tuple)
                    else periodic
                )
                for a, (n, p) in enumerate(zip(grid, per, strict=True)):
                    assert bool((pos[:, a] >= 0).all())
                    assert bool((pos[:, a] < n).all()) if p else bool((pos[:, a] <= n - 1).all())
                # the Stations type accepts them
                Stations(torch.zeros(3000, 1), pos, [0], 5, grid, 0.5, periodic=periodic)


def _mean_nn_distance(pos):
    d = torch.cdist(pos, pos)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.mean().item()


def test_clustered_layout_is_more_clustered():
    uni = station_positions((64, 64), 300, "uniform", generator=_gen(0))
    clu = station_positions((64, 64), 300, "clustered", clusters=4, generator=_gen(0))
    assert _mean_nn_distance(clu) < 0.6 * _mean_nn_distance(uni)
    # tighter blobs, closer neighbours
    wide = station_positions((64, 64), 300, "clustered", spread=8.0, generator=_gen(0))
    tight = station_positions((64, 64), 300, "clustered", spread=1.0, generator=_gen(0))
    assert _mean_nn_distance(tight) < _mean_nn_distance(wide)


def test_station_network_residuals_2d_and_1d():
    truth = _testbed()
    st = station_network(truth, 2000, noise_std=0.7, generator=_gen(1))
    assert isinstance(st, Stations) and st.values.shape == (2000, 5)
    assert st.levels == (0, 1, 2, 3, 4)
    _check_residuals(st, truth, 0.7)

    st = station_network(
        truth,
        2500,
        [0, 2, 4],
        noise_std=1.5,
        layout="clustered",
        periodic=(True, True),
        generator=_gen(2),
    )
    assert st.levels == (0, 2, 4)
    _check_residuals(st, truth, 1.5)

    truth1 = _testbed((256,))
    st = station_network(truth1, 2000, noise_std=0.3, periodic=True, generator=_gen(3))
    assert st.positions.shape == (2000, 1) and st.spatial_dims == 1
    _check_residuals(st, truth1, 0.3)


def test_station_network_per_level_noise_and_pressures():
    truth = _testbed()
    std = torch.tensor([0.5, 2.0])
    st = station_network(
        truth,
        5000,
        pressures=[850.0, 300.0],
        model_pressures=PRESSURES,
        noise_std=std,
        generator=_gen(4),
    )
    assert st.levels == (0, 3)
    res = st.values - st.operator(truth)
    for j in range(2):
        assert abs(res[:, j].std().item() / std[j].item() - 1) < 0.04


def test_station_network_missing_fraction_and_fixed_positions():
    truth = _testbed()
    st = station_network(truth, 400, [1, 3], missing_fraction=0.25, generator=_gen(5))
    assert st.mask.numel() - st.num_observed == round(0.25 * 800)
    assert bool((st.values[~st.mask] == 0).all())
    _check_residuals(
        station_network(truth, 2000, missing_fraction=0.4, generator=_gen(6)), truth, 0.5
    )
    # the same network at a second time step
    st2 = station_network(truth, None, positions=st.positions, time_index=3, generator=_gen(7))
    assert torch.equal(st2.positions, st.positions) and st2.time_index == 3


def test_station_network_reproducible():
    truth = _testbed()

    def make(seed):
        return station_network(
            truth, 50, layout="clustered", missing_fraction=0.2, generator=_gen(seed)
        )

    a, b, c = make(0), make(0), make(1)
    assert _same(a, b) and torch.equal(a.positions, b.positions)
    assert not torch.equal(a.positions, c.positions)
    assert not torch.equal(a.values, c.values)


# ----------------------------------------------------------------------------- clouds


def test_cloud_mask_fraction_and_shape():
    for shape in [(64, 64), (32, 48), (200,)]:
        n = math.prod(shape)
        for frac in [0.0, 0.1, 0.5, 0.83, 1.0]:
            for periodic in [True, False]:
                m = cloud_mask(shape, frac, 3.0, periodic=periodic, generator=_gen(0))
                assert m.dtype == torch.bool and m.shape == shape
                assert abs(m.float().mean().item() - frac) <= 1 / n + 1e-12


def _neighbour_agreement(m):
    pairs = [m[:, 1:] == m[:, :-1], m[1:, :] == m[:-1, :]]
    return torch.cat([p.reshape(-1) for p in pairs]).float().mean().item()


def test_cloud_mask_correlation_length_changes_clustering():
    agree = []
    for length in [0.0, 1.0, 3.0, 8.0]:
        vals = [
            _neighbour_agreement(cloud_mask((64, 64), 0.5, length, generator=_gen(s)))
            for s in range(3)
        ]
        agree.append(sum(vals) / len(vals))
    assert abs(agree[0] - 0.5) < 0.03  # independent cells
    assert all(a < b for a, b in zip(agree, agree[1:], strict=False)), agree
    assert agree[-1] > 0.9
    # non-periodic edges do not wrap: left and right columns are not correlated
    m = cloud_mask((64, 64), 0.5, 8.0, periodic=False, generator=_gen(0))
    mp = cloud_mask((64, 64), 0.5, 8.0, periodic=True, generator=_gen(0))
    assert (mp[:, 0] == mp[:, -1]).float().mean() > 0.8
    assert (m[:, 0] == m[:, -1]).float().mean() < (mp[:, 0] == mp[:, -1]).float().mean()


def test_cloud_mask_reproducible():
    a = cloud_mask((32, 32), 0.4, 4.0, generator=_gen(0))
    b = cloud_mask((32, 32), 0.4, 4.0, generator=_gen(0))
    c = cloud_mask((32, 32), 0.4, 4.0, generator=_gen(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- satellite


def test_satellite_channels_residuals_and_clouds():
    truth = _testbed()
    peaks = [800.0, 600.0, 400.0, 250.0]
    sat = satellite_channels(truth, PRESSURES, peaks, 1, 0.8, generator=_gen(0))
    assert isinstance(sat, Satellite) and sat.values.shape == (4, 64, 64)
    assert sat.cloud_mask is None and bool(sat.mask.all())
    _check_residuals(sat, truth, 0.8)
    # weighting functions peak at the chosen levels
    assert sat.weights.argmax(dim=1).tolist() == [0, 1, 2, 3]

    sat = satellite_channels(truth, PRESSURES, peaks, 2, 1.2, cloud_fraction=0.3, generator=_gen(1))
    assert sat.values.shape == (4, 32, 32) and sat.cloud_mask.shape == (32, 32)
    assert abs(sat.cloud_mask.float().mean().item() - 0.3) < 1 / 1024 + 1e-12
    assert torch.equal(sat.mask, ~sat.cloud_mask.expand(4, 32, 32))
    assert bool((sat.values[~sat.mask] == 0).all())
    _check_residuals(sat, truth, 1.2, min_count=2800, rel=0.06)

    truth1 = _testbed((512,))
    sat = satellite_channels(
        truth1, PRESSURES, [700.0, 300.0], 4, 0.5, cloud_fraction=0.5, generator=_gen(2)
    )
    assert sat.values.shape == (2, 128) and sat.spatial_dims == 1
    res = (sat.values - sat.operator(truth1))[sat.mask]
    assert res.numel() == 128
    assert abs(res.std().item() / 0.5 - 1) < 0.2


def test_satellite_channels_float32_and_reproducible():
    truth = _testbed(dtype=torch.float32)
    kw = dict(cloud_fraction=0.4, correlation_length=8.0)
    a = satellite_channels(truth, PRESSURES, [700.0, 300.0], 4, 1.0, generator=_gen(0), **kw)
    b = satellite_channels(truth, PRESSURES, [700.0, 300.0], 4, 1.0, generator=_gen(0), **kw)
    c = satellite_channels(truth, PRESSURES, [700.0, 300.0], 4, 1.0, generator=_gen(1), **kw)
    assert a.values.dtype == torch.float32
    assert _same(a, b) and torch.equal(a.cloud_mask, b.cloud_mask)
    assert not torch.equal(a.cloud_mask, c.cloud_mask)
    assert not torch.equal(a.values, c.values)


# ----------------------------------------------------------------------------- gridded


def test_degraded_field_shapes():
    truth = _testbed()
    for r, g, expected in [(1, 1, (64, 64)), (4, 1, (16, 16)), (4, 3, (6, 6)), (8, 2, (4, 4))]:
        gr = degraded_field(truth, r, 0.5, g, generator=_gen(0))
        assert isinstance(gr, Gridded)
        assert gr.values.shape == (5, *expected)
        assert gr.coarsen == r and gr.subsample == g
        assert gr.to_grid()[0].shape == (5, 64 // r, 64 // r)
    gr = degraded_field(_testbed((96,)), 3, 0.5, 5, time_index=2, generator=_gen(0))
    assert gr.values.shape == (5, 7) and gr.time_index == 2


def test_degraded_field_residuals_and_reproducible():
    truth = _testbed()
    _check_residuals(degraded_field(truth, 1, 0.25, 1, generator=_gen(0)), truth, 0.25)
    _check_residuals(degraded_field(truth, 2, 2.0, 1, generator=_gen(1)), truth, 2.0)
    _check_residuals(degraded_field(_testbed((4096,)), 2, 1.0, 1, generator=_gen(2)),
                     _testbed((4096,)), 1.0)  # fmt: skip
    a = degraded_field(truth, 2, 1.0, 2, generator=_gen(3))
    b = degraded_field(truth, 2, 1.0, 2, generator=_gen(3))
    c = degraded_field(truth, 2, 1.0, 2, generator=_gen(4))
    assert _same(a, b) and not torch.equal(a.values, c.values)


# ----------------------------------------------------------------------------- the mix


def _describe(obs_list):
    return [(o.modality, tuple(o.values.shape), o.num_observed) for o in obs_list]


def test_random_observations_seeded_and_varied():
    truth = _testbed()
    a = random_observations(truth, _gen(0), periodic=(True, True), time_index=1)
    b = random_observations(truth, _gen(0), periodic=(True, True), time_index=1)
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert all(o.time_index == 1 for o in a)

    descriptions, lengths = set(), set()
    for seed in range(20):
        obs = random_observations(truth, _gen(seed))
        mods = [o.modality for o in obs]
        assert 1 <= len(obs) <= 3 and set(mods) <= set(MODALITIES)
        assert len(set(mods)) == len(mods)
        assert mods == [m for m in MODALITIES if m in mods]  # in the order of modalities
        for o in obs:
            o.check_state(5, (64, 64))
        descriptions.add(tuple(_describe(obs)))
        lengths.add(len(obs))
    assert len(descriptions) == 20  # every draw differs
    assert min(lengths) < 3  # modalities get dropped


def test_random_observations_residuals_pooled():
    """Across the mix, ``(values - operator(truth)) / noise_std`` is standard normal."""
    truth = _testbed()
    z = []
    for seed in range(12):
        for o in random_observations(truth, _gen(100 + seed), min_modalities=3):
            z.append(((o.values - o.operator(truth)) / o.noise_std)[o.mask].reshape(-1))
    z = torch.cat(z)
    assert z.numel() > 5000
    assert abs(z.std().item() - 1) < 0.04 and abs(z.mean().item()) < 4 / math.sqrt(z.numel())


def test_random_observations_modality_control_and_1d():
    truth = _testbed()
    assert random_observations(truth, _gen(0), keep_probability=0.0, min_modalities=0) == []
    obs = random_observations(truth, _gen(0), keep_probability=0.0, min_modalities=1)
    assert len(obs) == 1
    obs = random_observations(truth, _gen(0), min_modalities=3)
    assert [o.modality for o in obs] == list(MODALITIES)
    obs = random_observations(truth, _gen(0), modalities=("stations",), keep_probability=1.0)
    assert [o.modality for o in obs] == ["stations"]
    # grids that only some footprints divide
    truth = _testbed((24, 40))
    for seed in range(5):
        for o in random_observations(truth, _gen(seed), min_modalities=3):
            o.check_state(5, (24, 40))
    truth1 = _testbed((128,))
    obs = random_observations(truth1, _gen(0), model_pressures=PRESSURES, min_modalities=3)
    assert [o.spatial_dims for o in obs] == [1, 1, 1]


def test_random_observations_fixed_satellite_instrument():
    """With ``satellite_peaks`` every satellite draw has those channels (a fixed encoder input)."""
    truth = _testbed()
    peaks = [700.0, 500.0, 300.0]
    expected = gaussian_weighting_functions(torch.tensor(PRESSURES), torch.tensor(peaks), 0.5)
    footprints = set()
    for seed in range(8):
        obs = random_observations(
            truth,
            _gen(seed),
            modalities=("satellite",),
            model_pressures=PRESSURES,
            satellite_peaks=peaks,
            satellite_width=(0.5, 0.5),
        )
        (sat,) = obs
        assert sat.values.shape[0] == 3
        torch.testing.assert_close(sat.weights, expected.to(sat.weights.dtype))
        footprints.add(sat.footprint)
    assert len(footprints) > 1  # the rest of the degradation still varies
    with pytest.raises(ValueError, match="satellite_peaks"):
        random_observations(truth, _gen(0), satellite_peaks=[])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda t: station_positions((64, 64), 0), "n"),
        (lambda t: station_positions((64, 64), 5, "grid"), "layout"),
        (lambda t: station_positions((64, 64), 5, "clustered", spread=-1.0), "spread"),
        (lambda t: station_positions((64, 64), 5, "clustered", clusters=0), "clusters"),
        (lambda t: station_positions((1, 2, 3), 5), "grid_shape"),
        (lambda t: station_positions((64, 64), 5, periodic=(True,)), "periodic"),
        (lambda t: station_network(t[None], 5), "truth"),
        (lambda t: station_network(t[0, 0], 5), "truth"),
        (lambda t: station_network(t.clone().fill_(float("nan")), 5), "truth"),
        (lambda t: station_network(t, 5, missing_fraction=1.5), "missing_fraction"),
        (lambda t: station_network(t, 5, pressures=[500.0]), "model_pressures"),
        (lambda t: station_network(t, 5, pressures=[5], model_pressures=[1, 2]), "model_pressures"),
        (lambda t: station_network(t, 5, pressures=[450.0], model_pressures=P), "pressures"),
        (lambda t: station_network(t, 5, [0], pressures=[500.0], model_pressures=P), "levels"),
        (lambda t: station_network(t, 5, [7]), "levels"),
        (lambda t: station_network(t, 5, noise_std=-1.0), "noise_std"),
        (lambda t: station_network(t, None), "n"),
        (lambda t: station_network(t, 3, positions=torch.zeros(4, 2)), "n"),
        (lambda t: cloud_mask((64, 64), -0.1), "cloud_fraction"),
        (lambda t: cloud_mask((64, 64), 0.5, -2.0), "correlation_length"),
        (lambda t: cloud_mask((0, 64), 0.5), "shape"),
        (lambda t: cloud_mask((64, 64), 0.5, periodic=(True, False, True)), "periodic"),
        (lambda t: satellite_channels(t, PRESSURES[:3], [500.0]), "model_pressures"),
        (lambda t: satellite_channels(t, PRESSURES, [500.0], 3), "footprint"),
        (lambda t: satellite_channels(t, PRESSURES, [500.0], 0), "footprint"),
        (lambda t: satellite_channels(t, PRESSURES, [-5.0]), "peak_pressures"),
        (lambda t: satellite_channels(t, PRESSURES, [500.0], width=0.0), "width"),
        (lambda t: satellite_channels(t, PRESSURES, [500.0], cloud_fraction=2), "cloud_fraction"),
        (lambda t: degraded_field(t, 0), "coarsen"),
        (lambda t: degraded_field(t, 3), "coarsen"),
        (lambda t: degraded_field(t, 2, 1.0, 0), "sparsity"),
        (lambda t: degraded_field(t, 2, float("nan")), "noise_std"),
        (lambda t: random_observations(t, modalities=("radar",)), "modalities"),
        (lambda t: random_observations(t, keep_probability=2.0), "keep_probability"),
        (lambda t: random_observations(t, min_modalities=4), "min_modalities"),
        (lambda t: random_observations(t, station_count=(10, 5)), "station_count"),
        (lambda t: random_observations(t, station_noise=(0.0, 1.0)), "station_noise"),
        (lambda t: random_observations(t, cloud_fraction=(0.2, 1.5)), "cloud_fraction"),
        (lambda t: random_observations(t, satellite_footprints=()), "satellite_footprints"),
        (lambda t: random_observations(t, gridded_sparsity=(0,)), "gridded_sparsity"),
        (lambda t: random_observations(t, model_pressures=[1.0, 2.0]), "model_pressures"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, name):
    truth = _testbed((16, 16))
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call(truth)
