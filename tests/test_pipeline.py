"""SLAMSPipeline with tiny untrained models: loading, batching, outputs and input checks."""

import numpy as np
import pytest
import torch
import xarray as xr

from slams_diffusers import (
    Gridded,
    LevelNormalizer,
    ObservationEncoder,
    Satellite,
    ScoreNet,
    SLAMSPipeline,
    StateAutoencoder,
    Stations,
    VPPredictorCorrectorScheduler,
    gaussian_weighting_functions,
)

LEVELS, SIZE = 3, 8
PRESSURES = [850.0, 500.0, 200.0]
MEAN, STD = [280.0, 250.0, 220.0], [5.0, 4.0, 3.0]


def tiny_pipeline(window: int = 1, latent: bool = True, spatial_dims: int = 2) -> SLAMSPipeline:
    torch.manual_seed(0)
    channels = 2 if latent else LEVELS
    observation_encoder = None
    autoencoder = LevelNormalizer(
        levels=LEVELS, spatial_dims=spatial_dims, level_mean=MEAN, level_std=STD
    )
    if latent:
        autoencoder = StateAutoencoder(
            levels=LEVELS,
            latent_channels=channels,
            spatial_dims=spatial_dims,
            downsample_factor=2,
            hidden_channels=(8, 16),
            level_mean=MEAN,
            level_std=STD,
        )
        observation_encoder = ObservationEncoder(
            modalities={
                "stations": {"in_channels": LEVELS, "input_mean": [250.0] * LEVELS},
                "satellite": {"in_channels": 2, "input_mean": [250.0] * 2},
            },
            latent_channels=channels,
            spatial_dims=spatial_dims,
            hidden_channels=8,
        )
    score_model = ScoreNet(
        in_channels=channels,
        window=window,
        spatial_dims=spatial_dims,
        hidden_channels=(8, 16),
        layers_per_block=1,
    )
    pipe = SLAMSPipeline(
        score_model=score_model,
        scheduler=VPPredictorCorrectorScheduler(),
        autoencoder=autoencoder,
        observation_encoder=observation_encoder,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def truth(frames: int = 1, spatial_dims: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    space = (SIZE,) * spatial_dims
    mean = torch.tensor([280.0, 250.0, 220.0]).reshape(1, LEVELS, *([1] * spatial_dims))
    return mean + 3 * torch.randn(frames, LEVELS, *space, generator=generator)


def observations(state: torch.Tensor, time_index: int = 0) -> list:
    generator = torch.Generator().manual_seed(2)
    frame = state[time_index]
    stations = Stations.simulate(
        frame,
        positions=torch.tensor([[1.0, 2.5], [6.2, 3.0], [4.0, 7.0]]),
        levels=[0, 2],
        noise_std=0.5,
        time_index=time_index,
        generator=generator,
    )
    weights = gaussian_weighting_functions(PRESSURES, [700.0, 300.0])
    satellite = Satellite.simulate(
        frame,
        weights=weights,
        footprint=2,
        noise_std=1.0,
        time_index=time_index,
        generator=generator,
    )
    return [stations, satellite]


def background_array(state: torch.Tensor) -> xr.DataArray:
    return xr.DataArray(
        (state + 1.0).numpy(),
        dims=("time", "level", "y", "x"),
        coords={"level": PRESSURES, "y": np.arange(SIZE) * 10.0, "x": np.arange(SIZE) * 10.0},
        attrs={"units": "K", "long_name": "temperature"},
        name="t",
    )


def run(pipe, **kwargs):
    state = truth()
    arguments = dict(
        background=background_array(state),
        observations=observations(state),
        num_members=4,
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(i) for i in range(4)],
        output_type="pt",
    )
    arguments.update(kwargs)
    return pipe(**arguments)


@pytest.mark.parametrize("covariance", ["moment_matching", "diagonal"])
def test_latent_pipeline_shapes_and_statistics(covariance):
    out = run(tiny_pipeline(), likelihood_covariance=covariance)
    assert out.members.shape == (4, 1, LEVELS, SIZE, SIZE)
    assert out.latents.shape == (4, 1, 2, SIZE // 2, SIZE // 2)
    assert torch.isfinite(out.members).all()
    torch.testing.assert_close(out.mean, out.members.mean(0))
    torch.testing.assert_close(out.std, out.members.std(0))


def test_tweedie_is_an_alias_of_moment_matching():
    pipe = tiny_pipeline()
    default = run(pipe)
    assert torch.equal(default.members, run(pipe, likelihood_covariance="moment_matching").members)
    assert torch.equal(default.members, run(pipe, likelihood_covariance="tweedie").members)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    pipe = tiny_pipeline()
    before = run(pipe)
    pipe.save_pretrained(tmp_path)
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert "model_index.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    weights = sorted(name for name in files if name.endswith(".safetensors"))
    assert [name.split("/")[0] for name in weights] == [
        "autoencoder",
        "observation_encoder",
        "score_model",
    ]
    loaded = SLAMSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    after = run(loaded)
    assert torch.equal(before.members, after.members)
    assert torch.equal(before.latents, after.latents)


def test_pixel_space_round_trip_keeps_the_level_normalizer(tmp_path):
    pipe = tiny_pipeline(latent=False)
    before = run(pipe, guidance="decoded")
    pipe.save_pretrained(tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert "autoencoder/config.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = SLAMSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.autoencoder, LevelNormalizer) and loaded.observation_encoder is None
    assert loaded.autoencoder.config.level_mean == MEAN
    assert loaded.autoencoder.config.level_std == STD
    assert torch.equal(before.members, run(loaded, guidance="decoded").members)


def test_pipeline_without_autoencoder_gets_a_standard_level_normalizer(tmp_path):
    """``autoencoder=None``: pixel space with zero mean and unit std, and it survives a save."""
    pipe = tiny_pipeline(latent=False)
    pipe = SLAMSPipeline(score_model=pipe.score_model, scheduler=pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.autoencoder, LevelNormalizer)
    assert pipe.autoencoder.config.levels == LEVELS and pipe.autoencoder.config.spatial_dims == 2
    assert pipe.autoencoder.config.level_mean is None and pipe.autoencoder.config.level_std is None
    state = truth()
    torch.testing.assert_close(pipe.encode(state[None]), state[None], atol=0, rtol=0)
    before = run(pipe, guidance="decoded")
    pipe.save_pretrained(tmp_path)
    loaded = SLAMSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.autoencoder, LevelNormalizer)
    assert torch.equal(before.members, run(loaded, guidance="decoded").members)


def test_results_do_not_depend_on_member_batching():
    """In float64: float32 conv kernels (oneDNN) depend on the batch size and the CPU, and their
    round-off differs by ~1e-4 on some CPUs (AMD EPYC), which the sampler amplifies."""
    pipe = tiny_pipeline()
    for module in (pipe.score_model, pipe.autoencoder, pipe.observation_encoder):
        module.double()
    whole = run(pipe)
    split = run(pipe, member_batch_size=3)
    assert whole.members.dtype == torch.float64
    torch.testing.assert_close(whole.members, split.members, atol=1e-9, rtol=0)
    torch.testing.assert_close(whole.latents, split.latents, atol=1e-10, rtol=0)


def test_generator_makes_results_reproducible_and_members_differ():
    pipe = tiny_pipeline()
    first = run(pipe, generator=torch.Generator().manual_seed(0))
    second = run(pipe, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.members, second.members)
    assert not torch.allclose(first.members[0], first.members[1])


def test_guidance_pulls_towards_observations():
    """With an exact background and a small error, the decoded-route analysis follows it.

    (Measured: mean absolute error 0.047 K against a 20 K spread of the state.)"""
    pipe = tiny_pipeline(latent=False)
    state = truth()
    out = pipe(
        background=state,
        background_error_std=0.05,
        num_members=2,
        num_inference_steps=16,
        guidance="decoded",
        likelihood_covariance="moment_matching",
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    assert (out.mean - state).abs().mean() < 0.2
    assert (out.mean - state).abs().mean() < 0.01 * (state - state.mean()).abs().mean()


def test_xarray_output_carries_coordinates_and_attributes():
    state = truth()
    out = run(tiny_pipeline(), output_type="xarray")
    assert isinstance(out.dataset, xr.Dataset)
    assert out.members.dims == ("member", "time", "level", "y", "x")
    np.testing.assert_array_equal(out.mean["level"].values, PRESSURES)
    np.testing.assert_array_equal(out.mean["x"].values, np.arange(SIZE) * 10.0)
    assert out.mean.attrs["units"] == "K" and out.mean.attrs["long_name"] == "temperature"
    np.testing.assert_allclose(out.dataset["mean"].values, out.members.values.mean(0), rtol=1e-6)
    assert state.shape == out.mean.shape
    # CF: the members are realizations; the mean is still a temperature, the spread is not
    assert out.members["member"].attrs == {
        "standard_name": "realization",
        "long_name": "ensemble member",
    }
    assert out.mean.attrs["standard_name"] == "air_temperature"
    assert out.mean.attrs["cell_methods"] == "realization: mean"
    assert out.std.attrs == {
        "units": "K",
        "long_name": "ensemble standard deviation of temperature",
        "cell_methods": "realization: standard_deviation",
    }


def test_xarray_output_of_tensor_inputs_has_index_coordinates():
    """A tensor background has no coordinates: the output gets the window's steps, the model's
    pressure levels (hPa) where it records them, else level indices, and grid indices."""
    state = truth(frames=2)
    pipe = tiny_pipeline()
    out = run(pipe, background=state, observations=observations(state), output_type="xarray")
    coords = out.dataset.coords
    assert out.dataset["members"].sizes == {
        "member": 4, "time": 2, "level": LEVELS, "y": SIZE, "x": SIZE
    }  # fmt: skip
    assert coords["time"].values.tolist() == [0, 1]
    assert coords["level"].values.tolist() == [0, 1, 2]
    assert coords["level"].attrs == {"long_name": "level index"}
    assert coords["x"].values.tolist() == list(range(SIZE))
    assert coords["y"].attrs == {"long_name": "grid index along y"}
    assert out.dataset["std"].attrs["long_name"] == "ensemble standard deviation of air temperature"
    assert "standard_name" not in out.dataset["std"].attrs
    pipe.autoencoder.register_to_config(levels_hpa=PRESSURES)
    out = run(pipe, background=state, observations=observations(state), output_type="xarray")
    assert out.dataset["level"].values.tolist() == PRESSURES
    assert out.dataset["level"].attrs["units"] == "hPa"
    assert out.dataset["level"].attrs["standard_name"] == "air_pressure"


def test_output_types_and_tuple_return():
    pipe = tiny_pipeline()
    as_np = run(pipe, output_type="np")
    assert isinstance(as_np.members, np.ndarray)
    latent = run(pipe, output_type="latent")
    assert latent.members.shape == (4, 1, 2, SIZE // 2, SIZE // 2)
    members, mean, std, latents, quality_control = run(pipe, return_dict=False)
    assert members.shape == (4, 1, LEVELS, SIZE, SIZE) and latents.shape[2] == 2
    assert quality_control.rejected == {"stations": 0, "satellite": 0}
    assert len(run(pipe, return_dict=False, qc=False)) == 4  # no report without quality control
    torch.testing.assert_close(latent.members, latents)


def test_callback_on_step_end_sees_and_replaces_latents():
    calls = []

    def callback(pipe, step, timestep, kwargs):
        calls.append((step, float(timestep)))
        return {"latents": kwargs["latents"] * 0}

    out = run(tiny_pipeline(), num_inference_steps=4, callback_on_step_end=callback)
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert calls[0][1] == pytest.approx(1.0)
    assert torch.count_nonzero(out.latents) == 0


def test_markov_blanket_window_over_longer_trajectory():
    pipe = tiny_pipeline(window=3)
    state = truth(frames=5)
    out = run(
        pipe,
        background=background_array(state),
        observations=observations(state, time_index=2),
    )
    assert out.members.shape == (4, 5, LEVELS, SIZE, SIZE)
    assert torch.isfinite(out.members).all()


def test_per_modality_routes_and_one_dimensional_space():
    pipe = tiny_pipeline(spatial_dims=1)
    state = truth(spatial_dims=1)
    station = Stations.simulate(
        state[0], positions=torch.tensor([[2.0], [5.5]]), levels=[1], noise_std=0.5
    )
    satellite = Satellite.simulate(
        state[0],
        weights=gaussian_weighting_functions(PRESSURES, [500.0]),
        footprint=2,
        noise_std=1.0,
    )
    out = pipe(
        background=state,
        observations=[station, satellite],
        guidance={"stations": "latent", "satellite": "decoded"},
        num_members=2,
        num_inference_steps=2,
        output_type="xarray",
    )
    assert out.members.dims == ("member", "time", "level", "x")


# ---------------------------------------------------------------- bad input, before any compute


@pytest.fixture
def guarded():
    """A pipeline whose networks must not run: validation comes first."""
    pipe = tiny_pipeline()

    def forbidden(*args, **kwargs):
        raise AssertionError("a network ran before the input was validated")

    pipe.score_model.forward = forbidden
    pipe.autoencoder.encode = forbidden
    pipe.observation_encoder.encode_modality = forbidden
    return pipe


def radar():
    """An observation of a modality the observation encoder has never seen."""
    values = torch.zeros(LEVELS, SIZE // 2, SIZE // 2)
    return Gridded(
        values, coarsen=2, subsample=1, grid_shape=(SIZE, SIZE), noise_std=1.0, modality="radar"
    )


def three_channel_satellite():
    """Satellite with 3 channels where the observation encoder was built for 2."""
    weights = gaussian_weighting_functions(PRESSURES, [700.0, 500.0, 300.0])
    return Satellite.simulate(truth()[0], weights=weights, footprint=2, noise_std=1.0)


def bad_station():
    return Stations(
        values=torch.ones(1, 1),
        positions=torch.tensor([[3.0, 12.0]]),
        levels=[0],
        num_levels=LEVELS,
        grid_shape=(16, 16),
        noise_std=0.5,
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(background=torch.zeros(SIZE, SIZE)), "background.*shape"),
        (dict(background=torch.zeros(1, 1, 4, SIZE, SIZE)), "background.*shape"),
        (dict(background=torch.zeros(1, LEVELS + 1, SIZE, SIZE)), "background.*levels"),
        (dict(background=torch.full((1, LEVELS, SIZE, SIZE), float("nan"))), "background.*NaN"),
        (dict(background=torch.zeros(1, LEVELS, 7, 7)), "divisible"),
        (dict(background=torch.zeros(1, LEVELS, 6, 6)), "score model's grid.*divisible by"),
        (dict(background=None, observations=[]), "observations"),
        (dict(background_error_std=-1.0), "background_error_std"),
        (dict(observations=[bad_station()]), r"observations\[0\].*\(16, 16\)"),
        (
            dict(observations=[radar()], guidance="latent"),
            "unknown modality 'radar'",
        ),
        (dict(observations=[three_channel_satellite()]), "satellite.*3 channels.*expects 2"),
        (dict(guidance="pixel"), "guidance"),
        (dict(guidance={"radar": "latent"}), "guidance.*radar"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_members=0, generator=None), "num_members"),
        (dict(generator=[torch.Generator()]), "generator"),
        (dict(likelihood_covariance="full"), "likelihood_covariance"),
        (dict(output_type="pil"), "output_type"),
        (dict(tau=0.0), "tau"),
        (dict(analysis="partial"), "analysis"),
        (dict(cg_iterations=0), "cg_iterations"),
    ],
)
def test_bad_input_raises_value_error_before_compute(guarded, change, match):
    with pytest.raises(ValueError, match=match):
        run(guarded, **change)


def test_bad_observation_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="noise_std"):
        Stations(
            values=torch.ones(1, 1),
            positions=torch.tensor([[3.0, 3.0]]),
            levels=[0],
            num_levels=LEVELS,
            grid_shape=(SIZE, SIZE),
            noise_std=-0.1,
        )
    with pytest.raises(ValueError, match="positions"):
        Stations(
            values=torch.ones(1, 1),
            positions=torch.tensor([[3.0, 9.5]]),
            levels=[0],
            num_levels=LEVELS,
            grid_shape=(SIZE, SIZE),
            noise_std=0.1,
        )


def test_time_index_outside_window_is_rejected(guarded):
    state = truth()
    with pytest.raises(ValueError, match="time_index"):
        run(guarded, observations=observations(torch.cat([state, state]), time_index=1))


# ---------------------------------------------------------------- Hub ids


def test_repo_id_is_downloaded_then_loaded(tmp_path, monkeypatch):
    tiny_pipeline().save_pretrained(tmp_path)
    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen["repo_id"] = repo_id
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    pipe = SLAMSPipeline.from_pretrained("org/slams-tiny")
    assert seen["repo_id"] == "org/slams-tiny"
    assert isinstance(pipe.autoencoder, StateAutoencoder)


def test_missing_repo_offline_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"'org/not-cached'.*could not be fetched.*slams-qg-tiny"):
        SLAMSPipeline.from_pretrained("org/not-cached", cache_dir=str(tmp_path))


def test_repo_id_loads_offline_from_a_hub_cache(tmp_path, monkeypatch):
    """A cache laid out as the Hub's (refs/main -> snapshots/<commit>/...) loads by repo id."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--slams-tiny"
    pipe = tiny_pipeline()
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    loaded = SLAMSPipeline.from_pretrained("org/slams-tiny", cache_dir=str(tmp_path))
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(pipe).members, run(loaded).members)
