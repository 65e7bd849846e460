r"""A multi-layer quasi-geostrophic (QG) atmosphere on a doubly periodic β-plane, in torch.

The model
---------
``n`` layers, indexed ``i = 0 … n-1`` from the top (as in pyqg), of thickness
``H_i`` (total ``H``), separated by ``n - 1`` interfaces with reduced gravities
``g'_{i+1/2}``. With streamfunctions ``ψ_i`` the layer potential vorticity
(anomaly) is

.. math::

    q_i = ∇²ψ_i + (Sψ)_i, \qquad
    (Sψ)_i = \frac{f_0^2}{H_i g'_{i-1/2}}(ψ_{i-1} - ψ_i)
           + \frac{f_0^2}{H_i g'_{i+1/2}}(ψ_{i+1} - ψ_i),

(terms with a missing neighbour dropped: rigid lid and flat bottom), and it
evolves as

.. math::

    ∂_t q_i + J(ψ_i, q_i) + U_i ∂_x q_i + Q_{y,i} ∂_x ψ_i
        = -δ_{i,n-1}\, r_{ek} ∇²ψ_{n-1} - (Sψ)_i / τ + \text{filter},
    \qquad Q_{y,i} = β - (SU)_i,

with ``U_i`` the imposed zonal wind of layer ``i`` (its vertical shear is the
imposed meridional temperature gradient that drives baroclinic instability),
``Q_{y,i}`` the background PV gradient, ``r_ek`` a linear (Ekman) drag on the
bottom layer, ``1/τ`` a Newtonian cooling of the interface temperatures (it
relaxes the stretching part of the PV) and ``J(ψ, q) = ∂_x(uq) + ∂_y(vq)``,
``u = -∂_yψ``, ``v = ∂_xψ``.

Numerics (pyqg's, so that :mod:`pyqg_jax` can check this module; the cooling is
an addition, off in that check):

- pseudo-spectral on an ``ny × nx`` grid with :func:`torch.fft.rfft2`; the
  state is ``q̂`` with shape ``(B, n, ny, nx//2 + 1)``;
- inversion per wavenumber: ``ψ̂ = (S - κ² I)^{-1} q̂``, an ``n × n`` solve for
  every ``(l, k)``, done through the vertical modes precomputed once in float64:
  ``diag(H) S`` is symmetric, so ``S = P Λ P^{-1}`` with real ``P`` and
  eigenvalues ``0 = λ_0 > λ_1 > …`` (``λ_m = -1/R_m²``, ``R_m`` the deformation
  radii) and ``ψ̂ = P diag(1/(λ_m - κ²)) P^{-1} q̂`` (``ψ̂ = 0`` at ``κ = 0``);
- advection in flux form on the grid, no explicit de-aliasing;
- third-order Adams–Bashforth (AB3; forward Euler then AB2 for the first two
  steps of a run), each step followed by the exponential spectral filter

  .. math:: q̂ ← q̂ \cdot \begin{cases} 1 & κ^* ≤ 0.65π \\
            \exp(-c_f (κ^* - 0.65π)^4) & κ^* > 0.65π \end{cases}, \qquad
            κ^* = \sqrt{(k\,Δx)^2 + (l\,Δy)^2},

  the scale-selective dissipation (``c_f = filterfac``).

Energy (per unit mass, domain mean; conserved without drag, cooling, filter and
mean shear, to round-off for the continuous tendency of an alias-free field):

.. math:: E = -\frac{1}{2H} \sum_i H_i \overline{ψ_i q_i}
            = \frac{1}{H}\sum_i \frac{H_i}{2}\overline{|∇ψ_i|^2}
            + \frac{1}{H}\sum_{i} \frac{f_0^2}{2g'_{i+1/2}}\overline{(ψ_i - ψ_{i+1})^2}.

Temperature
-----------
On the interface between layers ``i`` and ``i + 1`` the buoyancy follows from
hydrostatic and geostrophic balance (the thermal-wind relation),
``b = f_0 ∂_zψ ≈ f_0 (ψ_i - ψ_{i+1}) / Δz`` with ``Δz = (H_i + H_{i+1}) / 2``,
and ``T' = T_0(p)\, b / g``. Each interface is labelled with a pressure level;
the temperature is the standard-atmosphere (ISA) value ``T_0(p)`` at that level
plus ``T'``. The imposed mean meridional temperature gradient (the shear of
``U``) is not periodic and is not added. Nothing is rescaled: amplitudes of a few
K follow from the parameters.

The default configuration (:class:`QGConfig`)
---------------------------------------------
Six layers between the ground and a rigid lid at 100 hPa, with interfaces at the
ISA heights of 850, 700, 500, 300 and 200 hPa (1.46, 3.01, 5.57, 9.16,
11.78 km); reduced gravities from the ISA potential-temperature jump between
layer centres, ``g' = g Δθ/θ`` (deformation radii 786, 381, 231, 176, 102 km);
``f_0 = 10^{-4} s^{-1}``, ``β = 1.6·10^{-11} m^{-1} s^{-1}`` (45° N); a 20 000 km
square domain on a 64 × 64 grid (Δx = 312 km) and ``dt = 900 s``. Why:

- ``U_i = shear · z_i`` with ``shear = 1.75 m s⁻¹ km⁻¹`` (U = 1.3 … 24.5 m s⁻¹):
  by thermal wind a meridional gradient of 4.5 K per 1000 km, as in midlatitudes;
  most unstable wavelength 5000 km, e-folding 5.4 days (with the damping below);
- bottom drag ``r_ek = 1/(0.5 d)`` on the lowest layer (9 % of the depth), i.e.
  a column spin-down of about 5.5 days;
- Newtonian cooling ``1/τ = 1/(10 d)``: without it (or with more shear) the
  eddies build zonal jets that keep strengthening for hundreds of days; with it
  the flow is statistically steady after a ~100-day spin-up;
- ``dt = 900 s``: the largest CFL number ``(|u|+|v|) dt/Δx`` in long runs is
  ≈ 0.3, while runs blew up at ≈ 0.55 while tuning.

Result (``benchmarks/results/qg_diagnostics.md``): eddy energy ≈ 94 m² s⁻²
with no drift, energy-containing wavelength ≈ 5000 km (16 cells, eddies ~8
cells wide), temperature standard deviations 4.4, 3.4, 2.5, 1.9, 1.8 K (850 …
200 hPa), decorrelation (e-folding) times 1.8–6.8 days; 128 × 128 (same domain,
``dt`` halved automatically) gives the same statistics.

Datasets of trajectories are made by :mod:`slams_diffusers.data.qg.dataset`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ...observations import Background

__all__ = [
    "QGConfig",
    "QGModel",
    "QGState",
    "standard_atmosphere",
    "background_observation",
    "progress_bar",
    "DAY",
    "DEFAULT_LEVELS",
]


GRAVITY = 9.80665  # m s-2
R_DRY = 287.053  # J kg-1 K-1
CP_DRY = 1004.6855  # J kg-1 K-1 (R / cp = 2/7)
DAY = 86400.0  # s
DEFAULT_LEVELS = (850.0, 700.0, 500.0, 300.0, 200.0)


# --------------------------------------------------------------------------- standard atmosphere


def standard_atmosphere(
    pressure: Sequence[float] | np.ndarray | None = None,
    height: Sequence[float] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """ICAO standard atmosphere (troposphere + lower stratosphere, below 20 km).

    Give either ``pressure`` (hPa) or ``height`` (m); returns ``{"pressure" (hPa),
    "height" (m), "temperature" (K), "theta" (potential temperature, K)}`` as arrays.
    ``T = 288.15 - 0.0065 z`` up to 11 km, ``216.65`` K above.
    """
    lapse, t0, p0, z11 = 0.0065, 288.15, 1013.25, 11000.0
    t11 = t0 - lapse * z11
    p11 = p0 * (t11 / t0) ** (GRAVITY / (R_DRY * lapse))
    scale = R_DRY * t11 / GRAVITY
    if (pressure is None) == (height is None):
        raise ValueError("standard_atmosphere: give exactly one of pressure or height")
    if pressure is not None:
        p = np.asarray(pressure, dtype=np.float64)
        z = np.where(
            p >= p11,
            t0 / lapse * (1 - (p / p0) ** (R_DRY * lapse / GRAVITY)),
            z11 + scale * np.log(p11 / p),
        )
    else:
        z = np.asarray(height, dtype=np.float64)
        p = np.where(
            z <= z11,
            p0 * (np.maximum(t0 - lapse * z, 1.0) / t0) ** (GRAVITY / (R_DRY * lapse)),
            p11 * np.exp(-(z - z11) / scale),
        )
    t = np.where(z <= z11, t0 - lapse * z, t11)
    theta = t * (1000.0 / p) ** (R_DRY / CP_DRY)
    return {"pressure": p, "height": z, "temperature": t, "theta": theta}


# --------------------------------------------------------------------------- configuration


@dataclass
class QGConfig:
    """Parameters of :class:`QGModel` (SI units; layer lists run top → bottom).

    Leave ``pressure_levels``, ``H``, ``reduced_gravity`` and ``U`` at ``None``
    to derive them from the standard atmosphere (see the module docstring); after
    construction every field holds its resolved value.

    Args:
        n_layers: number of layers ``n`` (≥ 2); ``n - 1`` temperature levels.
        nx, ny: grid size (``ny`` defaults to ``nx``).
        L, W: domain size in x and y, m (``W`` defaults to ``L``).
        pressure_levels: hPa of the interfaces, bottom → top (decreasing);
            default (850, 700, 500, 300, 200) for 6 layers, log-spaced between
            850 and 200 hPa otherwise.
        top_pressure: hPa of the rigid lid (sets the top layer's thickness).
        H: layer thicknesses, m, top → bottom.
        reduced_gravity: ``g'`` of each interface, m s⁻², top → bottom.
        shear: ``dU/dz``, s⁻¹, used when ``U`` is ``None``: ``U_i = shear · z_i``
            at the layer centre heights ``z_i``.
        U: imposed zonal wind per layer, m s⁻¹, top → bottom.
        f0: Coriolis parameter, s⁻¹.
        beta: its meridional gradient, m⁻¹ s⁻¹.
        rek: linear drag on the bottom layer, s⁻¹.
        thermal_damping: Newtonian cooling rate ``1/τ`` of the interface
            temperatures (the stretching part of the PV), s⁻¹.
        dt: time step, s; default 900 s scaled with the grid spacing
            (``900 · Δx / 312.5 km``, the same CFL number as the default grid).
        filterfac: amplitude of the exponential spectral filter (pyqg's 23.6).
    """

    n_layers: int = 6
    nx: int = 64
    ny: int | None = None
    L: float = 2.0e7
    W: float | None = None
    pressure_levels: tuple[float, ...] | None = None
    top_pressure: float = 100.0
    H: tuple[float, ...] | None = None
    reduced_gravity: tuple[float, ...] | None = None
    shear: float = 1.75e-3
    U: tuple[float, ...] | None = None
    f0: float = 1.0e-4
    beta: float = 1.6e-11
    rek: float = 1.0 / (0.5 * DAY)
    thermal_damping: float = 1.0 / (10 * DAY)
    dt: float | None = None
    filterfac: float = 23.6

    def __post_init__(self) -> None:
        n = int(self.n_layers)
        if n < 2:
            raise ValueError(f"n_layers: expected >= 2, got {self.n_layers}")
        self.n_layers = n
        self.ny = self.nx if self.ny is None else self.ny
        self.W = self.L if self.W is None else self.W
        if self.dt is None:
            self.dt = 900.0 * min(self.L / self.nx, self.W / self.ny) / 312.5e3
        if self.pressure_levels is None:
            if n == 6:
                levels = DEFAULT_LEVELS
            elif n == 2:
                levels = (500.0,)
            else:
                levels = tuple(float(p) for p in np.geomspace(850.0, 200.0, n - 1))
            self.pressure_levels = levels
        self.pressure_levels = tuple(float(p) for p in self.pressure_levels)
        if len(self.pressure_levels) != n - 1:
            raise ValueError(
                f"pressure_levels: expected {n - 1} levels for {n} layers, "
                f"got {self.pressure_levels}"
            )
        p = np.array(self.pressure_levels)
        if np.any(np.diff(p) >= 0) or p[-1] <= self.top_pressure:
            raise ValueError(
                "pressure_levels: expected strictly decreasing pressures (bottom → top) "
                f"above top_pressure={self.top_pressure}, got {self.pressure_levels}"
            )
        # interfaces from the ground up, then layers top → bottom
        z_if = standard_atmosphere(pressure=p)["height"]
        z_top = float(standard_atmosphere(pressure=[self.top_pressure])["height"][0])
        edges = np.concatenate([[0.0], z_if, [z_top]])  # bottom → top
        centres = 0.5 * (edges[1:] + edges[:-1])[::-1]  # top → bottom
        if self.H is None:
            self.H = tuple(float(h) for h in np.diff(edges)[::-1])
        if self.reduced_gravity is None:
            theta = standard_atmosphere(height=centres)["theta"]  # top → bottom
            theta_if = standard_atmosphere(height=z_if[::-1])["theta"]
            self.reduced_gravity = tuple(
                float(g) for g in GRAVITY * (theta[:-1] - theta[1:]) / theta_if
            )
        if self.U is None:
            self.U = tuple(float(self.shear * z) for z in centres)
        self.H = tuple(float(h) for h in self.H)
        self.reduced_gravity = tuple(float(g) for g in self.reduced_gravity)
        self.U = tuple(float(u) for u in self.U)
        for name, value, size in (
            ("H", self.H, n),
            ("reduced_gravity", self.reduced_gravity, n - 1),
            ("U", self.U, n),
        ):
            if len(value) != size:
                raise ValueError(f"{name}: expected {size} values, got {value}")
        if min(self.H) <= 0 or min(self.reduced_gravity) <= 0:
            raise ValueError("H and reduced_gravity must be positive")

    def to_dict(self) -> dict:
        """All parameters as plain Python values (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @property
    def deformation_radii(self) -> np.ndarray:
        """Baroclinic deformation radii ``1/sqrt(-λ)`` of the stretching operator ``S``, m."""
        lam = _vertical_modes(self)[1].numpy()
        return 1.0 / np.sqrt(-lam[1:])


def _stretching_matrix(config: QGConfig) -> np.ndarray:
    """``S`` (n × n, float64): ``(Sψ)_i = F_{i,i-1/2}(ψ_{i-1}-ψ_i) + F_{i,i+1/2}(ψ_{i+1}-ψ_i)``."""
    n = config.n_layers
    S = np.zeros((n, n))
    for j, gp in enumerate(config.reduced_gravity):  # interface between layers j, j+1
        upper = config.f0**2 / (config.H[j] * gp)
        lower = config.f0**2 / (config.H[j + 1] * gp)
        S[j, j] -= upper
        S[j, j + 1] += upper
        S[j + 1, j + 1] -= lower
        S[j + 1, j] += lower
    return S


# --------------------------------------------------------------------------- model


@dataclass
class QGState:
    """Spectral PV ``qh`` ``(B, n, ny, nx//2+1)`` and the AB3 history of tendencies."""

    qh: Tensor
    history: tuple[Tensor, ...] = ()
    steps: int = 0


class QGModel:
    """Batched pseudo-spectral multi-layer QG model (see the module docstring).

    Args:
        config: the parameters (default: 6 layers, 64 × 64).
        device, dtype: where and in which precision (float32 or float64) to run;
            spectral arrays use the matching complex dtype.

    States are PV anomalies ``q`` of shape ``(B, n_layers, ny, nx)`` in s⁻¹ on the
    grid (physical space); :class:`QGState` holds the spectral state while stepping.
    """

    def __init__(
        self,
        config: QGConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.config = config = config if config is not None else QGConfig()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        n, ny, nx = config.n_layers, config.ny, config.nx
        self.shape = (n, ny, nx)
        f64 = dict(dtype=torch.float64)
        k = 2 * math.pi / config.L * torch.fft.rfftfreq(nx, d=1.0 / nx, **f64)
        l = 2 * math.pi / config.W * torch.fft.fftfreq(ny, d=1.0 / ny, **f64)  # noqa: E741
        k, l = torch.meshgrid(k, l, indexing="xy")  # noqa: E741  (ny, nk)
        wv2 = k**2 + l**2
        S = torch.tensor(_stretching_matrix(config), **f64)
        P, lam, Pinv = _vertical_modes(config)
        eig = lam[:, None, None] - wv2  # (n, ny, nk): q̂_m = (λ_m - κ²) ψ̂_m
        inv_eig = torch.where(wv2 == 0, 0.0, 1.0 / torch.where(eig == 0, 1.0, eig))
        U = torch.tensor(config.U, **f64)
        Qy = config.beta - S @ U
        dx, dy = config.L / nx, config.W / ny
        wvx = torch.sqrt((k * dx) ** 2 + (l * dy) ** 2)
        cphi = 0.65 * math.pi
        filtr = torch.where(wvx <= cphi, 1.0, torch.exp(-config.filterfac * (wvx - cphi) ** 4))

        def real(x: Tensor) -> Tensor:
            return x.to(device=self.device, dtype=dtype)

        self.k, self.l, self.wv2 = real(k), real(l), real(wv2)
        self._k, self._l = real(k)[..., None], real(l)[..., None]  # for real views
        self._kQy = real(k * Qy[:, None, None])[..., None]
        self.S = real(S)
        self.modes, self.modes_inv = real(P), real(Pinv)
        self._inv_eig = real(inv_eig)[..., None]  # (n, ny, nk, 1) for view_as_real
        self._eig = real(torch.where(wv2 == 0, 0.0, eig))[..., None]
        self._wv2 = real(wv2)[..., None]
        self.Ubg = real(U)[:, None, None]
        self.filtr = real(filtr)
        self.Qy = real(Qy)
        # temperature: interfaces top → bottom, then flipped to pressure_levels order
        H = torch.tensor(config.H, **f64)
        self._dz = real(0.5 * (H[:-1] + H[1:]))[:, None, None]
        self.layer_weights = real(H / H.sum())
        p = np.array(config.pressure_levels)
        self.pressure_levels = p
        self.mean_temperature = real(
            torch.tensor(standard_atmosphere(pressure=p)["temperature"].copy(), **f64)
        )

    # ------------------------------------------------------------------ transforms

    def to_spectral(self, q: Tensor) -> Tensor:
        """``(..., ny, nx)`` grid -> ``(..., ny, nx//2+1)`` spectral (rfft2)."""
        return torch.fft.rfft2(q.to(device=self.device, dtype=self.dtype))

    def to_grid(self, qh: Tensor) -> Tensor:
        """Spectral -> grid (irfft2, as an ifft over y then an irfft over x: faster on CPU)."""
        return torch.fft.irfft(torch.fft.ifft(qh, dim=-2), n=self.shape[-1], dim=-1)

    def invert(self, qh: Tensor) -> Tensor:
        """``ψ̂ = (S - κ²I)^{-1} q̂`` per wavenumber: ``(B, n, ny, nk)`` -> same."""
        return self._modal(qh, self._inv_eig)

    def pv_from_streamfunction(self, psi: Tensor) -> Tensor:
        """``q = ∇²ψ + Sψ`` on the grid, ``(B, n, ny, nx)`` (mean removed)."""
        return self.to_grid(self._modal(self.to_spectral(psi), self._eig))

    def _modal(self, xh: Tensor, factor: Tensor) -> Tensor:
        """``P diag(factor) P^{-1} x̂`` per wavenumber, ``(..., n, ny, nk)`` complex."""
        shape = xh.shape
        xr = torch.view_as_real(xh).reshape(*shape[:-2], -1)  # (..., n, ny·nk·2)
        xm = (self.modes_inv @ xr).reshape(*shape, 2) * factor
        out = self.modes @ xm.reshape(*shape[:-2], -1)
        return torch.view_as_complex(out.reshape(*shape, 2))

    def streamfunction(self, q: Tensor) -> Tensor:
        """``ψ`` on the grid, ``(B, n, ny, nx)`` in m² s⁻¹."""
        return self.to_grid(self.invert(self.to_spectral(q)))

    def temperature(self, q: Tensor) -> Tensor:
        """Temperature in K, ``(B, n-1, ny, nx)``, levels ordered as ``config.pressure_levels``.

        ``T = T_0(p) (1 + f_0 (ψ_i - ψ_{i+1}) / (g Δz))`` on each interface.
        """
        psi = self.streamfunction(q)
        return self.temperature_from_streamfunction(psi)

    def temperature_from_streamfunction(self, psi: Tensor) -> Tensor:
        """As :meth:`temperature`, from ``ψ``."""
        b = self.config.f0 * (psi[..., :-1, :, :] - psi[..., 1:, :, :]) / self._dz  # top → bottom
        t0 = self.mean_temperature[:, None, None]
        return t0 * (1 + b.flip(-3) / GRAVITY)

    def with_temperature(self, q: Tensor, temperature: Tensor) -> Tensor:
        r"""The PV ``(B, n, ny, nx)`` whose temperature is ``temperature`` ``(B, n-1, ny, nx)`` (K)
        and whose barotropic streamfunction is that of ``q``.

        The temperature fixes the layer differences ``d_i = ψ_i − ψ_{i+1}`` (:meth:`temperature`)
        and leaves the part of ``ψ`` equal in every layer free. The increment
        ``δψ_i = −Σ_{j<i} δd_j + Σ_m w_m Σ_{j<m} δd_j`` meets the new differences with
        ``Σ_i w_i δψ_i = 0`` (``w`` the thickness weights, the barotropic mode's projection), so
        the barotropic flow of ``q`` is kept. A domain-mean temperature anomaly has no
        streamfunction and is dropped. The :class:`~slams_diffusers.forecast.StateMap` of the
        QG model in cycling: ``StateMap(model.temperature, model.with_temperature)``.
        """
        psi = self.streamfunction(q)
        t0 = self.mean_temperature[:, None, None]
        target = temperature.to(device=self.device, dtype=self.dtype)
        b = ((target / t0 - 1) * GRAVITY).flip(-3)  # top → bottom
        delta = b * self._dz / self.config.f0 - (psi[..., :-1, :, :] - psi[..., 1:, :, :])
        below = torch.cat([torch.zeros_like(delta[..., :1, :, :]), delta.cumsum(dim=-3)], dim=-3)
        weights = self.layer_weights[:, None, None]
        increment = (weights * below).sum(dim=-3, keepdim=True) - below
        return self.pv_from_streamfunction(psi + increment)

    # ------------------------------------------------------------------ dynamics

    def tendency(self, qh: Tensor) -> Tensor:
        r"""``∂q̂/∂t`` (without the filter), ``(B, n, ny, nk)`` complex.

        ``∂_t q̂ = -i (k \widehat{(u+U)q} + l \widehat{vq} + k Q_y ψ̂)
        + δ_{i,n-1} r_ek κ² ψ̂ - (q̂ + κ² ψ̂)/τ`` with ``û = -i l ψ̂``, ``v̂ = i k ψ̂``
        and ``q̂ + κ²ψ̂ = Sψ̂`` (Newtonian cooling at rate ``1/τ = thermal_damping``).
        Written on real views of the complex arrays (``-i(a + ib) = b - ia``) and
        with fused in-place operations, to save passes over memory.
        """
        config = self.config
        ph = self.invert(qh)
        pr = torch.view_as_real(ph)  # (..., n, ny, nk, 2)
        re, im = pr[..., 0], pr[..., 1]
        spec = qh.new_empty((3, *qh.shape))  # q̂, û, v̂
        spec_r = torch.view_as_real(spec)
        spec_r[0] = torch.view_as_real(qh)
        torch.mul(im, self.l, out=spec_r[1, ..., 0])
        torch.mul(re, -self.l, out=spec_r[1, ..., 1])
        torch.mul(im, -self.k, out=spec_r[2, ..., 0])
        torch.mul(re, self.k, out=spec_r[2, ..., 1])
        q, u, v = self.to_grid(spec).unbind(0)
        fluxes = q.new_empty((2, *q.shape))
        torch.mul(u.add_(self.Ubg), q, out=fluxes[0])
        torch.mul(v, q, out=fluxes[1])
        uqh, vqh = torch.view_as_real(self.to_spectral(fluxes)).unbind(0)
        s = torch.mul(uqh, self._k).addcmul_(vqh, self._l).addcmul_(pr, self._kQy)
        dqh = torch.empty_like(qh)
        d = torch.view_as_real(dqh)
        d[..., 0] = s[..., 1]
        torch.neg(s[..., 0], out=d[..., 1])
        if config.rek:
            d[..., -1, :, :, :].addcmul_(pr[..., -1, :, :, :], self._wv2, value=config.rek)
        if config.thermal_damping:
            d.add_(torch.view_as_real(qh), alpha=-config.thermal_damping)
            d.addcmul_(pr, self._wv2, value=-config.thermal_damping)
        return dqh

    def init(self, q: Tensor) -> QGState:
        """Start stepping from grid PV ``q`` ``(B, n, ny, nx)`` (AB3 history empty)."""
        self._check(q)
        return QGState(qh=self.to_spectral(q))

    def step(self, state: QGState) -> QGState:
        """One AB3 step (Euler, then AB2, while the history fills), then the filter:

        ``q̂ ← filter · (q̂ + Δt (23/12 d_0 - 16/12 d_{-1} + 5/12 d_{-2}))``.
        """
        dt = self.config.dt
        d0 = self.tendency(state.qh)
        h = state.history
        if len(h) == 0:
            qh = torch.add(state.qh, d0, alpha=dt)
        elif len(h) == 1:
            qh = torch.add(state.qh, d0, alpha=1.5 * dt).add_(h[0], alpha=-0.5 * dt)
        else:
            qh = torch.add(state.qh, d0, alpha=23 / 12 * dt)
            qh.add_(h[0], alpha=-16 / 12 * dt).add_(h[1], alpha=5 / 12 * dt)
        qh.mul_(self.filtr)
        return QGState(qh=qh, history=(d0, *h[:1]), steps=state.steps + 1)

    def iterate(
        self, q: Tensor, n_steps: int, every: int = 1, progress: bool = False
    ) -> Iterator[Tensor]:
        """Grid PV after ``every``, ``2·every``, … ≤ ``n_steps`` steps (one AB3 run)."""
        state = self.init(q)
        bar = progress_bar(n_steps, progress, "qg")
        for i in range(1, n_steps + 1):
            state = self.step(state)
            bar.update(1)
            if i % every == 0:
                yield self.to_grid(state.qh)
        bar.close()

    def run(self, q: Tensor, n_steps: int, progress: bool = False) -> Tensor:
        """Grid PV after ``n_steps`` steps from ``q`` (a fresh AB3 start, as pyqg)."""
        self._check(q)
        state = self.init(q)
        bar = progress_bar(n_steps, progress, "qg")
        for _ in range(n_steps):
            state = self.step(state)
            bar.update(1)
        bar.close()
        return self.to_grid(state.qh)

    # ------------------------------------------------------------------ random states

    def random_streamfunction(
        self, batch: int, generator: torch.Generator | None = None, scale: float = 6.0
    ) -> Tensor:
        """Smooth random ``ψ`` ``(batch, n, ny, nx)`` (unit variance field, arbitrary units):
        white noise, independent per layer, times ``exp(-(κ/κ_0)²)`` with ``κ_0 = scale``
        cycles per domain length ``L`` (6: wavelengths of ~L/6 and longer)."""
        n, ny, nx = self.shape
        noise = torch.randn(batch, n, ny, nx, generator=generator, dtype=torch.float64)
        kappa = self.wv2.double().sqrt() * self.config.L / (2 * math.pi)
        shape = torch.exp(-((kappa / scale) ** 2))
        shape[0, 0] = 0.0
        psi = self.to_grid(torch.fft.rfft2(noise.to(self.device)) * shape)
        return psi / psi.std(dim=(-3, -2, -1), keepdim=True)

    def initial_state(
        self, batch: int, generator: torch.Generator | None = None, velocity: float = 5.0
    ) -> Tensor:
        """Random PV ``(batch, n, ny, nx)`` to spin up from: :meth:`random_streamfunction`
        scaled to an rms velocity of ``velocity`` m s⁻¹ (per member)."""
        psi = self.random_streamfunction(batch, generator)
        psi = psi * (velocity / self.rms_velocity(psi)).reshape(-1, 1, 1, 1)
        return self.pv_from_streamfunction(psi.to(self.dtype))

    def perturb(
        self, q: Tensor, temperature_std: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """``q + δq`` with ``δψ`` from :meth:`random_streamfunction`, scaled per member so
        that its temperature signature has an rms of ``temperature_std`` K (over levels
        and grid). Independent layers: the barotropic mode is perturbed too."""
        q = q.to(device=self.device, dtype=self.dtype)
        if temperature_std == 0:
            return q.clone()
        batch = q.shape[:-3]
        psi = self.random_streamfunction(math.prod(batch), generator).reshape(*batch, *self.shape)
        t0 = self.mean_temperature.double()[:, None, None]
        dT = self.temperature_from_streamfunction(psi) - t0
        rms = dT.pow(2).mean(dim=(-3, -2, -1), keepdim=True).sqrt()
        psi = psi * (temperature_std / rms)
        return q + self.pv_from_streamfunction(psi).to(self.dtype)

    def forecast_background(
        self,
        q_past: Tensor,
        lead_steps: int,
        perturbation_std: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """A forecast of lead ``τ = lead_steps · dt`` from the true PV ``q_past`` at ``t - τ``
        perturbed by :meth:`perturb` (``perturbation_std`` K): temperature at ``t`` in K,
        ``(..., levels, ny, nx)`` for ``q_past`` ``(..., n, ny, nx)``.

        The error is advected and shaped by the flow (flow-dependent background error).
        In the default configuration the damped part of the random perturbation first
        decays (rms 0.50 → 0.42 K over 3 days) and the error then grows (0.82 K at 12
        days; ``benchmarks/results/qg_diagnostics.md``). With ``perturbation_std = 0``
        the forecast reproduces the truth.
        """
        self._check(q_past)
        batch = q_past.shape[:-3]
        q = self.perturb(q_past.reshape(-1, *self.shape), perturbation_std, generator)
        return self.temperature(self.run(q, lead_steps)).reshape(*batch, -1, *self.shape[-2:])

    # ------------------------------------------------------------------ diagnostics

    def rms_velocity(self, psi: Tensor) -> Tensor:
        """``sqrt(mean(u² + v²))`` over layers and grid (unweighted), ``(B,)``, m s⁻¹."""
        ph = torch.fft.rfft2(psi)
        k, l = self.k.to(ph.real.dtype), self.l.to(ph.real.dtype)  # noqa: E741
        u = torch.fft.irfft2(-1j * l * ph, s=self.shape[-2:])
        v = torch.fft.irfft2(1j * k * ph, s=self.shape[-2:])
        return (u**2 + v**2).mean(dim=(-3, -2, -1)).sqrt()

    def velocity(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Total zonal (``U + u``) and meridional velocity on the grid, m s⁻¹."""
        ph = self.invert(self.to_spectral(q))
        return self.to_grid(-1j * self.l * ph) + self.Ubg, self.to_grid(1j * self.k * ph)

    def energy(self, q: Tensor) -> Tensor:
        """Total (kinetic + available potential) eddy energy per unit mass, m² s⁻², ``(...,)``:
        ``E = -(1/2H) Σ_i H_i mean(ψ_i q_i)``."""
        psi = self.streamfunction(q)
        return -0.5 * ((psi * q).mean(dim=(-2, -1)) * self.layer_weights).sum(dim=-1)

    def kinetic_energy_spectrum(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Isotropic eddy KE spectrum, thickness-weighted over layers and averaged over the
        batch: ``(κ in cycles per L, E(κ))`` with ``Σ E(κ)`` the mean KE per unit mass."""
        ph = self.invert(self.to_spectral(q.reshape(-1, *self.shape)))
        ny, nx = self.shape[-2:]
        w = torch.full((nx // 2 + 1,), 2.0, device=self.device, dtype=self.dtype)
        w[0] = 1.0  # rfft: columns 1..nx/2-1 stand for ±k
        if nx % 2 == 0:
            w[-1] = 1.0
        ke = 0.5 * self.wv2 * ph.abs() ** 2 * w / (nx * ny) ** 2
        ke = (ke * self.layer_weights[:, None, None]).sum(dim=-3).mean(dim=0)
        kappa = (self.wv2.sqrt() * self.config.L / (2 * math.pi)).round().long()
        shells = min(nx, ny) // 2 + 1
        spectrum = torch.zeros(shells, dtype=ke.dtype, device=ke.device)
        keep = kappa < shells
        spectrum.index_add_(0, kappa[keep], ke[keep])
        return torch.arange(shells), spectrum

    def linear_growth_rates(self) -> Tensor:
        """Growth rate (s⁻¹) of the most unstable normal mode at each wavenumber ``(ny, nk)``:
        the largest real part of the eigenvalues of the linearised tendency
        ``-ik (diag(U) + diag(Q_y) A^{-1}) + r_ek κ² e_{n-1} e_{n-1}^T A^{-1}
        - (I + κ² A^{-1})/τ``, ``A = S - κ²I`` (float64, filter excluded)."""
        config = self.config
        S = torch.tensor(_stretching_matrix(config), dtype=torch.float64)
        n = config.n_layers
        k, wv2 = self.k.double().cpu(), self.wv2.double().cpu()
        eye = torch.eye(n, dtype=torch.float64)
        A = S - wv2[..., None, None] * eye
        A[0, 0] = eye  # κ = 0 has no dynamics; placeholder
        Ainv = torch.linalg.inv(A).to(torch.complex128)
        U = torch.diag(torch.tensor(config.U, dtype=torch.float64)).to(torch.complex128)
        Qy = torch.diag(self.Qy.double().cpu()).to(torch.complex128)
        ik = 1j * k[..., None, None]
        drag = torch.zeros(n, n, dtype=torch.complex128)
        drag[-1, -1] = config.rek
        w = wv2[..., None, None]
        M = -ik * (U + Qy @ Ainv) + w * drag @ Ainv
        M = M - config.thermal_damping * (eye + w * Ainv)
        rates = torch.linalg.eigvals(M).real.amax(dim=-1)
        rates[0, 0] = 0.0
        return rates.to(self.dtype)

    def _check(self, q: Tensor) -> None:
        if q.ndim < 3 or tuple(q.shape[-3:]) != self.shape:
            raise ValueError(
                f"q: expected shape (..., {', '.join(map(str, self.shape))}), got {tuple(q.shape)}"
            )


def _vertical_modes(config: QGConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``S = P diag(λ) P^{-1}`` (float64), ``λ`` descending (``λ_0 = 0``, barotropic).

    ``diag(H) S`` is symmetric, so ``H^{1/2} S H^{-1/2} = V diag(λ) V^T`` with
    orthonormal ``V``: ``P = H^{-1/2} V``, ``P^{-1} = V^T H^{1/2}``.
    """
    S = _stretching_matrix(config)
    d = np.sqrt(np.asarray(config.H, dtype=np.float64))
    lam, V = np.linalg.eigh(d[:, None] * S / d[None, :])
    order = np.argsort(lam)[::-1]
    lam, V = lam[order], V[:, order]
    lam[0] = 0.0  # exactly: constants are in the null space
    P, Pinv = V / d[:, None], V.T * d[None, :]
    return torch.tensor(P), torch.tensor(lam), torch.tensor(Pinv)


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "step"):
    """A tqdm bar over ``total`` items, shown only when ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit=unit, mininterval=1.0)


# --------------------------------------------------------------------------- backgrounds


def background_observation(
    model: QGModel,
    q_past: Tensor,
    lead_steps: int,
    perturbation_std: float,
    noise_std: float | Tensor | None = None,
    *,
    ensemble_size: int = 8,
    generator: torch.Generator | None = None,
    time_index: int = 0,
    modality: str = "background",
) -> Background:
    """A :class:`~slams_diffusers.observations.Background` from a QG forecast.

    Args:
        model: the simulator.
        q_past: ``(n_layers, ny, nx)`` true PV at ``t - τ``.
        lead_steps: ``τ`` in model steps.
        perturbation_std: initial-condition error, K (see :meth:`QGModel.perturb`).
        noise_std: the background error std ``σ_b`` to declare. ``None``: estimated
            per level as the rms difference between ``ensemble_size`` further
            perturbed forecasts and the unperturbed one (which reproduces the truth),
            i.e. the expected error of this kind of background, ``(levels, 1, 1)``.
        ensemble_size: members for that estimate.
        generator: for the perturbations (the background uses the first draw).
        time_index, modality: passed to :class:`Background`.
    """
    from ...observations import Background

    model._check(q_past)
    if q_past.ndim != 3:
        raise ValueError(f"q_past: expected (n_layers, ny, nx), got {tuple(q_past.shape)}")
    if noise_std is not None:
        values = model.forecast_background(q_past, lead_steps, perturbation_std, generator)
        return Background(
            values=values, noise_std=noise_std, time_index=time_index, modality=modality
        )
    q = q_past.to(device=model.device, dtype=model.dtype).expand(ensemble_size + 1, -1, -1, -1)
    q = torch.cat([model.perturb(q, perturbation_std, generator), q_past[None].to(q)])
    forecasts = model.temperature(model.run(q, lead_steps))
    values, members, reference = forecasts[0], forecasts[1:-1], forecasts[-1]
    sigma = (members - reference).pow(2).mean(dim=(0, -2, -1)).sqrt()[:, None, None]
    return Background(values=values, noise_std=sigma, time_index=time_index, modality=modality)
