r"""From the final latents to the analysis in state space (docs/method.md §Analysis).

The autoencoder resolves only part of a state: ``x = D(E(x)) + ρ`` with ``ρ`` the part that
``D ∘ E`` cannot represent (fine scales). The latent posterior draws the resolved part; the
unresolved part of the truth is estimated from the background's own, ``ρ_b = x_b − D(E(x_b))``,
which holds ``ρ`` plus the background's error at those scales,

    ρ_b = ρ + e_⊥,   e_⊥ = e − [D(E(x_b + e)) − D(E(x_b))],   e ~ N(0, B),

so ``e_⊥ ~ N(0, B_⊥)`` with ``B_⊥`` estimated by drawing ``e``. With ``ρ ~ N(0, R)`` and ``R`` from
``Cov(ρ_b) = R + B_⊥`` (both homogeneous: one ``levels × levels`` block per isotropic wavenumber
shell), the posterior of ``ρ`` given ``ρ_b`` is the Wiener filter

    ρ | ρ_b ~ N(ρ_b − B_⊥ S⁻¹ ρ_b,  B_⊥ − B_⊥ S⁻¹ B_⊥),   S = R + B_⊥,

and the filtered analysis of a member with latents ``z_a`` is ``x_a = D(z_a) + ρ_a`` with ``ρ_a``
drawn from it. It keeps ``ρ_b`` where the background is accurate at fine scales (``B_⊥ ≪ R``:
the incremental analysis ``x_b + D(z_a) − D(E(x_b))``), drops it where it is mostly error
(``B_⊥ ≫ R``: the full analysis ``D(z_a)``), and gives the ensemble the spread of what the latent
cannot carry.

The observations also see ``ρ``: ``y = A(D(z_a) + ρ) + ε``. Given a member's ``z_a``, the draw is
conditioned on them too (a linear-Gaussian update, drawn exactly with perturbed observations):

    ρ_a = ρ_s + P Aᵀ (A P Aᵀ + R_y)⁻¹ (y + ε' − A(D(z_a) + ρ_s)),
    ρ_s ~ N(ρ_b − B_⊥ S⁻¹ ρ_b, P),  P = B_⊥ − B_⊥ S⁻¹ B_⊥,  ε' ~ N(0, R_y),

which is the OI/3D-Var analysis of ``D(z_a) + ρ_s`` with prior covariance ``P`` and perturbed
observations (:func:`~slams_diffusers.linear_update.linear_gaussian_update`, linear operators).
To the extent that ``z_a`` is a draw of ``p(z | x_b, y)``, ``(z_a, ρ_a)`` is a draw of the joint
posterior; dense, precise observations then correct the scales the latent cannot carry.

:func:`resolve_analysis` picks the analysis (``"auto"``: filtered with a background and a learned
autoencoder, else full) and :func:`unresolved_part` gives what the members ``D(z_a)`` lack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .covariance import BackgroundCovariance, SpectralCovariance
from .linear_update import linear_gaussian_update
from .observations import Observation

__all__ = [
    "ANALYSES",
    "ResidualPosterior",
    "resolve_analysis",
    "residual_posterior",
    "unresolved_error_covariance",
    "UNRESOLVED_PARTS",
    "filtered_part",
    "incremental_part",
    "unresolved_part",
]

#: Draws ``e ~ N(0, B)`` per background step that estimate ``B_⊥``.
UNRESOLVED_DRAWS = 16


def unresolved_error_covariance(
    autoencode: Callable[[Tensor], Tensor],
    background: Tensor,
    covariance: BackgroundCovariance,
    draws: int = UNRESOLVED_DRAWS,
    seed: int = 0,
) -> SpectralCovariance:
    """``B_⊥ = Cov(e − [D(E(x_b + e)) − D(E(x_b))])``, ``e ~ N(0, B)``: the background error the
    autoencoder does not carry, estimated from ``draws`` draws per step of ``background``
    ``(T, levels, *space)`` (fixed ``seed``) as an isotropic spectral covariance.

    ``autoencode`` is ``D ∘ E`` on ``(batch, 1, levels, *space)`` states."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    errors = []
    for values in background:
        e = covariance.sample(draws, generator=generator, dtype=values.dtype).to(values.device)
        base = autoencode(values[None, None])[:, 0]
        errors.append(e - (autoencode((values + e)[:, None])[:, 0] - base))
    return SpectralCovariance.from_samples(torch.cat(errors).double(), isotropic=True)


