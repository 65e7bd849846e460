"""Scores of analyses against the truth (DESIGN §2 notation: members ``x^{(i)}``, truth ``x``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["rmse", "ensemble_spread"]


def rmse(estimate: Tensor, truth: Tensor, dims: Sequence[int] | None = None) -> Tensor:
    r"""Root-mean-square error :math:`\sqrt{\operatorname{mean}_{dims}(\hat x - x)^2}` over
    ``dims`` (default: all), accumulated in float64."""
    if estimate.shape != truth.shape:
        raise ValueError(
            f"`estimate` {tuple(estimate.shape)} and `truth` {tuple(truth.shape)} must have the "
            "same shape"
        )
    return _mean(((estimate.double() - truth.double()).pow(2)), dims).sqrt()


def ensemble_spread(members: Tensor, dims: Sequence[int] | None = None) -> Tensor:
    r"""Ensemble spread :math:`\sqrt{\operatorname{mean}_{dims} \operatorname{Var}_i x^{(i)}}`,
    members on axis 0 (unbiased variance), means over ``dims`` of the remaining axes (default:
    all). Comparable with :func:`rmse` of the ensemble mean (spread-skill)."""
    if members.shape[0] < 2:
        raise ValueError(f"`members` needs at least 2 members on axis 0, got {members.shape[0]}")
    return _mean(members.double().var(dim=0), dims).sqrt()


def _mean(values: Tensor, dims: Sequence[int] | None) -> Tensor:
    """Mean over ``dims`` (``None``: all; ``()``: none, unlike ``torch.mean``)."""
    if dims is None:
        return values.mean()
    dims = tuple(dims)
    return values.mean(dim=dims) if dims else values
