"""The pipeline's inputs, checked before any compute: the background as a tensor (units, level
order and range against the training data), the shapes of the problem (docs/method.md §Spaces),
the call's arguments, and the background as observations of its own (docs/method.md §Background
covariance). The observation-list checks shared with the baselines are
:func:`~slams_diffusers.observations.check_observations`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..analysis import ANALYSES
from ..data.stores import CELSIUS_UNITS
from ..guidance import canonical_covariance
from ..observations import Background, Observation, check_observations
from ..quality_control import check_qc_threshold
from .outputs import OUTPUT_TYPES

__all__ = [
    "BACKGROUND_RANGE_STD",
    "Grid",
    "background_observations",
    "check_background_levels",
    "check_background_range",
    "check_inputs",
    "problem_grid",
    "read_background",
]

BACKGROUND_RANGE_STD = 10.0
"""A background level whose mean lies more than this many climatological std from the training
data's level mean is refused (°C given for K, levels in another order, another variable)."""


@dataclass
class Grid:
    """Shapes of one assimilation problem."""

    time: int
    levels: int
    space: tuple[int, ...]
    latent_channels: int
    latent_space: tuple[int, ...]


def read_background(
    background: Any, spatial_dims: int, levels_hpa: Sequence[float] | None = None
) -> tuple[Tensor | None, xr.DataArray | None]:
    """The ``background`` argument as a tensor ``(time, level, *space)`` (``spatial_dims`` spatial
    dims) and, for a ``DataArray``, its template ``(time, level, *space)`` for the output;
    ``ValueError`` for °C, levels other than ``levels_hpa`` (:func:`check_background_levels`), a
    wrong rank or missing values."""
    if background is None:
        return None, None
    template = None
    if isinstance(background, xr.DataArray):
        if "level" not in background.dims:
            raise ValueError(
                f"`background` must have a 'level' dimension, found dims {background.dims}"
            )
        template = background if "time" in background.dims else background.expand_dims("time")
        space_dims = [d for d in template.dims if d not in ("time", "level")]
        template = template.transpose("time", "level", *space_dims)
        units = str(template.attrs.get("units", "K")).strip()
        if units in CELSIUS_UNITS:
            raise ValueError(
                f"`background` is in {units!r} (its units attribute); expected K (add 273.15)"
            )
        check_background_levels(template, levels_hpa)
        # a flipped axis (e.g. latitude 90..-90 read ascending) is a negative-stride view
        values = torch.as_tensor(np.ascontiguousarray(template.values))
    elif isinstance(background, np.ndarray):
        values = torch.as_tensor(np.ascontiguousarray(background))
    elif isinstance(background, Tensor):
        values = background
    else:
        raise ValueError(
            "`background` must be an xarray.DataArray, a tensor or an array of shape "
            f"(time, level, *space), got {type(background).__name__}"
        )
    rank = 2 + spatial_dims
    if values.dim() == rank - 1:
        values = values.unsqueeze(0)
    if values.dim() != rank:
        raise ValueError(
            f"`background` must have shape (time, level, *space) or (level, *space) with "
            f"{spatial_dims} spatial dims, got shape {tuple(values.shape)}"
        )
    if not torch.isfinite(values).all():
        raise ValueError("`background` contains NaN or infinite values; it must be complete")
    return values, template


def check_background_levels(template: xr.DataArray, expected: Sequence[float] | None) -> None:
    """``ValueError`` when the background's ``level`` coordinate (hPa, or Pa by its units) is
    not ``expected``, the model's recorded ``levels_hpa`` (``None``: unchecked), in that order."""
    if expected is None or "level" not in template.coords:
        return
    coordinate = template.coords["level"]
    found = np.asarray(coordinate.values, dtype=float).reshape(-1)
    if str(coordinate.attrs.get("units", "hPa")).strip().lower() in ("pa", "pascal"):
        found = found / 100.0
    if found.shape == (len(expected),) and np.allclose(found, expected, rtol=1e-6):
        return
    hint = ""
    if found.shape == (len(expected),) and np.allclose(found[::-1], expected, rtol=1e-6):
        hint = " (reversed order: use background.isel(level=slice(None, None, -1)))"
    elif set(np.round(found, 6)) == set(np.round(expected, 6)):
        hint = " (another order: use background.sel(level=levels))"
    raise ValueError(
        f"`background` has levels {found.tolist()} hPa{hint}; the model was trained on "
        f"{list(expected)} hPa, in that order"
    )


