import dataclasses

import pytest
import torch
import torch.nn.functional as F

from slams_diffusers import SLAMSPipeline, VPPredictorCorrectorScheduler
from slams_diffusers.guidance.routes import resolve_routes
from slams_diffusers.linear_update import linear_gaussian_update
from slams_diffusers.models.gaussian_score import GaussianScoreModel
from slams_diffusers.observations import (
    Background,
    Gridded,
    Observation,
    Satellite,
    Stations,
    Transformed,
    gaussian_weighting_functions,
)
from slams_diffusers.testing import squared_exponential_covariance

PRESSURES = [850.0, 700.0, 500.0, 300.0, 200.0]


def _state(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return 250.0 + 10.0 * torch.randn(*shape, generator=g, dtype=dtype)


def _stations_2d(n=4, levels=(0, 2), grid=(8, 12), **kw):
    g = torch.Generator().manual_seed(1)
    pos = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [grid[0] - 1, grid[1] - 1], dtype=torch.float64
    )
    return Stations(
        values=torch.zeros(n, len(levels)),
        positions=pos,
        levels=levels,
        num_levels=5,
        grid_shape=grid,
        noise_std=0.5,
        **kw,
    )


def _satellite(grid=(8, 12), footprint=4, channels=3, levels=5):
    w = gaussian_weighting_functions(PRESSURES[:levels], [800.0, 500.0, 250.0][:channels])
    coarse = tuple(n // footprint for n in grid)
    return Satellite(
        values=torch.zeros(channels, *coarse),
        weights=w,
        footprint=footprint,
        grid_shape=grid,
        noise_std=1.0,
    )


def _all_2d():
    return [
        _stations_2d(),
        _satellite(),
        Gridded(values=torch.zeros(5, 3, 2), coarsen=2, subsample=2, grid_shape=(12, 8),
                noise_std=0.3),
        Background(values=torch.zeros(5, 8, 12), noise_std=1.0),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- shapes


def test_operator_shapes_2d_with_batch_dims():
    st = _stations_2d()
    assert st.operator(_state(2, 3, 5, 8, 12)).shape == (2, 3, 4, 2)
    sat = _satellite()
    assert sat.operator(_state(2, 5, 8, 12)).shape == (2, 3, 2, 3)
    gr = Gridded(torch.zeros(5, 3, 2), coarsen=2, subsample=2, grid_shape=(12, 8), noise_std=1.0)
    assert gr.operator(_state(7, 5, 12, 8)).shape == (7, 5, 3, 2)
    bg = Background(torch.zeros(5, 8, 12), noise_std=1.0)
    assert bg.operator(_state(2, 1, 5, 8, 12)).shape == (2, 1, 5, 8, 12)
    for obs in _all_2d():
        assert isinstance(obs, Observation)
        assert dataclasses.is_dataclass(obs)
        assert obs.mask.dtype == torch.bool and obs.mask.shape == obs.values.shape
        assert obs.noise_variance().shape == obs.values.shape
        assert obs.spatial_dims == 2
        # unbatched state gives exactly values' shape
        x = _state(obs.num_levels, *obs.grid_shape)
        assert obs.operator(x).shape == obs.values.shape
        obs.check_state(obs.num_levels, obs.grid_shape)


def test_operator_shapes_1d_with_batch_dims():
    nx, L = 16, 5
    st = Stations(torch.zeros(3, 1), torch.tensor([[0.0], [4.5], [15.0]]), [3], L, (nx,), 0.1)
    assert st.operator(_state(2, L, nx)).shape == (2, 3, 1)
    w = gaussian_weighting_functions(PRESSURES, [700.0, 300.0])
    sat = Satellite(torch.zeros(2, 4), w, footprint=4, grid_shape=(nx,), noise_std=1.0)
    assert sat.operator(_state(3, 2, L, nx)).shape == (3, 2, 2, 4)
    gr = Gridded(torch.zeros(L, 3), coarsen=2, subsample=3, grid_shape=(nx,), noise_std=1.0)
    assert gr.operator(_state(4, L, nx)).shape == (4, L, 3)
    bg = Background(torch.zeros(L, nx), noise_std=1.0)
    assert bg.operator(_state(4, L, nx)).shape == (4, L, nx)
    for obs in (st, sat, gr, bg):
        assert obs.spatial_dims == 1
        v, m = obs.to_grid()
        assert v.shape == m.shape and v.ndim == 2


def test_operator_rejects_wrong_state_shape():
    st = _stations_2d()
    with pytest.raises(ValueError, match="state"):
        st.operator(_state(2, 4, 8, 12))


# ----------------------------------------------------------------------------- stations


def test_bilinear_exact_on_linear_field_and_grid_points():
    ny, nx, L = 6, 9, 5
    yy, xx = torch.meshgrid(
        torch.arange(ny, dtype=torch.float64), torch.arange(nx, dtype=torch.float64), indexing="ij"
    )
    lev = torch.arange(L, dtype=torch.float64)[:, None, None]
    field = 200.0 + 3.0 * lev + 1.5 * yy - 0.7 * xx + 0 * lev  # (L, ny, nx), linear
    pos = torch.tensor([[0.0, 0.0], [2.25, 3.75], [5.0, 8.0], [4.5, 0.1], [5.0, 2.3]])
    st = Stations(torch.zeros(5, 2), pos, [1, 4], L, (ny, nx), 0.1)
    out = st.operator(field)
    p = pos.double()
    expected = torch.stack(
        [200.0 + 3.0 * k + 1.5 * p[:, 0] - 0.7 * p[:, 1] for k in (1, 4)], dim=-1
    )
    torch.testing.assert_close(out, expected)
    # integer positions give the grid value of an arbitrary field
    x = _state(L, ny, nx)
    ipos = torch.tensor([[0, 0], [3, 7], [5, 8], [2, 0]], dtype=torch.float64)
    st = Stations(torch.zeros(4, 3), ipos, [0, 2, 4], L, (ny, nx), 0.1)
    iy, ix = ipos.long().T
    torch.testing.assert_close(st.operator(x), x[[0, 2, 4]][:, iy, ix].T)


def test_linear_interpolation_1d():
    x = _state(3, 10)
    st = Stations(torch.zeros(2, 1), torch.tensor([[2.5], [9.0]]), [1], 3, (10,), 0.1)
    out = st.operator(x)
    torch.testing.assert_close(out[:, 0], torch.stack([(x[1, 2] + x[1, 3]) / 2, x[1, 9]]))


def test_periodic_wrap():
    ny, nx, L = 4, 8, 2
    x = _state(L, ny, nx)
    pos = torch.tensor([[1.0, 7.5], [2.0, 7.25]])
    with pytest.raises(ValueError, match="positions"):
        Stations(torch.zeros(2, 1), pos, [1], L, (ny, nx), 0.1)  # x > nx - 1 without periodic
    st = Stations(torch.zeros(2, 1), pos, [1], L, (ny, nx), 0.1, periodic="x")
    out = st.operator(x)[:, 0]
    torch.testing.assert_close(out[0], 0.5 * x[1, 1, 7] + 0.5 * x[1, 1, 0])
    torch.testing.assert_close(out[1], 0.75 * x[1, 2, 7] + 0.25 * x[1, 2, 0])
    # periodic on x only: y must stay within [0, ny - 1]
    with pytest.raises(ValueError, match="positions"):
        Stations(torch.zeros(1, 1), [[3.5, 1.0]], [0], L, (ny, nx), 0.1, periodic="x")
    # doubly periodic
    st2 = Stations(torch.zeros(1, 1), [[3.5, 1.0]], [0], L, (ny, nx), 0.1, periodic=(True, True))
    torch.testing.assert_close(st2.operator(x)[0, 0], 0.5 * (x[0, 3, 1] + x[0, 0, 1]))
    # nearest cell wraps in to_grid
    _, m = st.to_grid()
    assert m[1, 1, 0] == 1 and m[1, 2, 7] == 1  # 7.5 rounds to 8 -> 0; 7.25 -> 7


def test_stations_to_grid():
    pos = torch.tensor([[1.2, 2.9], [0.8, 3.1], [3.0, 0.0], [2.0, 2.0]])
    vals = torch.tensor([[1.0, 10.0], [3.0, float("nan")], [5.0, 6.0], [7.0, 8.0]])
    mask = torch.tensor([[True, True], [True, True], [True, True], [False, True]])
    st = Stations(vals, pos, [0, 3], 4, (4, 5), 0.1, mask=mask)
    v, m = st.to_grid()
    assert v.shape == m.shape == (4, 4, 5)
    assert m.dtype == v.dtype
    assert m.sum() == 5
    # stations 0 and 1 share cell (1, 3): mean on level 0, only station 0 on level 3
    assert v[0, 1, 3] == 2.0 and m[0, 1, 3] == 1
    assert v[3, 1, 3] == 10.0 and m[3, 1, 3] == 1
    assert v[0, 3, 0] == 5.0 and v[3, 3, 0] == 6.0
    # station 3 masked on level 0, observed on level 3
    assert m[0, 2, 2] == 0 and v[0, 2, 2] == 0
    assert m[3, 2, 2] == 1 and v[3, 2, 2] == 8.0
    assert m[1].sum() == 0 and m[2].sum() == 0  # levels not observed


def test_from_pressures():
    st = Stations.from_pressures(
        torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [2.0, 3.0]]), pressures=[500.0, 200],
        model_pressures=PRESSURES, grid_shape=(4, 4), noise_std=0.5,
    )  # fmt: skip
    assert st.levels == (2, 4) and st.num_levels == 5
    with pytest.raises(ValueError, match="pressures"):
        Stations.from_pressures(
            torch.zeros(1, 1), [[1.0, 1.0]], pressures=[600.0], model_pressures=PRESSURES,
            grid_shape=(4, 4), noise_std=0.5,
        )  # fmt: skip


