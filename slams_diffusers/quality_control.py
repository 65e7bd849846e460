r"""Quality control of observations before any guidance (docs/method.md §Quality control).

Every observed value ``y_i`` of an observation ``y = A(x) + e`` is compared with a reference:

- **background check** (a :class:`~slams_diffusers.observations.Background` at the value's step):
  the innovation ``d_i = y_i − A(x_b)_i`` has variance ``σ_d,i² = σ_y,i² + (A B Aᵀ)_ii`` when the
  declared errors are honest, and the value is rejected when

      |d_i| > k · σ_d,i;

- **climatology check** (no background at that step): ``d_i = y_i − A(μ)_i`` with ``μ`` the
  field of per-level climatological means (``level_mean``) and
  ``σ_d,i² = σ_y,i² + |A(s) − A(0)|_i²`` with ``s`` the per-level std (``level_std``;
  :func:`~slams_diffusers.observations.level_scale`, the spread of ``A(x)`` for anomalies fully
  correlated over the operator's footprint, an upper bound of the climatological one).

``k`` is ``threshold`` (default :data:`QC_THRESHOLD`). Independently of ``k``, a value more than
:data:`GROSS_RANGE_STD` of the climatological ``σ_d`` from ``A(μ)`` lies outside anything the
prior was trained on: it is rejected with the check on, and refused (``ValueError``,
:func:`check_observation_range`) with it off, because an absurd value would otherwise pass linearly
into every member (the decoded guidance and the unresolved-part update are linear in ``y``).

``diag(A B Aᵀ)`` is computed exactly for the declared ``B`` (:func:`background_error_variance`):
the rows ``a_i = Aᵀ e_i`` of the operator come from one vector-Jacobian product over a batch of
unit vectors (the Jacobian of ``A`` at ``x_b`` for an operator that is not linear), and
``(A B Aᵀ)_ii = a_iᵀ B a_i``: for a homogeneous (spectral) ``B`` summed over the row's few nonzero
entries with ``B``'s lag covariance, else with ``B``'s own ``apply``. A station between grid nodes
thus gets the variance of its bilinear interpolation, and a satellite value the variance of its
weighted vertical sum averaged over its footprint, correlations included.

Rejected values become missing (NaN, ``mask`` false) in copies of the observations; the caller's
objects are never changed. :class:`QualityControlReport` lists the counts per modality and every
rejected value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .covariance import SpectralCovariance, background_covariance_of
from .defaults import QC_THRESHOLD
from .observations import Background, Observation, level_scale

__all__ = [
    "GROSS_RANGE_STD",
    "QC_THRESHOLD",
    "QualityControlReport",
    "Rejection",
    "background_error_variance",
    "check_observation_range",
    "check_qc_threshold",
    "climatology",
    "departures",
    "quality_control",
]

GROSS_RANGE_STD = 10.0
"""A value more than this many climatological ``σ_d`` from ``A(level_mean)`` is outside the
prior's training range: rejected with the check on, refused with it off."""

#: Operator rows per vector-Jacobian product in :func:`background_error_variance`.
PROBE_BATCH = 128
#: Largest number of nonzero entries of an operator row summed pairwise (a homogeneous ``B``);
#: wider rows (e.g. a gridded value over a large block) apply ``B`` instead.
MAX_SUPPORT = 256


@dataclass
class Rejection:
    """One rejected value: ``observations[observation].values[index]``, of ``modality`` at step
    ``time_index``, against the ``reference`` (``"background"`` or ``"climatology"``) whose
    prediction was ``expected``; ``departure`` is ``(value − expected) / σ_d``."""

    observation: int
    modality: str
    time_index: int
    index: tuple[int, ...]
    value: float
    expected: float
    departure: float
    reference: str


