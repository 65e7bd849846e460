"""Training windows: a ``torch`` dataset of consecutive states of a store."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from .splits import select_split
from .statistics import LevelStatistics
from .stores import open_store

__all__ = [
    "WindowDataset",
]


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``window`` consecutive states, ``(window, level, *space)`` float tensors in K.

    Windows start every ``stride`` steps and never cross a trajectory boundary: a store with
    ``n`` trajectories of ``T`` steps has ``n * ((T - window) // stride + 1)`` windows, ordered
    by trajectory then start. The data stay lazy: ``__getitem__`` reads one window's slice
    (with dask, only the chunks that slice touches).

    Args:
        data: anything :func:`open_store` reads (path, ``xr.Dataset``, ``xr.DataArray``).
        window: steps per window (``2k + 1`` for a Markov-blanket score net), ``>= 1``.
        stride: steps between window starts, ``>= 1``.
        split: ``'train'`` / ``'val'`` / ``'test'``: only the trajectories, or the block of
            times, with that ``split`` label (see :func:`add_split`).
        variable, levels: passed to :func:`open_store`.
        dtype: tensor dtype (default ``torch.float32``).
    """

    def __init__(
        self,
        data: xr.DataArray | xr.Dataset | str | os.PathLike,
        window: int,
        *,
        stride: int = 1,
        split: str | None = None,
        variable: str | None = None,
        levels: Sequence[float] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an integer >= 1, got {window!r}.")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"`stride` must be an integer >= 1, got {stride!r}.")
        self.data = select_split(open_store(data, variable, levels=levels), split)
        self.window, self.stride, self.dtype = int(window), int(stride), dtype
        steps = self.data.sizes["time"]
        if self.window > steps:
            raise ValueError(
                f"`window`={self.window} is longer than the trajectories: found {steps} time "
                f"steps, expected window <= {steps}."
            )
        self.windows_per_trajectory = (steps - self.window) // self.stride + 1
        self.num_trajectories = self.data.sizes.get("trajectory", 1)

    def __len__(self) -> int:
        return self.num_trajectories * self.windows_per_trajectory

    def locate(self, index: int) -> tuple[int, int]:
        """``(trajectory, start)`` of window ``index`` (negative indices count from the end)."""
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"window index {index} out of range for {size} windows")
        trajectory, position = divmod(index % size, self.windows_per_trajectory)
        return trajectory, position * self.stride

    def window_array(self, index: int) -> xr.DataArray:
        """Window ``index`` as a lazy ``DataArray`` ``(time, level, *space)`` with coordinates
        (the template for :func:`to_xarray`)."""
        trajectory, start = self.locate(index)
        selection: dict[Hashable, Any] = {"time": slice(start, start + self.window)}
        if "trajectory" in self.data.dims:
            selection["trajectory"] = trajectory
        return self.data.isel(selection)

    def __getitem__(self, index: int) -> Tensor:
        """Window ``index``: ``(window, level, *space)`` tensor in K."""
        values = np.asarray(self.window_array(index).values)
        return torch.from_numpy(np.ascontiguousarray(values)).to(self.dtype)

    def level_statistics(self) -> LevelStatistics:
        """:class:`LevelStatistics` of this dataset's trajectories (e.g. the training split)."""
        return LevelStatistics.compute(self.data)
