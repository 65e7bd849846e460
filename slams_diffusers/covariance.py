r"""Background-error covariances ``B``: diagonal and spectral (homogeneous), estimated from samples.

The background is ``x_b = x + e_b`` with ``e_b ~ N(0, B)`` (see docs/method.md §Background
covariance). States are tensors ``(..., levels, *space)`` with ``space = (x,)`` or ``(y, x)`` on a
periodic grid; every method acts on the trailing ``(levels, *space)`` dims and broadcasts over the
leading ones. Both covariances are diagonal in a known orthonormal basis ``Q`` (the identity, or
the unitary DFT followed by a ``levels × levels`` eigenbasis per wavenumber),

    B = Q diag(λ) Q^H,   B^{1/2} = Q diag(λ^{1/2}) Q^H,   (B + s I)^{-1} = Q diag(1/(λ + s)) Q^H,

so ``apply``, ``apply_sqrt`` and ``solve`` are exact (up to rounding) and differentiable torch ops.

- :class:`DiagonalCovariance`: ``B = diag(std²)``, one std per cell.
- :class:`DenseCovariance`: any ``B`` of a small state, through its eigendecomposition (e.g. a
  localised ensemble covariance).
- :class:`SpectralCovariance`: homogeneous errors, ``B = F^H diag_k(C(k)) F`` with the unitary DFT
  ``F`` over space and a real symmetric PSD ``levels × levels`` matrix ``C(k)`` per wavenumber
  (isotropic by default: ``C`` depends on the shell ``round(|k|)`` only), the classical
  assumption of variational DA (e.g. Berre 2000).
- :func:`estimate_background_covariance` (from background/truth pairs) and :func:`nmc_covariance`
  (the NMC method of Parrish & Derber 1992, from forecast differences).
- :func:`resolve_background_covariance`: the ``B`` of an assimilation from the pipeline's
  arguments (declared, length scale, std, the pipeline's own, else 1 K white:
  :func:`default_background_covariance`).

Both classes are ``diffusers`` models (``ModelMixin, ConfigMixin``): their numbers are float64
buffers, so ``save_pretrained`` / ``from_pretrained`` round-trip them exactly through safetensors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import logging
from torch import Tensor

from .validation import as_grid_shape, as_int

logger = logging.get_logger(__name__)

__all__ = [
    "EIGENVALUE_FLOOR",
    "BackgroundCovariance",
    "DenseCovariance",
    "DiagonalCovariance",
    "SpectralCovariance",
    "ZonalCovariance",
    "background_covariance_of",
    "default_background_covariance",
    "estimate_background_covariance",
    "nmc_covariance",
    "resolve_background_covariance",
]

EIGENVALUE_FLOOR = 1e-12
"""``solve`` divides by ``max(λ + shift, EIGENVALUE_FLOOR · max(λ))`` (``EIGENVALUE_FLOOR`` itself
when ``B = 0``): zero eigenvalues of ``B`` (e.g. a level or wavenumber without error) give a huge
but finite ``B^{-1}``, never inf."""


# --------------------------------------------------------------------------- helpers


def _as_factor(factor: Any, name: str) -> float:
    try:
        value = float(factor)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: expected a positive finite number, got {factor!r}") from e
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value}")
    return value


def _as_shift(shift: Any, x: Tensor, state_dims: int) -> float | Tensor:
    """A float, a 0-d tensor, or one shift per leading index: a tensor of ``x.ndim`` dims or fewer
    whose trailing ``state_dims`` dims are 1, broadcastable to ``x``; all finite and ``>= 0``."""
    if isinstance(shift, Tensor):
        if shift.ndim > 0:
            fits = shift.ndim <= x.ndim and all(n == 1 for n in shift.shape[-state_dims:])
            try:
                fits = fits and torch.broadcast_shapes(shift.shape, x.shape) == x.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"shift: expected a float, a 0-d tensor or one value per leading index of x "
                    f"{tuple(x.shape)} (trailing (levels, *space) dims of size 1), got a tensor "
                    f"of shape {tuple(shift.shape)}"
                )
        detached = shift.detach()
        if not (bool(torch.isfinite(detached).all()) and bool((detached >= 0).all())):
            raise ValueError(f"shift: expected finite values >= 0, got min {float(detached.min())}")
        return shift.to(x.device)
    try:
        value = float(shift)
    except (TypeError, ValueError) as e:
        raise ValueError(f"shift: expected a float >= 0, got {shift!r}") from e
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"shift: expected a finite float >= 0, got {value}")
    return value


def _errors_tensor(errors: Any, name: str, spatial_dims: int | None) -> tuple[Tensor, int]:
    """``(…, levels, *space)`` -> float64 ``(N, levels, *space)`` and the number of space dims.

    With ``spatial_dims=None`` a 3-d tensor is read as ``(N, levels, x)`` and a tensor with 4 or
    more dims as ``(…, levels, y, x)``.
    """
    e = torch.as_tensor(errors)
    if not e.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got dtype {e.dtype}")
    if spatial_dims is None:
        if e.ndim < 3:
            raise ValueError(
                f"{name}: expected shape (samples, levels, *space) with space (x,) or (y, x), "
                f"got {tuple(e.shape)}"
            )
        spatial_dims = 1 if e.ndim == 3 else 2
    if spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims: expected 1 or 2 (or None to infer), got {spatial_dims}")
    if e.ndim < spatial_dims + 2:
        raise ValueError(
            f"{name}: expected shape (samples, levels, *space) with {spatial_dims} space dims, "
            f"got {tuple(e.shape)}"
        )
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"{name}: contains NaN or inf; expected finite values")
    return e.reshape(-1, *e.shape[e.ndim - spatial_dims - 1 :]).double(), spatial_dims


def _centred(e: Tensor, remove_mean: bool, name: str) -> tuple[Tensor, int]:
    """Samples ``e`` (on axis 0) and their degrees of freedom: ``N``, or, with ``remove_mean``, the
    sample mean per cell subtracted and ``N − 1``."""
    n = e.shape[0]
    if not remove_mean:
        return e, n
    if n < 2:
        raise ValueError(f"{name}: remove_mean needs at least 2 samples, got {n}")
    return e - e.mean(dim=0, keepdim=True), n - 1


def _negative_wavenumbers(x: Tensor, sd: int, first: int = 0) -> Tensor:
    """``x`` at ``-k`` along dims ``first … first+sd-1`` (index ``n -> (-n) mod N``)."""
    dims = tuple(range(first, first + sd))
    return torch.roll(torch.flip(x, dims), shifts=(1,) * sd, dims=dims)


# --------------------------------------------------------------------------- base


class BackgroundCovariance(ModelMixin, ConfigMixin):
    r"""Base of the background-error covariances ``B`` over states ``(..., levels, *space)``.

    Subclasses are diagonal in an orthonormal basis and implement ``_map(x, f)`` = ``Q f(λ) Q^H x``
    (with ``f`` acting on the eigenvalues), ``_max_eigenvalue``, ``variance`` and ``scaled``;
    the rest follows. Config: ``levels``, ``grid_shape``.

    Note: ``apply(fn)`` with a callable (not a tensor) is ``torch.nn.Module.apply`` (so that a
    parent module's ``apply`` still recurses through this one).
    """

    def _init_shape(self, levels: int, grid_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
        return as_int(levels, "levels", minimum=1), as_grid_shape(grid_shape, column=True)

    # -- shape --------------------------------------------------------------------

    @property
    def levels(self) -> int:
        """Number of vertical levels."""
        return int(self.config.levels)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Spatial shape ``(x,)`` or ``(y, x)``."""
        return tuple(int(n) for n in self.config.grid_shape)

    @property
    def spatial_dims(self) -> int:
        return len(self.grid_shape)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(levels, *grid_shape)``: the trailing dims every method acts on."""
        return (self.levels, *self.grid_shape)

    @property
    def size(self) -> int:
        """``levels · prod(grid_shape)``: the order of the matrix ``B``."""
        return math.prod(self.state_shape)

    def _check_state(self, x: Any, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating tensor, got dtype {x.dtype}")
        expected = self.state_shape
        if x.ndim < len(expected) or tuple(x.shape[x.ndim - len(expected) :]) != expected:
            raise ValueError(
                f"{name}: expected shape (..., levels, *space) ending in {expected} "
                f"(levels={self.levels}, grid_shape={self.grid_shape}), got {tuple(x.shape)}"
            )
        return x

    # -- to implement -------------------------------------------------------------

    def _map(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        """``Q diag(f(λ)) Q^H x`` on the trailing dims; ``f`` gets ``λ`` in ``x``'s dtype."""
        raise NotImplementedError

    def _max_eigenvalue(self) -> float:
        raise NotImplementedError

    def variance(self) -> Tensor:
        """Marginal variance per cell ``diag(B)``, ``(levels, *space)`` (float64)."""
        raise NotImplementedError

    def scaled(self, factor: float) -> BackgroundCovariance:
        """The covariance of ``factor · e``: ``factor² B`` (a new object)."""
        raise NotImplementedError

    # -- operators ----------------------------------------------------------------

    def apply(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``B x`` on the trailing ``(levels, *space)`` dims."""
        if callable(x) and not isinstance(x, Tensor):  # torch.nn.Module.apply(fn)
            return super().apply(x)
        return self._map(self._check_state(x), lambda lam: lam)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`apply`."""
        return self.apply(x)

    def apply_sqrt(self, x: Tensor) -> Tensor:
        """``B^{1/2} x`` with the symmetric square root ``B^{1/2} = Q diag(λ^{1/2}) Q^H``."""
        return self._map(self._check_state(x), torch.sqrt)

    def solve(self, x: Tensor, shift: float | Tensor = 0.0) -> Tensor:
        """``(B + shift·I)^{-1} x``, exact; ``shift`` a float or 0-d tensor ``>= 0``, or one shift
        per leading index of ``x`` (a tensor such as ``(batch, 1, 1, 1)`` for ``x`` of shape
        ``(batch, levels, y, x)``: its trailing ``(levels, *space)`` dims of size 1).

        The eigenvalues ``λ + shift`` are floored at ``EIGENVALUE_FLOOR · max(λ)`` (at
        ``EIGENVALUE_FLOOR`` if ``B = 0``), so a singular ``B`` with ``shift = 0`` stays finite.
        """
        x = self._check_state(x)
        shift = _as_shift(shift, x, len(self.state_shape))
        largest = self._max_eigenvalue()
        floor = EIGENVALUE_FLOOR * (largest if largest > 0 else 1.0)
        return self._map(x, lambda lam: 1.0 / (lam + shift).clamp_min(floor))

    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``num`` draws ``B^{1/2} ξ``, ``ξ ~ N(0, I)``: ``(num, levels, *space)`` from ``N(0, B)``.

        ``device`` defaults to the buffers' device; the same generator state gives the same draws.
        """
        num = as_int(num, "num", minimum=1)
        if not dtype.is_floating_point:
            raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
        if device is None:
            device = next(iter(self.buffers())).device
        noise = torch.randn(
            (num, *self.state_shape), generator=generator, device=device, dtype=dtype
        )
        return self.apply_sqrt(noise)

    def to_dense(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The matrix ``B``, ``(size, size)`` over the C-order flattening of ``(levels, *space)``.

        Built by applying ``B`` to the identity basis: for small grids (tests, exact posteriors).
        """
        device = next(iter(self.buffers())).device
        basis = torch.eye(self.size, dtype=dtype, device=device).reshape(-1, *self.state_shape)
        return self.apply(basis).reshape(self.size, self.size).T.contiguous()


# --------------------------------------------------------------------------- diagonal


class DiagonalCovariance(BackgroundCovariance):
    r"""Uncorrelated errors: ``B = diag(std²)``, one standard deviation per cell.

    Config: ``levels``, ``grid_shape``. Buffer: ``std`` ``(levels, *space)`` (float64, ``>= 0``).
    Build it with :meth:`from_std`.
    """

    @register_to_config
    def __init__(self, levels: int = 1, grid_shape: Sequence[int] = (8, 8)) -> None:
        super().__init__()
        levels, grid = self._init_shape(levels, grid_shape)
        self.register_buffer("std", torch.ones(levels, *grid, dtype=torch.float64))

    @classmethod
    def from_std(
        cls, std: float | Sequence[float] | Tensor, levels: int, grid_shape: Sequence[int]
    ) -> DiagonalCovariance:
        """``B = diag(std²)`` from a scalar, a per-level ``(levels,)`` (or ``(levels, 1, 1)``)
        or a per-cell ``(levels, *space)`` std (anything broadcastable to ``(levels, *space)``;
        a 1-d tensor of length ``levels`` is always per level)."""
        cov = cls(levels=levels, grid_shape=tuple(as_grid_shape(grid_shape, column=True)))
        s = torch.as_tensor(std, dtype=torch.float64)
        if s.ndim == 1 and s.shape[0] == cov.levels:
            s = s.reshape(cov.levels, *(1,) * cov.spatial_dims)
        try:
            s = s.broadcast_to(cov.state_shape).clone()
        except RuntimeError as e:
            raise ValueError(
                f"std: expected a scalar, a per-level (levels={cov.levels},) tensor or one "
                f"broadcastable to (levels, *space) = {cov.state_shape}, got shape "
                f"{tuple(s.shape)}"
            ) from e
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"std: expected finite values >= 0, got min {float(s.min()):g}")
        cov.std = s
        return cov

    def _map(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        variance = self.std.to(device=x.device, dtype=x.dtype).square()
        return x * f(variance)

    def _max_eigenvalue(self) -> float:
        return float(self.std.max()) ** 2

    def variance(self) -> Tensor:
        """``std²``, ``(levels, *space)`` (float64)."""
        return self.std.square()

    def scaled(self, factor: float) -> DiagonalCovariance:
        """``diag((factor · std)²)``."""
        factor = _as_factor(factor, "factor")
        return type(self).from_std(self.std * factor, self.levels, self.grid_shape)


# --------------------------------------------------------------------------- dense

#: The largest state (``levels · prod(grid_shape)``) :class:`DenseCovariance` takes: its
#: eigendecomposition costs ``O(size³)`` and its eigenvectors ``8 size²`` bytes.
DENSE_MAX_SIZE = 4096


class DenseCovariance(BackgroundCovariance):
    r"""Any covariance of a small state, held as its eigendecomposition ``B = Q diag(λ) Qᵀ``
    (``Q`` orthogonal, ``λ >= 0``) over the C-order flattening of ``(levels, *space)``: e.g. a
    localised ensemble covariance (:func:`slams_diffusers.ensemble.ensemble_covariance`) of a
    Lorenz-96 or column state, which no fixed basis diagonalises.

    Config: ``levels``, ``grid_shape``. Buffers: ``eigenvalues`` ``(size,)`` and ``eigenvectors``
    ``(size, size)`` (float64). Build it with :meth:`from_matrix`; states up to
    :data:`DENSE_MAX_SIZE` entries.
    """

    @register_to_config
    def __init__(self, levels: int = 1, grid_shape: Sequence[int] = (8,)) -> None:
        super().__init__()
        self._init_shape(levels, grid_shape)
        if self.size > DENSE_MAX_SIZE:
            raise ValueError(
                f"levels, grid_shape: a dense covariance of {self.state_shape} has order "
                f"{self.size}, expected at most {DENSE_MAX_SIZE} (use a SpectralCovariance)"
            )
        self.register_buffer("eigenvalues", torch.ones(self.size, dtype=torch.float64))
        self.register_buffer("eigenvectors", torch.eye(self.size, dtype=torch.float64))

    @classmethod
    def from_matrix(cls, matrix: Tensor, levels: int, grid_shape: Sequence[int]) -> DenseCovariance:
        """From the matrix ``B`` ``(size, size)``: symmetrised, eigenvalues below zero (rounding
        of a PSD matrix) set to zero; a matrix that is not symmetric positive semi-definite to a
        relative ``1e-8`` is refused."""
        cov = cls(levels=levels, grid_shape=tuple(as_grid_shape(grid_shape, column=True)))
        b = torch.as_tensor(matrix).double()
        if tuple(b.shape) != (cov.size, cov.size):
            raise ValueError(
                f"matrix: expected shape ({cov.size}, {cov.size}) for states {cov.state_shape}, "
                f"got {tuple(b.shape)}"
            )
        if not bool(torch.isfinite(b).all()):
            raise ValueError("matrix: contains NaN or inf")
        scale = float(b.abs().max()) or 1.0
        if float((b - b.T).abs().max()) > 1e-8 * scale:
            raise ValueError("matrix: expected a symmetric matrix")
        values, vectors = torch.linalg.eigh(0.5 * (b + b.T))
        if float(values.min()) < -1e-8 * max(float(values.max()), 0.0) - 1e-300:
            raise ValueError(
                f"matrix: expected a positive semi-definite matrix, smallest eigenvalue "
                f"{float(values.min()):g}"
            )
        cov.eigenvalues = values.clamp_min(0.0)
        cov.eigenvectors = vectors
        return cov

    def _map(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        q = self.eigenvectors.to(device=x.device, dtype=x.dtype)
        lam = self.eigenvalues.to(device=x.device, dtype=x.dtype)
        dims = len(self.state_shape)
        flat = x.reshape(*x.shape[: x.ndim - dims], self.size)
        # f sees λ laid out as a state, so that a per-batch shift (..., 1, …, 1) broadcasts
        weights = f(lam.reshape(self.state_shape))
        weights = weights.reshape(*weights.shape[: weights.ndim - dims], self.size)
        return (((flat @ q) * weights) @ q.T).reshape(x.shape)

    def _max_eigenvalue(self) -> float:
        return float(self.eigenvalues.max())

    def variance(self) -> Tensor:
        """``diag(B)``, ``(levels, *space)`` (float64)."""
        return (self.eigenvectors.square() @ self.eigenvalues).reshape(self.state_shape)

    def scaled(self, factor: float) -> DenseCovariance:
        """``factor² B``."""
        factor = _as_factor(factor, "factor")
        cov = type(self)(levels=self.levels, grid_shape=self.grid_shape)
        cov.eigenvalues = self.eigenvalues * factor**2
        cov.eigenvectors = self.eigenvectors.clone()
        return cov


# --------------------------------------------------------------------------- spectral

_CORRELATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gaussian": lambda r: torch.exp(-0.5 * r.square()),
    "soar": lambda r: (1 + r) * torch.exp(-r),
}
"""Correlation functions ``c(r / L)`` of :meth:`SpectralCovariance.from_length_scale`."""

IMAGE_OFFSETS = torch.arange(-2, 3, dtype=torch.float64)
"""The periodic images ``n`` (per axis) over which ``from_length_scale`` sums ``c(r + n N)``."""


class SpectralCovariance(BackgroundCovariance):
    r"""Homogeneous errors on a periodic grid: ``B = F^H diag_k(C(k)) F``.

    ``F`` is the unitary DFT over space (``torch.fft.fftn(..., norm="ortho")``) and ``C(k)`` a
    real symmetric PSD ``levels × levels`` matrix per wavenumber ``k``, with ``C(k) = C(-k)`` so
    that ``B`` is real and symmetric (``apply`` returns the real part of the inverse DFT). The
    marginal variance ``diag(B) = mean_k diag(C(k))`` is the same in every cell. Homogeneous
    (spectral) ``B`` is the classical assumption of variational DA (e.g. Berre 2000; see
    docs/method.md §Background covariance).

    - ``isotropic=True``: ``C`` depends on the shell ``s(k) = floor(κ(k) + ½)`` only, with
      ``κ = sqrt(Σ_i (n_i · N_max / N_i)²)``, ``n_i`` the signed integer frequency on axis ``i``
      (``fftfreq(N_i) · N_i``) and ``N_max = max(grid_shape)``: the physical wavenumber (unit grid
      spacing) in units of the longest axis' fundamental; on a square grid ``κ = |n|``.
      Buffer ``spectrum`` ``(num_shells, levels, levels)``, ``num_shells = max s + 1``.
    - ``isotropic=False``: one matrix per wavenumber, buffer ``spectrum``
      ``(*grid_shape, levels, levels)`` in FFT order; it is symmetrised between ``k`` and ``-k``
      (and transposed) before use.

    Config: ``levels``, ``grid_shape``, ``isotropic``. Defaults to ``C(k) = I`` (``B = I``).
    Build it with :meth:`from_samples` or :meth:`from_spectrum`. Eigendecompositions of ``C`` are
    computed lazily and cached (not saved).
    """

    @register_to_config
    def __init__(
        self, levels: int = 1, grid_shape: Sequence[int] = (8, 8), isotropic: bool = True
    ) -> None:
        super().__init__()
        if len(tuple(grid_shape)) == 0:
            raise ValueError(
                "grid_shape: a spectral covariance needs a grid (x,) or (y, x), got () (a "
                "column has no wavenumbers: use a DenseCovariance or DiagonalCovariance)"
            )
        levels, grid = self._init_shape(levels, grid_shape)
        if not isinstance(isotropic, bool):
            raise ValueError(f"isotropic: expected a bool, got {isotropic!r}")
        lead = (self.num_shells,) if isotropic else grid
        eye = torch.eye(levels, dtype=torch.float64)
        self.register_buffer("spectrum", eye.expand(*lead, levels, levels).clone())
        self._cache: dict = {}
        self._cache_token: tuple | None = None

    # -- wavenumbers ----------------------------------------------------------------

    @property
    def isotropic(self) -> bool:
        return bool(self.config.isotropic)

    def wavenumber_magnitude(self) -> Tensor:
        """``κ(k)`` per wavenumber in FFT order, ``grid_shape`` (float64, see class doc)."""
        grid = self.grid_shape
        longest = max(grid)
        axes = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64) * (longest / n) for n in grid]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.sqrt(sum(m.square() for m in mesh))

    def shells(self) -> Tensor:
        """Shell index ``s(k) = floor(κ(k) + ½)`` per wavenumber, ``grid_shape`` (int64)."""
        return torch.floor(self.wavenumber_magnitude() + 0.5).long()

    @property
    def num_shells(self) -> int:
        return int(self.shells().max()) + 1

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_spectrum(
        cls, spectrum: Tensor, grid_shape: Sequence[int], isotropic: bool = True
    ) -> SpectralCovariance:
        """From ``C``: ``(num_shells, levels, levels)`` (isotropic) or ``(*grid_shape, levels,
        levels)``; symmetric positive semi-definite (checked to a relative ``1e-8``)."""
        c = torch.as_tensor(spectrum)
        if not c.is_floating_point():
            raise ValueError(f"spectrum: expected a floating tensor, got dtype {c.dtype}")
        c = c.double()
        if c.ndim < 3 or c.shape[-1] != c.shape[-2]:
            raise ValueError(
                f"spectrum: expected shape (..., levels, levels), got {tuple(c.shape)}"
            )
        cov = cls(
            levels=c.shape[-1], grid_shape=tuple(as_grid_shape(grid_shape)), isotropic=isotropic
        )
        if tuple(c.shape) != tuple(cov.spectrum.shape):
            lead = "(num_shells" if isotropic else "(*grid_shape"
            raise ValueError(
                f"spectrum: expected shape {lead}, levels, levels) = {tuple(cov.spectrum.shape)} "
                f"for grid_shape {cov.grid_shape}, isotropic={isotropic}; got {tuple(c.shape)}"
            )
        if not bool(torch.isfinite(c).all()):
            raise ValueError("spectrum: contains NaN or inf; expected finite values")
        symmetric = 0.5 * (c + c.transpose(-1, -2))
        eigenvalues = torch.linalg.eigvalsh(symmetric)
        scale = float(eigenvalues.abs().max())
        if float(eigenvalues.min()) < -1e-8 * scale:
            raise ValueError(
                f"spectrum: expected symmetric positive semi-definite matrices, found an "
                f"eigenvalue {float(eigenvalues.min()):g}"
            )
        cov.spectrum = symmetric.contiguous()
        return cov

    @classmethod
    def from_samples(
        cls,
        errors: Tensor,
        isotropic: bool = True,
        remove_mean: bool = False,
        *,
        spatial_dims: int | None = None,
    ) -> SpectralCovariance:
        r"""Estimate ``C(k)`` from error samples ``e``: ``(N, levels, *space)`` (more leading dims
        are flattened into samples).

            ê = fftn(e, norm="ortho"),   C(k) = mean_n Re(ê_n(k) ê_n(k)^H)

        averaged, when ``isotropic``, over the wavenumbers of each shell too. Since ``C(k)`` is
        real, ``B`` keeps the part of the translation-averaged sample covariance that is even in
        the displacement: a cross-level covariance odd in it (e.g. a vertical tilt) is dropped
        (isotropy drops it anyway). Unbiased for zero-mean errors; ``remove_mean=True`` subtracts
        the sample mean per cell first and divides by ``N - 1``.

        ``spatial_dims=None`` reads a 3-d ``errors`` as ``(N, levels, x)`` and a 4-d or larger one
        as ``(…, levels, y, x)``; pass ``spatial_dims=1`` for 1-d fields with more than one
        leading dim.
        """
        e, sd = _errors_tensor(errors, "errors", spatial_dims)
        e, dof = _centred(e, remove_mean, "errors")
        levels, grid = e.shape[1], tuple(e.shape[2:])
        cov = cls(levels=levels, grid_shape=grid, isotropic=isotropic)
        spectral = torch.fft.fftn(e, dim=tuple(range(-sd, 0)), norm="ortho")
        spectral = spectral.movedim(1, -1).reshape(e.shape[0], -1, levels)  # (N, K, levels)
        outer = torch.einsum("nkl,nkm->klm", spectral.real, spectral.real)
        outer = outer + torch.einsum("nkl,nkm->klm", spectral.imag, spectral.imag)
        outer = outer / dof
        if isotropic:
            shells = cov.shells().reshape(-1)
            total = outer.new_zeros(cov.num_shells, levels, levels).index_add(0, shells, outer)
            count = torch.bincount(shells, minlength=cov.num_shells).clamp_min(1)
            result = total / count.to(total)[:, None, None]
        else:
            result = outer.reshape(*grid, levels, levels)
        cov.spectrum = (0.5 * (result + result.transpose(-1, -2))).contiguous()
        return cov

    @classmethod
    def from_length_scale(
        cls,
        std: float | Sequence[float] | Tensor,
        length_scale: float,
        grid_shape: Sequence[int],
        levels: int | None = None,
        correlation: str = "gaussian",
        grid_spacing: float | Sequence[float] = 1.0,
        level_correlation: Tensor | Sequence[Sequence[float]] | None = None,
    ) -> SpectralCovariance:
        r"""``B`` with standard deviation ``std`` per level and a horizontal correlation of
        length ``L = length_scale`` (docs/method.md §Background covariance): the shorthand for
        an error whose large scales are as uncertain as its small ones are not.

        ``B_{(l, i), (m, j)} = σ_l σ_m R_{lm} c(r_{ij})`` with ``r`` the periodic (nearest-image)
        distance between cells ``i`` and ``j`` in the units of ``grid_spacing`` (one value, or one
        per spatial axis, e.g. km per cell; ``length_scale`` in the same units: cells by
        default), ``R`` = ``level_correlation`` (default ``I``) and

        - ``"gaussian"``: ``c(r) = exp(−r² / (2 L²))``,
        - ``"soar"`` (second-order auto-regressive): ``c(r) = (1 + r / L) exp(−r / L)``.

        The covariance is circulant, so ``C(k) = ĉ(k) diag(σ) R diag(σ)`` with ``ĉ`` the DFT of
        ``c`` on the grid (one matrix per wavenumber, ``isotropic=False``): the draws' correlation
        at every grid lag is ``c`` itself. Negative ``ĉ(k)`` (a correlation too long for the
        domain) are set to 0 and ``ĉ`` rescaled so that the variance stays ``σ²``.
        """
        grid = tuple(as_grid_shape(grid_shape))
        sd = len(grid)
        sigma = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        if levels is None:
            levels = sigma.numel()
        levels = as_int(levels, "levels", minimum=1)
        if sigma.numel() == 1:
            sigma = sigma.expand(levels)
        if sigma.numel() != levels or not bool(torch.isfinite(sigma).all()) or (sigma < 0).any():
            raise ValueError(
                f"std: expected a scalar or {levels} finite values >= 0 (one per level), got "
                f"{sigma.tolist()}"
            )
        length = float(length_scale) if isinstance(length_scale, (int, float)) else math.nan
        if not math.isfinite(length) or length <= 0:
            raise ValueError(f"length_scale: expected a positive number, got {length_scale!r}")
        if correlation not in _CORRELATION_FUNCTIONS:
            raise ValueError(
                f"correlation: expected one of {sorted(_CORRELATION_FUNCTIONS)}, got "
                f"{correlation!r}"
            )
        spacing = torch.as_tensor(grid_spacing, dtype=torch.float64).reshape(-1).expand(sd)
        if not bool(torch.isfinite(spacing).all()) or bool((spacing <= 0).any()):
            raise ValueError(
                f"grid_spacing: expected one positive value or one per spatial axis ({sd}), got "
                f"{grid_spacing!r}"
            )
        if level_correlation is None:
            rho = torch.eye(levels, dtype=torch.float64)
        else:
            rho = torch.as_tensor(level_correlation, dtype=torch.float64)
            if (
                rho.shape != (levels, levels)
                or not torch.allclose(rho, rho.T)
                or not torch.allclose(rho.diagonal(), torch.ones(levels, dtype=torch.float64))
                or float(torch.linalg.eigvalsh(rho).min()) < -1e-10
            ):
                raise ValueError(
                    f"level_correlation: expected a symmetric positive semi-definite {levels} x "
                    f"{levels} matrix with a unit diagonal, got {rho.tolist()}"
                )
        # c periodised over the images of the domain (positive definite on the torus), then
        # normalised to 1 at r = 0
        axes = [
            torch.arange(n, dtype=torch.float64)[None] - n * IMAGE_OFFSETS[:, None] for n in grid
        ]
        kernel = torch.zeros(grid, dtype=torch.float64)
        for shifted in itertools.product(*axes):
            mesh = torch.meshgrid(*shifted, indexing="ij")
            distance = torch.sqrt(sum((m * spacing[i]).square() for i, m in enumerate(mesh)))
            kernel = kernel + _CORRELATION_FUNCTIONS[correlation](distance / length)
        kernel = kernel / kernel.reshape(-1)[0]
        spectrum = torch.fft.fftn(kernel).real.clamp_min(0)  # ĉ(k), real: c is even
        block = sigma[:, None] * rho * sigma[None, :]
        return cls.from_spectrum(spectrum[..., None, None] * block, grid, isotropic=False)

    # -- eigendecomposition (cached) -----------------------------------------------

    def _wavenumber_spectrum(self) -> Tensor:
        """``C(k)`` per wavenumber ``(*grid, levels, levels)``, symmetric and equal at ±k."""
        c = self.spectrum.double()
        c = 0.5 * (c + c.transpose(-1, -2))
        if self.isotropic:
            return c[self.shells().to(c.device)]
        return 0.5 * (c + _negative_wavenumbers(c, self.spatial_dims))

    def _eigh(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(λ, U)`` per wavenumber, ``(*grid, levels)`` and ``(*grid, levels, levels)``."""
        spectrum = self.spectrum
        version = -1 if spectrum.is_inference() else spectrum._version
        token = (spectrum.data_ptr(), version, spectrum.device, spectrum.dtype)
        if self._cache_token != token:
            self._cache = {}
            self._cache_token = token
        key = (dtype, torch.device(device))
        if key not in self._cache:
            with torch.inference_mode(False), torch.no_grad():
                if "float64" not in self._cache:
                    if self.isotropic:
                        c = self.spectrum.double()
                        lam, vec = torch.linalg.eigh(0.5 * (c + c.transpose(-1, -2)))
                        shells = self.shells().to(c.device)
                        lam, vec = lam[shells], vec[shells]
                    else:
                        lam, vec = torch.linalg.eigh(self._wavenumber_spectrum())
                    self._cache["float64"] = (lam.clamp_min(0), vec.contiguous())
                lam, vec = self._cache["float64"]
                self._cache[key] = (lam.to(device, dtype), vec.to(device, dtype))
        return self._cache[key]

    def _map(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        sd = self.spatial_dims
        dims = tuple(range(-sd, 0))
        lam, vec = self._eigh(x.dtype, x.device)
        spectral = torch.fft.fftn(x, dim=dims, norm="ortho").movedim(-sd - 1, -1)
        vec = vec.to(spectral.dtype)
        coefficients = (vec.transpose(-1, -2) @ spectral.unsqueeze(-1)).squeeze(-1)
        coefficients = coefficients * f(lam).to(coefficients.dtype)
        spectral = (vec @ coefficients.unsqueeze(-1)).squeeze(-1).movedim(-1, -sd - 1)
        return torch.fft.ifftn(spectral, dim=dims, norm="ortho").real

    def _max_eigenvalue(self) -> float:
        lam, _ = self._eigh(torch.float64, self.spectrum.device)
        return float(lam.max())

    def variance(self) -> Tensor:
        """``diag(B) = mean_k diag(C(k))`` in every cell, ``(levels, *space)`` (float64)."""
        lam, vec = self._eigh(torch.float64, self.spectrum.device)
        per_level = (vec.square() * lam[..., None, :]).sum(-1)  # (*grid, levels)
        per_level = per_level.reshape(-1, self.levels).mean(0)
        shape = (self.levels, *(1,) * self.spatial_dims)
        return per_level.reshape(shape).expand(self.state_shape).clone()

    def scaled(self, factor: float) -> SpectralCovariance:
        """``factor² C(k)``."""
        factor = _as_factor(factor, "factor")
        cov = type(self)(levels=self.levels, grid_shape=self.grid_shape, isotropic=self.isotropic)
        cov.spectrum = (self.spectrum.double() * factor**2).to(self.spectrum.device)
        return cov


# --------------------------------------------------------------------------- zonal


class ZonalCovariance(BackgroundCovariance):
    r"""Errors homogeneous along a periodic ``x`` only, e.g. longitude on a latitude–longitude grid:
    ``B = F_x^H diag_m(C_m) F_x``.

    ``F_x`` is the unitary DFT over ``x`` (``torch.fft.rfft(..., norm="ortho")``) and ``C_m`` a
    Hermitian positive semi-definite matrix of order ``n = levels · ny`` over ``(level, y)`` per
    zonal wavenumber ``m = 0 … nx // 2`` (a real field's ``−m`` carries ``conj(C_m)``; ``C_0`` and,
    for even ``nx``, ``C_{nx/2}`` are real). The covariance of ``(l, y, x)`` and ``(l', y', x')``
    depends on ``l, l', y, y'`` and ``x − x'`` only: variances, vertical and meridional
    correlations change with latitude (tropics, storm tracks, poles), and are the same at every
    longitude. It is what a global grid keeps of an ensemble covariance by averaging over
    longitude (spectral localisation along one axis, as Buehner & Charron 2007 over all of them;
    docs/method.md §Real grids). A pole row, one point repeated along ``x``, stays one point: its
    ``C_m`` vanish for ``m > 0`` when the samples do.

    Held as eigendecompositions ``C_m = U_m diag(λ_m) U_m^H``, so ``apply``, ``apply_sqrt`` and
    ``solve`` are exact: buffers ``eigenvalues`` ``(M, n)`` and ``eigenvectors_real``,
    ``eigenvectors_imag`` ``(M, n, n)`` (float64, ``M = nx // 2 + 1``; safetensors holds real
    tensors). Config: ``levels``, ``grid_shape`` ``(y, x)``. Defaults to ``B = I``; build it with
    :meth:`from_samples` or :meth:`from_matrices`.
    """

    @register_to_config
    def __init__(self, levels: int = 1, grid_shape: Sequence[int] = (8, 16)) -> None:
        super().__init__()
        levels, grid = self._init_shape(levels, grid_shape)
        if len(grid) != 2:
            raise ValueError(
                f"grid_shape: a zonal covariance needs a grid (y, x), got {grid} (use a "
                "SpectralCovariance on a periodic line, a DenseCovariance on a column)"
            )
        m, n = self.num_wavenumbers, levels * grid[0]
        self.register_buffer("eigenvalues", torch.ones(m, n, dtype=torch.float64))
        self.register_buffer(
            "eigenvectors_real", torch.eye(n, dtype=torch.float64).expand(m, n, n).clone()
        )
        self.register_buffer("eigenvectors_imag", torch.zeros(m, n, n, dtype=torch.float64))

    @property
    def num_wavenumbers(self) -> int:
        """``M = nx // 2 + 1``: the zonal wavenumbers ``0 … nx // 2`` of a real field."""
        return self.grid_shape[1] // 2 + 1

    def _real_wavenumbers(self) -> list[int]:
        """The wavenumbers whose Fourier coefficients of a real field are real: 0 and ``nx/2``."""
        nx = self.grid_shape[1]
        return [0, nx // 2] if nx % 2 == 0 else [0]

    @classmethod
    def from_matrices(
        cls, matrices: Tensor, levels: int, grid_shape: Sequence[int]
    ) -> ZonalCovariance:
        """From ``C_m``, ``(nx // 2 + 1, levels · ny, levels · ny)`` (complex or real), over the
        C-order flattening of ``(level, y)``: Hermitian-symmetrised; ``C_0`` (and ``C_{nx/2}``)
        must be real and every ``C_m`` positive semi-definite (to a relative ``1e-8``)."""
        cov = cls(levels=levels, grid_shape=tuple(as_grid_shape(grid_shape)))
        c = torch.as_tensor(matrices)
        n = cov.levels * cov.grid_shape[0]
        if tuple(c.shape) != (cov.num_wavenumbers, n, n):
            raise ValueError(
                f"matrices: expected shape (nx // 2 + 1, levels * ny, levels * ny) = "
                f"{(cov.num_wavenumbers, n, n)} for levels={cov.levels}, grid_shape="
                f"{cov.grid_shape}; got {tuple(c.shape)}"
            )
        if not bool(torch.isfinite(torch.view_as_real(c.to(torch.complex128))).all()):
            raise ValueError("matrices: contains NaN or inf; expected finite values")
        c = c.to(torch.complex128)
        scale = float(c.abs().max()) or 1.0
        if float((c - c.mH).abs().max()) > 1e-8 * scale:
            raise ValueError("matrices: expected Hermitian matrices")
        real = cov._real_wavenumbers()
        if float(c[real].imag.abs().max()) > 1e-8 * scale:
            raise ValueError(
                f"matrices: the wavenumbers {real} of a real field need real matrices, found an "
                f"imaginary part {float(c[real].imag.abs().max()):g}"
            )
        c = 0.5 * (c + c.mH)
        c[real] = c[real].real.to(c.dtype)
        values, vectors = torch.linalg.eigh(c)
        if float(values.min()) < -1e-8 * max(float(values.max()), 0.0) - 1e-300:
            raise ValueError(
                f"matrices: expected positive semi-definite matrices, smallest eigenvalue "
                f"{float(values.min()):g}"
            )
        cov.eigenvalues = values.clamp_min(0.0).contiguous()
        cov.eigenvectors_real = vectors.real.contiguous()
        cov.eigenvectors_imag = vectors.imag.contiguous()
        return cov

    @classmethod
    def from_samples(
        cls, errors: Tensor, remove_mean: bool = False, *, taper: Tensor | None = None
    ) -> ZonalCovariance:
        r"""Estimate ``C_m`` from error samples ``e``: ``(N, levels, y, x)`` (more leading dims
        are flattened into samples).

            ê = rfft_x(e, norm="ortho"),   C_m = T ∘ (Σ_n ê_n(m) ê_n(m)^H / N)

        ``F_x^H diag_m(C_m) F_x`` is the sample covariance averaged over the shifts along ``x``
        (its projection on the covariances homogeneous in ``x``). ``taper`` ``T``: a symmetric
        ``(levels · ny, levels · ny)`` correlation matrix over ``(level, y)`` (e.g. Gaspari–Cohn
        in latitude, :func:`~slams_diffusers.ensemble.ensemble_covariance`) multiplying every
        ``C_m`` entrywise; a Schur product with a correlation matrix keeps ``C_m`` positive
        semi-definite. ``remove_mean=True`` subtracts the sample mean per cell first and divides
        by ``N − 1``.
        """
        e, _ = _errors_tensor(errors, "errors", 2)
        e, dof = _centred(e, remove_mean, "errors")
        samples, levels, ny, nx = e.shape
        spectral = torch.fft.rfft(e, dim=-1, norm="ortho")  # (N, levels, y, M)
        spectral = spectral.permute(3, 0, 1, 2).reshape(nx // 2 + 1, samples, levels * ny)
        matrices = spectral.transpose(-1, -2) @ spectral.conj() / dof  # Σ_n ê ê^H
        if taper is not None:
            t = torch.as_tensor(taper, dtype=torch.float64)
            if tuple(t.shape) != (levels * ny, levels * ny):
                raise ValueError(
                    f"taper: expected shape (levels * ny, levels * ny) = {(levels * ny,) * 2}, "
                    f"got {tuple(t.shape)}"
                )
            matrices = matrices * t
        return cls.from_matrices(matrices, levels, (ny, nx))

    def matrices(self) -> Tensor:
        """``C_m = U_m diag(λ_m) U_m^H``, ``(nx // 2 + 1, levels · ny, levels · ny)`` complex128."""
        u = torch.complex(self.eigenvectors_real, self.eigenvectors_imag)
        return (u * self.eigenvalues[:, None, :].to(u.dtype)) @ u.mH

    def _map(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        levels, ny, nx = self.state_shape
        lead, m, n = x.shape[: x.ndim - 3], self.num_wavenumbers, levels * ny
        complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        u = torch.complex(self.eigenvectors_real, self.eigenvectors_imag)
        u = u.to(device=x.device, dtype=complex_dtype)
        lam = self.eigenvalues.to(device=x.device, dtype=x.dtype)
        # f sees λ laid out as (M, levels, ny), three dims like a state, so that a per-batch
        # shift (..., 1, 1, 1) broadcasts over the leading dims
        weights = f(lam.reshape(m, levels, ny))
        weights = weights.reshape(*weights.shape[: weights.ndim - 2], n).broadcast_to(*lead, m, n)
        weights = weights.reshape(-1, m, n).permute(1, 2, 0)  # (M, n, batch)
        spectral = torch.fft.rfft(x, dim=-1, norm="ortho")  # (..., levels, y, M)
        columns = spectral.reshape(-1, n, m).permute(2, 1, 0)  # (M, n, batch): a GEMM per m
        columns = u @ ((u.mH @ columns) * weights.to(complex_dtype))
        spectral = columns.permute(2, 1, 0).reshape(*lead, levels, ny, m)
        return torch.fft.irfft(spectral, n=nx, dim=-1, norm="ortho")

    def _max_eigenvalue(self) -> float:
        return float(self.eigenvalues.max())

    def variance(self) -> Tensor:
        """``diag(B) = Σ_{m=−nx/2}^{nx/2} diag(C_m) / nx`` per ``(level, y)``, the same at every
        ``x``: ``(levels, y, x)`` (float64)."""
        levels, ny, nx = self.state_shape
        power = self.eigenvectors_real.square() + self.eigenvectors_imag.square()
        per_wavenumber = (power * self.eigenvalues[:, None, :]).sum(-1)  # (M, n)
        multiplicity = torch.full((self.num_wavenumbers,), 2.0, dtype=torch.float64)
        multiplicity[self._real_wavenumbers()] = 1.0
        per_row = (multiplicity.to(per_wavenumber) @ per_wavenumber) / nx
        return per_row.reshape(levels, ny, 1).expand(levels, ny, nx).clone()

    def scaled(self, factor: float) -> ZonalCovariance:
        """``factor² C_m``."""
        factor = _as_factor(factor, "factor")
        cov = type(self)(levels=self.levels, grid_shape=self.grid_shape)
        cov.eigenvalues = self.eigenvalues * factor**2
        cov.eigenvectors_real = self.eigenvectors_real.clone()
        cov.eigenvectors_imag = self.eigenvectors_imag.clone()
        return cov


# --------------------------------------------------------------------------- estimation


def _from_errors(
    errors: Tensor,
    name: str,
    kind: str,
    isotropic: bool,
    remove_mean: bool,
    spatial_dims: int | None,
) -> BackgroundCovariance:
    if kind == "spectral":
        return SpectralCovariance.from_samples(
            errors, isotropic=isotropic, remove_mean=remove_mean, spatial_dims=spatial_dims
        )
    if kind == "zonal":
        return ZonalCovariance.from_samples(errors, remove_mean=remove_mean)
    e, sd = _errors_tensor(errors, name, spatial_dims)
    e, dof = _centred(e, remove_mean, name)
    levels = e.shape[1]
    cells = math.prod(e.shape[2:])
    variance = e.square().transpose(0, 1).reshape(levels, -1).sum(-1) / (dof * cells)
    return DiagonalCovariance.from_std(variance.sqrt(), levels, tuple(e.shape[2:]))


def _check_kind(kind: Any) -> str:
    if kind not in ("spectral", "zonal", "diagonal"):
        raise ValueError(f"kind: expected 'spectral', 'zonal' or 'diagonal', got {kind!r}")
    return kind


def _check_pair(a: Any, b: Any, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b}: expected the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}"
        )
    return a, b


def estimate_background_covariance(
    backgrounds: Tensor,
    truths: Tensor,
    kind: str = "spectral",
    isotropic: bool = True,
    *,
    remove_mean: bool = False,
    spatial_dims: int | None = None,
) -> BackgroundCovariance:
    """``B`` from background/truth pairs ``(…, levels, *space)``: errors ``e = x_b − x`` with the
    leading dims (cases, time, …) flattened into samples.

    - ``kind="spectral"``: :meth:`SpectralCovariance.from_samples` (homogeneous, per wavenumber).
    - ``kind="zonal"``: :meth:`ZonalCovariance.from_samples` (homogeneous in ``x`` only: a
      latitude–longitude grid; ``isotropic`` does not apply).
    - ``kind="diagonal"``: :class:`DiagonalCovariance` with the per-level rms error
      ``std_l = sqrt(mean_{n, cells} e_l²)``, the same in every cell.

    ``remove_mean`` subtracts the mean error per cell (the bias) first. See ``spatial_dims`` in
    :meth:`SpectralCovariance.from_samples` and docs/method.md §Background covariance.
    """
    kind = _check_kind(kind)
    backgrounds, truths = _check_pair(backgrounds, truths, "backgrounds", "truths")
    if not (backgrounds.is_floating_point() and truths.is_floating_point()):
        raise ValueError(
            f"backgrounds, truths: expected floating tensors, got {backgrounds.dtype} "
            f"and {truths.dtype}"
        )
    errors = backgrounds.double() - truths.double()
    return _from_errors(errors, "backgrounds - truths", kind, isotropic, remove_mean, spatial_dims)


def nmc_covariance(
    long_forecasts: Tensor,
    short_forecasts: Tensor,
    scale: float = 1.0,
    kind: str = "spectral",
    isotropic: bool = True,
    *,
    remove_mean: bool = False,
    spatial_dims: int | None = None,
) -> BackgroundCovariance:
    """``B`` by the NMC method (Parrish & Derber 1992), when no truth exists.

        e ≈ scale · (x_long − x_short)

    with forecasts of two lead times (e.g. 48 h and 24 h) valid at the same times, ``(…, levels,
    *space)`` each; ``B`` is estimated from these pseudo-errors as in
    :func:`estimate_background_covariance`. ``scale`` is a factor on the std (``B`` scales by
    ``scale²``): lagged differences usually over-estimate the background error, so ``scale < 1``
    is common.
    """
    kind = _check_kind(kind)
    scale = _as_factor(scale, "scale")
    long_forecasts, short_forecasts = _check_pair(
        long_forecasts, short_forecasts, "long_forecasts", "short_forecasts"
    )
    if not (long_forecasts.is_floating_point() and short_forecasts.is_floating_point()):
        raise ValueError(
            f"long_forecasts, short_forecasts: expected floating tensors, got "
            f"{long_forecasts.dtype} and {short_forecasts.dtype}"
        )
    errors = scale * (long_forecasts.double() - short_forecasts.double())
    return _from_errors(
        errors, "long_forecasts - short_forecasts", kind, isotropic, remove_mean, spatial_dims
    )


# --------------------------------------------------------------------------- resolution


def default_background_covariance(
    std: float | Sequence[float] | Tensor, levels: int, grid_shape: Sequence[int]
) -> DiagonalCovariance:
    """The default ``B``: white, ``diag(std²)``, from ``std`` (K) a scalar, one value per level or
    per cell (broadcastable to ``(levels, *space)``); ``ValueError`` naming
    ``background_error_std`` otherwise."""
    space = tuple(grid_shape)
    std = torch.as_tensor(std, dtype=torch.float64)
    if std.dim() == 1 and std.numel() == levels:
        std = std.reshape(-1, *([1] * len(space)))
    try:
        std = torch.broadcast_to(std, (levels, *space))
    except RuntimeError as error:
        raise ValueError(
            "`background_error_std` must be a scalar, one value per level "
            f"({levels}) or broadcastable to {(levels, *space)}, got shape "
            f"{tuple(std.shape)}"
        ) from error
    if (std < 0).any() or not torch.isfinite(std).all():
        raise ValueError(f"`background_error_std` must be finite and >= 0, got {std}")
    return DiagonalCovariance.from_std(std, levels, space)


def background_covariance_of(background: Any) -> Any:
    """``B`` of a :class:`~slams_diffusers.observations.Background`: its ``covariance`` object,
    else ``diag(noise_std²)`` (:func:`default_background_covariance`)."""
    if background.covariance is not None:
        return background.covariance
    return default_background_covariance(
        background.noise_std, background.num_levels, background.grid_shape
    )


def resolve_background_covariance(
    std: float | Sequence[float] | Tensor | None,
    covariance: Any,
    length_scale: float | None,
    *,
    levels: int,
    grid_shape: Sequence[int],
    default: Any = None,
) -> Any:
    """``B`` of an assimilation (docs/method.md §Background covariance), from the pipeline's
    arguments ``background_error_std`` (``std``), ``background_error_covariance``
    (``covariance``) and ``background_error_length_scale`` (``length_scale``) for a state of
    ``levels`` and ``grid_shape``: the declared covariance, else ``std`` with a horizontal
    correlation of ``length_scale`` cells (:meth:`SpectralCovariance.from_length_scale`,
    Gaussian), else its diagonal, else ``default`` (the pipeline's ``background_covariance``),
    else 1 K white. A white ``B`` for a state with horizontal extent gets a warning: it declares
    the background's large scales nearly exact. ``ValueError`` naming the argument for anything
    else."""
    space = tuple(grid_shape)
    if length_scale is not None:
        if covariance is not None:
            raise ValueError(
                "`background_error_length_scale` shapes `background_error_std`; with "
                "`background_error_covariance` give neither of them."
            )
        if not space:
            raise ValueError(
                "`background_error_length_scale` needs a state with horizontal extent; "
                f"this background is a column {(levels,)}: give `background_error_std`."
            )
        if (
            isinstance(length_scale, bool)
            or not isinstance(length_scale, (int, float))
            or not length_scale > 0
        ):
            raise ValueError(
                "`background_error_length_scale` must be a positive number of grid cells, "
                f"got {length_scale!r}"
            )
        std = 1.0 if std is None else std
        std = torch.as_tensor(std, dtype=torch.float64)
        if std.numel() not in (1, levels):
            raise ValueError(
                "`background_error_std` with `background_error_length_scale` must be a scalar "
                f"or one value per level ({levels}), got shape {tuple(std.shape)}"
            )
        if (std < 0).any() or not torch.isfinite(std).all():
            raise ValueError(f"`background_error_std` must be finite and >= 0, got {std}")
        return SpectralCovariance.from_length_scale(
            std.reshape(-1), float(length_scale), space, levels=levels
        )
    if covariance is None and std is None:
        covariance = default
    if covariance is None:
        covariance = default_background_covariance(1.0 if std is None else std, levels, space)
    if isinstance(covariance, DiagonalCovariance) and math.prod(space) > 1:
        logger.warning(
            "A white background-error covariance (errors uncorrelated between grid cells) "
            "declares the background's large scales nearly exact, so the analysis barely "
            "moves them; if its errors are correlated, pass `background_error_length_scale` "
            "(grid cells) with `background_error_std`, or a SpectralCovariance "
            "(estimate_background_covariance)."
        )
    for name in ("apply", "solve", "sample", "variance"):
        if not callable(getattr(covariance, name, None)):
            raise ValueError(
                "`background_error_covariance` must be a covariance object with apply, solve, "
                f"sample and variance (slams_diffusers.covariance), got "
                f"{type(covariance).__name__}"
            )
    found = (covariance.levels, tuple(covariance.grid_shape))
    if found != (levels, space):
        raise ValueError(
            f"`background_error_covariance` is for (levels, grid) = {found}; the background "
            f"has {(levels, space)}"
        )
    return covariance
