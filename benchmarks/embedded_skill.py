"""Skill of pretrained pipelines on the QG testbed's held-out trajectories.

For each test case (``slams_diffusers.data.testbed.assimilation_cases``: a 5-step true window, a
24-h forecast background, 64 stations and a 3-channel cloudy satellite at every step), assimilate
with each pipeline and score the ensemble mean against the truth: RMSE of the analysis and of the
background, ensemble spread, wall time. The background error std given to the pipelines is the
per-level rms background error of the validation split (not the scored cases), times an inflation
factor chosen per pipeline on the validation cases among ``--inflations`` (the background error is
spatially correlated, a white ``sigma_b`` is overconfident).

    OMP_NUM_THREADS=2 python benchmarks/embedded_skill.py --data data/qg-default.zarr \
        --pipelines pipelines/slams-qg-tiny pipelines/sda-qg-tiny --update-cards

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
from slams_diffusers.data.testbed import assimilation_cases, background_error_std
from slams_diffusers.hub import pipeline_card
from slams_diffusers.metrics import ensemble_spread, rmse

ROOT = Path(__file__).resolve().parents[1]


def evaluate(pipe: SLAMSPipeline, cases, sigma_b, args) -> dict:
    analysis, spread, seconds = [], [], []
    per_level = []
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
            background_error_std=sigma_b,
            generator=generators,
            output_type="pt",
        )
        seconds.append(time.perf_counter() - start)
        mean = out.members.mean(0)
        analysis.append(float(rmse(mean, case.truth)))
        spread.append(float(ensemble_spread(out.members)))
        per_level.append(rmse(mean, case.truth, dims=(0, 2, 3)))
    return {
        "analysis_rmse": sum(analysis) / len(analysis),
        "spread": sum(spread) / len(spread),
        "seconds_per_case": sum(seconds) / len(seconds),
        "analysis_rmse_per_level": torch.stack(per_level).mean(0).tolist(),
        "analysis_rmse_per_case": analysis,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/qg-default.zarr")
    parser.add_argument("--pipelines", nargs="+", required=True)
    parser.add_argument("--cases-per-trajectory", type=int, default=2)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--corrections", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lead-hours", type=float, default=24.0)
    parser.add_argument("--perturbation-std", type=float, default=1.5, help="K, of the forecast")
    parser.add_argument("--test-cases", type=int, default=None, help="score only the first N")
    parser.add_argument("--inflations", type=float, nargs="+", default=[1.0])
    parser.add_argument("--validation-cases", type=int, default=3, help="used to pick inflation")
    parser.add_argument("--update-cards", action="store_true")
    parser.add_argument("--name", default="embedded_skill")
    args = parser.parse_args()

    dataset = xr.open_zarr(args.data)
    setup = {"lead_hours": args.lead_hours, "perturbation_std": args.perturbation_std}
    validation = assimilation_cases(dataset, "val", 5, args.cases_per_trajectory, seed=1, **setup)
    sigma_b = background_error_std(validation)
    validation = validation[: args.validation_cases]
    cases = assimilation_cases(
        dataset, "test", 5, args.cases_per_trajectory, seed=args.seed, **setup
    )[: args.test_cases]
    background = sum(float(rmse(c.background, c.truth)) for c in cases) / len(cases)
    per_level_bg = torch.stack([rmse(c.background, c.truth, dims=(0, 2, 3)) for c in cases])
    rows, results = [], {}
    for folder in args.pipelines:
        pipe = SLAMSPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        tuning = {}
        if len(args.inflations) > 1:
            for inflation in args.inflations:
                scores = evaluate(pipe, validation, sigma_b * inflation, args)
                tuning[inflation] = scores["analysis_rmse"]
                print(f"{folder}: inflation {inflation}: validation RMSE {tuning[inflation]:.3f}")
        inflation = min(tuning, key=tuning.get) if tuning else args.inflations[0]
        result = evaluate(pipe, cases, sigma_b * inflation, args)
        result.update(inflation=inflation, validation_rmse_by_inflation=tuning)
        name = Path(folder).name
        results[name] = result
        rows.append(
            {
                "pipeline": name,
                "analysis RMSE [K]": f"{result['analysis_rmse']:.3f}",
                "background RMSE [K]": f"{background:.3f}",
                "ratio": f"{result['analysis_rmse'] / background:.2f}",
                "spread [K]": f"{result['spread']:.3f}",
                "sigma_b inflation": inflation,
                "s / case": f"{result['seconds_per_case']:.1f}",
            }
        )
    settings = {
        "cases": len(cases),
        "members": args.members,
        "steps": args.steps,
        "corrections": args.corrections,
        "likelihood_covariance": "tweedie",
        **setup,
        "background_error_std": sigma_b.reshape(-1).tolist(),
        "background_rmse": background,
        "background_rmse_per_level": per_level_bg.mean(0).tolist(),
    }
    payload = {"machine": machine("cpu"), "settings": settings, "results": results}
    columns = list(rows[0])
    title = (
        f"Skill on the QG testbed's test trajectories ({len(cases)} cases, {args.members} "
        f"members, {args.steps} steps + {args.corrections} correction)"
    )
    write(args.name, payload, columns, rows, title)
    if args.update_cards:
        for folder, row in zip(args.pipelines, rows, strict=True):
            evaluation = {
                "test cases (5 steps; 24-h forecast, 64 stations, 3-channel satellite)": len(cases),
                "analysis RMSE (ensemble mean) [K]": float(row["analysis RMSE [K]"]),
                "background RMSE [K]": float(row["background RMSE [K]"]),
                "ensemble spread [K]": float(row["spread [K]"]),
                "background error std inflation": row["sigma_b inflation"],
                "inflation chosen on validation cases": len(args.inflations) > 1,
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
