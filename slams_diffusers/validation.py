"""Argument checks shared by every module: integers, grid shapes, finite numbers, states and the
axes that wrap.

Each check returns the value in its canonical form or raises a ``ValueError`` that names the
argument and the expected form, so that bad input fails before any compute.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["as_grid_shape", "as_int", "check_truth", "finite_float", "periodic_axes"]


def as_int(x: Any, name: str, minimum: int | None = None) -> int:
    """``x`` as an ``int`` (anything with ``__index__``, not a bool), at least ``minimum``."""
    if isinstance(x, bool):
        raise ValueError(f"{name}: expected an int, got a bool ({x})")
    try:
        v = operator.index(x)
    except TypeError as e:
        raise ValueError(f"{name}: expected an int, got {x!r}") from e
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v}")
    return v


def as_grid_shape(
    grid_shape: Any, name: str = "grid_shape", column: bool = False
) -> tuple[int, ...]:
    """A horizontal grid shape, ``(x,)`` or ``(y, x)``, of positive ints; where ``column``, also
    ``()``, a single column ``(level,)`` with no horizontal extent."""
    forms = "(), (x,) or (y, x)" if column else "(x,) or (y, x)"
    try:
        shape = tuple(as_int(n, name, minimum=1) for n in grid_shape)
    except TypeError as e:
        raise ValueError(
            f"{name}: expected a tuple of positive ints {forms}, got {grid_shape!r}"
        ) from e
    if len(shape) not in ((0, 1, 2) if column else (1, 2)):
        dims = "0 (a column), 1 or 2" if column else "1 or 2"
        raise ValueError(f"{name}: expected {dims} spatial dimensions, {forms}, got {grid_shape!r}")
    return shape


def finite_float(x: Any, name: str, minimum: float | None = None, maximum: float | None = None):
    """``x`` as a finite ``float`` within ``[minimum, maximum]`` (either bound optional)."""
    try:
        v = float(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a number, got {x!r}") from e
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {x!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected a number >= {minimum:g}, got {v:g}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: expected a number <= {maximum:g}, got {v:g}")
    return v


def check_truth(truth: Tensor, spatial_dims: int | None = None) -> Tensor:
    """One true state ``(levels, *space)`` as a detached floating tensor; ``spatial_dims`` (1 or 2)
    fixes the number of spatial axes, ``None`` accepts either."""
    truth = torch.as_tensor(truth)
    if not truth.is_floating_point():
        truth = truth.to(torch.get_default_dtype())
    if spatial_dims is None:
        if truth.ndim not in (2, 3):
            raise ValueError(
                f"truth: expected a state (levels, x) or (levels, y, x), "
                f"got shape {tuple(truth.shape)}"
            )
    elif truth.ndim != 1 + spatial_dims:
        raise ValueError(
            f"truth: expected a state of shape (levels, *space) with {spatial_dims} spatial "
            f"dims, got shape {tuple(truth.shape)}"
        )
    return truth.detach()


def periodic_axes(
    periodic: bool | str | Sequence[bool] | Sequence[str], spatial_dims: int, name: str = "periodic"
) -> tuple[bool, ...]:
    """The axes that wrap, one bool per spatial axis ``(y, x)`` or ``(x,)``.

    ``periodic`` is the package's one meaning of periodicity: ``True`` wraps every spatial axis
    (the doubly periodic testbed), ``False`` none; axis names wrap those axes: a string such as
    ``"x"`` or ``"xy"`` (``"none"`` for none), or a sequence such as ``("x",)``; or one bool per
    spatial axis, e.g. ``(False, True)`` for longitude only.
    """
    if isinstance(periodic, bool):
        return (periodic,) * spatial_dims
    if isinstance(periodic, str) or (
        isinstance(periodic, Sequence) and periodic and all(isinstance(a, str) for a in periodic)
    ):
        names = ("y", "x")[2 - spatial_dims :]
        wrapping = () if periodic == "none" else tuple(periodic)
        unknown = [a for a in wrapping if a not in names]
        if unknown:
            raise ValueError(
                f"{name}: expected axis names from {names}, got {unknown[0]!r} in {periodic!r}"
            )
        return tuple(axis in wrapping for axis in names)
    try:
        axes = tuple(bool(a) for a in periodic)
    except TypeError as e:
        raise ValueError(
            f"{name}: expected a bool or {spatial_dims} bools (one per spatial axis), "
            f"got {periodic!r}"
        ) from e
    if len(axes) != spatial_dims:
        raise ValueError(
            f"{name}: expected a bool or {spatial_dims} bools (one per spatial axis), "
            f"got {periodic!r}"
        )
    return axes
