"""ERA5's ensemble of data assimilations on its global 3° grid: the real grid of docs/method.md
§Real grids.

The sample that cfgrib 0.9.15.1's source distribution ships: temperature at 850 and 500 hPa of the
10 members of ERA5's ensemble of data assimilations (EDA) at four times 12 h apart (2017-01-01
00 UTC to 2017-01-02 12 UTC) on a regular 3° grid of 61 latitudes × 120 longitudes. ERA5 is
CC-BY-4.0 (contains modified Copernicus Climate Change Service information 2017).
``training/build_era5_sample.py`` writes the copy that ships with this package: ``trajectory`` is
the member (each member cycles its own perturbed-observation assimilation) and a ``split``
coordinate on ``time`` marks the first three times ``train`` and the last ``test``.

The EDA's members are equally likely analyses, so their spread is a real estimate of analysis
(and short-range background) error. :func:`twin_case` builds the real-data twin from them: one
member is the truth, the mean of the others the background, and those others (perturbations about
a mean that errs by ``(1 + 1/N)`` times their covariance) its error estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..validation import as_int
from .stores import open_store

__all__ = ["PACKAGED_ERA5", "TwinCase", "packaged_era5", "twin_case"]

PACKAGED_ERA5 = "era5_members.nc"
"""The file name of the ERA5 sample inside ``slams_diffusers/data``."""


def packaged_era5() -> xr.DataArray:
    """The ERA5 sample that ships with this package as a canonical store, loaded into memory:
    ``t(trajectory=10, time=4, level=2, y=61, x=120)`` in K, latitude ``y`` ascending from −90°,
    longitude ``x`` from 0° east, with the ``split`` coordinate on ``time``."""
    path = resources.files("slams_diffusers.data").joinpath(PACKAGED_ERA5)
    with resources.as_file(path) as file:
        return open_store(str(file)).copy(deep=True)  # loaded, the flipped latitude made contiguous


@dataclass(frozen=True)
class TwinCase:
    """One real-data twin case: ``truth`` ``(levels, y, x)``; ``members`` ``(N, levels, y, x)``, the
    other members; ``background`` their mean."""

    truth: Tensor
    members: Tensor

    @property
    def background(self) -> Tensor:
        return self.members.mean(0)

    @property
    def error_inflation(self) -> float:
        """``1 + 1/N``: the mean of ``N`` members exchangeable with the truth errs with ``(1 +
        1/N)`` times their covariance, the factor that turns their spread into ``B``."""
        return 1.0 + 1.0 / self.members.shape[0]


def twin_case(data: xr.DataArray, member: int, time: int = -1) -> TwinCase:
    """The twin of ``member`` at ``time`` (an index; default the last, the test time) of ``data``
    ``(trajectory, time, level, y, x)``: float64 tensors."""
    if "trajectory" not in data.dims or data.sizes["trajectory"] < 3:
        raise ValueError(
            f"data: expected a store with 3 or more members on `trajectory`, got dims "
            f"{dict(data.sizes)}"
        )
    count = data.sizes["trajectory"]
    member = as_int(member, "member", minimum=0)
    if member >= count:
        raise ValueError(f"member: expected an index below {count}, got {member}")
    states = torch.tensor(np.ascontiguousarray(data.isel(time=time).values), dtype=torch.float64)
    others = torch.cat([states[:member], states[member + 1 :]])
    return TwinCase(truth=states[member], members=others)