def check_background_range(
    values: Tensor, level_mean: Sequence[float] | None, level_std: Sequence[float] | None
) -> None:
    """``ValueError`` when a level's mean of ``values`` ``(time, level, *space)`` lies more than
    :data:`BACKGROUND_RANGE_STD` climatological std ``level_std`` from the training data's
    ``level_mean`` (``None``: unchecked): a background in °C, with levels in another order, or of
    another variable."""
    if level_mean is None or level_std is None:
        return
    mean = torch.as_tensor(level_mean, dtype=torch.float64)
    std = torch.as_tensor(level_std, dtype=torch.float64)
    if values.shape[1] != mean.numel():
        return  # the level count is refused with its own message
    found = values.double().transpose(0, 1).reshape(mean.numel(), -1).mean(1)
    distance = ((found - mean) / std).abs()
    if float(distance.max()) <= BACKGROUND_RANGE_STD:
        return
    level = int(distance.argmax())
    hint = ""
    if float(((found + 273.15 - mean) / std).abs().max()) <= BACKGROUND_RANGE_STD:
        hint = " It looks like °C: the model works in K (add 273.15)."
    elif float(((found.flip(0) - mean) / std).abs().max()) <= BACKGROUND_RANGE_STD:
        hint = " The levels look reversed: give them in the model's order."
    raise ValueError(
        f"`background` level {level} has mean {float(found[level]):.2f}, "
        f"{float(distance[level]):.0f} std from the model's training data there "
        f"({float(mean[level]):.2f} ± {float(std[level]):.2f} K).{hint} Expected levels in the "
        f"order and units of the training data, level means "
        f"{[round(v, 1) for v in mean.tolist()]}"
    )


def problem_grid(
    background: Tensor | None,
    observations: Sequence[Observation],
    num_frames: int | None,
    *,
    autoencoder: Any,
    window: int,
    score_widths: Sequence[int] | None = None,
) -> Grid:
    """The shapes of the problem: from the ``background`` ``(time, level, *space)``, else from the
    observations' common grid and ``num_frames`` (default ``window``), checked against the
    ``autoencoder`` (levels, training grid, latent shape), the score model's Markov-blanket
    ``window`` and its U-Net widths ``score_widths``; the background's range is checked too
    (:func:`check_background_range`)."""
    config = autoencoder.config
    model_levels, spatial_dims = int(config.levels), int(config.spatial_dims)
    if background is None and not observations:
        raise ValueError(
            "Nothing to assimilate: pass `background=` (a forecast) and/or `observations=` "
            "(Observation objects)"
        )
    if background is not None:
        time, levels, *space = background.shape
        if levels != model_levels:
            raise ValueError(
                f"`background` has {levels} levels but the model expects {model_levels}"
            )
    else:
        shapes = {tuple(o.grid_shape) for o in observations}
        if len(shapes) != 1:
            raise ValueError(
                "Without a `background`, the observations must share one `grid_shape`; "
                f"found {sorted(shapes)}"
            )
        space = shapes.pop()
        time = window if num_frames is None else num_frames
        levels = model_levels
    space = tuple(int(s) for s in space)
    if len(space) != spatial_dims:
        raise ValueError(f"the state must have {spatial_dims} spatial dims, got shape {space}")
    trained = config.get("grid_shape")
    if trained is not None and space != tuple(trained):
        source = "`background`" if background is not None else "the observations"
        raise ValueError(
            f"the grid of {source}, {space}, is not the grid the model was trained on, "
            f"{tuple(trained)}; expected inputs on the training grid (regrid them first)"
        )
    if time < window:
        raise ValueError(
            f"the assimilation window has {time} time steps but the score model's "
            f"Markov-blanket window needs at least `window`={window}"
        )
    try:
        latent_space = autoencoder.latent_shape(space)
    except ValueError as error:
        raise ValueError(
            f"the state's spatial shape {space} does not fit the autoencoder: {error}"
        ) from error
    channels = autoencoder.latent_channels
    if score_widths is not None and any(n % 2 ** (len(score_widths) - 1) for n in latent_space):
        raise ValueError(
            f"the score model's grid {latent_space} (state {space}) must be divisible by "
            f"2^(len(hidden_channels) - 1) = {2 ** (len(score_widths) - 1)} for its U-Net"
        )
    if background is not None:
        check_background_range(background, config.level_mean, config.level_std)
    return Grid(time, levels, space, channels, latent_space)


