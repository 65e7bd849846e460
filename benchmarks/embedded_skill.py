"""Skill of pretrained pipelines on the QG testbed's held-out trajectories (the model cards'
evaluation).

For each test case (``slams_diffusers.data.testbed.assimilation_cases``: a 5-step true window, a
24-h forecast background, 64 stations and a 3-channel cloudy satellite at every step), assimilate
with each pipeline and with OI/3D-Var, and score against the truth: RMSE of the analysis mean,
of OI and of the background, fair CRPS, spread and the spread–skill ratio, wall time. The
background-error covariance is the spectral B estimated on the validation split's (background,
truth) pairs (not the scored cases), shared by the pipelines and OI; nothing is tuned.

    OMP_NUM_THREADS=1 python benchmarks/embedded_skill.py --data data/qg-default.zarr \
        --pipelines pipelines/slams-qg-tiny --update-cards

``--update-cards`` writes the numbers into each pipeline's model card (README.md) and copies it to
``model_cards/<name>.md``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
import xarray as xr
from _common import machine, write

from slams_diffusers import SLAMSPipeline
from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.data.testbed import assimilation_cases, validation_covariance
from slams_diffusers.hub import pipeline_card
from slams_diffusers.metrics import rmse, score_ensemble

ROOT = Path(__file__).resolve().parents[1]


def evaluate(pipe: SLAMSPipeline, cases, covariance, args) -> dict:
    scores, seconds, per_level = [], [], []
    for index, case in enumerate(cases):
        generators = [
            torch.Generator().manual_seed(args.seed * 100_000 + index * 1000 + m)
            for m in range(args.members)
        ]
        start = time.perf_counter()
        out = pipe(
            background=case.background,
            observations=case.observations,
            num_members=args.members,
            num_inference_steps=args.steps,
            corrector_steps=args.corrections,
            background_error_covariance=covariance,
            generator=generators,
            output_type="pt",
        )
        seconds.append(time.perf_counter() - start)
        scores.append(score_ensemble(out.members, case.truth))
        per_level.append(rmse(out.members.mean(0), case.truth, dims=(0, 2, 3)))
    overall = {key: [s[key]["overall"] for s in scores] for key in ("rmse", "crps", "spread")}
    return {
        "analysis_rmse": sum(overall["rmse"]) / len(cases),
        "crps": sum(overall["crps"]) / len(cases),
        "spread": sum(overall["spread"]) / len(cases),
        "spread_skill": sum(s["spread_skill_ratio"]["overall"] for s in scores) / len(cases),
        "seconds_per_case": sum(seconds) / len(seconds),
        "analysis_rmse_per_level": torch.stack(per_level).mean(0).tolist(),
        "analysis_rmse_per_case": overall["rmse"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/qg-default.zarr")
    parser.add_argument("--pipelines", nargs="+", required=True)
    parser.add_argument("--cases-per-trajectory", type=int, default=2)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--corrections", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lead-hours", type=float, default=24.0)
    parser.add_argument("--perturbation-std", type=float, default=1.5, help="K, of the forecast")
    parser.add_argument("--test-cases", type=int, default=None, help="score only the first N")
    parser.add_argument("--update-cards", action="store_true")
    parser.add_argument("--name", default="embedded_skill")
    args = parser.parse_args()

    dataset = xr.open_zarr(args.data)
    setup = {"lead_hours": args.lead_hours, "perturbation_std": args.perturbation_std}
    covariance = validation_covariance(dataset, 5, args.cases_per_trajectory, **setup)
    pairs = int((dataset["split"].values == "val").sum()) * args.cases_per_trajectory
    cases = assimilation_cases(
        dataset, "test", 5, args.cases_per_trajectory, seed=args.seed, **setup
    )[: args.test_cases]
    background = sum(float(rmse(c.background, c.truth)) for c in cases) / len(cases)
    per_level_bg = torch.stack([rmse(c.background, c.truth, dims=(0, 2, 3)) for c in cases])
    oi = [optimal_interpolation(c.background, c.observations, covariance) for c in cases]
    oi_rmse = sum(float(rmse(a, c.truth)) for a, c in zip(oi, cases, strict=True)) / len(cases)
    rows, results = [], {}
    for folder in args.pipelines:
        pipe = SLAMSPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        result = evaluate(pipe, cases, covariance, args)
        name = Path(folder).name
        results[name] = result
        rows.append(
            {
                "pipeline": name,
                "analysis RMSE [K]": f"{result['analysis_rmse']:.3f}",
                "OI/3D-Var RMSE [K]": f"{oi_rmse:.3f}",
                "background RMSE [K]": f"{background:.3f}",
                "CRPS [K]": f"{result['crps']:.3f}",
                "spread [K]": f"{result['spread']:.3f}",
                "spread-skill": f"{result['spread_skill']:.2f}",
                "s / case": f"{result['seconds_per_case']:.1f}",
            }
        )
    settings = {
        "cases": len(cases),
        "members": args.members,
        "steps": args.steps,
        "corrections": args.corrections,
        "likelihood_covariance": "moment_matching",
        "background_error_covariance": f"spectral, estimated on {pairs} validation "
        "(background, truth) pairs",
        **setup,
        "background_rmse": background,
        "oi_rmse": oi_rmse,
        "background_rmse_per_level": per_level_bg.mean(0).tolist(),
    }
    payload = {"machine": machine("cpu"), "settings": settings, "results": results}
    columns = list(rows[0])
    title = (
        f"Skill on the QG testbed's test trajectories ({len(cases)} cases, {args.members} "
        f"members, {args.steps} steps + {args.corrections} correction; spectral B from "
        "validation; each pipeline's spread inflation, fitted on validation windows)"
    )
    write(args.name, payload, columns, rows, title)
    if args.update_cards:
        for folder, row in zip(args.pipelines, rows, strict=True):
            evaluation = {
                "test cases (5 steps; 24-h forecast, 64 stations, 3-channel satellite)": len(cases),
                "analysis RMSE (ensemble mean) [K]": float(row["analysis RMSE [K]"]),
                "OI/3D-Var RMSE (same B) [K]": float(row["OI/3D-Var RMSE [K]"]),
                "background RMSE [K]": float(row["background RMSE [K]"]),
                "fair CRPS [K]": float(row["CRPS [K]"]),
                "ensemble spread [K]": float(row["spread [K]"]),
                "spread-skill ratio": float(row["spread-skill"]),
                "background error covariance": "spectral, from validation cases, not tuned",
                "spread inflation (fitted on validation windows)": str(
                    SLAMSPipeline.from_pretrained(folder).config.get("spread_inflation")
                ),
                "members / steps / corrections": f"{args.members} / {args.steps} / "
                f"{args.corrections}",
                "seconds per case (this machine)": float(row["s / case"]),
            }
            pipeline_card(folder, evaluation=evaluation)
            cards = ROOT / "model_cards"
            cards.mkdir(exist_ok=True)
            shutil.copyfile(Path(folder) / "README.md", cards / f"{Path(folder).name}.md")


if __name__ == "__main__":
    main()