@dataclass
class QualityControlReport:
    """What quality control did (docs/method.md §Quality control).

    Args:
        threshold: ``k``.
        checked: per modality, the values checked (against a background or the climatology).
        rejected: per modality, the values rejected (0 for every modality checked).
        rejections: every rejected value (:class:`Rejection`).
    """

    threshold: float
    checked: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        """All rejected values."""
        return sum(self.rejected.values())

    @property
    def indices(self) -> dict[int, list[tuple[int, ...]]]:
        """Per position in the ``observations`` argument, the indices of its rejected values."""
        out: dict[int, list[tuple[int, ...]]] = {}
        for r in self.rejections:
            out.setdefault(r.observation, []).append(r.index)
        return out

    def summary(self) -> str:
        """One line: the counts per modality."""
        counts = ", ".join(
            f"{self.rejected.get(m, 0)} of {n} {m} values" for m, n in sorted(self.checked.items())
        )
        return (
            f"Quality control (|y − reference| > {self.threshold:g} σ_d) rejected "
            f"{counts or 'nothing (no value checked)'}"
        )

    def to_attrs(self, prefix: str = "slams_qc") -> dict[str, Any]:
        """netCDF global attributes: ``<prefix>_threshold``, ``<prefix>_checked_<modality>``,
        ``<prefix>_rejected_<modality>`` and ``<prefix>_rejections`` (the rejected values, JSON)."""
        attrs: dict[str, Any] = {f"{prefix}_threshold": float(self.threshold)}
        for modality, count in sorted(self.checked.items()):
            attrs[f"{prefix}_checked_{modality}"] = int(count)
            attrs[f"{prefix}_rejected_{modality}"] = int(self.rejected.get(modality, 0))
        attrs[f"{prefix}_rejections"] = json.dumps([asdict(r) for r in self.rejections])
        return attrs


