"""slams-diffusers: score-based latent data assimilation as a diffusers plugin (SLAMS)."""

from .covariance import (
    DiagonalCovariance,
    SpectralCovariance,
    estimate_background_covariance,
    nmc_covariance,
)
from .guidance import GaussianTerm, GuidedScore, conjugate_gradient, likelihood_score
from .models import (
    LevelNormalizer,
    MarkovBlanketScore,
    ObservationEncoder,
    ObservationEncoderOutput,
    ScoreNet,
    ScoreNetOutput,
    StateAutoencoder,
    StateAutoencoderOutput,
    fuse_gaussians,
)
from .models.gaussian_score import GaussianScoreModel
from .observations import (
    Background,
    Gridded,
    Observation,
    Satellite,
    Stations,
    gaussian_weighting_functions,
)
from .pipelines import AssimilationOutput, SLAMSPipeline
from .schedulers import (
    VPPredictorCorrectorScheduler,
    VPPredictorCorrectorSchedulerOutput,
    tweedie_denoise,
)

__version__ = "0.1.0"

__all__ = [
    "AssimilationOutput",
    "Background",
    "DiagonalCovariance",
    "GaussianScoreModel",
    "GaussianTerm",
    "GuidedScore",
    "Gridded",
    "LevelNormalizer",
    "MarkovBlanketScore",
    "Observation",
    "ObservationEncoder",
    "ObservationEncoderOutput",
    "SLAMSPipeline",
    "Satellite",
    "SpectralCovariance",
    "ScoreNet",
    "ScoreNetOutput",
    "StateAutoencoder",
    "StateAutoencoderOutput",
    "Stations",
    "VPPredictorCorrectorScheduler",
    "VPPredictorCorrectorSchedulerOutput",
    "conjugate_gradient",
    "estimate_background_covariance",
    "fuse_gaussians",
    "gaussian_weighting_functions",
    "likelihood_score",
    "nmc_covariance",
    "tweedie_denoise",
]


def _register_with_diffusers() -> None:
    """Make ``diffusers.DiffusionPipeline.from_pretrained(folder)`` load a saved ``SLAMSPipeline``.

    diffusers looks the ``_class_name`` of ``model_index.json`` up in its own namespace; binding
    the class there (once ``slams_diffusers`` is imported) is all it needs. No code from the model
    folder runs: the components' classes come from this package.
    """
    import diffusers

    if getattr(diffusers, "SLAMSPipeline", None) is None:
        diffusers.SLAMSPipeline = SLAMSPipeline


_register_with_diffusers()
