from .scheduling_vp_pc import VPPredictorCorrectorScheduler, VPPredictorCorrectorSchedulerOutput

__all__ = ["VPPredictorCorrectorScheduler", "VPPredictorCorrectorSchedulerOutput"]
