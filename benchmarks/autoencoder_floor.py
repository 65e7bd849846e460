"""The latent route's floor: the autoencoder's reconstruction RMSE per level against the latent
width and the training length (issue 15).

Each ``--runs`` folder is a stage-1 output (``train_autoencoder.py``: ``autoencoder/`` and
``train_log.jsonl``) or a pipeline folder with an ``autoencoder/``. Every autoencoder is scored on
the same states: ``--states`` evenly spaced states of the ``val`` split of ``--data``,
``RMSE_l = sqrt(mean (D(E(x)) − x)_l²)`` in K (``training.reconstruction_rmse``). The training
length enters through each run's validation curve (the level-normalised reconstruction loss on
fixed validation batches, logged every ``--validation_steps``) and its wall time.

    OMP_NUM_THREADS=1 python benchmarks/autoencoder_floor.py --data data/qg-large.zarr \
        --runs pipelines/slams-qg-tiny runs/ae-width-4 runs/qg-large-autoencoder runs/ae-width-16

Writes ``results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from _common import machine, write

from slams_diffusers import StateAutoencoder
from slams_diffusers.data.datasets import select_split
from slams_diffusers.training import reconstruction_rmse

ROOT = Path(__file__).resolve().parents[1]


def validation_curve(run: Path) -> list[tuple[int, float, float]]:
    """``(step, val_loss, wall_seconds)`` of the autoencoder phase from the run's log."""
    log = run / "train_log.jsonl"
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [
        (row["step"], row["autoencoder/val_loss"], row.get("wall_seconds", float("nan")))
        for row in rows
        if "autoencoder/val_loss" in row
    ]


def training_steps(run: Path) -> int | None:
    """The autoencoder steps of the run (its ``autoencoder_training.json``), else ``None``."""
    for record in (run / "autoencoder_training.json", run / "model_card.json"):
        if record.is_file():
            data = json.loads(record.read_text())
            options = data.get("options") or data.get("training", {}).get("autoencoder", {})
            options = options.get("options", options)
            if "autoencoder_steps" in options:
                return int(options["autoencoder_steps"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data/qg-large.zarr"))
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--states", type=int, default=128)
    parser.add_argument("--name", default="autoencoder_floor")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = select_split(xr.open_zarr(args.data)["t"], "val")
    data = data.stack(sample=("trajectory", "time")).transpose("sample", ...)
    chosen = np.unique(np.linspace(0, data.sizes["sample"] - 1, args.states).round().astype(int))
    states = torch.from_numpy(np.asarray(data.isel(sample=chosen).values, dtype=np.float32))
    levels = [f"{p:g} hPa" for p in data["level"].values]

    records, rows = [], []
    for run in map(Path, args.runs):
        autoencoder = StateAutoencoder.from_pretrained(run / "autoencoder").eval()
        per_level = reconstruction_rmse(autoencoder, states)
        overall = float(np.sqrt(np.mean(np.square(per_level))))
        curve = validation_curve(run)
        record = {
            "run": str(run),
            "latent_channels": autoencoder.config.latent_channels,
            "downsample_factor": autoencoder.config.downsample_factor,
            "autoencoder_steps": training_steps(run),
            "rmse_per_level": dict(zip(levels, per_level, strict=True)),
            "rmse": overall,
            "validation_curve": curve,
        }
        records.append(record)
        rows.append(
            {
                "run": run.name,
                "latent": f"{autoencoder.config.latent_channels} × /"
                f"{autoencoder.config.downsample_factor}",
                "steps": record["autoencoder_steps"] or "",
                "wall [min]": f"{curve[-1][2] / 60:.0f}" if curve else "",
                **{level: f"{v:.3f}" for level, v in zip(levels, per_level, strict=True)},
                "RMSE": f"{overall:.3f}",
                "val loss at ¼ / ½ / all steps": " / ".join(
                    f"{curve[min(len(curve) - 1, round(f * len(curve)) - 1)][1]:.4f}"
                    for f in (0.25, 0.5, 1.0)
                )
                if curve
                else "",
            }
        )
        print(rows[-1], flush=True)
    payload = {
        "machine": machine("cpu"),
        "data": args.data,
        "states": len(states),
        "records": records,
    }
    write(
        args.name,
        payload,
        list(rows[0]),
        rows,
        f"Autoencoder reconstruction RMSE per level [K] on {len(states)} validation states of "
        f"{Path(args.data).name}: the latent route's floor against width and training length",
    )


if __name__ == "__main__":
    main()
