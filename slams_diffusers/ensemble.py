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
small ensemble. ``structure="dense"`` holds ``B`` densely
(:class:`~slams_diffusers.covariance.DenseCovariance`), for small states (Lorenz-96, columns,
coarse grids).

``structure="spectral"`` is for periodic grids too large for that (the QG testbed's
``5 × 64 × 64``): ``B = ρ P_h + B_s`` with ``P_h`` the homogeneous part of ``P_f``, its
cross-level covariance per wavenumber (shell) estimated from the perturbations
(:meth:`~slams_diffusers.covariance.SpectralCovariance.from_samples`), and ``B_s`` a
``SpectralCovariance``. Averaging over the grid's translations is the localisation here: it keeps
the ensemble's error amplitude per scale and level and its vertical correlations, and drops
where in the domain the errors are (spectral localisation, Buehner & Charron 2007).

``structure="zonal"`` is for global latitude–longitude grids, periodic in longitude only: ``B = ρ
(L_y ∘ P_z) + B_s`` with ``P_z`` the part of ``P_f`` homogeneous in longitude (its cross-level and
cross-latitude covariance per zonal wavenumber,
:meth:`~slams_diffusers.covariance.ZonalCovariance.from_samples`), ``L_y`` the Gaspari–Cohn taper
of the latitude distance (every level and wavenumber shares it) and ``B_s`` a
``ZonalCovariance``: the errors' amplitude and structure change with latitude, and are averaged
over longitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .baselines.localization import gaspari_cohn, grid_distance, grid_positions
from .covariance import DENSE_MAX_SIZE, DenseCovariance, SpectralCovariance, ZonalCovariance
from .validation import finite_float, periodic_axes

__all__ = ["CovarianceOptions", "ensemble_covariance", "localization_matrix"]

STRUCTURES = ("dense", "spectral", "zonal")


def localization_matrix(grid_shape: tuple[int, ...], radius: float, periodic: Any = True) -> Tensor:
    """``L`` over the cells of a grid (C order), ``GC(d_ij / radius)`` with ``d`` the horizontal
    distance in cells (wrapped on the ``periodic`` axes): ``(cells, cells)`` float64."""
    cells = grid_positions(grid_shape)
    return gaspari_cohn(grid_distance(cells, cells, grid_shape, periodic), radius)


@dataclass(frozen=True)
class CovarianceOptions:
    """What ``B`` takes besides the members, checked and precomputed once for a state
    ``(levels, *space)``: the ``structure``; ``taper`` the ``L`` over every value (levels share a
    column's; zonal: over ``(level, y)``), or ``None``; ``inflation`` ``ρ``; ``static`` ``B_s`` as
    a matrix (dense), its ``C(k)`` per wavenumber (spectral) or its ``C_m`` per zonal wavenumber
    (zonal), or ``None``."""

    state_shape: tuple[int, ...]
    taper: Tensor | None
    inflation: float
    static: Tensor | None
    structure: str = "dense"

    @classmethod
    def build(
        cls,
        state_shape: tuple[int, ...],
        *,
        localization_radius: float | None = None,
        periodic: Any = True,
        inflation: float = 1.0,
        static: Any = None,
        structure: str | None = None,
    ) -> CovarianceOptions:
        """The options of :func:`ensemble_covariance` for states ``state_shape``."""
        levels, *space = state_shape
        rho = finite_float(inflation, "inflation")
        if rho <= 0:
            raise ValueError(f"inflation: expected a number > 0, got {rho}")
        size = levels * math.prod(space)
        if structure is None:
            if size <= DENSE_MAX_SIZE:
                structure = "dense"
            elif len(space) == 2 and periodic_axes(periodic, 2) == (False, True):
                structure = "zonal"
            else:
                structure = "spectral"
        if structure not in STRUCTURES:
            raise ValueError(f"structure: expected one of {STRUCTURES}, got {structure!r}")
        if structure == "spectral":
            return cls._spectral(tuple(state_shape), localization_radius, periodic, rho, static)
        if structure == "zonal":
            return cls._zonal(tuple(state_shape), localization_radius, periodic, rho, static)
        if size > DENSE_MAX_SIZE:
            raise ValueError(
                f"structure: a dense B of states {tuple(state_shape)} has order {size}, expected "
                f"at most {DENSE_MAX_SIZE}; pass structure='spectral' for a periodic grid"
            )
        taper = None
        if localization_radius is not None:
            radius = _radius(localization_radius)
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

    @classmethod
    def _spectral(
        cls,
        state_shape: tuple[int, ...],
        localization_radius: Any,
        periodic: Any,
        rho: float,
        static: Any,
    ) -> CovarianceOptions:
        if localization_radius is not None:
            raise ValueError(
                "localization_radius: a spectral B is localised by its homogeneity; expected "
                f"None with structure='spectral', got {localization_radius!r}"
            )
        if len(state_shape) < 2:
            raise ValueError(
                f"structure: a spectral B needs a grid, got states {state_shape} without one"
            )
        if not all(periodic_axes(periodic, len(state_shape) - 1)):
            raise ValueError(
                f"periodic: a spectral B wraps every axis (it is diagonal in Fourier space), got "
                f"{periodic!r}; expected True"
            )
        spectrum = None
        if static is not None:
            _check_static(static, SpectralCovariance, state_shape, "spectral")
            spectrum = static.spectrum.double().cpu()
            if static.isotropic:  # per wavenumber, like an anisotropic one
                spectrum = spectrum[static.shells()]
        return cls(state_shape, None, rho, spectrum, "spectral")

    @classmethod
    def _zonal(
        cls,
        state_shape: tuple[int, ...],
        localization_radius: Any,
        periodic: Any,
        rho: float,
        static: Any,
    ) -> CovarianceOptions:
        if len(state_shape) != 3:
            raise ValueError(f"structure: a zonal B needs a grid (y, x), got states {state_shape}")
        if periodic_axes(periodic, 2) != (False, True):
            raise ValueError(
                f"periodic: a zonal B wraps x (longitude) only, got {periodic!r}; expected 'x'"
            )
        levels, ny, _ = state_shape
        taper = None
        if localization_radius is not None:
            rows = torch.arange(ny, dtype=torch.float64)
            latitude = gaspari_cohn(
                (rows[:, None] - rows[None, :]).abs(), _radius(localization_radius)
            )
            taper = torch.kron(torch.ones(levels, levels, dtype=torch.float64), latitude)
        matrices = None
        if static is not None:
            _check_static(static, ZonalCovariance, state_shape, "zonal")
            matrices = static.matrices().cpu()
        return cls(state_shape, taper, rho, matrices, "zonal")


