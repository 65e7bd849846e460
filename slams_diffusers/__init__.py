"""slams-diffusers: score-based latent data assimilation as a diffusers plugin (SLAMS)."""

from .guidance import GaussianTerm, conjugate_gradient, likelihood_score
from .models import (
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
from .schedulers import VPPredictorCorrectorScheduler, VPPredictorCorrectorSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "AssimilationOutput",
    "Background",
    "GaussianScoreModel",
    "GaussianTerm",
    "Gridded",
    "Observation",
    "ObservationEncoder",
    "ObservationEncoderOutput",
    "SLAMSPipeline",
    "Satellite",
    "ScoreNet",
    "ScoreNetOutput",
    "StateAutoencoder",
    "StateAutoencoderOutput",
    "Stations",
    "VPPredictorCorrectorScheduler",
    "VPPredictorCorrectorSchedulerOutput",
    "conjugate_gradient",
    "fuse_gaussians",
    "gaussian_weighting_functions",
    "likelihood_score",
]
