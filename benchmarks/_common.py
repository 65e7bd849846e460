"""What every benchmark records (the machine, results as JSON plus a Markdown table) and the
options and windows of the benchmarks that assimilate fresh test windows."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from slams_diffusers.covariance import SpectralCovariance
from slams_diffusers.data.testbed import assimilation_cases, validation_covariance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine(device: str) -> dict:
    """Where and with what a benchmark ran."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write(name: str, payload: dict, columns: list[str], rows: list[dict], title: str) -> None:
    """``results/<name>.json`` (everything) and ``results/<name>.md`` (a table of ``rows``)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    lines += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in payload["machine"].items()), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def add_window_arguments(
    parser: argparse.ArgumentParser,
    *,
    windows: int,
    seed: int,
    name: str,
    data: str = "data/qg-default.zarr",
    pipeline: str | None = "pipelines/slams-qg-tiny",
) -> None:
    """The options of a benchmark that assimilates fresh test windows with an ensemble:
    ``--data`` (a testbed store), ``--pipeline`` (unless ``pipeline`` is None), ``--windows``,
    ``--seed`` (of the test windows: not 11, which choices were made on), ``--members``,
    ``--steps`` (16 × 32, the issues' setting), ``--name``, ``--threads``. Paths are relative
    to the repository."""
    parser.add_argument("--data", default=str(ROOT / data))
    if pipeline is not None:
        parser.add_argument("--pipeline", default=str(ROOT / pipeline))
    parser.add_argument("--windows", type=int, default=windows)
    parser.add_argument("--seed", type=int, default=seed, help="test windows (fresh: not 11)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--name", default=name, help="results/<name>.{json,md}")
    parser.add_argument("--threads", type=int, default=1)


def fresh_windows(args: argparse.Namespace) -> tuple[Any, SpectralCovariance, list]:
    """``(dataset, B, cases)`` for the options of :func:`add_window_arguments` and ``--data``:
    the store, :func:`validation_covariance` and the first ``--windows`` test windows of seed
    ``--seed`` (5 steps, 2 per trajectory, default observations); sets ``--threads``."""
    torch.set_num_threads(args.threads)
    dataset = xr.open_zarr(args.data)
    cases = assimilation_cases(dataset, "test", 5, 2, seed=args.seed)[: args.windows]
    return dataset, validation_covariance(dataset), cases
