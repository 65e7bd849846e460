"""What a run reports: the loss log (trackers and ``train_log.jsonl``) and the record a model card
keeps (command, options, time, hardware)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MetricsLog",
    "machine_description",
    "run_record",
]


class MetricsLog:
    """Losses to the accelerate trackers and, on the main process, to ``train_log.jsonl``
    (appended across resumes; one JSON object per logged step)."""

    def __init__(self, accelerator, args: argparse.Namespace, project: str) -> None:
        self.accelerator = accelerator
        self.path = Path(args.output_dir) / "train_log.jsonl"
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        if accelerator.log_with:
            accelerator.init_trackers(project, config=config)

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        self.accelerator.log(dict(values), step=step)
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")


def machine_description() -> str:
    """One line: CPU/GPU, cores, torch version (for model cards and benchmark tables)."""
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_record(args: argparse.Namespace, seconds: float, accelerator) -> dict[str, Any]:
    """What a model card records about a run: the command, options, time and hardware."""
    return {
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "options": {k: v for k, v in vars(args).items() if k not in ("hub_token",)},
        "wall_time_minutes": round(seconds / 60, 2),
        "processes": accelerator.num_processes,
        "hardware": machine_description(),
    }