class ResidualPosterior:
    """``N(mean, covariance)`` of the unresolved part ``ρ`` of every step of a window."""

    def __init__(self, mean: Tensor, covariance: SpectralCovariance) -> None:
        self.mean = mean
        self.covariance = covariance

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw ``(T, levels, *space)`` (independent steps), like ``mean``; the white noise is
        drawn on the generator's device (a CPU generator works for a GPU mean)."""
        noise = _white_noise(self.mean, generator)
        return self.mean + self.covariance.apply_sqrt(noise).to(self.mean)

    def sample_given(
        self,
        resolved: Tensor,
        observations: Sequence[Observation],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One draw of ``ρ`` given also ``observations`` of ``resolved + ρ`` (``resolved`` =
        ``D(z_a)`` ``(T, levels, *space)``): the perturbed-observation update of the module
        docstring, after :meth:`sample` with the same generator. Without observations (or none
        observed) it is :meth:`sample`. The perturbations are drawn step by step (``time_index``),
        the observations of one step in the order given: files read by modality and a list made
        step by step give the same draw."""
        draw = self.sample(generator)
        observed = [o for o in observations if o.num_observed > 0]
        observations = sorted(observed, key=lambda o: o.time_index)  # stable: ties keep order
        if not observations:
            return draw
        perturbed = []
        for o in observations:
            noise = _white_noise(o.values, generator) * o.noise_variance().sqrt()
            perturbed.append(o.replace_values(o.values + noise))
        first_guess = (resolved + draw).double()
        analysis = linear_gaussian_update(first_guess, perturbed, self.covariance)
        return (analysis - resolved.double()).to(self.mean)


def _white_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``N(0, I)`` of ``like``'s shape, drawn on the generator's device (a CPU generator works for
    GPU tensors) and returned on ``like``'s device and dtype."""
    device = like.device if generator is None else generator.device
    return torch.randn(like.shape, generator=generator, device=device).to(like)


def residual_posterior(residual: Tensor, unresolved: SpectralCovariance) -> ResidualPosterior:
    """The Wiener filter of the module docstring for ``ρ_b`` ``(T, levels, *space)``.

    ``S = Cov(ρ_b)`` is estimated from ``ρ_b`` itself (spectral, pooled over the steps and the
    wavenumbers of each shell) and raised to ``B_⊥`` where it falls below (``R = S − B_⊥`` is
    projected onto the positive semi-definite matrices), so the filter never amplifies ``ρ_b``."""
    observed = SpectralCovariance.from_samples(residual.double(), isotropic=True)
    b = unresolved.spectrum.double()
    lam, vec = torch.linalg.eigh(observed.spectrum.double() - b)
    signal = (vec * lam.clamp_min(0)[..., None, :]) @ vec.transpose(-1, -2)
    total = signal + b
    gain = b @ torch.linalg.pinv(total, hermitian=True)
    posterior = b - gain @ b
    posterior = 0.5 * (posterior + posterior.transpose(-1, -2))
    lam, vec = torch.linalg.eigh(posterior)
    posterior = (vec * lam.clamp_min(0)[..., None, :]) @ vec.transpose(-1, -2)
    # ρ_b − B_⊥ S⁻¹ ρ_b through the shell gain: a covariance's ``apply`` with ``gain`` would need
    # it symmetric, so it is applied per wavenumber here.
    mean = residual - _apply_shell_matrices(gain, residual, unresolved)
    grid_shape = unresolved.grid_shape
    return ResidualPosterior(
        mean.to(residual.dtype), SpectralCovariance.from_spectrum(posterior, grid_shape)
    )


def _apply_shell_matrices(matrices: Tensor, x: Tensor, like: SpectralCovariance) -> Tensor:
    """``M(k) x̂(k)`` per wavenumber, ``M`` one ``(levels, levels)`` matrix per shell of ``like``,
    for ``x`` ``(…, levels, *space)``."""
    sd = like.spatial_dims
    dims = tuple(range(-sd, 0))
    spectral = torch.fft.fftn(x.double(), dim=dims, norm="ortho").movedim(-sd - 1, -1)
    per_wavenumber = matrices[like.shells().to(matrices.device)].to(spectral.dtype)
    spectral = (per_wavenumber @ spectral.unsqueeze(-1)).squeeze(-1).movedim(-1, -sd - 1)
    return torch.fft.ifftn(spectral, dim=dims, norm="ortho").real


def resolve_analysis(analysis: str, background: Tensor | None, linear_autoencoder: bool) -> str:
    """The analysis ``"auto"`` stands for (one of :data:`ANALYSES`); ``"full"`` without a
    ``background`` or when ``D ∘ E`` is the identity (``linear_autoencoder``: a level
    normaliser)."""
    if background is None or linear_autoencoder:
        return "full"
    return "filtered" if analysis == "auto" else analysis


def incremental_part(
    residual: Tensor,
    background: Tensor,
    covariance: BackgroundCovariance,
    resolved: Tensor,
    observations: Sequence[Observation],
    generators: list[torch.Generator | None],
    autoencode: Callable[[Tensor], Tensor],
    progress: Callable[[list], Iterable] = iter,
) -> Tensor:
    """``"incremental"``: the background's own ``ρ_b`` for every member, ``(1, T, levels,
    *space)`` (no work per member: ``progress`` is not used)."""
    return residual[None]


def filtered_part(
    residual: Tensor,
    background: Tensor,
    covariance: BackgroundCovariance,
    resolved: Tensor,
    observations: Sequence[Observation],
    generators: list[torch.Generator | None],
    autoencode: Callable[[Tensor], Tensor],
    progress: Callable[[list], Iterable] = iter,
) -> Tensor:
    """``"filtered"``: per member a draw of the posterior of ``ρ`` given ``ρ_b`` and the
    ``observations`` (the module docstring), ``(n, T, levels, *space)``; the members' list of
    ``(member, generator)`` is iterated through ``progress`` (e.g. a progress bar)."""
    unresolved = unresolved_error_covariance(autoencode, background, covariance).to(
        background.device
    )
    posterior = residual_posterior(residual, unresolved)
    pairs = list(zip(resolved, generators, strict=True))
    return torch.stack([posterior.sample_given(m, observations, g) for m, g in progress(pairs)])


#: What each analysis adds to the members ``D(z_a)`` (``"full"``: nothing), by name.
UNRESOLVED_PARTS: dict[str, Callable[..., Tensor]] = {
    "filtered": filtered_part,
    "incremental": incremental_part,
}
#: The accepted ``analysis`` names: ``"auto"`` (:func:`resolve_analysis`), those with an
#: unresolved part, and ``"full"`` (``D(z_a)`` alone).
ANALYSES = ("auto", *UNRESOLVED_PARTS, "full")


def unresolved_part(
    analysis: str,
    background: Tensor,
    covariance: BackgroundCovariance,
    resolved: Tensor,
    observations: Sequence[Observation],
    generator: torch.Generator | list[torch.Generator] | None,
    autoencode: Callable[[Tensor], Tensor],
    progress: Callable[[list], Iterable] = iter,
) -> Tensor:
    """What the members ``resolved = D(z_a)`` ``(n, T, levels, *space)`` lack under
    ``analysis`` (:data:`UNRESOLVED_PARTS`), ``(n or 1, T, levels, *space)``, from
    ``ρ_b = x_b − D(E(x_b))``; draws use each member's generator after its reverse run.
    ``autoencode`` is ``D ∘ E`` on ``(batch, T, levels, *space)`` states; ``covariance`` is
    ``B``; work done member by member goes through ``progress`` (given the list of members,
    it returns what to iterate: the list itself, or a progress bar over it)."""
    residual = background - autoencode(background[None])[0]
    generators = generator if isinstance(generator, list) else [generator] * len(resolved)
    part = UNRESOLVED_PARTS[analysis]
    return part(
        residual, background, covariance, resolved, observations, generators, autoencode, progress
    )
