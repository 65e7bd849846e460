r"""A forecast ensemble as a background: its mean and its flow-dependent, localised covariance
(docs/method.md §Cycling).

With forecast members ``x_f^{(1…N)}`` (``N >= 2``), mean ``x̄_f`` and perturbations
``X' = [x_f^{(i)} − x̄_f]``,

.. math::

    B = ρ \, (L ∘ P_f) + B_s, \qquad P_f = \frac{X' X'^{\top}}{N - 1},

with ``ρ`` the multiplicative covariance inflation (Anderson & Anderson 1999), ``L`` the
Gaspari–Cohn (1999) taper of the horizontal distance between cells (every level of a column
shares it; Houtekamer & Mitchell 2001, Hamill et al. 2001) and ``B_s`` an optional static
covariance (the hybrid ``B`` of Hamill & Snyder 2000). The Schur product with a correlation
matrix keeps ``B`` positive semi-definite and removes the spurious long-range correlations of a
small ensemble. ``B`` is held densely (:class:`~slams_diffusers.covariance.DenseCovariance`), so
the state is small (Lorenz-96, columns, coarse grids).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .baselines.localization import gaspari_cohn, grid_distance, grid_positions
from .covariance import DenseCovariance
from .validation import finite_float, periodic_axes

__all__ = ["ensemble_covariance", "localization_matrix"]


def localization_matrix(grid_shape: tuple[int, ...], radius: float, periodic: Any = True) -> Tensor:
    """``L`` over the cells of a grid (C order), ``GC(d_ij / radius)`` with ``d`` the horizontal
    distance in cells (wrapped on the ``periodic`` axes): ``(cells, cells)`` float64."""
    cells = grid_positions(grid_shape)
    return gaspari_cohn(grid_distance(cells, cells, grid_shape, periodic), radius)


def ensemble_covariance(
    members: Tensor,
    *,
    localization_radius: float | None = None,
    periodic: Any = True,
    inflation: float = 1.0,
    static: Any = None,
) -> DenseCovariance:
    """``B = ρ (L ∘ P_f) + B_s`` of the module docstring from ``members`` ``(N, levels, *space)``.

    Args:
        members: the forecast ensemble, ``N >= 2`` finite states.
        localization_radius: the Gaspari–Cohn half-width ``c`` in grid cells (correlations vanish
            beyond ``2c``); ``None`` = no localisation.
        periodic: the axes that wrap (:func:`~slams_diffusers.validation.periodic_axes`).
        inflation: ``ρ >= 1`` is usual; any ``ρ > 0`` is accepted.
        static: ``B_s``, a covariance object of the same state (e.g. a ``SpectralCovariance``),
            or ``None``.
    """
    if not isinstance(members, Tensor) or members.ndim not in (3, 4) or members.shape[0] < 2:
        raise ValueError(
            "members: expected a tensor (members, levels, *space) with at least 2 members, got "
            f"{type(members).__name__} of shape {tuple(getattr(members, 'shape', ()))}"
        )
    if not bool(torch.isfinite(members).all()):
        raise ValueError("members: contains NaN or inf")
    rho = finite_float(inflation, "inflation")
    if rho <= 0:
        raise ValueError(f"inflation: expected a number > 0, got {rho}")
    levels, *space = members.shape[1:]
    x = members.double().reshape(members.shape[0], -1)
    perturbations = x - x.mean(dim=0)
    covariance = perturbations.T @ perturbations / (x.shape[0] - 1)
    if localization_radius is not None:
        radius = finite_float(localization_radius, "localization_radius")
        if radius <= 0:
            raise ValueError(f"localization_radius: expected a number > 0 (cells), got {radius}")
        periodic_axes(periodic, len(space))  # validates it here, naming it
        taper = localization_matrix(tuple(space), radius, periodic)
        covariance = covariance * torch.kron(torch.ones(levels, levels, dtype=taper.dtype), taper)
    covariance = rho * covariance
    if static is not None:
        if tuple(getattr(static, "state_shape", ())) != tuple(members.shape[1:]):
            raise ValueError(
                f"static: expected a covariance of states {tuple(members.shape[1:])}, got "
                f"{type(static).__name__} of {tuple(getattr(static, 'state_shape', ()))}"
            )
        covariance = covariance + static.to_dense().to(covariance)
    return DenseCovariance.from_matrix(covariance.cpu(), levels, tuple(space))
