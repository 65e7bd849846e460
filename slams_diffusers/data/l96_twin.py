r"""Lorenz-96 twin experiments: a true trajectory and its observations, cycle by cycle.

The truth is one run of :class:`~slams_diffusers.data.lorenz96.Lorenz96` from a spun-up state,
sampled every ``interval`` model steps (one assimilation cycle); at cycle ``t``

.. math:: y_t = H\,φ(x_t) + e_t, \qquad e_t \sim \mathcal{N}(0, σ^2 I),

``H`` selects the observed variables, ``φ`` is the observed quantity. The configurations
(:data:`L96_TWINS`):

- ``"all"``: every variable, ``σ = 1``, every 0.05 time units (5 steps) — the classical twin
  (Sakov & Oke 2008; ETKF with N = 20 reaches an RMSE of about 0.2);
- ``"sparse"``: every other variable, ``σ = 1``, every 0.1 time units (10 steps). Half the
  variables at twice the interval: the unobserved half is known only through its coupling to the
  observed neighbours, and errors grow twice as long between analyses (their doubling time is
  about 0.4 time units: Lorenz & Emanuel 1998). Harder than ``"all"`` (the LETKF with N = 40:
  RMSE 0.44 against 0.18, ``benchmarks/l96.py``) while a tuned filter still tracks the truth;
- ``"nonlinear"``: every variable observed as ``φ(x) = |x|``, ``σ = 1``, every 0.05 time units.
  The sign is never observed and must come from the dynamics. The observation types are linear
  in what they see, so these are :class:`~slams_diffusers.Stations` on the state ``φ(x)``: a
  method applies ``φ`` (:attr:`L96Twin.operator`) first, as the ensemble filters do with their
  ``operator`` argument (:func:`~slams_diffusers.baselines.letkf`). The diffusion pipelines take
  them wrapped as :class:`~slams_diffusers.observations.Transformed`
  (:attr:`L96Twin.state_observations`), guided through ``φ`` on the decoded route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..observations import Observation, Transformed
from ..validation import as_int, finite_float
from .lorenz96 import Lorenz96
from .twin import observations_from_array

__all__ = ["L96_TWINS", "L96Twin", "L96TwinConfig", "l96_twin"]


@dataclass(frozen=True)
class L96TwinConfig:
    """What a twin observes: every ``stride``-th variable (from 0) of ``φ(x)``, noise ``σ``,
    every ``interval`` model steps; ``observable`` is ``"identity"`` or ``"abs"``."""

    name: str
    interval: int = 5
    stride: int = 1
    noise_std: float = 1.0
    observable: str = "identity"


L96_TWINS: dict[str, L96TwinConfig] = {
    "all": L96TwinConfig("all"),
    "sparse": L96TwinConfig("sparse", interval=10, stride=2),
    "nonlinear": L96TwinConfig("nonlinear", observable="abs"),
}
"""The named twins of the module docstring."""

_OBSERVABLES: dict[str, Callable[[Tensor], Tensor] | None] = {"identity": None, "abs": torch.abs}


@dataclass
class L96Twin:
    """A twin: ``truth`` ``(cycles, 1, n)``, ``observations[t]`` the list observed at cycle ``t``
    (``time_index = t``), ``operator`` the ``φ`` they observe (``None`` = the state itself),
    ``model`` and ``config`` that made them."""

    truth: Tensor
    observations: list[list[Observation]]
    operator: Callable[[Tensor], Tensor] | None
    model: Lorenz96
    config: L96TwinConfig

    @property
    def state_observations(self) -> list[list[Observation]]:
        """The observations as observations of the state: each wrapped with ``φ``
        (:class:`~slams_diffusers.observations.Transformed`) where ``φ`` is not the identity,
        for a method that takes no ``operator`` (the pipelines, :class:`~slams_diffusers.
        SLAMSFilter`)."""
        if self.operator is None:
            return self.observations
        return [[Transformed(o, self.operator) for o in cycle] for cycle in self.observations]


def l96_twin(
    config: str | L96TwinConfig,
    cycles: int,
    generator: torch.Generator | None = None,
    *,
    model: Lorenz96 | None = None,
    dtype: torch.dtype = torch.float64,
) -> L96Twin:
    """A truth of ``cycles`` states ``config.interval`` model steps apart, from a spun-up state
    (:meth:`Lorenz96.initial_state`), and its observations ``H φ(x_t) + σ ε_t`` (module
    docstring); ``generator`` draws the initial state, then the noise."""
    if isinstance(config, str):
        if config not in L96_TWINS:
            raise ValueError(f"config: expected one of {sorted(L96_TWINS)}, got {config!r}")
        config = L96_TWINS[config]
    if not isinstance(config, L96TwinConfig):
        raise ValueError(
            f"config: expected a name or an L96TwinConfig, got {type(config).__name__}"
        )
    if config.observable not in _OBSERVABLES:
        raise ValueError(
            f"config.observable: expected one of {sorted(_OBSERVABLES)}, got {config.observable!r}"
        )
    noise_std = finite_float(config.noise_std, "config.noise_std", minimum=0.0)
    model = Lorenz96() if model is None else model
    n = model.num_variables
    stride = as_int(config.stride, "config.stride", minimum=1)
    truth = model.simulate(1, config.interval, as_int(cycles, "cycles", 1), generator, dtype=dtype)
    truth = truth[0]  # (cycles, 1, n)
    operator = _OBSERVABLES[config.observable]
    seen = truth if operator is None else operator(truth)
    observed = list(range(0, n, stride))
    clean = seen[:, 0, observed]
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    values = clean + noise_std * noise
    flat = observations_from_array(values, observed, (1, n), noise_std, periodic=True)
    return L96Twin(truth, [[o] for o in flat], operator, model, config)
