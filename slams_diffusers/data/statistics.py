"""Per-level statistics of a store, the normalisation a model's config records."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .splits import select_split
from .stores import open_store

__all__ = [
    "LevelStatistics",
]


@dataclass(frozen=True)
class LevelStatistics:
    """Per-level mean and standard deviation [K], over all dims but ``level``.

    Computed once from the training data and stored with the model:
    ``StateAutoencoder(**stats.as_config(), ...)`` or, in pixel space,
    ``LevelNormalizer(**stats.as_config(), ...)``.

    Attributes:
        mean: ``(level,)`` means, plain floats.
        std: ``(level,)`` population standard deviations (``ddof=0``), plain floats.
        levels: ``(level,)`` pressure levels [hPa] they belong to, if known.
    """

    mean: list[float]
    std: list[float]
    levels: list[float] | None = None

    @classmethod
    def compute(
        cls, data: xr.DataArray | xr.Dataset | str | os.PathLike, split: str | None = None
    ) -> LevelStatistics:
        """Statistics of ``data`` (anything :func:`open_store` reads), optionally of one split.

        One pass over a dask-backed array: mean and std are computed in one graph, so every
        chunk is read once; float64 accumulation, NaN skipped. ``ValueError`` if a level has
        zero or undefined spread (it could not be normalised).
        """
        array = select_split(open_store(data), split)
        dims = [d for d in array.dims if d != "level"]
        values = array.astype(np.float64)
        stats = xr.Dataset({"mean": values.mean(dims), "std": values.std(dims)}).compute()
        mean = [float(v) for v in stats["mean"].values]
        std = [float(v) for v in stats["std"].values]
        levels = (
            [float(v) for v in array.coords["level"].values] if "level" in array.coords else None
        )
        bad = [i for i, s in enumerate(std) if not (math.isfinite(s) and s > 0)]
        if bad or not all(math.isfinite(m) for m in mean):
            raise ValueError(
                f"`data` has levels without finite, positive spread: std {std}, mean {mean}; "
                f"expected std > 0 on every level (bad level indices {bad})."
            )
        return cls(mean=mean, std=std, levels=levels)

    def as_config(self) -> dict[str, list[float]]:
        """``{"level_mean": [...], "level_std": [...]}`` for model constructors."""
        return {"level_mean": list(self.mean), "level_std": list(self.std)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LevelStatistics:
        """Read back from a model config (``model.config``) holding ``level_mean``/``level_std``."""
        mean, std = config.get("level_mean"), config.get("level_std")
        if mean is None or std is None:
            raise ValueError(
                "`config` has no level statistics: expected `level_mean` and `level_std`, "
                f"found keys {sorted(config)}."
            )
        return cls(mean=[float(v) for v in mean], std=[float(v) for v in std])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``mean``, ``std``, ``levels``)."""
        return {"mean": list(self.mean), "std": list(self.std), "levels": self.levels}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LevelStatistics:
        """Inverse of :meth:`to_dict`."""
        levels = values.get("levels")
        return cls(
            mean=[float(v) for v in values["mean"]],
            std=[float(v) for v in values["std"]],
            levels=None if levels is None else [float(v) for v in levels],
        )
