r"""The user's forecast model as the cycling sees it (docs/method.md §Cycling).

A forecast model is a callable ``model(states, steps) -> states``: ``states`` a tensor
``(members, *state)`` (batched over the members, e.g. ``(members, levels, *space)``), ``steps``
an int, the number of model steps to advance; it returns the advanced states, same shape.
:func:`run_forecast` calls it and checks what comes back, so that a wrong model fails with one
line naming it rather than deep inside the assimilation. A model written for NumPy arrays is
wrapped by :func:`numpy_forecast`.

The model may advance a state the pipeline does not see whole, e.g. the QG model's potential
vorticity where the pipeline assimilates temperature. A :class:`StateMap` relates the two:
``observe`` the pipeline's state of model states, and ``update`` model states (the forecast
members) given the pipeline's analysis of them. The part of the model state that the pipeline's
state does not determine is kept from each member's forecast (docs/method.md §Cycling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .validation import as_int

__all__ = ["ForecastModel", "StateMap", "numpy_forecast", "run_forecast"]

#: ``model(states (members, *state), steps) -> states (members, *state)``.
ForecastModel = Callable[[Tensor, int], Tensor]


@dataclass(frozen=True)
class StateMap:
    """The pipeline's state ``z = observe(x)`` of the model's state ``x``, and back.

    Args:
        observe: ``(members, *model_state) -> (members, levels, *space)``.
        update: ``(forecast (members, *model_state), analysis (members, levels, *space)) ->
            (members, *model_state)``: the model states whose ``observe`` is the analysis, the
            rest of each forecast member kept; ``observe(update(x, observe(x))) = observe(x)``.
    """

    observe: Callable[[Tensor], Tensor]
    update: Callable[[Tensor, Tensor], Tensor]

    def __post_init__(self) -> None:
        for name in ("observe", "update"):
            if not callable(getattr(self, name)):
                raise ValueError(
                    f"{name}: expected a callable, got {type(getattr(self, name)).__name__}"
                )


def numpy_forecast(model: Callable[[np.ndarray, int], np.ndarray]) -> ForecastModel:
    """Wrap a forecast model on NumPy arrays: tensors go in as float64 arrays (on the CPU) and the
    result comes back as a tensor of the input's dtype and device."""
    if not callable(model):
        raise ValueError(f"model: expected a callable (states, steps) -> states, got {model!r}")

    def forecast(states: Tensor, steps: int) -> Tensor:
        out = model(states.detach().cpu().double().numpy(), steps)
        return torch.as_tensor(np.asarray(out), dtype=states.dtype, device=states.device)

    return forecast


def run_forecast(model: ForecastModel, states: Tensor, steps: int, name: str = "forecast_model"):
    """``model(states, steps)``, checked: a tensor of ``states``' shape, finite everywhere.

    Raises:
        ValueError: naming ``name``, what came back and what was expected.
    """
    steps = as_int(steps, "steps", minimum=0)
    if steps == 0:
        return states
    out: Any = model(states, steps)
    if isinstance(out, np.ndarray):
        out = torch.as_tensor(out, dtype=states.dtype, device=states.device)
    if not isinstance(out, Tensor):
        raise ValueError(
            f"{name}: expected it to return a torch.Tensor of shape {tuple(states.shape)}, got "
            f"{type(out).__name__} (wrap a NumPy model with numpy_forecast)"
        )
    if tuple(out.shape) != tuple(states.shape):
        raise ValueError(
            f"{name}: returned shape {tuple(out.shape)} for states of shape "
            f"{tuple(states.shape)}; expected the same shape (members, *state)"
        )
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).flatten(1).any(dim=1).sum())
        raise ValueError(
            f"{name}: returned NaN or inf in {bad} of {out.shape[0]} members after {steps} "
            f"steps; expected finite states (a smaller time step, or a smaller spread?)"
        )
    return out.to(dtype=states.dtype, device=states.device)
