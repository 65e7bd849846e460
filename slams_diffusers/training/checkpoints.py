"""Checkpoints: the progress a checkpoint restores, where checkpoints are, saving (with a limit on
how many are kept) and resuming."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_PREFIX",
    "TrainingProgress",
    "checkpoints",
    "latest_checkpoint",
    "restore_progress",
    "resume_path",
    "save_checkpoint",
]


CHECKPOINT_PREFIX = "checkpoint-"


class TrainingProgress:
    """The optimisation step and run-level values a checkpoint must restore
    (registered with ``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0
        self.values: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "values": dict(self.values)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.values = dict(state["values"])


def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not path.is_dir() or not name.startswith(CHECKPOINT_PREFIX):
        return None
    suffix = name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (``output_dir/checkpoints/checkpoint-N``)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(s, p) for p in folder.iterdir() if (s := _checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def restore_progress(accelerator, args: argparse.Namespace, *emas) -> TrainingProgress:
    """Register the run's progress and EMAs (``None`` skipped, moved to the device) for
    checkpointing, then load ``--resume_from_checkpoint`` if given: the progress to continue."""
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    for ema in emas:
        if ema is not None:
            ema.to(accelerator.device)
            accelerator.register_for_checkpointing(ema)
    resume = resume_path(args.resume_from_checkpoint, args.output_dir)
    if resume is not None:
        accelerator.load_state(str(resume))
        accelerator.print(f"resumed from {resume} at step {progress.step}")
    return progress


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def resume_path(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    """``--resume_from_checkpoint``: ``None``, ``"latest"`` (``None`` when there is none yet) or
    a checkpoint folder (``ValueError`` if missing)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ValueError(
            f"--resume_from_checkpoint: no checkpoint folder {str(path)!r}; expected a folder "
            f"written by save_state or 'latest' (found {[p.name for p in checkpoints(output_dir)]})"
        )
    return path


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, total_limit: int
) -> Path:
    """``accelerator.save_state`` into ``checkpoints/.checkpoint-N.tmp``, then renamed to
    ``checkpoint-N``: a run killed while writing never leaves a partial "latest" checkpoint.
    Keeps the newest ``total_limit`` (``<= 0``: all)."""
    folder = Path(output_dir) / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    partial = folder / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if total_limit > 0:
            for old in checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
