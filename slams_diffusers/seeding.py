"""Seeds of the members of one unit of work (a cycle, a window), so that a run can be cut into
pieces, stopped and resumed with the same draws."""

from __future__ import annotations

import torch

__all__ = ["member_generators"]


def member_generators(seed: int, unit: int, members: int, device=None) -> list[torch.Generator]:
    """One generator per member of ``unit`` (a cycle, a window): seeded with
    ``((seed · 1000003 + unit) · 65537 + member) mod 2⁶³``, distinct for every ``(unit, member)``
    of a run with fewer than 65537 members."""
    return [
        torch.Generator(device).manual_seed(((seed * 1_000_003 + unit) * 65_537 + m) % 2**63)
        for m in range(members)
    ]
