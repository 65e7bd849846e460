"""Seeds of the members of one unit of work (an analysis window, a cycle), so that a run can be
cut into pieces, spread over processes, stopped and resumed with the same draws."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["member_generators"]


def member_generators(
    seed: int, unit: int, members: int, device: torch.device | str | None = None
) -> list[torch.Generator]:
    """One generator per member of ``unit`` (a window, a cycle), on ``device`` (default CPU):
    seeded by ``(seed, unit, member)`` through NumPy's ``SeedSequence``, so a unit's draws do
    not depend on which units ran before it or where."""
    states = np.random.SeedSequence([seed, unit]).generate_state(members, np.uint64)
    return [torch.Generator(device or "cpu").manual_seed(int(s) >> 1) for s in states]
