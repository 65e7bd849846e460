"""The optimisation loop shared by both training stages, and the EMA weights it validates and
ends with."""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .accelerator import unwrap
from .checkpoints import TrainingProgress, save_checkpoint
from .records import MetricsLog

__all__ = [
    "optimise",
    "final_weights",
]


def optimise(
    accelerator,
    args: argparse.Namespace,
    *,
    model: nn.Module,
    optimizer,
    lr_scheduler,
    ema,
    loss_fn: Callable[[int], Tensor],
    progress: TrainingProgress,
    stop: int,
    log: MetricsLog,
    items_per_micro_step: int,
    phase: str,
    validate: Callable[[], float] | None = None,
    snapshot: Callable[[Path], None] | None = None,
) -> None:
    """Run optimisation steps ``progress.step .. stop - 1`` of ``model``.

    Each step accumulates ``--gradient_accumulation_steps`` micro-steps of ``loss_fn(m)``
    (``m`` the global micro-step index, the key of every random draw), clips the gradient norm,
    steps the optimiser, the LR schedule and the EMA, logs the mean loss over processes every
    ``--logging_steps`` and checkpoints every ``--checkpointing_steps`` (and at ``stop``). Every
    ``--validation_steps`` (and at ``stop``) it logs ``validate()`` — a loss on fixed held-out
    batches — computed with the EMA weights, and the run's wall time so far (``wall_seconds``,
    carried across resumes): the training curves. Every ``--snapshot_steps`` (if > 0) the main
    process calls ``snapshot(OUTPUT_DIR/snapshots/step-N)`` with the EMA weights in ``model``.

    Args:
        accelerator, args: the run's accelerator and options (the ``--…_steps`` flags above).
        model, optimizer, lr_scheduler, ema: what is optimised (prepared by ``accelerator``;
            ``ema`` may be ``None``).
        loss_fn: the loss of global micro-step ``m``.
        progress: the step to start from, advanced in place (restored by checkpoints).
        stop: the step to stop before.
        log: where the logged values go.
        items_per_micro_step: items per micro-batch and process (for ``items_per_second``).
        phase: the prefix of the logged names and the progress bar's label.
        validate, snapshot: as above; ``None`` for none.
    """
    from tqdm.auto import tqdm

    accumulation = args.gradient_accumulation_steps
    bar = tqdm(
        total=stop,
        initial=progress.step,
        desc=phase,
        disable=not (accelerator.is_local_main_process and args.progress_bar),
    )
    running, count, start = 0.0, 0, time.perf_counter()
    clock = time.perf_counter()
    while progress.step < stop:
        step = progress.step
        for micro in range(accumulation):
            with accelerator.accumulate(model):
                loss = loss_fn(step * accumulation + micro)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += accelerator.reduce(loss.detach().float(), "mean").item() / accumulation
        count += 1
        if ema is not None:
            ema.step(unwrap(model).parameters())
        progress.step = step + 1
        bar.update(1)
        if progress.step % args.logging_steps == 0 or progress.step == stop:
            elapsed = time.perf_counter() - start
            items = count * accumulation * items_per_micro_step * accelerator.num_processes
            values = {
                f"{phase}/loss": running / count,
                f"{phase}/lr": lr_scheduler.get_last_lr()[0],
                f"{phase}/items_per_second": items / max(elapsed, 1e-9),
            }
            now = time.perf_counter()
            progress.values["wall_seconds"] = progress.values.get("wall_seconds", 0.0) + now - clock
            clock = now
            values["wall_seconds"] = progress.values["wall_seconds"]
            if validate is not None and (
                progress.step % args.validation_steps == 0 or progress.step == stop
            ):
                values[f"{phase}/val_loss"] = float(_with_ema_weights(model, ema, validate))
            log(progress.step, values)
            bar.set_postfix(loss=f"{running / count:.4g}")
            running, count, start = 0.0, 0, time.perf_counter()
        every = args.snapshot_steps
        if snapshot is not None and every > 0 and progress.step % every == 0:
            if accelerator.is_main_process:
                folder = Path(args.output_dir) / "snapshots" / f"step-{progress.step}"
                _with_ema_weights(model, ema, functools.partial(snapshot, folder))
            accelerator.wait_for_everyone()
        if progress.step % args.checkpointing_steps == 0 or progress.step == stop:
            path = save_checkpoint(
                accelerator, args.output_dir, progress.step, args.checkpoints_total_limit
            )
            if accelerator.is_main_process:
                print(f"saved checkpoint {path}", flush=True)
    bar.close()


def _with_ema_weights(model: nn.Module, ema, fn: Callable[[], Any]) -> Any:
    """``fn()`` without gradients, with the EMA weights in ``model`` (restored after)."""
    parameters = list(unwrap(model).parameters())
    if ema is not None:
        ema.store(parameters)
        ema.copy_to(parameters)
    try:
        with torch.no_grad():
            return fn()
    finally:
        if ema is not None:
            ema.restore(parameters)


def final_weights(model: nn.Module, ema) -> nn.Module:
    """The unwrapped model, with the EMA weights copied in when there is an EMA."""
    model = unwrap(model)
    if ema is not None:
        ema.copy_to(model.parameters())
    return model