def check_qc_threshold(threshold: Any) -> float:
    """``threshold`` as a float ``k > 0``; ``ValueError`` naming ``qc_threshold`` otherwise."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"`qc_threshold` must be a number k > 0 (σ_d), got {threshold!r}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"`qc_threshold` must be a finite number k > 0 (σ_d), got {threshold}")
    return float(threshold)


def _device_of(covariance: Any, fallback: torch.device) -> torch.device:
    buffers = list(covariance.buffers()) if hasattr(covariance, "buffers") else []
    return buffers[0].device if buffers else fallback


def _operator_rows(observation: Observation, state: Tensor, picked: Tensor) -> Tensor:
    """Rows ``a_i = ∂A(x)_i/∂x`` at ``state`` ``(levels, *space)`` for the flat value indices
    ``picked``: ``(len(picked), levels, *space)``, one vector-Jacobian product."""
    count = picked.numel()
    with torch.enable_grad():
        probe = state.expand(count, *state.shape).clone().requires_grad_(True)
        seen = observation.operator(probe).reshape(count, -1)
        chosen = seen[torch.arange(count, device=picked.device), picked]
        (rows,) = torch.autograd.grad(chosen.sum(), probe)
    return rows


def _lag_covariance(covariance: SpectralCovariance, device: torch.device) -> Tensor:
    """``K[l, l', δ] = Cov(e_{l', c + δ}, e_{l, c})`` of a homogeneous ``B``, ``(levels, levels,
    *space)``: ``B`` applied to a unit impulse at the origin of each level."""
    shape = covariance.state_shape
    impulses = torch.zeros(shape[0], *shape, dtype=torch.float64, device=device)
    origin = (0,) * (len(shape) - 1)
    for level in range(shape[0]):
        impulses[(level, level, *origin)] = 1.0
    return covariance.apply(impulses)


def _homogeneous_quadratic(rows: Tensor, lag: Tensor) -> Tensor | None:
    """``a_iᵀ B a_i`` per row ``a_i`` of ``rows`` ``(R, levels, *space)`` for a homogeneous ``B``
    with lag covariance ``lag`` (:func:`_lag_covariance`): ``Σ_{p,q} a_p a_q K[l_q, l_p,
    c_p − c_q]`` over the row's nonzero entries only (a station's 4 corners, a satellite
    footprint's cells and levels), the displacements wrapping on the periodic grid. ``None`` for
    rows of more than :data:`MAX_SUPPORT` entries."""
    count, levels, *space = rows.shape
    flat = rows.reshape(count, -1)
    row, column = torch.nonzero(flat, as_tuple=True)  # row-major: each row's entries in order
    sizes = torch.bincount(row, minlength=count)
    width = max(int(sizes.max()), 1) if row.numel() else 1
    if width > MAX_SUPPORT:
        return None
    slot = torch.arange(row.numel(), device=rows.device) - (sizes.cumsum(0) - sizes)[row]
    order = torch.zeros(count, width, dtype=torch.long, device=rows.device)
    weights = torch.zeros(count, width, dtype=rows.dtype, device=rows.device)
    order[row, slot] = column
    weights[row, slot] = flat[row, column]
    level = order // math.prod(space)
    cell = order % math.prod(space)
    index = level[:, None, :] * levels + level[:, :, None]  # (R, p, q) -> l_q * L + l_p
    stride = 1
    offsets = torch.zeros_like(index)
    for n in reversed(space):
        coordinate = (cell // stride) % n
        shift = (coordinate[:, :, None] - coordinate[:, None, :]) % n  # c_p − c_q
        offsets = offsets + shift * stride
        stride *= n
    values = lag.reshape(-1)[index * stride + offsets]
    return torch.einsum("rp,rq,rpq->r", weights, weights, values)


def background_error_variance(
    observation: Observation, covariance: Any, state: Tensor, batch: int = PROBE_BATCH
) -> Tensor:
    """``diag(A B Aᵀ)`` per value (``values.shape``, float64; 0 where missing), exact: the rows
    ``a_i = ∂A(x)_i/∂x`` at ``state`` ``(levels, *space)`` (any ``state`` for a linear ``A``)
    by vector-Jacobian products over ``batch`` unit vectors at a time, then ``a_iᵀ B a_i``:
    for a homogeneous (:class:`~slams_diffusers.covariance.SpectralCovariance`) ``B`` from its
    lag covariance over each row's few nonzero entries (``levels`` applications of ``B`` in all),
    else with ``covariance.apply``."""
    device = _device_of(covariance, state.device)
    observation = observation.to(device=device, dtype=torch.float64)
    state = state.detach().to(device=device, dtype=torch.float64)
    variance = torch.zeros(observation.values.numel(), dtype=torch.float64, device=device)
    observed = torch.nonzero(observation.mask.reshape(-1)).reshape(-1)
    lag = None
    if isinstance(covariance, SpectralCovariance):
        lag = _lag_covariance(covariance, device)
    for start in range(0, observed.numel(), batch):
        picked = observed[start : start + batch]
        rows = _operator_rows(observation, state, picked)
        quadratic = None if lag is None else _homogeneous_quadratic(rows, lag)
        if quadratic is None:
            quadratic = (rows * covariance.apply(rows)).flatten(1).sum(1)
        variance[picked] = quadratic
    return variance.reshape(observation.values.shape)


def climatology(
    observation: Observation, level_mean: Sequence[float], level_std: Sequence[float]
) -> tuple[Tensor, Tensor]:
    """``(A(μ), |A(s) − A(0)|)`` per value, float64: the climatology's prediction of the values
    and its spread (:func:`~slams_diffusers.observations.level_scale`), ``μ`` and ``s`` the fields
    of the per-level ``level_mean`` and ``level_std``."""
    observation = observation.to(dtype=torch.float64)
    device = observation.values.device
    mean = torch.as_tensor(level_mean, dtype=torch.float64, device=device)
    std = torch.as_tensor(level_std, dtype=torch.float64, device=device)
    shape = (observation.num_levels, *observation.grid_shape)  # type: ignore[attr-defined]
    field_mean = torch.broadcast_to(mean.reshape(-1, *([1] * observation.spatial_dims)), shape)
    return observation.operator(field_mean), level_scale(observation, std)


def departures(
    observation: Observation,
    background: Background | None,
    level_mean: Sequence[float] | None,
    level_std: Sequence[float] | None,
) -> tuple[str, Tensor, Tensor, Tensor | None] | None:
    """``(reference, expected, σ_d, gross)`` per value of ``observation`` (float64, on its device):
    the reference's name (``"background"``, ``"climatology"``), its prediction of the values and
    the departure std σ_d, against ``background`` (a :class:`Background` at the observation's step)
    when given, else the climatology; ``gross`` is the climatological range check
    (:data:`GROSS_RANGE_STD`), ``None`` without a recorded climatology. ``None`` when there is no
    reference at all. The check rejects ``|y − expected| > k σ_d`` or ``gross``."""
    noise = observation.noise_variance().to(torch.float64)
    gross = None
    if level_mean is not None and level_std is not None:
        mean, spread = climatology(observation, level_mean, level_std)
        std = (noise + spread.square()).sqrt()
        values = observation.values.to(torch.float64)
        gross = (values - mean).abs() > GROSS_RANGE_STD * std
    if background is not None:
        state = background.values
        covariance = background_covariance_of(background)
        variance = background_error_variance(observation, covariance, state).to(noise.device)
        expected = observation.to(dtype=torch.float64).operator(state.to(noise.device).double())
        return "background", expected, (noise + variance).sqrt(), gross
    if gross is not None:
        return "climatology", mean, std, gross
    return None


def quality_control(
    observations: Sequence[Observation],
    *,
    threshold: float = QC_THRESHOLD,
    level_mean: Sequence[float] | None = None,
    level_std: Sequence[float] | None = None,
) -> tuple[list[Observation], QualityControlReport]:
    """Check every observed value of ``observations`` (module docstring) and return them with the
    rejected values missing, in the same order, and the :class:`QualityControlReport`.

    The :class:`~slams_diffusers.observations.Background` entries are the references (each for its
    own ``time_index``, its ``covariance`` or ``noise_std`` its ``B``) and are returned as they are;
    an observation at a step without one is checked against the climatology (``level_mean``,
    ``level_std``: per-level mean and std of the model's training data), or not at all without it.
    Observations with nothing rejected are returned as the same objects; the others as copies
    (:meth:`~slams_diffusers.observations.Observation.replace_values`)."""
    threshold = check_qc_threshold(threshold)
    backgrounds: dict[int, Background] = {}
    for o in observations:
        if isinstance(o, Background):
            backgrounds.setdefault(o.time_index, o)
    report = QualityControlReport(threshold)
    kept: list[Observation] = []
    for position, observation in enumerate(observations):
        if isinstance(observation, Background) or observation.num_observed == 0:
            kept.append(observation)
            continue
        found = departures(
            observation, backgrounds.get(observation.time_index), level_mean, level_std
        )
        if found is None:
            kept.append(observation)
            continue
        reference, expected, std, gross = found
        values = observation.values.to(torch.float64)
        mask = observation.mask.to(values.device)
        departure = (values - expected) / std
        reject = departure.abs() > threshold
        if gross is not None:
            reject = reject | gross
        reject = reject & mask
        modality = observation.modality
        report.checked[modality] = report.checked.get(modality, 0) + observation.num_observed
        report.rejected[modality] = report.rejected.get(modality, 0) + int(reject.sum())
        if not bool(reject.any()):
            kept.append(observation)
            continue
        for index in torch.nonzero(reject).tolist():
            i = tuple(int(v) for v in index)
            report.rejections.append(
                Rejection(
                    observation=position,
                    modality=modality,
                    time_index=observation.time_index,
                    index=i,
                    value=float(values[i]),
                    expected=float(expected[i]),
                    departure=float(departure[i]),
                    reference=reference,
                )
            )
        missing = torch.full_like(observation.values, float("nan"))
        rejected = reject.to(observation.values.device)
        kept.append(observation.replace_values(torch.where(rejected, missing, observation.values)))
    return kept, report


def check_observation_range(
    observations: Sequence[Observation],
    level_mean: Sequence[float] | None,
    level_std: Sequence[float] | None,
) -> None:
    """``ValueError`` naming ``observations[i]`` for a value more than :data:`GROSS_RANGE_STD`
    climatological ``σ_d`` from ``A(level_mean)`` (:func:`climatology`; ``None``: unchecked): with
    quality control off such a value would pass linearly into every member."""
    if level_mean is None or level_std is None:
        return
    for position, observation in enumerate(observations):
        if isinstance(observation, Background) or observation.num_observed == 0:
            continue
        mean, spread = climatology(observation, level_mean, level_std)
        std = (observation.noise_variance().to(torch.float64) + spread.square()).sqrt()
        values = observation.values.to(torch.float64)
        distance = torch.where(observation.mask, (values - mean).abs() / std, 0.0)
        if float(distance.max()) <= GROSS_RANGE_STD:
            continue
        i = tuple(int(v) for v in torch.nonzero(distance == distance.max())[0].tolist())
        raise ValueError(
            f"observations[{position}] ({observation.modality!r}): value {float(values[i]):.6g} at "
            f"index {i} is {float(distance[i]):.3g} climatological std from the model's training "
            f"data there ({float(mean[i]):.2f} ± {float(std[i]):.2f}); expected values within "
            f"{GROSS_RANGE_STD:g} std. With qc=False such a value would pass linearly into every "
            "member: pass qc=True to reject it, or fix its units or set it to NaN (missing)"
        )
