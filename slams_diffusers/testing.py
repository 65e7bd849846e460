"""Linear-Gaussian assimilation problems with an exact posterior, to check samplers against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .models.gaussian_score import GaussianScoreModel
from .models.level_normalizer import LevelNormalizer
from .observations import (
    Gridded,
    Observation,
    Profile,
    Satellite,
    Stations,
    gaussian_weighting_functions,
)
from .pipelines.pipeline_slams import SLAMSPipeline
from .schedulers.scheduling_vp_pc import VPPredictorCorrectorScheduler


def squared_exponential_covariance(
    shape: tuple[int, ...], length: float, variance: float = 1.0
) -> Tensor:
    """``C_ij = variance · exp(-|p_i - p_j|² / (2 length²))`` over the cells of a grid (float64)."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    points = torch.stack([a.reshape(-1) for a in axes], dim=-1)
    distance2 = torch.cdist(points, points) ** 2
    return variance * torch.exp(-distance2 / (2 * length**2)) + 1e-6 * torch.eye(
        len(points), dtype=torch.float64
    )


def ar1_covariance(length: int, rho: float, spatial: Tensor) -> Tensor:
    """Covariance of a stationary AR(1) trajectory ``x_{i+1} = ρ x_i + √(1-ρ²) w``, ``w ~ N(0, S)``:
    ``Cov[x_i, x_j] = ρ^|i-j| S``, flattened time-major."""
    index = torch.arange(length, dtype=torch.float64)
    temporal = rho ** (index[:, None] - index[None, :]).abs()
    return torch.kron(temporal, spatial)


@dataclass
class GaussianPosterior:
    """Exact Kalman posterior of ``x ~ N(m, C)`` given linear observations ``y = H x + e``
    (``e ~ N(0, diag(σ_y²))``, or ``N(0, B)`` for an observation with a ``covariance``)."""

    mean: Tensor
    covariance: Tensor

    @classmethod
    def from_observations(
        cls, prior_mean: Tensor, prior_covariance: Tensor, observations: list[Observation]
    ) -> GaussianPosterior:
        """Posterior of a state ``(T, levels, *space)`` with prior moments over its flattening.

        Observation operators must be linear; ``H`` is read off them column by column.
        """
        shape = prior_mean.shape
        size = prior_mean.numel()
        basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
        rows, values, noises = [], [], []
        for observation in observations:
            columns = observation.operator(basis[:, observation.time_index])
            mask = observation.mask.reshape(-1)
            rows.append(columns.reshape(size, -1).T[mask])
            values.append(observation.values.reshape(-1)[mask])
            covariance = getattr(observation, "covariance", None)
            if covariance is not None:  # a correlated error covariance (e.g. a background's B)
                noises.append(covariance.to_dense().double()[mask][:, mask])
            else:
                noises.append(torch.diag(observation.noise_variance().reshape(-1)[mask].double()))
        operator = torch.cat(rows).double()
        innovation = torch.cat(values).double() - operator @ prior_mean.reshape(-1)
        gain_denominator = operator @ prior_covariance @ operator.T + torch.block_diag(*noises)
        gain = torch.linalg.solve(gain_denominator, operator @ prior_covariance).T
        mean = prior_mean.reshape(-1) + gain @ innovation
        covariance = prior_covariance - gain @ operator @ prior_covariance
        return cls(mean.reshape(shape), covariance)

    def errors(self, members: Tensor) -> tuple[float, float]:
        """(RMS over cells of the ensemble-mean error in posterior stds, mean variance ratio)."""
        std = self.covariance.diagonal().sqrt().reshape(self.mean.shape)
        mean_error = ((members.mean(0) - self.mean) / std).square().mean().sqrt()
        variance_ratio = (members.var(0) / std**2).mean()
        return float(mean_error), float(variance_ratio)


@dataclass
class GaussianProblem:
    """A pixel-space pipeline with an exact Gaussian prior, observations and the exact posterior."""

    pipeline: SLAMSPipeline
    observations: list[Observation]
    posterior: GaussianPosterior
    num_frames: int

    def errors(
        self, covariance: str, members: int, steps: int, seed: int = 0, **kwargs
    ) -> tuple[float, float]:
        """Assimilate with ``likelihood_covariance=covariance`` and score against the posterior:
        (RMS ensemble-mean error in posterior stds, mean variance ratio)."""
        out = self.pipeline(
            observations=self.observations,
            num_frames=self.num_frames,
            num_members=members,
            num_inference_steps=steps,
            likelihood_covariance=covariance,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            **kwargs,
        )
        return self.posterior.errors(out.members)


def _problem(
    prior_mean: Tensor, prior_covariance: Tensor, window: int, observations: list[Observation]
) -> GaussianProblem:
    frames = prior_mean.shape[0]
    window_size = prior_mean[:window].numel()
    score = GaussianScoreModel.from_moments(
        prior_mean[:window],
        prior_covariance[:window_size, :window_size],
        window=window,
        in_channels=prior_mean.shape[1],
    )
    pipeline = SLAMSPipeline(score_model=score, scheduler=VPPredictorCorrectorScheduler())
    pipeline.set_progress_bar_config(disable=True)
    posterior = GaussianPosterior.from_observations(prior_mean, prior_covariance, observations)
    return GaussianProblem(pipeline, observations, posterior, frames)


