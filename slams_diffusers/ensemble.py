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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .baselines.localization import gaspari_cohn, grid_distance, grid_positions
from .covariance import DenseCovariance
from .validation import finite_float, periodic_axes

__all__ = ["CovarianceOptions", "ensemble_covariance", "localization_matrix"]


def localization_matrix(grid_shape: tuple[int, ...], radius: float, periodic: Any = True) -> Tensor:
    """``L`` over the cells of a grid (C order), ``GC(d_ij / radius)`` with ``d`` the horizontal
    distance in cells (wrapped on the ``periodic`` axes): ``(cells, cells)`` float64."""
    cells = grid_positions(grid_shape)
    return gaspari_cohn(grid_distance(cells, cells, grid_shape, periodic), radius)


@dataclass(frozen=True)
class CovarianceOptions:
    """What ``B = ρ (L ∘ P_f) + B_s`` takes besides the members, checked and precomputed once
    for a state ``(levels, *space)``: ``taper`` the ``L`` over every value (levels share a
    column's), or ``None``; ``inflation`` ``ρ``; ``static`` ``B_s`` as a matrix, or ``None``."""

    state_shape: tuple[int, ...]
    taper: Tensor | None
    inflation: float
    static: Tensor | None

    @classmethod
    def build(
        cls,
        state_shape: tuple[int, ...],
        *,
        localization_radius: float | None = None,
        periodic: Any = True,
        inflation: float = 1.0,
        static: Any = None,
    ) -> CovarianceOptions:
        """The options of :func:`ensemble_covariance` for states ``state_shape``."""
        levels, *space = state_shape
        rho = finite_float(inflation, "inflation")
        if rho <= 0:
            raise ValueError(f"inflation: expected a number > 0, got {rho}")
        taper = None
        if localization_radius is not None:
            radius = finite_float(localization_radius, "localization_radius")
            if radius <= 0:
                raise ValueError(
                    f"localization_radius: expected a number > 0 (cells), got {radius}"
                )
            periodic_axes(periodic, len(space))  # validates it here, naming it
            cells = localization_matrix(tuple(space), radius, periodic)
            taper = torch.kron(torch.ones(levels, levels, dtype=cells.dtype), cells)
        matrix = None
        if static is not None:
            if tuple(getattr(static, "state_shape", ())) != tuple(state_shape):
                raise ValueError(
                    f"static: expected a covariance of states {tuple(state_shape)}, got "
                    f"{type(static).__name__} of {tuple(getattr(static, 'state_shape', ()))}"
                )
            matrix = static.to_dense().double().cpu()
        return cls(tuple(state_shape), taper, rho, matrix)


def ensemble_covariance(
    members: Tensor,
    *,
    localization_radius: float | None = None,
    periodic: Any = True,
    inflation: float = 1.0,
    static: Any = None,
    options: CovarianceOptions | None = None,
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
        options: all of the above, built once (:meth:`CovarianceOptions.build`) for a caller
            that forms ``B`` at every cycle; it replaces them.
    """
    if not isinstance(members, Tensor) or members.ndim not in (3, 4) or members.shape[0] < 2:
        raise ValueError(
            "members: expected a tensor (members, levels, *space) with at least 2 members, got "
            f"{type(members).__name__} of shape {tuple(getattr(members, 'shape', ()))}"
        )
    if not bool(torch.isfinite(members).all()):
        raise ValueError("members: contains NaN or inf")
    if options is None:
        options = CovarianceOptions.build(
            tuple(members.shape[1:]),
            localization_radius=localization_radius,
            periodic=periodic,
            inflation=inflation,
            static=static,
        )
    elif options.state_shape != tuple(members.shape[1:]):
        raise ValueError(
            f"members: states {tuple(members.shape[1:])}, but the options are for "
            f"{options.state_shape}"
        )
    levels, *space = members.shape[1:]
    x = members.double().reshape(members.shape[0], -1).cpu()
    perturbations = x - x.mean(dim=0)
    covariance = perturbations.T @ perturbations / (x.shape[0] - 1)
    if options.taper is not None:
        covariance = covariance * options.taper
    covariance = options.inflation * covariance
    if options.static is not None:
        covariance = covariance + options.static
    return DenseCovariance.from_matrix(covariance, levels, tuple(space))
