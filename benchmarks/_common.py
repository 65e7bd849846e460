"""What every benchmark records: the machine, and results as JSON plus a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


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
