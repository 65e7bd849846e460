"""SLAMSPipeline: score-based (latent) data assimilation as a diffusers pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..guidance import COVARIANCES, GaussianTerm, likelihood_score
from ..models.observation_encoder import fuse_gaussians
from ..observations import Background, Observation

logger = logging.get_logger(__name__)

ROUTES = ("latent", "decoded")
OUTPUT_TYPES = ("xarray", "np", "pt", "latent")
_DEFAULT_ATTRS = {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"}
_BACKGROUND_ENCODING_SAMPLES = 32


@dataclass
class AssimilationOutput(BaseOutput):
    """Result of an assimilation.

    Args:
        members: analysis ensemble ``(n, time, level, *space)``; latents when
            ``output_type="latent"``.
        mean: ensemble mean ``(time, level, *space)``.
        std: ensemble spread (unbiased standard deviation over members) ``(time, level, *space)``.
        latents: final latents ``(n, time, c, *space/f)``.
        dataset: with ``output_type="xarray"``, the members, mean and std as one ``xarray.Dataset``.
    """

    members: Any
    mean: Any
    std: Any
    latents: Tensor
    dataset: xr.Dataset | None = None


@dataclass
class _Grid:
    """Shapes of one assimilation problem."""

    time: int
    levels: int
    space: tuple[int, ...]
    latent_channels: int
    latent_space: tuple[int, ...]


class SLAMSPipeline(DiffusionPipeline):
    r"""Posterior sampling ``p(x | x_b, y_1, …, y_M)`` with a (latent) diffusion prior.

    Components:
        score_model: ε-network over Markov-blanket windows; ``forward(sample, timestep)`` with
            ``sample`` ``(B, window, c, *space)`` and ``timestep`` ``(B,)`` returns an output whose
            ``.sample`` is ε; its ``config.window`` is odd. In pixel space its config also gives
            ``in_channels`` (levels), ``spatial_dims`` and optionally ``level_mean``/``level_std``.
        scheduler: :class:`~slams_diffusers.schedulers.VPPredictorCorrectorScheduler`.
        autoencoder: :class:`~slams_diffusers.models.StateAutoencoder`, or ``None`` for pixel-space
            assimilation (the SDA baseline).
        observation_encoder: :class:`~slams_diffusers.models.ObservationEncoder` for the latent
            route, or ``None``.
    """

    model_cpu_offload_seq = "observation_encoder->score_model->autoencoder"
    _optional_components = ["autoencoder", "observation_encoder"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, score_model, scheduler, autoencoder=None, observation_encoder=None) -> None:
        super().__init__()
        self.register_modules(
            score_model=score_model,
            scheduler=scheduler,
            autoencoder=autoencoder,
            observation_encoder=observation_encoder,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local folder or a Hub repo id (the snapshot is downloaded, then loaded).

        diffusers cannot resolve plugin classes from a repo id by itself, hence the download.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

            hub_kwargs = {
                key: kwargs.pop(key)
                for key in ("revision", "cache_dir", "token", "local_files_only")
                if key in kwargs
            }
            try:
                path = snapshot_download(path, **hub_kwargs)
            except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
                raise OSError(
                    f"Could not load pipeline {pretrained_model_name_or_path!r}: it is not a local "
                    "folder and the Hub repo could not be fetched (offline with HF_HUB_OFFLINE=1 "
                    f"and not in the cache, or no such repo): {error}"
                ) from error
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, model_card=None, **kwargs):
        """``DiffusionPipeline.save_pretrained``; a ``huggingface_hub.ModelCard`` given as
        ``model_card`` (see :func:`slams_diffusers.hub.model_card`) is written as ``README.md``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if model_card is not None:
            from ..hub import save_model_card

            save_model_card(model_card, save_directory)

    # ------------------------------------------------------------------ spaces
    @property
    def _model_dtype(self) -> torch.dtype:
        tensors = [*self.score_model.parameters(), *self.score_model.buffers()]
        return tensors[0].dtype if tensors else torch.float32

    @property
    def window(self) -> int:
        return int(self.score_model.config.window)

    @property
    def spatial_dims(self) -> int:
        model = self.autoencoder if self.autoencoder is not None else self.score_model
        return int(model.config.spatial_dims)

    @property
    def levels(self) -> int:
        if self.autoencoder is not None:
            return int(self.autoencoder.config.levels)
        return int(self.score_model.config.in_channels)

    def _pixel_statistics(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-level mean and std ``(levels, 1, …)`` normalising pixel-space states."""
        config = self.score_model.config
        mean = getattr(config, "level_mean", None)
        std = getattr(config, "level_std", None)
        shape = (self.levels,) + (1,) * self.spatial_dims
        mean = torch.zeros(shape) if mean is None else torch.as_tensor(mean).reshape(shape)
        std = torch.ones(shape) if std is None else torch.as_tensor(std).reshape(shape)
        return mean.to(like), std.to(like)

    def encode(self, state: Tensor) -> Tensor:
        """Physical state ``(B, T, levels, *space)`` -> diffusion space ``(B, T, c, *space/f)``."""
        if self.autoencoder is not None:
            return self.autoencoder.encode(state)
        mean, std = self._pixel_statistics(state)
        return (state - mean) / std

    def decode(self, latent: Tensor) -> Tensor:
        """Diffusion space ``(B, T, c, *space/f)`` -> physical state ``(B, T, levels, *space)``."""
        if self.autoencoder is not None:
            return self.autoencoder.decode(latent)
        mean, std = self._pixel_statistics(latent)
        return latent * std + mean

    def epsilon(self, latents: Tensor, t: Tensor) -> Tensor:
        """ε over a trajectory of any length ``T >= window`` by Markov-blanket composition.

        The trajectory is cut into all windows of ``2k+1`` consecutive states; state ``i`` takes
        the ε of the window centred on it, the first and last ``k`` states that of the first and
        last window (the scheme of SDA).
        """
        batch, length = latents.shape[:2]
        window = self.window
        k = window // 2
        windows = latents.unfold(1, window, 1)  # (B, n, c, *space, window)
        count = windows.shape[1]
        windows = windows.movedim(-1, 2).reshape(batch * count, window, *latents.shape[2:])
        timestep = t.expand(batch * count).to(latents.dtype)
        eps = self.score_model(windows, timestep).sample.reshape(
            batch, count, window, *latents.shape[2:]
        )
        return torch.cat((eps[:, 0, :k], eps[:, :, k], eps[:, -1, k + 1 :]), dim=1)

    # ------------------------------------------------------------------ validation
    def _read_background(self, background: Any) -> tuple[Tensor | None, xr.DataArray | None]:
        """The ``background`` argument as a tensor ``(time, level, *space)`` and its template."""
        if background is None:
            return None, None
        template = None
        if isinstance(background, xr.DataArray):
            if "level" not in background.dims:
                raise ValueError(
                    f"`background` must have a 'level' dimension, found dims {background.dims}"
                )
            template = background if "time" in background.dims else background.expand_dims("time")
            space_dims = [d for d in template.dims if d not in ("time", "level")]
            template = template.transpose("time", "level", *space_dims)
            values = torch.as_tensor(np.asarray(template.values))
        elif isinstance(background, Tensor | np.ndarray):
            values = torch.as_tensor(background)
        else:
            raise ValueError(
                "`background` must be an xarray.DataArray, a tensor or an array of shape "
                f"(time, level, *space), got {type(background).__name__}"
            )
        rank = 2 + self.spatial_dims
        if values.dim() == rank - 1:
            values = values.unsqueeze(0)
        if values.dim() != rank:
            raise ValueError(
                f"`background` must have shape (time, level, *space) or (level, *space) with "
                f"{self.spatial_dims} spatial dims, got shape {tuple(values.shape)}"
            )
        if not torch.isfinite(values).all():
            raise ValueError("`background` contains NaN or infinite values; it must be complete")
        return values, template

    def _grid(
        self, background: Tensor | None, observations: Sequence[Observation], num_frames: int | None
    ) -> _Grid:
        if background is not None:
            time, levels, *space = background.shape
            if levels != self.levels:
                raise ValueError(
                    f"`background` has {levels} levels but the model expects {self.levels}"
                )
        else:
            shapes = {tuple(o.grid_shape) for o in observations}
            if len(shapes) != 1:
                raise ValueError(
                    "Without a `background`, the observations must share one `grid_shape`; "
                    f"found {sorted(shapes)}"
                )
            space = shapes.pop()
            time = self.window if num_frames is None else num_frames
            levels = self.levels
        space = tuple(int(s) for s in space)
        if len(space) != self.spatial_dims:
            raise ValueError(
                f"the state must have {self.spatial_dims} spatial dims, got shape {space}"
            )
        if time < self.window:
            raise ValueError(
                f"the assimilation window has {time} time steps but the score model's "
                f"Markov-blanket window needs at least `window`={self.window}"
            )
        if self.autoencoder is not None:
            factor = int(self.autoencoder.config.downsample_factor)
            if any(s % factor for s in space):
                raise ValueError(
                    f"spatial shape {space} must be divisible by the autoencoder's "
                    f"downsample_factor {factor}"
                )
            channels = int(self.autoencoder.config.latent_channels)
            latent_space = tuple(s // factor for s in space)
        else:
            channels, latent_space = levels, space
        widths = getattr(self.score_model.config, "hidden_channels", None)
        if widths is not None and any(n % 2 ** (len(widths) - 1) for n in latent_space):
            raise ValueError(
                f"the score model's grid {latent_space} (state {space}) must be divisible by "
                f"2^(len(hidden_channels) - 1) = {2 ** (len(widths) - 1)} for its U-Net"
            )
        return _Grid(time, levels, space, channels, latent_space)

    def _routes(self, observations: Sequence[Observation], guidance: str | dict) -> list[str]:
        """The route of each observation; raises for routes that cannot be taken."""
        known = set(self.observation_encoder.modality_names) if self.observation_encoder else set()
        if isinstance(guidance, str):
            choices, default = {}, guidance
        elif isinstance(guidance, dict):
            unknown = set(guidance) - {o.modality for o in observations}
            if unknown:
                raise ValueError(
                    f"`guidance` names modalities {sorted(unknown)} that no observation has"
                )
            choices, default = guidance, "auto"
        else:
            raise ValueError(
                f"`guidance` must be a route name or a dict, got {type(guidance).__name__}"
            )
        routes = []
        for observation in observations:
            modality = observation.modality
            encodable = modality in known or isinstance(observation, Background)
            route = choices.get(modality, default)
            if route == "auto":
                route = "latent" if encodable else "decoded"
            if route not in ROUTES:
                raise ValueError(
                    f"`guidance` must be one of {('auto', *ROUTES)} or a dict of them, "
                    f"got {route!r}"
                )
            if route == "latent" and not encodable:
                raise ValueError(
                    f"unknown modality {modality!r} for the latent route: the "
                    f"observation_encoder knows {sorted(known)}; use guidance='decoded' for it"
                )
            if route == "latent" and modality in known:
                expected = self.observation_encoder.config.modalities[modality]["in_channels"]
                channels = observation.to_grid()[0].shape[0]
                if channels != expected:
                    raise ValueError(
                        f"`observations` of modality {modality!r} have {channels} channels "
                        f"but the observation_encoder expects {expected}"
                    )
            routes.append(route)
        return routes

    def check_inputs(
        self,
        *,
        background: Tensor | None,
        background_error_std: float | Tensor,
        observations: Sequence[Observation],
        grid: _Grid,
        num_members: int,
        num_inference_steps: int,
        corrector_steps: int,
        tau: float,
        likelihood_covariance: str,
        gamma: float,
        cg_iterations: int,
        output_type: str,
        generator: torch.Generator | list[torch.Generator] | None,
        member_batch_size: int | None,
    ) -> None:
        """Raise ``ValueError`` for anything that would fail later, before any compute."""
        if background is None and not observations:
            raise ValueError("Nothing to assimilate: `observations` is empty and no `background`")
        for name, value, low in (
            ("num_members", num_members, 1),
            ("num_inference_steps", num_inference_steps, 1),
            ("corrector_steps", corrector_steps, 0),
            ("cg_iterations", cg_iterations, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
        if member_batch_size is not None and (
            not isinstance(member_batch_size, int) or member_batch_size < 1
        ):
            raise ValueError(
                f"`member_batch_size` must be an integer >= 1, got {member_batch_size!r}"
            )
        error_std = torch.as_tensor(background_error_std)
        if (error_std < 0).any() or not torch.isfinite(error_std).all():
            raise ValueError(f"`background_error_std` must be finite and >= 0, got {error_std}")
        if not tau > 0:
            raise ValueError(f"`tau` must be > 0, got {tau}")
        if not gamma >= 0:
            raise ValueError(f"`gamma` must be >= 0, got {gamma}")
        if likelihood_covariance not in COVARIANCES:
            raise ValueError(
                f"`likelihood_covariance` must be one of {COVARIANCES}, "
                f"got {likelihood_covariance!r}"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(generator, list) and len(generator) != num_members:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators; expected one per member "
                f"({num_members})"
            )
        for index, observation in enumerate(observations):
            if not isinstance(observation, Observation):
                raise ValueError(
                    f"`observations[{index}]` must be an Observation, "
                    f"got {type(observation).__name__}"
                )
            try:
                observation.check_state(grid.levels, grid.space)
            except ValueError as error:
                raise ValueError(
                    f"`observations[{index}]` ({observation.modality!r}) does not fit the state "
                    f"(levels={grid.levels}, space={grid.space}): {error}"
                ) from error
            if not 0 <= observation.time_index < grid.time:
                raise ValueError(
                    f"`observations[{index}].time_index` is {observation.time_index}; expected "
                    f"0 <= time_index < {grid.time} (the window length)"
                )
            noise = torch.as_tensor(observation.noise_std)
            if (noise < 0).any():
                raise ValueError(f"`observations[{index}].noise_std` must be >= 0")

    # ------------------------------------------------------------------ likelihood terms
    def _latent_observations(
        self, items: list[Observation], grid: _Grid, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Fuse the latent-route observations of one time step into ``(mean, variance)``."""
        means, logvars = [], []
        for observation in items:
            if (
                self.observation_encoder is not None
                and observation.modality in self.observation_encoder.modality_names
            ):
                values, mask = observation.to_grid()
                mean, logvar = self.observation_encoder.encode_modality(
                    observation.modality,
                    values.to(device, dtype)[None],
                    mask.to(device, dtype)[None],
                    grid.latent_space,
                )
            else:
                mean, logvar = self._encode_background(observation, device, dtype)
            means.append(mean[0])
            logvars.append(logvar[0])
        mean, logvar = fuse_gaussians(means, logvars)
        return mean, logvar.exp()

    def _encode_background(
        self, background: Observation, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Latent mean and log-variance of a background ``x_b`` with error std ``σ_b``.

        Pixel space: exact, ``((x_b - μ)/s, log (σ_b/s)²)``. Latent space: ``E(x_b)`` and the
        per-cell variance of ``E(x_b + σ_b ξ)`` over a fixed set of Monte-Carlo draws ``ξ``.
        """
        values = background.values.to(device, dtype)[None, None]
        noise_std = torch.broadcast_to(
            torch.as_tensor(background.noise_std, device=device, dtype=dtype), values.shape[2:]
        )
        if self.autoencoder is None:
            _, std = self._pixel_statistics(values)
            variance = (noise_std / std) ** 2
            return self.encode(values)[:, 0], variance.clamp_min(1e-12).log()[None]
        generator = torch.Generator(device="cpu").manual_seed(0)
        draws = torch.randn((_BACKGROUND_ENCODING_SAMPLES, *values.shape[1:]), generator=generator)
        latents = self.encode(values + noise_std * draws.to(device, dtype))[:, 0]
        return latents.mean(0, keepdim=True), latents.var(0, keepdim=True).clamp_min(1e-12).log()

    def _decoded_term(
        self, observation: Observation, device: torch.device, dtype: torch.dtype
    ) -> GaussianTerm:
        observation = observation.to(device=device, dtype=dtype)
        index = observation.time_index

        def observe(latent: Tensor) -> Tensor:
            return observation.operator(self.decode(latent[:, index : index + 1])[:, 0])

        return GaussianTerm(
            observe, observation.values, observation.noise_variance(), observation.mask
        )

    def likelihood_terms(
        self,
        observations: Sequence[Observation],
        routes: Sequence[str],
        grid: _Grid,
        device: torch.device,
        dtype: torch.dtype,
    ) -> list[GaussianTerm]:
        """Gaussian terms: one per decoded observation, one fused latent term per time step."""
        terms = [
            self._decoded_term(o, device, dtype)
            for o, route in zip(observations, routes, strict=True)
            if route == "decoded"
        ]
        by_time: dict[int, list[Observation]] = {}
        for observation, route in zip(observations, routes, strict=True):
            if route == "latent":
                by_time.setdefault(observation.time_index, []).append(observation)
        for index, items in sorted(by_time.items()):
            with torch.no_grad():
                mean, variance = self._latent_observations(items, grid, device, dtype)
            terms.append(
                GaussianTerm(
                    lambda latent, index=index: latent[:, index],
                    mean,
                    variance,
                    torch.ones_like(mean, dtype=torch.bool),
                )
            )
        return terms

    def guided_epsilon(
        self,
        latents: Tensor,
        t: Tensor,
        terms: Sequence[GaussianTerm],
        likelihood_covariance: str,
        gamma: float,
        cg_iterations: int,
    ) -> Tensor:
        """``ε̃ = ε_θ(z_t, t) - sigma_t ∇_{z_t} log p(y | z_t)``."""
        alpha, sigma = self.scheduler.alpha_sigma(t)
        alpha, sigma = alpha.to(latents), sigma.to(latents)
        if not terms:
            with torch.no_grad():
                return self.epsilon(latents, t)
        with torch.enable_grad():
            z_t = latents.detach().requires_grad_(True)
            eps = self.epsilon(z_t, t)
            z_hat = (z_t - sigma * eps) / alpha
            score = likelihood_score(
                z_t, z_hat, terms, alpha, sigma, likelihood_covariance, gamma, cg_iterations
            )
        return eps.detach() - sigma * score

    # ------------------------------------------------------------------ outputs
    def _to_output(
        self,
        members: Tensor,
        latents: Tensor,
        output_type: str,
        template: xr.DataArray | None,
    ) -> AssimilationOutput:
        count = members.shape[0]
        mean = members.mean(0)
        std = members.std(0, correction=1) if count > 1 else torch.zeros_like(mean)
        if output_type in ("pt", "latent"):
            return AssimilationOutput(members=members, mean=mean, std=std, latents=latents)
        arrays = [a.detach().cpu().numpy() for a in (members, mean, std)]
        if output_type == "np":
            return AssimilationOutput(*arrays, latents=latents)
        if template is not None:
            dims, coords, attrs = template.dims, template.coords, dict(template.attrs)
            coords = {name: coord for name, coord in coords.items() if set(coord.dims) <= set(dims)}
        else:
            space_names = ("y", "x")[-self.spatial_dims :]
            dims, coords, attrs = ("time", "level", *space_names), {}, {}
        attrs = {**_DEFAULT_ATTRS, **attrs}
        members_da = xr.DataArray(arrays[0], dims=("member", *dims), coords=coords, attrs=attrs)
        members_da = members_da.assign_coords(member=np.arange(count))
        mean_da = xr.DataArray(arrays[1], dims=dims, coords=coords, attrs=attrs)
        std_da = xr.DataArray(
            arrays[2],
            dims=dims,
            coords=coords,
            attrs={**attrs, "long_name": f"ensemble spread of {attrs['long_name']}"},
        )
        dataset = xr.Dataset({"members": members_da, "mean": mean_da, "std": std_da})
        dataset.attrs["source"] = "slams_diffusers.SLAMSPipeline"
        return AssimilationOutput(members_da, mean_da, std_da, latents=latents, dataset=dataset)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        background: Any = None,
        observations: Sequence[Observation] = (),
        num_members: int = 8,
        num_inference_steps: int = 64,
        corrector_steps: int | None = None,
        tau: float | None = None,
        guidance: str | dict[str, str] = "auto",
        likelihood_covariance: str = "tweedie",
        gamma: float = 1e-2,
        cg_iterations: int = 3,
        background_error_std: float | Tensor = 1.0,
        num_frames: int | None = None,
        member_batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "xarray",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> AssimilationOutput | tuple:
        r"""Sample the analysis ensemble ``p(x | x_b, y_1, …, y_M)``.

        Args:
            background: forecast ``x_b``: ``xarray.DataArray`` with a ``level`` dim (and
                optionally ``time``), a tensor ``(time, level, *space)`` or ``(level, *space)``,
                or a :class:`Background`. Its coordinates and attributes carry over to the output.
            observations: :class:`Observation` objects; NaN values are missing.
            num_members: ensemble size.
            num_inference_steps: predictor steps from t = 1 to ``sampling_eps``.
            corrector_steps, tau: Langevin corrections after each predictor step and their
                step-size factor (defaults from the scheduler config).
            guidance: ``"latent"`` (encoded observations against ẑ, SLAMS), ``"decoded"``
                (operators on ``D(ẑ)``), ``"auto"`` (latent where the observation encoder knows the
                modality, and for the background; decoded otherwise), or ``{modality: route}``.
            likelihood_covariance: ``"tweedie"`` (moment matching) or ``"diagonal"`` (γ).
            gamma: γ of the diagonal covariance ``γ (sigma_t/alpha_t)² I``.
            cg_iterations: conjugate-gradient iterations of the tweedie covariance.
            background_error_std: error std ``σ_b`` (K) of a background given as array/tensor.
            num_frames: window length when there is no background (default: the score window).
            member_batch_size: members per batch (default: all at once); results do not depend
                on it when ``generator`` is a list with one generator per member.
            generator: a ``torch.Generator`` or one per member.
            output_type: ``"xarray"``, ``"np"``, ``"pt"`` or ``"latent"`` (members are latents).
            return_dict: return an :class:`AssimilationOutput` rather than a tuple.
            callback_on_step_end: ``f(pipe, step, timestep, callback_kwargs) -> dict`` after each
                predictor-corrector step; may replace ``"latents"``.
        """
        corrector_steps = (
            self.scheduler.config.corrector_steps if corrector_steps is None else corrector_steps
        )
        tau = self.scheduler.config.tau if tau is None else tau
        observations = list(observations)
        background, template = self._read_background(background)
        grid = self._grid(background, observations, num_frames)
        self.check_inputs(
            background=background,
            background_error_std=background_error_std,
            observations=observations,
            grid=grid,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            corrector_steps=corrector_steps,
            tau=tau,
            likelihood_covariance=likelihood_covariance,
            gamma=gamma,
            cg_iterations=cg_iterations,
            output_type=output_type,
            generator=generator,
            member_batch_size=member_batch_size,
        )
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                "`callback_on_step_end_tensor_inputs` may only name "
                f"{self._callback_tensor_inputs}, "
                f"got {sorted(unknown)}"
            )
        if background is not None:
            observations += [
                Background(values=values, noise_std=background_error_std, time_index=index)
                for index, values in enumerate(background)
            ]
        routes = self._routes(observations, guidance)

        device, dtype = self._execution_device, self._model_dtype
        terms = self.likelihood_terms(observations, routes, grid, device, dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        batch = member_batch_size or num_members
        chunks = [
            range(start, min(start + batch, num_members)) for start in range(0, num_members, batch)
        ]
        results = []
        with self.progress_bar(total=num_inference_steps * len(chunks)) as progress:
            for chunk in chunks:
                generators = (
                    generator[chunk.start : chunk.stop]
                    if isinstance(generator, list)
                    else generator
                )
                shape = (len(chunk), grid.time, grid.latent_channels, *grid.latent_space)
                latents = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
                latents = latents * self.scheduler.init_noise_sigma
                for step, t in enumerate(timesteps):
                    s = torch.as_tensor(self.scheduler.next_timestep(t), device=device)
                    eps = self.guided_epsilon(
                        latents, t, terms, likelihood_covariance, gamma, cg_iterations
                    )
                    latents = self.scheduler.step(eps, t, latents).prev_sample
                    for _ in range(corrector_steps):
                        eps = self.guided_epsilon(
                            latents, s, terms, likelihood_covariance, gamma, cg_iterations
                        )
                        latents = self.scheduler.step_correct(
                            eps, s, latents, generator=generators, tau=tau
                        ).prev_sample
                    if callback_on_step_end is not None:
                        available = {"latents": latents}
                        callback_kwargs = {
                            name: available[name] for name in callback_on_step_end_tensor_inputs
                        }
                        returned = callback_on_step_end(self, step, t, callback_kwargs) or {}
                        latents = returned.get("latents", latents)
                    progress.update()
                results.append(latents)
        latents = torch.cat(results)
        if not torch.isfinite(latents).all():
            logger.warning(
                "The analysis has non-finite values: the guidance was too stiff for the step "
                "size. Try likelihood_covariance='tweedie', more steps or a larger gamma."
            )

        members = latents if output_type == "latent" else self.decode(latents)
        output = self._to_output(members, latents, output_type, template)
        self.maybe_free_model_hooks()
        if not return_dict:
            return output.to_tuple()
        return output
