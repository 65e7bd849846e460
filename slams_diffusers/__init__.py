"""slams-diffusers: score-based latent data assimilation as a diffusers plugin (SLAMS)."""

from .covariance import (
    DenseCovariance,
    DiagonalCovariance,
    SpectralCovariance,
    ZonalCovariance,
    estimate_background_covariance,
    nmc_covariance,
)
from .cycling import CycleOutput, SLAMSFilter
from .ensemble import ensemble_covariance
from .forecast import StateMap, numpy_forecast
from .guidance import GaussianTerm, GuidedScore, conjugate_gradient, likelihood_score
from .hub import embedded_pipelines
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
    fuse_likelihoods,
    fuse_posteriors,
)
from .models.gaussian_score import GaussianScoreModel
from .observations import (
    Background,
    Gridded,
    Observation,
    Profile,
    Satellite,
    Stations,
    Transformed,
    gaussian_weighting_functions,
)
from .pipelines import AssimilationOutput, SLAMSPipeline
from .quality_control import QualityControlReport, quality_control
from .schedulers import (
    VPPredictorCorrectorScheduler,
    VPPredictorCorrectorSchedulerOutput,
    tweedie_denoise,
)
from .smoothing import smooth_record

__version__ = "0.1.0"

__all__ = [
    "AssimilationOutput",
    "Background",
    "CycleOutput",
    "DenseCovariance",
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
    "Profile",
    "QualityControlReport",
    "SLAMSFilter",
    "SLAMSPipeline",
    "Satellite",
    "SpectralCovariance",
    "ZonalCovariance",
    "ScoreNet",
    "ScoreNetOutput",
    "StateAutoencoder",
    "StateAutoencoderOutput",
    "StateMap",
    "Stations",
    "Transformed",
    "VPPredictorCorrectorScheduler",
    "VPPredictorCorrectorSchedulerOutput",
    "conjugate_gradient",
    "embedded_pipelines",
    "ensemble_covariance",
    "estimate_background_covariance",
    "fuse_gaussians",
    "fuse_likelihoods",
    "fuse_posteriors",
    "gaussian_weighting_functions",
    "likelihood_score",
    "nmc_covariance",
    "quality_control",
    "smooth_record",
    "numpy_forecast",
    "tweedie_denoise",
]


def _register_with_diffusers() -> None:
    """Make ``diffusers.DiffusionPipeline.from_pretrained(folder, embedded name or Hub id)`` load
    a saved ``SLAMSPipeline``.

    diffusers looks the ``_class_name`` of ``model_index.json`` up in its own namespace, so the
    class is bound there. Before downloading a Hub snapshot it also checks that every component's
    library (here a module such as ``slams_diffusers.models.score_net``) is a loadable library or
    a file of the repository; the modules of this package's components are registered as
    loadable libraries with diffusers' own save/load methods. No code from the model folder runs:
    the components' classes come from this package. ``from_pretrained`` calls ``download`` for
    what is not a folder; the name of an embedded pipeline is answered with its folder (by
    :func:`slams_diffusers.hub.resolve_pipeline`), anything else goes on to diffusers' own.
    """
    import functools
    import os
    from typing import Any

    import diffusers
    from diffusers import ConfigMixin, DiffusionPipeline
    from diffusers.pipelines import pipeline_loading_utils

    from . import hub

    if getattr(diffusers, "SLAMSPipeline", None) is None:
        diffusers.SLAMSPipeline = SLAMSPipeline
        download = DiffusionPipeline.download.__func__

        def download_embedded(
            cls: type, pretrained_model_name: str, **kwargs: Any
        ) -> str | os.PathLike:
            if pretrained_model_name in hub.embedded_pipelines():
                return hub.resolve_pipeline(pretrained_model_name)
            return download(cls, pretrained_model_name, **kwargs)

        DiffusionPipeline.download = classmethod(functools.wraps(download)(download_embedded))
    methods = pipeline_loading_utils.LOADABLE_CLASSES["diffusers"]
    for name in __all__:
        component = globals()[name]
        if isinstance(component, type) and issubclass(component, ConfigMixin):
            pipeline_loading_utils.LOADABLE_CLASSES.setdefault(component.__module__, methods)


_register_with_diffusers()
