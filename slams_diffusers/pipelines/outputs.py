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
    "MEMBER_ATTRS",
    "OUTPUT_TYPES",
    "AssimilationOutput",
    "ensemble_attrs",
    "index_template",
    "to_output",
    "warn_non_finite",
    "warn_out_of_range",
    "warn_rejections",
]

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("xarray", "np", "pt", "latent")
#: CF attributes of the output where the background has none (air temperature in K).
DEFAULT_ATTRS = {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"}
#: CF attributes of the ``member`` coordinate: ``realization`` is CF's standard name for the
#: members of an ensemble (dimensionless, so no units).
MEMBER_ATTRS = {"standard_name": "realization", "long_name": "ensemble member"}


def ensemble_attrs(attrs: dict[str, Any], statistic: str) -> dict[str, Any]:
    """CF attributes of an ensemble ``statistic`` (``"mean"`` or ``"standard_deviation"``) of a
    variable with ``attrs``: its ``cell_methods`` extended by ``realization: <statistic>`` (CF's
    way to say which statistic over the members the values are). The mean keeps the variable's
    ``standard_name`` (a mean of air temperature is an air temperature); the standard deviation
    drops it and says what it is in ``long_name``: CF qualifies a standard name by
    ``cell_methods`` only, and software that selects variables by standard name would otherwise
    take the spread for a temperature."""
    methods = f"{attrs['cell_methods']} " if attrs.get("cell_methods") else ""
    out = {**attrs, "cell_methods": f"{methods}realization: {statistic}"}
    if statistic == "standard_deviation":
        out.pop("standard_name", None)
        out["long_name"] = f"ensemble standard deviation of {attrs.get('long_name', 'the state')}"
    return out


def index_template(
    values: np.ndarray, spatial_dims: int, levels_hpa: Sequence[float] | None = None
) -> xr.DataArray:
    """A template ``(time, level, y?, x?)`` for a state given as a tensor: index coordinates
    (the window's steps, the grid's cells), pressure levels in hPa where the model records them
    (``levels_hpa``), else level indices; :data:`DEFAULT_ATTRS`."""
    space = ("y", "x")[2 - spatial_dims :]
    coords = {
        "time": ("time", np.arange(values.shape[0]), {"long_name": "time step of the window"}),
        **{
            name: (name, np.arange(size), {"long_name": f"grid index along {name}"})
            for name, size in zip(space, values.shape[2:], strict=True)
        },
    }
    if levels_hpa is not None and len(levels_hpa) == values.shape[1]:
        pressure = {
            "units": "hPa",
            "long_name": "pressure",
            "standard_name": "air_pressure",
            "positive": "down",
        }
        coords["level"] = ("level", np.asarray(levels_hpa, dtype=np.float64), pressure)
    else:
        coords["level"] = ("level", np.arange(values.shape[1]), {"long_name": "level index"})
    return xr.DataArray(
        values, dims=("time", "level", *space), coords=coords, attrs=dict(DEFAULT_ATTRS)
    )


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
    levels_hpa: Sequence[float] | None = None,
) -> AssimilationOutput:
    """The members ``(n, time, level, *space)``, their mean and spread as ``output_type``
    (:data:`OUTPUT_TYPES`), with the ``quality_control`` report; the xarray output takes the dims,
    coordinates and attributes of ``template`` ``(time, level, *space)`` (the background's;
    :data:`DEFAULT_ATTRS` where it has none), or :func:`index_template`'s ``(time, level, y?,
    x?)`` (pressures from ``levels_hpa``) when there is no template; CF attributes of the ensemble
    (:data:`MEMBER_ATTRS`, :func:`ensemble_attrs`)."""
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
        template = index_template(arrays[1], spatial_dims, levels_hpa)
    attrs = {**DEFAULT_ATTRS, **template.attrs}
    template = template.copy(deep=False).rename(None)  # a copy: the caller's attrs are kept
    template.attrs = attrs
    members_da = to_xarray(arrays[0], template, leading_dims=("member",))
    members_da = members_da.assign_coords(member=("member", np.arange(count), MEMBER_ATTRS))
    mean_da = to_xarray(arrays[1], template)
    mean_da.attrs = ensemble_attrs(attrs, "mean")
    std_da = to_xarray(arrays[2], template)
    std_da.attrs = ensemble_attrs(attrs, "standard_deviation")
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
