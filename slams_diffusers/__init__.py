"""slams-diffusers: score-based latent data assimilation as a diffusers plugin (SLAMS).

The public names load on first use (PEP 562), so that ``import slams_diffusers`` and the ``slams``
command line's ``--help`` start without torch. Importing the package makes ``SLAMSPipeline`` known
to diffusers (``DiffusionPipeline.from_pretrained``), whichever of the two is imported first.
"""

import functools
import importlib
import importlib.abc
import importlib.util
import os
import sys
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module it comes from.
_EXPORTS = {
    **dict.fromkeys(
        [
            "DenseCovariance",
            "DiagonalCovariance",
            "SpectralCovariance",
            "ZonalCovariance",
            "estimate_background_covariance",
            "nmc_covariance",
        ],
        ".covariance",
    ),
    **dict.fromkeys(["CycleOutput", "SLAMSFilter"], ".cycling"),
    "ensemble_covariance": ".ensemble",
    **dict.fromkeys(["StateMap", "numpy_forecast"], ".forecast"),
    **dict.fromkeys(
        ["GaussianTerm", "GuidedScore", "conjugate_gradient", "likelihood_score"], ".guidance"
    ),
    "embedded_pipelines": ".hub",
    **dict.fromkeys(
        [
            "LevelNormalizer",
            "MarkovBlanketScore",
            "ObservationEncoder",
            "ObservationEncoderOutput",
            "ScoreNet",
            "ScoreNetOutput",
            "StateAutoencoder",
            "StateAutoencoderOutput",
            "fuse_gaussians",
            "fuse_likelihoods",
            "fuse_posteriors",
        ],
        ".models",
    ),
    "GaussianScoreModel": ".models.gaussian_score",
    **dict.fromkeys(
        [
            "Background",
            "Gridded",
            "Observation",
            "Profile",
            "Satellite",
            "Stations",
            "Transformed",
            "gaussian_weighting_functions",
        ],
        ".observations",
    ),
    **dict.fromkeys(["AssimilationOutput", "SLAMSPipeline"], ".pipelines"),
    **dict.fromkeys(["QualityControlReport", "quality_control"], ".quality_control"),
    **dict.fromkeys(
        ["VPPredictorCorrectorScheduler", "VPPredictorCorrectorSchedulerOutput", "tweedie_denoise"],
        ".schedulers",
    ),
    "smooth_record": ".smoothing",
}
__all__ = sorted(_EXPORTS)

#: The diffusers module that defines ``DiffusionPipeline``.
_DIFFUSERS_PIPELINES = "diffusers.pipelines.pipeline_utils"
_registered = False
_wrapped = False


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use; once diffusers' pipelines are loaded, the
    first use also registers the package with diffusers (:func:`_register_with_diffusers`)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    if _DIFFUSERS_PIPELINES in sys.modules:
        _register_with_diffusers()
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def _register_with_diffusers() -> None:
    """Once, make ``diffusers.DiffusionPipeline.from_pretrained(folder, embedded name or Hub id)``
    load a saved ``SLAMSPipeline``.

    diffusers looks the ``_class_name`` of ``model_index.json`` up in its own namespace, so the
    class is bound there. Before downloading a Hub snapshot it also checks that every component's
    library (here a module such as ``slams_diffusers.models.score_net``) is a loadable library or
    a file of the repository; the modules of this package's components are registered as
    loadable libraries with diffusers' own save/load methods. No code from the model folder runs:
    the components' classes come from this package.
    """
    global _registered
    if _registered:
        return
    _registered = True
    try:
        import diffusers
        from diffusers import ConfigMixin, DiffusionPipeline
        from diffusers.pipelines import pipeline_loading_utils

        _wrap_loading(DiffusionPipeline)
        package = sys.modules[__name__]
        if getattr(diffusers, "SLAMSPipeline", None) is None:
            diffusers.SLAMSPipeline = package.SLAMSPipeline
        methods = pipeline_loading_utils.LOADABLE_CLASSES["diffusers"]
        for name in __all__:
            component = getattr(package, name)
            if isinstance(component, type) and issubclass(component, ConfigMixin):
                pipeline_loading_utils.LOADABLE_CLASSES.setdefault(component.__module__, methods)
    except BaseException:
        _registered = False
        raise


def _wrap_loading(pipeline_class: type) -> None:
    """Once, make diffusers' ``DiffusionPipeline.from_pretrained`` and ``download`` register this
    package first (:func:`_register_with_diffusers`: it imports torch and the models, so it waits
    for the first load). ``from_pretrained`` calls ``download`` for what is not a folder; the
    name of an embedded pipeline is answered with its folder (by
    :func:`slams_diffusers.hub.resolve_pipeline`), anything else goes on to diffusers' own."""
    global _wrapped
    if _wrapped:
        return
    _wrapped = True
    from_pretrained = pipeline_class.from_pretrained.__func__
    download = pipeline_class.download.__func__

    @functools.wraps(from_pretrained)
    def registered_from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        _register_with_diffusers()
        return from_pretrained(cls, *args, **kwargs)

    @functools.wraps(download)
    def download_embedded(
        cls: type, pretrained_model_name: str, **kwargs: Any
    ) -> str | os.PathLike:
        _register_with_diffusers()
        from . import hub

        if pretrained_model_name in hub.embedded_pipelines():
            return hub.resolve_pipeline(pretrained_model_name)
        return download(cls, pretrained_model_name, **kwargs)

    pipeline_class.from_pretrained = classmethod(registered_from_pretrained)
    pipeline_class.download = classmethod(download_embedded)


class _WrapWhenDiffusersLoads(importlib.abc.MetaPathFinder):
    """An import hook: when diffusers' pipeline module has run, wrap its ``DiffusionPipeline``
    (:func:`_wrap_loading`), then step aside."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _DIFFUSERS_PIPELINES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        def exec_module(module: Any) -> None:
            del loader.exec_module  # the loader's own method again
            loader.exec_module(module)
            _wrap_loading(module.DiffusionPipeline)

        loader.exec_module = exec_module
        return spec


if _DIFFUSERS_PIPELINES in sys.modules:
    _wrap_loading(sys.modules[_DIFFUSERS_PIPELINES].DiffusionPipeline)
else:
    sys.meta_path.insert(0, _WrapWhenDiffusersLoads())