def gaussian_field_problem(
    size: int = 8, length: float = 2.0, noise_std: float = 0.3, subsample: int = 2, seed: int = 0
) -> GaussianProblem:
    """``x ~ N(m, C)`` on a ``1 × size × size`` field (squared-exponential ``C``), observed every
    ``subsample`` cells with noise ``noise_std``; the truth is a prior draw."""
    generator = torch.Generator().manual_seed(seed)
    covariance = squared_exponential_covariance((size, size), length)
    mean = (
        torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
        .expand(size, size)
        .reshape(1, 1, size, size)
    )
    truth = mean.reshape(-1) + torch.linalg.cholesky(covariance) @ torch.randn(
        size * size, generator=generator, dtype=torch.float64
    )
    observation = Gridded.simulate(
        truth.reshape(1, size, size),
        coarsen=1,
        subsample=subsample,
        noise_std=noise_std,
        generator=generator,
    )
    return _problem(mean, covariance, 1, [observation])


def column_problem(
    pressures: tuple[float, ...] = (850.0, 700.0, 600.0, 500.0, 400.0, 300.0, 250.0, 200.0),
    length: float = 0.4,
    std: float = 3.0,
    seed: int = 0,
) -> GaussianProblem:
    """A temperature column ``x ~ N(m, C)`` on ``pressures`` [hPa] (``C_ij = std² exp(-|ln p_i −
    ln p_j|² / 2 length²)``, a standard-atmosphere-like mean) observed by a surface report below
    the lowest level (:class:`~slams_diffusers.observations.Profile`, 1 K) and three sounder
    channels (:class:`~slams_diffusers.observations.Satellite`, 0.3 K); the truth is a prior
    draw. The pipeline diffuses level-normalised values (a
    :class:`~slams_diffusers.models.LevelNormalizer` with the prior's mean and std), like a
    trained pixel-space pipeline."""
    generator = torch.Generator().manual_seed(seed)
    log_p = torch.tensor(pressures, dtype=torch.float64).log()
    covariance = std**2 * torch.exp(-((log_p[:, None] - log_p[None]) ** 2) / (2 * length**2))
    covariance += 1e-6 * torch.eye(len(pressures), dtype=torch.float64)
    mean = (288.0 + 45.0 * (log_p - log_p[0])).reshape(1, -1)
    truth = mean.reshape(-1) + torch.linalg.cholesky(covariance) @ torch.randn(
        len(pressures), generator=generator, dtype=torch.float64
    )
    weights = gaussian_weighting_functions(pressures, [700.0, 450.0, 250.0]).double()
    sounder = Satellite.simulate(truth[:, None], weights, 1, 0.3, generator=generator)
    sounder = Satellite(
        values=sounder.values[:, 0], weights=weights, footprint=1, grid_shape=(), noise_std=0.3
    )
    surface = Profile(values=[0.0], pressures=[960.0], model_pressures=pressures, noise_std=1.0)
    surface = surface.replace_values(
        surface.operator(truth) + torch.randn(1, generator=generator, dtype=torch.float64)
    )
    observations: list[Observation] = [surface, sounder]
    # the diffusion runs on level-normalised values, as a trained pipeline's does
    scale = covariance.diagonal().sqrt()
    normalizer = LevelNormalizer(
        levels=len(pressures),
        spatial_dims=0,
        level_mean=mean.reshape(-1).tolist(),
        level_std=scale.tolist(),
        levels_hpa=list(pressures),
    )
    score = GaussianScoreModel.from_moments(
        torch.zeros_like(mean),
        covariance / (scale[:, None] * scale[None]),
        in_channels=len(pressures),
    )
    pipeline = SLAMSPipeline(
        score_model=score, scheduler=VPPredictorCorrectorScheduler(), autoencoder=normalizer
    )
    pipeline.set_progress_bar_config(disable=True)
    posterior = GaussianPosterior.from_observations(mean, covariance, observations)
    return GaussianProblem(pipeline, observations, posterior, 1)


def ar1_trajectory_problem(
    frames: int = 9,
    window: int = 5,
    size: int = 4,
    rho: float = 0.8,
    noise_std: float = 0.3,
    seed: int = 0,
) -> GaussianProblem:
    """A stationary AR(1) trajectory of ``frames`` fields ``1 × size × size`` (squared-exponential
    spatial covariance), gridded observations every 2 cells at the first, middle and last frame and
    a few stations in between; the score model knows the exact prior of ``window`` frames."""
    generator = torch.Generator().manual_seed(seed)
    covariance = ar1_covariance(frames, rho, squared_exponential_covariance((size, size), 1.5))
    mean = torch.zeros(frames, 1, size, size, dtype=torch.float64)
    truth = torch.linalg.cholesky(covariance) @ torch.randn(
        covariance.shape[0], generator=generator, dtype=torch.float64
    )
    truth = truth.reshape(frames, 1, size, size)
    observations: list[Observation] = [
        Gridded.simulate(
            truth[i], coarsen=1, subsample=2, noise_std=noise_std, time_index=i, generator=generator
        )
        for i in (0, frames // 2, frames - 1)
    ]
    positions = torch.rand(3, 2, generator=generator, dtype=torch.float64) * (size - 1)
    for i in (frames // 4, 3 * frames // 4):
        observations.append(
            Stations.simulate(
                truth[i],
                positions=positions,
                levels=[0],
                noise_std=noise_std,
                time_index=i,
                generator=generator,
            )
        )
    return _problem(mean, covariance, window, observations)


__all__ = [
    "GaussianPosterior",
    "GaussianProblem",
    "ar1_trajectory_problem",
    "column_problem",
    "gaussian_field_problem",
    "GaussianScoreModel",
    "ar1_covariance",
    "squared_exponential_covariance",
]
