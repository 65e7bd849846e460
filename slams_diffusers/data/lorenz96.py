r"""The Lorenz-96 model (Lorenz 1996; Lorenz & Emanuel 1998), batched in torch.

``n`` variables on a periodic ring, ``x_{i±n} = x_i``,

.. math:: \frac{dx_i}{dt} = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F,

advection (quadratic, energy conserving: :math:`\sum_i x_i\,(x_{i+1} - x_{i-2})\,x_{i-1} = 0`),
damping ``-x_i`` and forcing ``F`` (8: chaotic, about 13 positive Lyapunov exponents for
``n = 40``). One time unit is about 5 days of atmospheric error growth (Lorenz & Emanuel 1998);
the classical twin observes every 0.05 time units. Integration: classical fourth-order
Runge–Kutta with ``dt = 0.01``.

States are tensors ``(..., n)`` (any leading dims); the package's 1-D fields are
``(levels = 1, x)``, so :meth:`Lorenz96.simulate` returns ``(trajectories, time, 1, n)`` and
:func:`lorenz96_store` writes ``u(trajectory, time, level, x)`` for
:func:`~slams_diffusers.data.datasets.open_store` and the training scripts. A
:class:`Lorenz96` is a forecast model ``(states, steps) -> states``
(:mod:`slams_diffusers.forecast`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..validation import as_int, finite_float

__all__ = ["Lorenz96", "lorenz96_store", "lorenz96_tendency"]

SPINUP_TIME = 10.0
"""Time units run from ``F + 0.01 ε`` before the first kept state (the attractor is reached in a
few time units)."""


def lorenz96_tendency(x: Tensor, forcing: float = 8.0) -> Tensor:
    """``dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F`` over the last dim of ``x`` (periodic)."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


@dataclass(frozen=True)
class Lorenz96:
    """Lorenz-96 with ``num_variables`` on a ring, forcing ``F``, RK4 steps of ``dt``.

    ``model(states, steps)`` (= :meth:`run`) makes it a forecast model for the cycling
    (:func:`~slams_diffusers.baselines.cycle_ensemble_filter`).
    """

    num_variables: int = 40
    forcing: float = 8.0
    dt: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_variables", as_int(self.num_variables, "num_variables", 4))
        object.__setattr__(self, "forcing", finite_float(self.forcing, "forcing"))
        dt = finite_float(self.dt, "dt", minimum=0.0)
        if dt == 0:
            raise ValueError("dt: expected a positive time step, got 0")
        object.__setattr__(self, "dt", dt)

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(
                f"x: expected a floating tensor (..., {self.num_variables}), got "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.ndim < 1 or x.shape[-1] != self.num_variables:
            raise ValueError(
                f"x: expected states (..., {self.num_variables}) (last dim the variables), "
                f"got shape {tuple(x.shape)}"
            )
        return x

    def tendency(self, x: Tensor) -> Tensor:
        """:func:`lorenz96_tendency` with this model's ``F``."""
        return lorenz96_tendency(x, self.forcing)

    def step(self, x: Tensor) -> Tensor:
        """One RK4 step: ``x + dt/6 (k1 + 2 k2 + 2 k3 + k4)``."""
        x = self._check(x)
        return self._step(x)

    def _step(self, x: Tensor) -> Tensor:
        h = self.dt
        k1 = self.tendency(x)
        k2 = self.tendency(x + 0.5 * h * k1)
        k3 = self.tendency(x + 0.5 * h * k2)
        k4 = self.tendency(x + h * k3)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def run(self, x: Tensor, steps: int) -> Tensor:
        """``steps`` RK4 steps from ``x`` ``(..., n)``; the final state."""
        return self._run(self._check(x), as_int(steps, "steps", minimum=0))

    def __call__(self, states: Tensor, steps: int) -> Tensor:
        """The forecast-model interface: :meth:`run`."""
        return self.run(states, steps)

    def initial_state(
        self,
        batch: Sequence[int] = (),
        generator: torch.Generator | None = None,
        *,
        spinup_time: float = SPINUP_TIME,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """States ``(*batch, n)`` on the attractor: ``F + 0.01 ε``, ``ε ~ N(0, I)``, run for
        ``spinup_time`` time units."""
        shape = (*(as_int(b, "batch", minimum=1) for b in batch), self.num_variables)
        noise = torch.randn(shape, generator=generator, dtype=dtype)
        steps = round(finite_float(spinup_time, "spinup_time", minimum=0.0) / self.dt)
        return self.run(self.forcing + 0.01 * noise, steps)

    def simulate(
        self,
        trajectories: int,
        steps_between_snapshots: int,
        snapshots: int,
        generator: torch.Generator | None = None,
        *,
        spinup_time: float = SPINUP_TIME,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """Independent runs ``(trajectories, snapshots, 1, n)``: from :meth:`initial_state`,
        a snapshot every ``steps_between_snapshots`` model steps (the first at the spun-up
        state)."""
        trajectories = as_int(trajectories, "trajectories", minimum=1)
        interval = as_int(steps_between_snapshots, "steps_between_snapshots", minimum=1)
        snapshots = as_int(snapshots, "snapshots", minimum=1)
        x = self.initial_state((trajectories,), generator, spinup_time=spinup_time, dtype=dtype)
        out = [x]
        for _ in range(snapshots - 1):
            x = self._run(x, interval)
            out.append(x)
        return torch.stack(out, dim=1)[:, :, None, :]

    def _run(self, x: Tensor, steps: int) -> Tensor:
        for _ in range(steps):
            x = self._step(x)
        return x


def lorenz96_store(
    path: str | os.PathLike,
    trajectories: int = 64,
    snapshots: int = 512,
    interval: int = 5,
    *,
    model: Lorenz96 | None = None,
    seed: int = 0,
    split: str | Sequence[str] | Sequence[float] | None = (0.8, 0.1, 0.1),
    overwrite: bool = False,
) -> str:
    """Simulate training data and write it with :func:`~slams_diffusers.data.datasets.to_store`:
    ``u(trajectory, time, level = 1, x)`` (float32, nondimensional), a snapshot every ``interval``
    model steps, ``split`` by trajectory (fractions or labels, as ``to_store``), the model's
    parameters as attributes. Returns ``path``."""
    from .writing import to_store  # xarray / zarr only where a store is written

    model = Lorenz96() if model is None else model
    seed = as_int(seed, "seed")
    runs = model.simulate(
        trajectories, interval, snapshots, torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    attrs = {
        "long_name": "Lorenz-96 state",
        "units": "1",
        "model": "Lorenz-96 (Lorenz 1996), RK4",
        "forcing": model.forcing,
        "dt": model.dt,
        "interval_steps": as_int(interval, "interval", minimum=1),
        "spinup_time": SPINUP_TIME,
        "seed": seed,
    }
    coords = {
        "time": (
            "time",
            np.arange(runs.shape[1]) * interval * model.dt,
            {"long_name": "model time"},
        ),
        "x": ("x", np.arange(model.num_variables)),
    }
    return to_store(
        runs.float(),
        path,
        split,
        dims=("trajectory", "time", "level", "x"),
        name="u",
        attrs=attrs,
        coords=coords,
        overwrite=overwrite,
    )
