"""Guidance: the Tweedie denoiser, Gaussian likelihood terms per route, their covariance (moment
matching or diagonal) and the guided ε (docs/method.md)."""

from ..schedulers.denoising import tweedie_denoise
from .conjugate_gradient import conjugate_gradient
from .guided_score import GuidedScore, climatology_weight
from .likelihood import (
    COVARIANCES,
    LIKELIHOOD_COVARIANCES,
    canonical_covariance,
    diagonal_score,
    likelihood_score,
    moment_matching_score,
)
from .routes import (
    ROUTES,
    decoded_term,
    encoded_observation_term,
    latent_background_covariance,
    latent_background_term,
    likelihood_terms,
    resolve_routes,
)
from .terms import GaussianTerm

__all__ = [
    "COVARIANCES",
    "GaussianTerm",
    "GuidedScore",
    "LIKELIHOOD_COVARIANCES",
    "ROUTES",
    "canonical_covariance",
    "climatology_weight",
    "conjugate_gradient",
    "decoded_term",
    "diagonal_score",
    "encoded_observation_term",
    "latent_background_covariance",
    "latent_background_term",
    "likelihood_score",
    "likelihood_terms",
    "moment_matching_score",
    "resolve_routes",
    "tweedie_denoise",
]