def check_inputs(
    *,
    background: Tensor | None,
    observations: Sequence[Observation],
    grid: Grid,
    num_members: int,
    num_inference_steps: int,
    corrector_steps: int,
    tau: float,
    likelihood_covariance: str,
    gamma: float,
    cg_iterations: int,
    analysis: str,
    qc: bool,
    qc_threshold: float,
    output_type: str,
    generator: torch.Generator | list[torch.Generator] | None,
    member_batch_size: int | None,
    callback_on_step_end_tensor_inputs: Sequence[str],
    callback_tensor_inputs: Sequence[str],
) -> None:
    """Raise ``ValueError`` for any argument of the pipeline's call that would fail later, before
    any compute (``grid``: :func:`problem_grid`; ``callback_tensor_inputs``: what the callback
    may ask for)."""
    if background is None and not observations:
        raise ValueError("Nothing to assimilate: `observations` is empty and no `background`")
    if not isinstance(qc, bool):
        raise ValueError(f"`qc` must be True or False, got {qc!r}")
    check_qc_threshold(qc_threshold)
    for name, value, low in (
        ("num_members", num_members, 1),
        ("num_inference_steps", num_inference_steps, 1),
        ("corrector_steps", corrector_steps, 0),
        ("cg_iterations", cg_iterations, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    if member_batch_size is not None and (
        not isinstance(member_batch_size, int) or member_batch_size < 1
    ):
        raise ValueError(f"`member_batch_size` must be an integer >= 1, got {member_batch_size!r}")
    if analysis not in ANALYSES:
        raise ValueError(f"`analysis` must be one of {ANALYSES}, got {analysis!r}")
    if not tau > 0:
        raise ValueError(f"`tau` must be > 0, got {tau}")
    if not gamma >= 0:
        raise ValueError(f"`gamma` must be >= 0, got {gamma}")
    canonical_covariance(likelihood_covariance)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if isinstance(generator, list) and len(generator) != num_members:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators; expected one per member "
            f"({num_members})"
        )
    check_observations(observations, steps=grid.time, levels=grid.levels, space=grid.space)
    if background is None and not any(o.num_observed > 0 for o in observations):
        raise ValueError(
            f"Nothing to assimilate: no `background`, and `observations` ({len(observations)}) "
            "have no valid value (all NaN or masked); expected a background or at least one "
            "observed value"
        )
    unknown = set(callback_on_step_end_tensor_inputs) - set(callback_tensor_inputs)
    if unknown:
        raise ValueError(
            "`callback_on_step_end_tensor_inputs` may only name "
            f"{callback_tensor_inputs}, got {sorted(unknown)}"
        )


def background_observations(background: Tensor, covariance: Any) -> list[Background]:
    """The background ``(time, level, *space)`` as one observation per step, its errors of
    covariance ``B`` = ``covariance`` (docs/method.md §Background covariance)."""
    std = covariance.variance().sqrt().to(background)
    return [
        Background(values=values, noise_std=std, time_index=index, covariance=covariance)
        for index, values in enumerate(background)
    ]
