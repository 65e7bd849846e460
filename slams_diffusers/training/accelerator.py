"""The ``accelerate`` pieces: the accelerator (CPU process groups included), the optimiser and
its LR schedule, the EMA, and the model inside a distributed wrapper."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "unwrap",
    "make_accelerator",
    "has_accelerator_device",
    "make_optimizer",
    "make_ema",
]


def unwrap(model: nn.Module) -> nn.Module:
    """``model`` out of its distributed wrapper (DDP's ``.module``), or ``model``."""
    return model.module if hasattr(model, "module") else model


def make_accelerator(args: argparse.Namespace, find_unused_parameters: bool = False):
    """One ``Accelerator`` for the run: mixed precision, accumulation, logging to
    ``output_dir/logs`` with tensorboard when it is installed and asked for."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    report_to = args.report_to
    if report_to in ("tensorboard", "all") and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        report_to = None
    if report_to == "none":
        report_to = None
    # `accelerate launch --multi_gpu` (torchrun: WORLD_SIZE, LOCAL_RANK) on a machine without
    # GPUs: unless told `cpu`, accelerate makes every process an independent single-process run
    # (all writing output_dir); with cpu=True they form one DDP group over gloo.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        cpu=world_size > 1 and not has_accelerator_device(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs")
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        ],
    )
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"launched as {world_size} processes (WORLD_SIZE) but accelerate runs "
            f"{accelerator.num_processes}: they would train independently into the same output_dir"
        )
    if (
        accelerator.num_processes == 1
        and "MASTER_PORT" in os.environ
        and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    ):
        print(
            "warning: `accelerate launch --cpu --num_processes N` starts ONE process (several "
            "need --mpirun_hostfile); for N CPU processes use `accelerate launch --multi_gpu "
            "--num_processes N` (CPU-only machines are detected)",
            file=sys.stderr,
            flush=True,
        )
    return accelerator


def has_accelerator_device() -> bool:
    """Whether torch sees a GPU-like device (``torch.accelerator``, else CUDA)."""
    api = getattr(torch, "accelerator", None)
    if api is not None and hasattr(api, "is_available"):
        return bool(api.is_available())
    return torch.cuda.is_available()


def make_optimizer(args: argparse.Namespace, parameters, total_steps: int, num_processes: int):
    """AdamW and the ``--lr_scheduler`` schedule (counted per process step, as accelerate steps
    a prepared scheduler once per process)."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(
        parameters, lr=args.learning_rate, weight_decay=args.adam_weight_decay
    )
    schedule = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=total_steps * num_processes,
    )
    return optimizer, schedule


def make_ema(model: nn.Module, args: argparse.Namespace):
    """diffusers' ``EMAModel`` of ``model`` (``None`` without ``--use_ema``)."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(), decay=args.ema_decay, model_cls=type(model), model_config=model.config
    )
