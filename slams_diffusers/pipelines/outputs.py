"""The pipeline's outputs: the analysis ensemble as tensors, arrays or an ``xarray.Dataset`` with
the background's coordinates and CF attributes, and the warning for an analysis outside the
training data's range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from diffusers.utils import BaseOutput, logging
from torch import Tensor

from ..data.writing import to_xarray
from ..quality_control import QualityControlReport

__all__ = [
    "DEFAULT_ATTRS",
    "OUTPUT_TYPES",
    "AssimilationOutput",
    "to_output",
    "warn_non_finite",
    "warn_out_of_range",
    "warn_rejections",
]

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("xarray", "np", "pt", "latent")
#: CF attributes of the output where the background has none (air temperature in K).
DEFAULT_ATTRS = {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"}


@dataclass
class AssimilationOutput(BaseOutput):
    """Result of an assimilation.

    Args:
        members: analysis ensemble ``(n, time, level, *space)``; latents when
            ``output_type="latent"``.
        mean: ensemble mean ``(time, level, *space)``.
        std: ensemble spread (unbiased standard deviation over members) ``(time, level, *space)``.
        latents: final latents ``(n, time, c, *space/f)``.
        dataset: with ``output_type="xarray"``, the members, mean and std as one ``xarray.Dataset``
            (the quality control's counts in its attributes, ``slams_qc_*``).
        quality_control: what quality control rejected (counts per modality, every rejected
            value with its index; docs/method.md §Quality control); ``None`` with ``qc=False``.
    """

    members: Any
    mean: Any
    std: Any
    latents: Tensor
    dataset: xr.Dataset | None = None
    quality_control: QualityControlReport | None = None


def to_output(
    members: Tensor,
    latents: Tensor,
    output_type: str,
    template: xr.DataArray | None,
    spatial_dims: int,
    quality_control: QualityControlReport | None = None,
) -> AssimilationOutput:
    """The members ``(n, time, level, *space)``, their mean and spread as ``output_type``
    (:data:`OUTPUT_TYPES`), with the ``quality_control`` report; the xarray output takes the dims,
    coordinates and attributes of ``template`` ``(time, level, *space)`` (the background's;
    :data:`DEFAULT_ATTRS` where it has none), or ``(time, level, y?, x?)`` without coordinates when
    there is no template."""
    count = members.shape[0]
    mean = members.mean(0)
    std = members.std(0, correction=1) if count > 1 else torch.zeros_like(mean)
    report = {"quality_control": quality_control}
    if output_type in ("pt", "latent"):
        return AssimilationOutput(members=members, mean=mean, std=std, latents=latents, **report)
    arrays = [a.detach().cpu().numpy() for a in (members, mean, std)]
    if output_type == "np":
        return AssimilationOutput(*arrays, latents=latents, **report)
    if template is None:
        space_names = ("y", "x")[2 - spatial_dims :]
        template = xr.DataArray(arrays[1], dims=("time", "level", *space_names))
    attrs = {**DEFAULT_ATTRS, **template.attrs}
    template = template.copy(deep=False).rename(None)  # a copy: the caller's attrs are kept
    template.attrs = attrs
    members_da = to_xarray(arrays[0], template, leading_dims=("member",))
    members_da = members_da.assign_coords(member=np.arange(count))
    mean_da = to_xarray(arrays[1], template)
    std_da = to_xarray(arrays[2], template).assign_attrs(
        long_name=f"ensemble spread of {attrs['long_name']}"
    )
    dataset = xr.Dataset({"members": members_da, "mean": mean_da, "std": std_da})
    dataset.attrs["source"] = "slams_diffusers.SLAMSPipeline"
    if quality_control is not None:
        dataset.attrs.update(quality_control.to_attrs())
    return AssimilationOutput(
        members_da, mean_da, std_da, latents=latents, dataset=dataset, **report
    )


def warn_rejections(report: QualityControlReport) -> None:
    """One warning line with the counts when quality control rejected anything."""
    if report.num_rejected:
        logger.warning(f"{report.summary()}; see the output's quality_control for the indices.")


def warn_non_finite(latents: Tensor) -> None:
    """Warn when the final ``latents`` hold NaN or inf: the guidance was too stiff."""
    if not torch.isfinite(latents).all():
        logger.warning(
            "The analysis has non-finite values: the guidance was too stiff for the step "
            "size. Try likelihood_covariance='moment_matching' or more steps."
        )


def warn_out_of_range(
    members: Tensor,
    level_mean: Sequence[float] | None,
    level_std: Sequence[float] | None,
    threshold: float = 8.0,
) -> None:
    """Warn when an analysis ``(n, time, level, *space)`` leaves the training data's range
    (``level_mean ± threshold level_std``; ``None``: unchecked) by a wide margin: the prior was
    never trained there."""
    if level_mean is None or level_std is None:
        return
    shape = (-1,) + (1,) * (members.dim() - 3)
    mean = torch.as_tensor(level_mean).to(members).reshape(shape)
    std = torch.as_tensor(level_std).to(members).reshape(shape)
    deviation = ((members - mean) / std).abs()
    worst = float(deviation.max()) if deviation.numel() else 0.0
    if not worst > threshold:
        return
    level = int(deviation.amax(dim=tuple(d for d in range(members.dim()) if d != 2)).argmax())
    logger.warning(
        f"The analysis leaves the range of the model's training data: up to {worst:.1f} "
        f"climatological std from the level mean at level {level} (mean "
        f"{float(mean.reshape(-1)[level]):.1f}, std {float(std.reshape(-1)[level]):.2f}); "
        f"extremes {float(members.min()):.4g} to {float(members.max()):.4g}. Check the inputs' "
        "units and levels, or use more inference steps."
    )