# ----------------------------------------------------------------------------- satellite


def test_satellite_operator_matches_einsum_and_avg_pool():
    sat = _satellite(grid=(8, 12), footprint=4)
    x = _state(2, 5, 8, 12)
    w = sat.weights.double()
    expected = F.avg_pool2d(torch.einsum("cl,blyx->bcyx", w, x), 4)
    torch.testing.assert_close(sat.operator(x), expected)
    # weights are normalised on construction, without touching the caller's tensor
    raw = torch.tensor([[1.0, 1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0, 1.0]])
    raw0 = raw.clone()
    s2 = Satellite(torch.zeros(2, 2, 3), raw, 4, (8, 12), 1.0)
    torch.testing.assert_close(s2.weights.sum(-1), torch.ones(2))
    assert torch.equal(raw, raw0)
    # footprint 1: pure vertical weighting
    s1 = Satellite(torch.zeros(2, 8, 12), raw, 1, (8, 12), 1.0)
    torch.testing.assert_close(
        s1.operator(x[0]), torch.einsum("cl,lyx->cyx", s2.weights.double(), x[0])
    )


def test_gaussian_weighting_functions():
    w = gaussian_weighting_functions(PRESSURES, [850.0, 300.0], width=0.3)
    assert w.shape == (2, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    assert w[0].argmax() == 0 and w[1].argmax() == 3


def test_satellite_cloud_mask_and_to_grid():
    sat = _satellite()
    cloud = torch.zeros(2, 3, dtype=torch.bool)
    cloud[0, 1] = True
    vals = torch.arange(18.0).reshape(3, 2, 3)
    s = Satellite(vals, sat.weights, 4, (8, 12), 1.0, cloud_mask=cloud)
    v, m = s.to_grid()
    assert v.shape == m.shape == (3, 2, 3)
    assert (m[:, 0, 1] == 0).all() and (v[:, 0, 1] == 0).all()
    assert m.sum() == 15
    assert torch.equal(v[:, 1], vals[:, 1])


# ----------------------------------------------------------------------------- gridded


def test_gridded_operator_and_to_grid():
    x = _state(5, 12, 8)
    gr = Gridded(torch.zeros(5, 3, 2), coarsen=2, subsample=2, grid_shape=(12, 8), noise_std=1.0)
    out = gr.operator(x)
    # hand check: coarse cell (2, 2) of the 6x4 coarse grid is out[..., 1, 1]
    torch.testing.assert_close(out[:, 1, 1], x[:, 4:6, 4:6].mean(dim=(-1, -2)))
    torch.testing.assert_close(out[:, 2, 0], x[:, 8:10, 0:2].mean(dim=(-1, -2)))
    torch.testing.assert_close(out, F.avg_pool2d(x, 2)[..., ::2, ::2])
    gv = Gridded(out, 2, 2, (12, 8), 1.0)
    v, m = gv.to_grid()
    assert v.shape == m.shape == (5, 6, 4)
    assert m.sum() == 5 * 3 * 2
    assert torch.equal(m[:, ::2, ::2], torch.ones(5, 3, 2, dtype=m.dtype))
    torch.testing.assert_close(v[:, ::2, ::2], out.to(v.dtype))
    assert (v[:, 1::2] == 0).all()
    # odd coarse shape: ceil(5 / 2) = 3
    g1 = Gridded(torch.zeros(2, 3), coarsen=3, subsample=2, grid_shape=(15,), noise_std=1.0)
    assert g1.operator(_state(2, 15)).shape == (2, 3)


def test_background():
    x = _state(5, 8, 12)
    bg = Background(x.clone(), noise_std=torch.linspace(0.5, 1.5, 5)[:, None, None])
    assert bg.operator(x) is x or torch.equal(bg.operator(x), x)
    v, m = bg.to_grid()
    assert torch.equal(v, x) and bool((m == 1).all())
    torch.testing.assert_close(
        bg.noise_variance()[:, 0, 0], torch.linspace(0.5, 1.5, 5, dtype=x.dtype) ** 2
    )


# ----------------------------------------------------------------------------- masks, NaN


def test_nan_values_become_masked_zeros_without_touching_input():
    vals = torch.tensor([[1.0, float("nan")], [float("nan"), 4.0], [5.0, 6.0]])
    vals0 = vals.clone()
    mask = torch.tensor([[True, True], [True, True], [False, True]])
    st = Stations(vals, [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], [0, 1], 2, (3, 3), 0.1, mask=mask)
    assert torch.equal(st.mask, torch.tensor([[True, False], [False, True], [False, True]]))
    assert torch.equal(st.values, torch.tensor([[1.0, 0.0], [0.0, 4.0], [0.0, 6.0]]))
    assert torch.equal(vals.isnan(), vals0.isnan())
    assert torch.equal(vals.nan_to_num(), vals0.nan_to_num())
    assert st.values.data_ptr() != vals.data_ptr()
    assert st.num_observed == 3
    # Background with NaN too
    x = torch.ones(2, 4)
    x[0, 1] = float("nan")
    bg = Background(x, 1.0)
    assert not bg.mask[0, 1] and bg.values[0, 1] == 0 and torch.isnan(x[0, 1])


def test_to_copy_keeps_bool_mask():
    for obs in _all_2d():
        o64 = obs.to(dtype=torch.float64)
        assert type(o64) is type(obs)
        assert o64.values.dtype == torch.float64 and o64.mask.dtype == torch.bool
        assert torch.equal(o64.mask, obs.mask) and o64 is not obs
        assert o64.values.data_ptr() != obs.values.data_ptr()
    st = _stations_2d().to(dtype=torch.float32)
    assert st.positions.dtype == torch.float32
    assert "Stations" in repr(st)


# ----------------------------------------------------------------------------- autodiff


@pytest.mark.parametrize("idx", range(4))
def test_operator_differentiable(idx):
    obs = _all_2d()[idx]
    x = _state(2, obs.num_levels, *obs.grid_shape).requires_grad_(True)
    (g,) = torch.autograd.grad(obs.operator(x).square().sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    x0 = x.detach()
    t = torch.randn_like(x0)
    y, jy = torch.func.jvp(obs.operator, (x0,), (t,))
    # linear operator: jvp equals the operator applied to the tangent
    torch.testing.assert_close(jy, obs.operator(t))
    torch.testing.assert_close(y, obs.operator(x0))
    _, vjp = torch.func.vjp(obs.operator, x0)
    (vx,) = vjp(torch.ones_like(y))
    # adjoint identity <A t, 1> = <t, A^T 1>
    torch.testing.assert_close((jy * torch.ones_like(y)).sum(), (t * vx).sum())


# ----------------------------------------------------------------------------- simulate


def test_simulate_residual_std():
    truth = _state(5, 32, 32, seed=3)
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(400, 2, generator=g, dtype=torch.float64) * 31
    cases = [
        Stations.simulate(truth, pos, [0, 2, 4], 0.7, generator=g),
        Satellite.simulate(
            truth, gaussian_weighting_functions(PRESSURES, [800.0, 400.0]), 2, 0.7, generator=g
        ),
        Gridded.simulate(truth, 2, 1, 0.7, generator=g),
        Background.simulate(truth, 0.7, generator=g),
    ]
    for obs in cases:
        r = obs.values - obs.operator(truth)
        assert r.numel() >= 512
        assert abs(r.std().item() - 0.7) < 0.1, type(obs).__name__
        assert abs(r.mean().item()) < 0.1
    a = Background.simulate(truth, 0.7, generator=torch.Generator().manual_seed(5))
    b = Background.simulate(truth, 0.7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.values, b.values)


# ----------------------------------------------------------------------------- errors


def test_error_negative_or_nonfinite_noise_std():
    with pytest.raises(ValueError, match="noise_std"):
        Background(torch.zeros(2, 4), noise_std=-1.0)
    with pytest.raises(ValueError, match="noise_std"):
        Background(torch.zeros(2, 4), noise_std=float("nan"))
    with pytest.raises(ValueError, match="noise_std"):
        Background(torch.zeros(2, 4), noise_std=torch.tensor([1.0, -0.1])[:, None])
    with pytest.raises(ValueError, match="noise_std"):
        Background(torch.zeros(2, 4), noise_std=torch.ones(3))  # not broadcastable


def test_error_station_outside_grid():
    with pytest.raises(ValueError, match="positions"):
        Stations(torch.zeros(1, 1), [[7.5, 1.0]], [0], 2, (8, 8), 0.1)
    with pytest.raises(ValueError, match="positions"):
        Stations(torch.zeros(1, 1), [[-0.1, 1.0]], [0], 2, (8, 8), 0.1, periodic="x")
    with pytest.raises(ValueError, match="positions"):
        Stations(torch.zeros(1, 1), [[1.0]], [0], 2, (8, 8), 0.1)  # wrong spatial dims
    st = Stations(torch.zeros(1, 1), [[6.0, 1.0]], [0], 2, (8, 8), 0.1)
    with pytest.raises(ValueError, match="spatial_shape"):
        st.check_state(2, (4, 4))


def test_error_level_index_out_of_range():
    with pytest.raises(ValueError, match="levels"):
        Stations(torch.zeros(1, 1), [[1.0, 1.0]], [5], 5, (8, 8), 0.1)
    st = Stations(torch.zeros(1, 2), [[1.0, 1.0]], [0, 4], 5, (8, 8), 0.1)
    with pytest.raises(ValueError, match="levels"):
        st.check_state(3, (8, 8))


def test_error_time_index_and_modality():
    with pytest.raises(ValueError, match="time_index"):
        Background(torch.zeros(2, 4), 1.0, time_index=-1)
    with pytest.raises(ValueError, match="modality"):
        Background(torch.zeros(2, 4), 1.0, modality="")


def test_error_satellite_grid_not_divisible():
    w = gaussian_weighting_functions(PRESSURES, [500.0])
    with pytest.raises(ValueError, match="footprint"):
        Satellite(torch.zeros(1, 2, 3), w, footprint=5, grid_shape=(8, 12), noise_std=1.0)
    with pytest.raises(ValueError, match="coarsen"):
        Gridded(torch.zeros(5, 3), coarsen=3, subsample=1, grid_shape=(8,), noise_std=1.0)


def test_error_weights_wrong_levels_in_check_state():
    sat = _satellite(levels=4)
    sat.check_state(4, (8, 12))
    with pytest.raises(ValueError, match="weights"):
        sat.check_state(5, (8, 12))
    with pytest.raises(ValueError, match="spatial_shape"):
        sat.check_state(4, (8, 8))
    with pytest.raises(ValueError, match="weights"):  # channels of weights vs values
        Satellite(torch.zeros(2, 2, 3), sat.weights, 4, (8, 12), 1.0)
    with pytest.raises(ValueError, match="weights"):
        Satellite(torch.zeros(3, 2, 3), -sat.weights, 4, (8, 12), 1.0)


def test_error_wrong_value_shapes():
    with pytest.raises(ValueError, match="values"):
        Stations(torch.zeros(2, 1), [[1.0, 1.0]], [0], 2, (8, 8), 0.1)
    with pytest.raises(ValueError, match="values"):
        Stations(torch.zeros(1), [[1.0, 1.0]], [0], 2, (8, 8), 0.1)
    with pytest.raises(ValueError, match="values"):
        Satellite(torch.zeros(3, 2, 2), _satellite().weights, 4, (8, 12), 1.0)
    with pytest.raises(ValueError, match="values"):
        Gridded(torch.zeros(5, 3, 3), coarsen=2, subsample=2, grid_shape=(12, 8), noise_std=1.0)
    with pytest.raises(ValueError, match="values"):
        Background(torch.zeros(5, 1, 1, 1), 1.0)  # (5,) is a column
    with pytest.raises(ValueError, match="mask"):
        Background(torch.zeros(2, 4), 1.0, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="grid_shape"):
        Gridded(torch.zeros(5, 1, 1, 1), 1, 1, (2, 2, 2), 1.0)
    gr = Gridded(torch.zeros(5, 3, 2), coarsen=2, subsample=2, grid_shape=(12, 8), noise_std=1.0)
    with pytest.raises(ValueError, match="levels"):
        gr.check_state(4, (12, 8))
    with pytest.raises(ValueError, match="levels"):
        Background(torch.zeros(5, 8, 12), 1.0).check_state(4, (8, 12))


def test_transformed_observes_a_function_of_the_state_on_the_decoded_route():
    cells, positions = 8, torch.tensor([[1.0], [4.5]], dtype=torch.float64)
    truth = torch.randn(1, cells, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stations = Stations.simulate(truth, positions, [0], 0.3, periodic="x", time_index=0)
    observed = Transformed(stations, torch.abs, time_index=1)
    assert observed.time_index == observed.observation.time_index == 1
    assert observed.modality == "stations" and not observed.linear and stations.linear
    torch.testing.assert_close(observed.operator(truth), stations.operator(truth.abs()))
    moved = observed.to(dtype=torch.float32).replace_values(observed.values.float() + 1)
    assert isinstance(moved, Transformed) and moved.function is torch.abs
    assert moved.time_index == 1 and moved.values.dtype == torch.float32
    with pytest.raises(ValueError, match="observation: expected the Stations, Satellite or"):
        Transformed(Background(values=truth, noise_std=1.0), torch.abs)
    with pytest.raises(ValueError, match="function: expected a callable"):
        Transformed(stations, None)
    with pytest.raises(ValueError, match="observes a function of the state .* no encoder"):
        resolve_routes([observed], "latent", None, True)
    assert resolve_routes([observed], "auto", None, True) == ["decoded"]
    with pytest.raises(ValueError, match="the linear update .* linear operators only"):
        linear_gaussian_update(truth[None], [observed], None)

    # φ(x) = 2x observed with noise 2σ is the observation of x with σ: the same posterior draws
    covariance = squared_exponential_covariance((cells,), 2.0)
    score = GaussianScoreModel.from_moments(
        torch.zeros(1, 1, cells, dtype=torch.float64), covariance
    )
    pipe = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipe.set_progress_bar_config(disable=True)
    doubled = Stations.simulate(2 * truth, positions, [0], 0.6, periodic="x")
    plain = dataclasses.replace(doubled, values=doubled.values / 2, noise_std=0.3)

    def draw(observations):
        return pipe(
            observations=observations,
            num_members=4,
            num_inference_steps=8,
            output_type="pt",
            generator=[torch.Generator().manual_seed(m) for m in range(4)],
        ).members

    twice = draw([Transformed(doubled, lambda x: 2 * x)])
    # the same Gaussian terms up to the factor 2 in A and σ (float64 rounding)
    torch.testing.assert_close(twice, draw([plain]), rtol=0, atol=1e-8)
