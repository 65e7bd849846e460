"""Diffusers pipelines of slams-diffusers."""

from .outputs import AssimilationOutput
from .pipeline_slams import SLAMSPipeline

__all__ = ["AssimilationOutput", "SLAMSPipeline"]
