r"""Smoothing a long record with overlapping windows, their edges dropped (docs/method.md
§Cycling).

A score model of ``window = 2k + 1`` states composes over any longer window (Markov blanket), but
one window over a record of thousands of states is too large to sample. :func:`smooth_record`
cuts the record into windows of ``length`` states that start every ``length − 2 m`` states
(``m`` the ``margin``), assimilates each with its own observations (and background, where given),
and keeps each window's interior ``[m, length − m)``: a kept state has at least ``m`` states of
observations on either side, where a state at a window's edge would only see one side. The first
and last windows keep their outer edges (the record's own). Every state is a smoother estimate
given the observations within ``m`` to ``length − m − 1`` states of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .observations import Observation, check_observations
from .seeding import member_generators
from .validation import as_int

__all__ = ["record_windows", "smooth_record"]

#: Arguments of the pipeline that :func:`smooth_record` sets itself.
_OWNED = ("background", "observations", "num_frames", "generator", "output_type", "return_dict")


def record_windows(frames: int, length: int, margin: int) -> list[tuple[int, int, int]]:
    """The windows over a record of ``frames`` states: ``(start, keep_from, keep_to)`` with the
    window ``[start, start + length)`` and the states ``[keep_from, keep_to)`` it supplies. The
    kept ranges tile ``[0, frames)``."""
    frames = as_int(frames, "frames", minimum=1)
    length = as_int(length, "length", minimum=1)
    margin = as_int(margin, "margin", minimum=0)
    if length > frames:
        raise ValueError(f"length: expected at most the record's {frames} states, got {length}")
    if 2 * margin >= length:
        raise ValueError(
            f"margin: expected 2 · margin < length = {length} (a window must keep a state), "
            f"got {margin}"
        )
    stride = length - 2 * margin
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] != frames - length:
        starts.append(frames - length)
    windows, kept = [], 0
    for index, start in enumerate(starts):
        last = index == len(starts) - 1
        keep_to = frames if last else start + length - margin
        windows.append((start, kept, keep_to))
        kept = keep_to
    return windows


def smooth_record(
    pipeline: Any,
    observations: Sequence[Sequence[Observation]],
    *,
    length: int | None = None,
    margin: int | None = None,
    background: Tensor | None = None,
    num_members: int = 8,
    seed: int = 0,
    **pipeline_kwargs: Any,
) -> Tensor:
    """The members ``(num_members, frames, levels, *space)`` of a record of ``frames =
    len(observations)`` states (module docstring).

    Args:
        pipeline: a :class:`~slams_diffusers.SLAMSPipeline`.
        observations: one sequence of :class:`Observation` per state of the record (their
            ``time_index`` is set to the state's place in its window).
        length: states per window, at least the score model's ``window``; default
            ``4 · window``, at most the record.
        margin: states dropped at each inner window edge; default the Markov blanket's
            half-width ``window // 2``, at least 1 when the window allows.
        background: the forecast over the record ``(frames, levels, *space)``, or ``None``;
            its error is declared through ``pipeline_kwargs`` (``background_error_std`` …).
        num_members: ensemble size.
        seed: seeds each window's members.
        **pipeline_kwargs: passed to every window's pipeline call.
    """
    owned = sorted(set(pipeline_kwargs) & set(_OWNED))
    if owned:
        raise ValueError(
            f"pipeline_kwargs: {owned} are set for each window; expected none of {list(_OWNED)}"
        )
    records = [check_observations(o) for o in observations]
    frames = len(records)
    if frames == 0:
        raise ValueError("observations: expected one sequence of observations per state, got none")
    if background is not None and (
        not isinstance(background, Tensor) or background.shape[0] != frames
    ):
        raise ValueError(
            f"background: expected a tensor (frames={frames}, levels, *space), got "
            f"{tuple(getattr(background, 'shape', ()))}"
        )
    window = pipeline.window
    length = min(4 * window, frames) if length is None else as_int(length, "length")
    if length < window:
        raise ValueError(
            f"length: expected at least the score model's window {window}, got {length}"
        )
    if margin is None:
        margin = min(max(window // 2, 1), (length - 1) // 2)
    num_members = as_int(num_members, "num_members", minimum=1)
    seed = as_int(seed, "seed", minimum=0)
    pieces = []
    for index, (start, keep_from, keep_to) in enumerate(record_windows(frames, length, margin)):
        in_window = [
            dataclasses.replace(o, time_index=offset)
            for offset in range(length)
            for o in records[start + offset]
        ]
        out = pipeline(
            background=None if background is None else background[start : start + length],
            observations=in_window,
            num_frames=length,
            num_members=num_members,
            generator=member_generators(seed, index, num_members, pipeline.device),
            output_type="pt",
            **pipeline_kwargs,
        )
        pieces.append(out.members[:, keep_from - start : keep_to - start])
    return torch.cat(pieces, dim=1)
