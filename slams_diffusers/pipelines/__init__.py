"""Diffusers pipelines of slams-diffusers."""

from .pipeline_slams import AssimilationOutput, SLAMSPipeline

__all__ = ["AssimilationOutput", "SLAMSPipeline"]