def _check_static(static: Any, kind: type, state_shape: tuple[int, ...], structure: str) -> None:
    """``ValueError`` unless ``static`` is a ``kind`` covariance of states ``state_shape``."""
    if not isinstance(static, kind) or tuple(static.state_shape) != state_shape:
        raise ValueError(
            f"static: with structure={structure!r}, expected a {kind.__name__} of states "
            f"{state_shape}, got {type(static).__name__} of "
            f"{tuple(getattr(static, 'state_shape', ()))}"
        )


def _radius(localization_radius: Any) -> float:
    radius = finite_float(localization_radius, "localization_radius")
    if radius <= 0:
        raise ValueError(f"localization_radius: expected a number > 0 (cells), got {radius}")
    return radius


def ensemble_covariance(
    members: Tensor,
    *,
    localization_radius: float | None = None,
    periodic: Any = True,
    inflation: float = 1.0,
    static: Any = None,
    structure: str | None = None,
    options: CovarianceOptions | None = None,
) -> DenseCovariance | SpectralCovariance:
    """``B`` of the module docstring from ``members`` ``(N, levels, *space)``.

    Args:
        members: the forecast ensemble, ``N >= 2`` finite states.
        localization_radius: the Gaspari–Cohn half-width ``c`` in grid cells (correlations vanish
            beyond ``2c``; zonal: in latitude rows); ``None`` = no localisation.
        periodic: the axes that wrap (:func:`~slams_diffusers.validation.periodic_axes`; ``"x"``
            for a zonal ``B``).
        inflation: ``ρ >= 1`` is usual; any ``ρ > 0`` is accepted.
        static: ``B_s``, a covariance object of the same state (e.g. a ``SpectralCovariance``),
            or ``None``.
        structure: ``"dense"`` (``ρ (L ∘ P_f) + B_s``), ``"spectral"`` (``ρ P_h + B_s``, no
            ``localization_radius``) or ``"zonal"`` (``ρ (L_y ∘ P_z) + B_s``, a latitude–longitude
            grid); ``None``: dense up to ``DENSE_MAX_SIZE`` values, else zonal where only ``x``
            wraps, else spectral.
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
            structure=structure,
        )
    elif options.state_shape != tuple(members.shape[1:]):
        raise ValueError(
            f"members: states {tuple(members.shape[1:])}, but the options are for "
            f"{options.state_shape}"
        )
    levels, *space = members.shape[1:]
    if options.structure == "zonal":
        sample = ZonalCovariance.from_samples(
            members.double().cpu(), remove_mean=True, taper=options.taper
        )
        if options.inflation == 1.0 and options.static is None:
            return sample
        matrices = options.inflation * sample.matrices()
        if options.static is not None:
            matrices = matrices + options.static
        return ZonalCovariance.from_matrices(matrices, levels, tuple(space))
    if options.structure == "spectral":
        sample = SpectralCovariance.from_samples(
            members.double().cpu(), remove_mean=True, spatial_dims=len(space)
        )
        spectrum = options.inflation * sample.spectrum
        if options.static is None:
            return SpectralCovariance.from_spectrum(spectrum, tuple(space))
        spectrum = spectrum[sample.shells()] + options.static
        return SpectralCovariance.from_spectrum(spectrum, tuple(space), isotropic=False)
    x = members.double().reshape(members.shape[0], -1).cpu()
    perturbations = x - x.mean(dim=0)
    covariance = perturbations.T @ perturbations / (x.shape[0] - 1)
    if options.taper is not None:
        covariance = covariance * options.taper
    covariance = options.inflation * covariance
    if options.static is not None:
        covariance = covariance + options.static
    return DenseCovariance.from_matrix(covariance, levels, tuple(space))
