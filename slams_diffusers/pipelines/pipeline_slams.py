"""SLAMSPipeline: score-based (latent) data assimilation as a diffusers pipeline (docs/method.md
§Sampling). ``__call__`` reads the inputs (``inputs.py``), assembles the guided ε (``guidance``),
runs the loop (``sampling.py``) and writes the output (``outputs.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline
from torch import Tensor

from .. import hub
from ..analysis import resolve_analysis, unresolved_part
from ..covariance import resolve_background_covariance
from ..guidance import GuidedScore, likelihood_terms, resolve_routes
from ..inflation import inflate_spread, spread_inflation_factors
from ..models.level_normalizer import LevelNormalizer
from ..models.markov_blanket import MarkovBlanketScore
from ..observations import Background, Observation
from ..quality_control import QC_THRESHOLD, check_observation_range, quality_control
from .inputs import background_observations, check_inputs, problem_grid, read_background
from .outputs import (
    AssimilationOutput,
    to_output,
    warn_non_finite,
    warn_out_of_range,
    warn_rejections,
)
from .sampling import sample_latents


class SLAMSPipeline(DiffusionPipeline):
    r"""Posterior sampling ``p(x | x_b, y_1, …, y_M)`` with a (latent) diffusion prior
    (SLAMS, arXiv 2404.06665; docs/method.md). The pipeline owns the sampling loop; the guided ε
    is a :class:`~slams_diffusers.guidance.GuidedScore`.

    Components:
        score_model: ε-network over Markov-blanket windows; ``forward(sample, timestep)`` with
            ``sample`` ``(B, window, c, *space)`` and ``timestep`` ``(B,)`` returns an output whose
            ``.sample`` is ε; its ``config.window`` is odd (composed over longer windows by
            :class:`~slams_diffusers.models.MarkovBlanketScore`).
        scheduler: :class:`~slams_diffusers.schedulers.VPPredictorCorrectorScheduler`.
        autoencoder: :class:`~slams_diffusers.models.StateAutoencoder` (latent space), or a
            :class:`~slams_diffusers.models.LevelNormalizer` (pixel space, the SDA baseline);
            ``None`` = a level normaliser with zero mean and unit std.
        observation_encoder: :class:`~slams_diffusers.models.ObservationEncoder` for the latent
            route, or ``None``.
        background_covariance: the background-error covariance ``B`` the pipeline was calibrated
            with (:mod:`slams_diffusers.covariance`), used when a call declares none; or ``None``.

    Config:
        spread_inflation: ``ρ`` fitted on validation windows (one factor or one per level,
            :mod:`slams_diffusers.inflation`), the default of a call's ``spread_inflation``; or
            ``None`` (no inflation). Saved in ``model_index.json``.
    """

    model_cpu_offload_seq = "observation_encoder->score_model->autoencoder"
    _optional_components = ["autoencoder", "observation_encoder", "background_covariance"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        score_model,
        scheduler,
        autoencoder=None,
        observation_encoder=None,
        background_covariance=None,
        spread_inflation: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if autoencoder is None:
            config = score_model.config
            autoencoder = LevelNormalizer(
                levels=int(config.in_channels), spatial_dims=int(config.spatial_dims)
            )
        self.register_modules(
            score_model=score_model,
            scheduler=scheduler,
            autoencoder=autoencoder,
            observation_encoder=observation_encoder,
            background_covariance=background_covariance,
        )
        self.register_to_config(spread_inflation=spread_inflation)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local folder, an embedded pipeline's name (``"slams-qg-tiny"``, see
        :func:`slams_diffusers.embedded_pipelines`; a folder of that name wins) or a Hub repo id
        (the snapshot is downloaded, then loaded).

        diffusers cannot resolve plugin classes from a repo id by itself, hence the download.
        """
        hub_kwargs = {key: kwargs.pop(key) for key in hub.HUB_KWARGS if key in kwargs}
        path = hub.resolve_pipeline(pretrained_model_name_or_path, **hub_kwargs)
        hub.check_pipeline_folder(path)
        pipe = super().from_pretrained(path, **kwargs)
        hub.check_finite_weights(pipe, path)
        return pipe

    def save_pretrained(self, save_directory: str | os.PathLike, *args, model_card=None, **kwargs):
        """``DiffusionPipeline.save_pretrained``; a ``huggingface_hub.ModelCard`` given as
        ``model_card`` (see :func:`slams_diffusers.hub.model_card`) is written as ``README.md``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if model_card is not None:
            hub.save_model_card(model_card, save_directory)

    def progress_bar(self, iterable=None, total=None, phase: str = "sampling"):
        """diffusers' progress bar (``set_progress_bar_config`` sets it up), labelled with the
        ``phase`` of the call: ``"SLAMS sampling"`` (the reverse diffusion), ``"SLAMS unresolved
        scales"`` (the analysis' per-member draws), or ``"<desc>: <phase>"`` when a ``desc`` was
        configured."""
        config = dict(getattr(self, "_progress_bar_config", None) or {})
        desc = config.get("desc")
        self._progress_bar_config = {
            **config,
            "desc": f"{desc}: {phase}" if desc else f"SLAMS {phase}",
        }
        try:
            return super().progress_bar(iterable, total)
        finally:
            self._progress_bar_config = config

    # ------------------------------------------------------------------ spaces
    @property
    def device(self) -> torch.device:
        """Where the score model's weights are (CPU for a model without any)."""
        tensors = [*self.score_model.parameters(), *self.score_model.buffers()]
        return tensors[0].device if tensors else torch.device("cpu")

    @property
    def _model_dtype(self) -> torch.dtype:
        tensors = [*self.score_model.parameters(), *self.score_model.buffers()]
        return tensors[0].dtype if tensors else torch.float32

    @property
    def window(self) -> int:
        return int(self.score_model.config.window)

    @property
    def spatial_dims(self) -> int:
        return int(self.autoencoder.config.spatial_dims)

    @property
    def levels(self) -> int:
        return int(self.autoencoder.config.levels)

    def encode(self, state: Tensor) -> Tensor:
        """Physical state ``(B, T, levels, *space)`` -> diffusion space ``(B, T, c, *space/f)``."""
        return self.autoencoder.encode(state)

    def decode(self, latent: Tensor) -> Tensor:
        """Diffusion space ``(B, T, c, *space/f)`` -> physical state ``(B, T, levels, *space)``."""
        return self.autoencoder.decode(latent)

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
        likelihood_covariance: str = "moment_matching",
        gamma: float = 1e-2,
        cg_iterations: int = 3,
        background_error_std: float | Sequence[float] | Tensor | None = None,
        background_error_covariance: Any = None,
        background_error_length_scale: float | None = None,
        qc: bool = True,
        qc_threshold: float = QC_THRESHOLD,
        analysis: str = "auto",
        spread_inflation: float | Sequence[float] | None = None,
        climatology_snr: tuple[float, float] | None = (0.05, 0.2),
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
                optionally ``time``), a tensor ``(time, level, *space)`` or ``(level, *space)``.
                Its coordinates and attributes carry over to the output.
            observations: :class:`Observation` objects; NaN values are missing, and an
                observation without any value changes nothing.
            num_members: ensemble size.
            num_inference_steps: predictor steps from t = 1 to ``sampling_eps``.
            corrector_steps, tau: Langevin corrections after each predictor step and their
                step-size factor (defaults from the scheduler config).
            guidance: ``"latent"`` (encoded observations against ẑ, SLAMS), ``"decoded"``
                (operators on ``D(ẑ)``), ``"auto"`` (latent where the observation encoder knows the
                modality; the background latent through a learned autoencoder), or
                ``{modality: route}``.
            likelihood_covariance: ``"moment_matching"`` (MMPS; alias ``"tweedie"``) or
                ``"diagonal"`` (γ, as SDA).
            gamma: γ of the diagonal covariance ``γ (sigma_t/alpha_t)² I`` in normalised units
                (fractions of the climatological variance), whatever the observations' units.
            cg_iterations: conjugate-gradient iterations of moment matching.
            background_error_std: ``σ_b`` (K): a scalar, one per level or per cell; alone, a
                diagonal (white) ``B``, which warns for a gridded state. Default: the pipeline's
                ``background_covariance``, else 1 K.
            background_error_covariance: ``B`` as a covariance object
                (:class:`~slams_diffusers.covariance.SpectralCovariance`, ...); wins over
                ``background_error_std``.
            background_error_length_scale: ``L`` (grid cells): errors of std
                ``background_error_std`` (scalar or per level) correlated horizontally as
                ``exp(−r² / 2L²)`` (:meth:`SpectralCovariance.from_length_scale`, whose options
                — SOAR, km, a vertical correlation — a ``background_error_covariance`` built
                with it takes).
            qc: quality control of the observations before any guidance (docs/method.md
                §Quality control): a value whose innovation against the background exceeds
                ``qc_threshold · sqrt(σ_y² + (A B Aᵀ)_ii)`` (against the model's training
                climatology, mapped by the operator, where no background is given) becomes
                missing; counts and indices are in the output's ``quality_control``, and a
                one-line warning gives the counts. ``False``: every value is assimilated, and
                one more than 10 climatological std away raises ``ValueError``.
            qc_threshold: ``k`` of the check (default 5, chosen on validation windows).
            analysis: how latents become states (docs/method.md §Analysis): ``"full"``
                (``D(z_a)``), ``"incremental"`` (``x_b + D(z_a) − D(E(x_b))``), ``"filtered"``
                (``D(z_a)`` plus a draw of the posterior of the part the autoencoder cannot
                represent, given the background's and the observations:
                :mod:`slams_diffusers.analysis`), or
                ``"auto"``: ``"filtered"`` with a background and a learned autoencoder, else
                ``"full"``.
            spread_inflation: ``ρ`` (one factor or one per level): the members are widened
                about their mean, ``x̄ + ρ_l (x_i − x̄)`` (docs/method.md §Spread inflation;
                the mean is unchanged). Default: the pipeline's ``spread_inflation`` config,
                fitted on validation windows (``training/fit_spread_inflation.py``), else 1;
                pass 1 for the uninflated ensemble. Not applied to ``output_type="latent"``.
            climatology_snr: where the learned ε gives way to the climatology's at high noise
                (:class:`~slams_diffusers.guidance.GuidedScore`); ``None`` never.
            num_frames: window length when there is no background (default: the score window).
            member_batch_size: members per batch (default: all at once); results do not depend
                on it when ``generator`` is a list with one generator per member.
            generator: a ``torch.Generator`` or one per member.
            output_type: ``"xarray"``, ``"np"``, ``"pt"`` or ``"latent"`` (members are latents).
            return_dict: return an :class:`AssimilationOutput` rather than a tuple.
            callback_on_step_end: ``f(pipe, step, timestep, callback_kwargs) -> dict`` after each
                predictor-corrector step; may replace ``"latents"``.
        """
        defaults = self.scheduler.config
        corrector_steps = defaults.corrector_steps if corrector_steps is None else corrector_steps
        tau = defaults.tau if tau is None else tau
        observations = list(observations)
        background, template = read_background(
            background, self.spatial_dims, self.autoencoder.config.get("levels_hpa")
        )
        grid = problem_grid(
            background,
            observations,
            num_frames,
            autoencoder=self.autoencoder,
            window=self.window,
            score_widths=getattr(self.score_model.config, "hidden_channels", None),
        )
        check_inputs(
            background=background,
            observations=observations,
            grid=grid,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            corrector_steps=corrector_steps,
            tau=tau,
            likelihood_covariance=likelihood_covariance,
            gamma=gamma,
            cg_iterations=cg_iterations,
            analysis=analysis,
            qc=qc,
            qc_threshold=qc_threshold,
            output_type=output_type,
            generator=generator,
            member_batch_size=member_batch_size,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            callback_tensor_inputs=self._callback_tensor_inputs,
        )
        if spread_inflation is None:
            spread_inflation = self.config.get("spread_inflation") or 1.0
        spread_inflation = spread_inflation_factors(spread_inflation, self.levels)
        if background is not None:
            covariance = resolve_background_covariance(
                background_error_std,
                background_error_covariance,
                background_error_length_scale,
                levels=grid.levels,
                grid_shape=grid.space,
                default=self.background_covariance,
            )
            observations += background_observations(background, covariance)
        linear = isinstance(self.autoencoder, LevelNormalizer)  # D ∘ E is the identity
        given = [i for i, o in enumerate(observations) if o.num_observed > 0]
        routes = resolve_routes(
            [observations[i] for i in given], guidance, self.observation_encoder, linear
        )
        climate = self.autoencoder.config
        report = None
        # quality control, then the likelihood terms (the encoded observations, B carried into
        # latent space): seconds on the testbed, under a bar of their own
        with self.progress_bar(total=2, phase="preparing") as preparing:
            if qc:  # positions in the report: those of the `observations` argument
                observations, report = quality_control(
                    observations,
                    threshold=qc_threshold,
                    level_mean=climate.level_mean,
                    level_std=climate.level_std,
                )
                warn_rejections(report)
            else:
                check_observation_range(observations, climate.level_mean, climate.level_std)
            preparing.update()
            kept = [(observations[i], r) for i, r in zip(given, routes, strict=True)]
            kept = [(o, r) for o, r in kept if o.num_observed > 0]
            if not kept:
                raise ValueError(
                    "Nothing to assimilate: quality control rejected every value of "
                    f"`observations` ({report.summary()}) and there is no `background`; check "
                    "their units, or pass a larger `qc_threshold` or qc=False"
                )
            observations, routes = [o for o, _ in kept], [r for _, r in kept]

            device, dtype = self.device, self._model_dtype
            guided = GuidedScore(
                MarkovBlanketScore(self.score_model),
                self.scheduler.alpha_sigma,
                likelihood_terms(
                    observations,
                    routes,
                    encode=self.encode,
                    decode=self.decode,
                    observation_encoder=self.observation_encoder,
                    level_std=self.autoencoder.config.level_std or [1.0] * self.levels,
                    latent_space=grid.latent_space,
                    device=device,
                    dtype=dtype,
                ),
                likelihood_covariance,
                gamma,
                cg_iterations,
                climatology_snr,
            )
            preparing.update()

        latents = sample_latents(
            self,
            guided,
            (grid.time, grid.latent_channels, *grid.latent_space),
            device=device,
            dtype=dtype,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            corrector_steps=corrector_steps,
            tau=tau,
            member_batch_size=member_batch_size,
            generator=generator,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        warn_non_finite(latents)

        if output_type == "latent":
            members = latents
        else:
            members = self.decode(latents)
            analysis = resolve_analysis(analysis, background, linear_autoencoder=linear)
            if analysis != "full":
                observed = [o for o in observations if not isinstance(o, Background)]
                members = members + unresolved_part(
                    analysis,
                    background.to(device, dtype),
                    covariance,
                    members,
                    observed,
                    generator,
                    autoencode=lambda state: self.decode(self.encode(state)),
                    progress=lambda pairs: self.progress_bar(pairs, phase="unresolved scales"),
                )
            members = inflate_spread(members, spread_inflation, level_dim=2)
            warn_out_of_range(members, climate.level_mean, climate.level_std)
        output = to_output(
            members,
            latents,
            output_type,
            template,
            self.spatial_dims,
            report,
            levels_hpa=self.autoencoder.config.get("levels_hpa"),
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return output.to_tuple()
        return output
