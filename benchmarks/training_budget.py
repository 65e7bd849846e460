"""Skill against training budget: is the prior what limits the analysis? (issue 15)

A training run of ``train_score.py --snapshot_steps N`` keeps the EMA score model every ``N``
steps in ``RUN/snapshots/step-N``. Each snapshot goes into the run's final pipeline
(``RUN/pipeline``: same autoencoder, encoders and scheduler; while a latent run still trains,
``--stage1`` gives them, and while a pixel-space run trains, without ``--stage1``, the train
split's level statistics of ``--data``) and assimilates the same fresh
held-out windows (``assimilation_cases(dataset, "test", 5, 2, seed=--seed)``; default
observations; spectral B from the validation split; nothing tuned). Runs given together (a latent
run and its pixel-space SDA twin) are compared at equal optimiser steps. The wall time is the
run's own (``train_log.jsonl``'s ``wall_seconds`` at that step).

    OMP_NUM_THREADS=1 python benchmarks/training_budget.py --data data/qg-large.zarr \
        --runs runs/slams-qg-large runs/sda-qg-large --windows 4

Writes ``results/<name>.{json,md}``: per run and step, RMSE, fair CRPS and spread/skill (mean ±
standard error over windows), and the background's and OI/3D-Var's on the same windows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _common import add_window_arguments, fresh_windows, machine, write

from slams_diffusers import (
    LevelNormalizer,
    ObservationEncoder,
    ScoreNet,
    SLAMSPipeline,
    StateAutoencoder,
    VPPredictorCorrectorScheduler,
)
from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.data.datasets import LevelStatistics
from slams_diffusers.metrics import crps, rmse, spread_skill_ratio


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the run's snapshots, by step."""
    found = []
    for folder in (run / "snapshots").glob("step-*"):
        step = folder.name.removeprefix("step-")
        if step.isdigit() and (folder / "config.json").is_file():
            found.append((int(step), folder))
    return sorted(found)


def run_pipeline(run: Path, stage1: str | None, data: str) -> SLAMSPipeline:
    """The run's final pipeline or, while it trains, one made of the cosine scheduler
    ``train_score.py`` uses and: for a latent run, ``stage1``'s autoencoder and encoder; for a
    pixel-space run (SDA; no ``stage1``), the level normaliser ``train_score.py`` builds, from the
    train split's per-level statistics of ``data``. The score model is replaced by each snapshot."""
    if (run / "pipeline").is_dir():
        return SLAMSPipeline.from_pretrained(run / "pipeline")
    _, first = snapshots(run)[0]
    score_model = ScoreNet.from_pretrained(first)
    scheduler = VPPredictorCorrectorScheduler(schedule="cosine")
    if stage1 is None:
        statistics = LevelStatistics.compute(data, split="train")
        if score_model.config.in_channels != len(statistics.mean):
            raise ValueError(
                f"{run} is a latent run still training ({score_model.config.in_channels} "
                f"channels, {len(statistics.mean)} levels): pass --stage1"
            )
        normalizer = LevelNormalizer(
            levels=len(statistics.mean), spatial_dims=2, **statistics.as_config()
        )
        return SLAMSPipeline(score_model=score_model, scheduler=scheduler, autoencoder=normalizer)
    return SLAMSPipeline(
        score_model=score_model,
        scheduler=scheduler,
        autoencoder=StateAutoencoder.from_pretrained(Path(stage1) / "autoencoder"),
        observation_encoder=ObservationEncoder.from_pretrained(
            Path(stage1) / "observation_encoder"
        ),
    )


def wall_seconds(run: Path) -> dict[int, float]:
    """``step -> wall_seconds`` from the run's training log."""
    log = run / "train_log.jsonl"
    if not log.is_file():
        return {}
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {row["step"]: row["wall_seconds"] for row in rows if "wall_seconds" in row}


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error over windows (0 for one window)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="train_score.py output folders")
    parser.add_argument(
        "--stage1",
        default=None,
        help="for a latent run still training (no RUN/pipeline yet): the stage-1 folder whose "
        "autoencoder and observation encoder it trains on; without it such a run is pixel space",
    )
    parser.add_argument(
        "--at", type=int, nargs="+", default=None, help="only these steps (default: every one)"
    )
    add_window_arguments(
        parser, windows=4, seed=29, name="training_budget", data="data/qg-large.zarr", pipeline=None
    )
    args = parser.parse_args()
    started = time.perf_counter()
    dataset, covariance, cases = fresh_windows(args)
    references = {
        "background": [float(rmse(c.background, c.truth)) for c in cases],
        "OI/3D-Var": [
            float(rmse(optimal_interpolation(c.background, c.observations, covariance), c.truth))
            for c in cases
        ],
    }

    records, rows = [], []
    for label, values in references.items():
        mean, error = mean_and_error(values)
        rows.append(
            {"run": label, "steps": "", "wall [min]": "", "RMSE": f"{mean:.3f} ± {error:.3f}"}
        )
    for run in map(Path, args.runs):
        pipe = run_pipeline(run, args.stage1, args.data)
        pipe.set_progress_bar_config(disable=True)
        walls = wall_seconds(run)
        for step, folder in snapshots(run):
            if args.at and step not in args.at:
                continue
            pipe.score_model = ScoreNet.from_pretrained(folder).eval()
            scores = {"rmse": [], "crps": [], "spread_skill": []}
            seconds = 0.0
            for index, case in enumerate(cases):
                generators = [
                    torch.Generator().manual_seed(index * 1000 + m) for m in range(args.members)
                ]
                tic = time.perf_counter()
                members = pipe(
                    background=case.background,
                    observations=case.observations,
                    background_error_covariance=covariance,
                    num_members=args.members,
                    num_inference_steps=args.steps,
                    spread_inflation=1.0,  # nothing fitted: the prior's own spread
                    generator=generators,
                    output_type="pt",
                ).members
                seconds += time.perf_counter() - tic
                scores["rmse"].append(float(rmse(members.mean(0), case.truth)))
                scores["crps"].append(float(crps(members, case.truth)))
                scores["spread_skill"].append(float(spread_skill_ratio(members, case.truth)))
            summary = {k: mean_and_error(v) for k, v in scores.items()}
            wall = walls.get(step)
            records.append(
                {
                    "run": str(run),
                    "step": step,
                    "wall_seconds": wall,
                    "per_window": scores,
                    "assimilation_seconds": seconds,
                    **{k: {"mean": m, "standard_error": e} for k, (m, e) in summary.items()},
                }
            )
            rows.append(
                {
                    "run": run.name,
                    "steps": step,
                    "wall [min]": "" if wall is None else f"{wall / 60:.0f}",
                    "RMSE": "{:.3f} ± {:.3f}".format(*summary["rmse"]),
                    "CRPS": "{:.3f} ± {:.3f}".format(*summary["crps"]),
                    "spread/skill": "{:.2f} ± {:.2f}".format(*summary["spread_skill"]),
                }
            )
            print(rows[-1], flush=True)
    payload = {
        "machine": machine("cpu"),
        "test_seed": args.seed,
        "windows": len(cases),
        "members": args.members,
        "steps": args.steps,
        "references": references,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "records": records,
    }
    columns = ["run", "steps", "wall [min]", "RMSE", "CRPS", "spread/skill"]
    write(
        args.name,
        payload,
        columns,
        [{c: row.get(c, "") for c in columns} for row in rows],
        f"Skill against training budget ({len(cases)} fresh test windows, seed {args.seed}; "
        f"{args.members} members × {args.steps} steps; spectral B from validation) [K]",
    )


if __name__ == "__main__":
    main()
