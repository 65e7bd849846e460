"""Training data and its deterministic streams: ``--data`` opened, split and checked, and the
seeded batch order every process draws its items from."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..data.hf import from_hf_dataset
from ..data.splits import add_split, select_split
from ..data.stores import open_store

__all__ = [
    "open_training_store",
    "load_training_data",
    "check_split_gap",
    "seeded_generator",
    "batch_indices",
]


def _split_settings(args: argparse.Namespace) -> tuple[str, list[float], int]:
    return (
        getattr(args, "split_by", "auto"),
        list(getattr(args, "split_fractions", [0.8, 0.1, 0.1])),
        int(getattr(args, "split_gap", 8)),
    )


def open_training_store(
    args: argparse.Namespace, levels: Sequence[float] | None = None
) -> xr.DataArray:
    """``--data`` as a canonical, lazy array (``(trajectory?, time, level, *space)``): its
    ``--levels`` (or ``levels``, e.g. those a stage-1 autoencoder was trained on) and a
    ``split`` coordinate as ``--split_by`` says.

    ``--split_by auto`` keeps the store's own ``split`` coordinate; without one it splits
    trajectories (3 or more) or else time (``--split_fractions``, ``--split_gap`` times between
    splits): one continuous run trains as it is. ``trajectory`` / ``time`` replace the store's
    coordinate. A folder written by ``datasets.Dataset.save_to_disk`` (from
    :func:`~slams_diffusers.data.hf.to_hf_dataset`) is read with ``datasets``; anything
    else with :func:`~slams_diffusers.data.stores.open_store`.
    """
    path = Path(args.data)
    if not path.exists():
        raise ValueError(f"--data: no such file or folder {str(path)!r}")
    if path.is_dir() and (path / "dataset_info.json").is_file():
        import datasets

        data = from_hf_dataset(datasets.load_from_disk(str(path)))
        if args.variable is not None:
            data = data.rename(args.variable)
        data = open_store(data)
    else:
        data = open_store(args.data, args.variable)
    chosen = levels if levels is not None else getattr(args, "levels", None)
    if chosen:
        try:
            data = open_store(data, levels=chosen)
        except ValueError as error:
            raise ValueError(f"--levels {list(chosen)}: {error}") from error
    split_by, fractions, gap = _split_settings(args)
    automatic = split_by == "auto"
    if automatic:
        if "split" in data.coords:
            return data
        split_by = "trajectory" if data.sizes.get("trajectory", 0) >= 3 else "time"
    try:
        return add_split(data, fractions, gap if split_by == "time" else 0, by=split_by)
    except ValueError as error:
        if automatic:  # too short to split: fine with --split None, else select_split says so
            return data
        raise ValueError(
            f"--split_by {split_by} --split_fractions {fractions} --split_gap {gap}: {error}"
        ) from error


def load_training_data(
    args: argparse.Namespace,
    split: str | None = None,
    levels: Sequence[float] | None = None,
    window: int | None = None,
) -> xr.DataArray:
    """The states of ``--data`` (``(trajectory?, time, level, *space)``), one split: see
    :func:`open_training_store`; with ``window``, :func:`check_split_gap` first."""
    store = open_training_store(args, levels)
    if window is not None:
        check_split_gap(store, window)
    try:
        return select_split(store, split)
    except ValueError as error:
        raise ValueError(f"--split {split}: {error}") from error


def check_split_gap(store: xr.DataArray, window: int) -> None:
    """``ValueError`` when ``store`` was split by time (:func:`open_training_store`) with fewer
    gap times than a training window: its windows would nearly touch those of the next split."""
    split = store.coords.get("split")
    gap = None if split is None or "time" not in split.dims else split.attrs.get("gap")
    if gap is not None and int(gap) < window:
        raise ValueError(
            f"--split_gap {gap} is shorter than --window {window}: the training windows would "
            f"touch the validation ones; pass --split_gap {window} (or more) to both stages"
        )


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by the tuple ``(seed, *keys)`` (via numpy's ``SeedSequence``)."""
    state = np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_indices(
    num_items: int,
    batch_size: int,
    micro_step: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> Tensor:
    """This process's items of micro-batch ``micro_step``.

    The items are visited as an endless sequence of seeded permutations of ``range(num_items)``
    (one per epoch); micro-batch ``m`` is positions ``[m B P, (m + 1) B P)`` of it, and process
    ``p`` takes ``[m B P + p B, m B P + (p + 1) B)`` (``B`` = ``batch_size``, ``P`` =
    ``num_processes``). Every item is seen once per epoch across processes.
    """
    if num_items < 1:
        raise ValueError(f"`num_items` must be >= 1, got {num_items}: no training data.")
    position = (micro_step * num_processes + process_index) * batch_size
    parts, left = [], batch_size
    while left:
        epoch, offset = divmod(position, num_items)
        permutation = torch.randperm(num_items, generator=seeded_generator(seed, 0, epoch))
        take = min(left, num_items - offset)
        parts.append(permutation[offset : offset + take])
        position, left = position + take, left - take
    return torch.cat(parts)
