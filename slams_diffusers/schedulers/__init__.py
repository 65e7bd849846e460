from .denoising import tweedie_denoise
from .scheduling_vp_pc import VPPredictorCorrectorScheduler, VPPredictorCorrectorSchedulerOutput

__all__ = [
    "VPPredictorCorrectorScheduler",
    "VPPredictorCorrectorSchedulerOutput",
    "tweedie_denoise",
]
