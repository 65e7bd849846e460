"""Convergence, members × steps, and skill against OI/3D-Var of the embedded latent pipeline on
fresh held-out testbed windows (docs/method.md).

B is the spectral background-error covariance estimated from the validation split's (background,
truth) pairs; nothing is tuned. Test windows come from the test split with a seed that no choice
was made on. Three parts (``--parts``):

- ``convergence``: ensemble mean and spread against the number of steps (background only, and
  background + default observations), relative to the longest run;
- ``tradeoff``: analysis RMSE and spread/error for members × steps;
- ``skill``: per-level RMSE of background, OI/3D-Var (same B, same observations) and SLAMS, spread,
  with the default observing system and a harder one (fewer clustered stations, more clouds), and
  with an accurate background (error × 0.15, B alike);
- ``calibration``: where the missing spread comes from. The latent posterior given the background
  alone, on real test windows (spread and error of the resolved part ``D ∘ E``, in latent
  space), against the same sampler on truths drawn from the learned prior itself (the score
  model run in its own latent space, background = truth + white noise of known std): calibrated
  there means the sampler is right and the prior is what is over-confident about real states.

    OMP_NUM_THREADS=1 python benchmarks/trustworthy.py --data data/qg-default.zarr
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import xarray as xr
from _common import machine, write
from torch import Tensor

from slams_diffusers import Gridded, LevelNormalizer, SLAMSPipeline
from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.data.testbed import (
    assimilation_cases,
    default_observations,
    validation_covariance,
)
from slams_diffusers.metrics import ensemble_spread, rmse

ROOT = Path(__file__).resolve().parents[1]
#: The converged reference of the convergence part (the issue asks for 512 steps).
REFERENCE_STEPS = 512


def harder_observations(truth, pressures, generator):
    """16 clustered stations, 30 % missing; the satellite under 60 % clouds."""
    return default_observations(
        truth,
        pressures,
        generator,
        stations=16,
        layout="clustered",
        missing_fraction=0.3,
        cloud_fraction=0.6,
    )


def assimilate(pipe, background, observations, covariance, members, steps, seed, **options):
    """The pipeline's members ``(N, T, levels, *space)`` and the seconds they took; ``options``
    go to the call."""
    generators = [torch.Generator().manual_seed(seed * 1000 + m) for m in range(members)]
    start = time.perf_counter()
    out = pipe(
        background=background,
        observations=observations,
        background_error_covariance=covariance,
        num_members=members,
        num_inference_steps=steps,
        generator=generators,
        output_type="pt",
        **options,
    )
    return out.members, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data/qg-default.zarr"))
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines/slams-qg-tiny"))
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--parts", nargs="+", default=["convergence", "tradeoff", "skill", "calibration"]
    )
    args = parser.parse_args()

    dataset = xr.open_zarr(args.data)
    covariance = validation_covariance(dataset)
    cases = assimilation_cases(dataset, "test", 5, 2, seed=args.seed)[: args.windows]
    pressures = [float(p) for p in dataset["level"].values]
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    payload = {"machine": machine("cpu"), "test_seed": args.seed, "windows": len(cases)}

    if "convergence" in args.parts:
        rows, records = [], []
        case = cases[0]
        for label, observations in (("background only", []), ("default", case.observations)):
            runs = {}
            for steps in (16, 32, 64, REFERENCE_STEPS):
                members, seconds = assimilate(
                    pipe, case.background, observations, covariance, 8, steps, 0
                )
                runs[steps] = (members, seconds)
            reference_mean = runs[REFERENCE_STEPS][0].mean(0)
            reference_spread = float(ensemble_spread(runs[REFERENCE_STEPS][0]))
            for steps, (members, seconds) in runs.items():
                record = {
                    "case": label,
                    "steps": steps,
                    "analysis_rmse": float(rmse(members.mean(0), case.truth)),
                    "spread": float(ensemble_spread(members)),
                    f"mean_difference_to_{REFERENCE_STEPS}": float(
                        rmse(members.mean(0), reference_mean)
                    ),
                    f"spread_ratio_to_{REFERENCE_STEPS}": float(ensemble_spread(members))
                    / reference_spread,
                    "seconds": seconds,
                }
                records.append(record)
                rows.append(
                    {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in record.items()}
                )
        payload["convergence"] = records
        write(
            "trustworthy_convergence",
            {**payload, "records": records},
            list(rows[0]),
            rows,
            f"Convergence (8 members, 1 correction, a test window, vs {REFERENCE_STEPS} steps)",
        )

    if "tradeoff" in args.parts:
        rows, records = [], []
        for drawscount in (8, 16, 32):
            for steps in (16, 32, 64):
                errors, spreads, seconds = [], [], []
                for index, case in enumerate(cases):
                    members, dt = assimilate(
                        pipe,
                        case.background,
                        case.observations,
                        covariance,
                        drawscount,
                        steps,
                        index,
                    )
                    errors.append(float(rmse(members.mean(0), case.truth)))
                    spreads.append(float(ensemble_spread(members)))
                    seconds.append(dt)
                record = {
                    "members": drawscount,
                    "steps": steps,
                    "analysis_rmse": sum(errors) / len(errors),
                    "spread_over_error": sum(s / e for s, e in zip(spreads, errors, strict=True))
                    / len(errors),
                    "seconds_per_window": sum(seconds) / len(seconds),
                }
                records.append(record)
                rows.append(
                    {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in record.items()}
                )
        background = sum(float(rmse(c.background, c.truth)) for c in cases) / len(cases)
        write(
            "trustworthy_tradeoff",
            {**payload, "records": records, "background_rmse": background},
            list(rows[0]),
            rows,
            f"Members × steps ({len(cases)} fresh test windows; background {background:.3f} K)",
        )

    if "skill" in args.parts:
        rows, records = [], []
        generator = torch.Generator().manual_seed(args.seed)
        for index, case in enumerate(cases):
            for network in ("default", "harder", "accurate background"):
                observations = case.observations
                background, b = case.background, covariance
                if network == "harder":
                    observations = harder_observations(case.truth, pressures, generator)
                if network == "accurate background":
                    background = case.truth + 0.15 * (case.background - case.truth)
                    b = covariance.scaled(0.15)
                members, seconds = assimilate(pipe, background, observations, b, 16, 32, index)
                oi = optimal_interpolation(background, observations, b)
                mean = members.mean(0)
                record = {
                    "window": index,
                    "case": network,
                    "background_rmse": float(rmse(background, case.truth)),
                    "oi_rmse": float(rmse(oi, case.truth)),
                    "slams_rmse": float(rmse(mean, case.truth)),
                    "spread_over_error": float(ensemble_spread(members))
                    / float(rmse(mean, case.truth)),
                    "background_per_level": rmse(background, case.truth, dims=(0, 2, 3)).tolist(),
                    "oi_per_level": rmse(oi, case.truth, dims=(0, 2, 3)).tolist(),
                    "slams_per_level": rmse(mean, case.truth, dims=(0, 2, 3)).tolist(),
                    "seconds": seconds,
                }
                records.append(record)
                rows.append(
                    {
                        "window": index,
                        "case": network,
                        "background": f"{record['background_rmse']:.3f}",
                        "OI/3D-Var": f"{record['oi_rmse']:.3f}",
                        "SLAMS": f"{record['slams_rmse']:.3f}",
                        "spread/error": f"{record['spread_over_error']:.2f}",
                        "SLAMS per level (850→200 hPa)": " ".join(
                            f"{v:.2f}" for v in record["slams_per_level"]
                        ),
                        "background per level": " ".join(
                            f"{v:.2f}" for v in record["background_per_level"]
                        ),
                        "s": f"{seconds:.1f}",
                    }
                )
        write(
            "trustworthy_skill",
            {**payload, "records": records},
            list(rows[0]),
            rows,
            "Skill on fresh test windows (16 members, 32 steps + 1 correction, spectral B from "
            "validation, no tuning) [K]",
        )

    if "calibration" in args.parts:
        records = calibration(pipe, cases, covariance)
        rows = [
            {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in records
        ]
        write(
            "trustworthy_calibration",
            {**payload, "records": records},
            list(rows[0]),
            rows,
            "Latent posterior given a background alone: real windows vs truths drawn from the "
            "learned prior (16 members, 32 steps; latent units)",
        )


def _latent_scores(members: Tensor, truth: Tensor) -> dict:
    error = float((members.mean(0) - truth).pow(2).mean().sqrt())
    spread = float(members.var(0).mean().sqrt())
    return {"error": error, "spread": spread, "spread_over_error": spread / error}


def calibration(pipe, cases, covariance, members: int = 16, steps: int = 32) -> list[dict]:
    """Spread and error of the latent posterior given the background alone (module docstring)."""

    def posterior(pipeline: SLAMSPipeline, index: int, **background) -> Tensor:
        """Latent members (the diffusion space of ``pipeline``) given a background alone."""
        generators = [torch.Generator().manual_seed(index * 1000 + m) for m in range(members)]
        out = pipeline(
            **background,
            num_members=members,
            num_inference_steps=steps,
            generator=generators,
            output_type="latent",
        )
        return out.members

    records = []
    for index, case in enumerate(cases):
        with torch.no_grad():
            truth = pipe.encode(case.truth[None])[0]
            background_error = float((pipe.encode(case.background[None])[0] - truth).pow(2).mean())
        draws = posterior(
            pipe, index, background=case.background, background_error_covariance=covariance
        )
        records.append(
            {
                "truth": f"test window {index}",
                "background_error": background_error**0.5,
                **_latent_scores(draws, truth),
            }
        )
    latent = SLAMSPipeline(
        score_model=pipe.score_model,
        scheduler=pipe.scheduler,
        autoencoder=LevelNormalizer(levels=pipe.autoencoder.latent_channels),
    )
    latent.set_progress_bar_config(disable=True)
    shape = (len(cases), cases[0].truth.shape[0], latent.levels, *truth.shape[-2:])
    nothing = Gridded.simulate(torch.zeros(shape[2:]), coarsen=1, subsample=1, noise_std=1.0)
    nothing = nothing.replace_values(torch.full_like(nothing.values, math.nan))
    truths = latent(
        observations=[nothing],
        num_members=len(cases),
        num_frames=shape[1],
        num_inference_steps=64,
        generator=[torch.Generator().manual_seed(500 + i) for i in range(len(cases))],
        output_type="pt",
    ).members
    for index, truth in enumerate(truths):
        std = records[index]["background_error"]
        noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(700 + index))
        background = truth + std * noise
        draws = posterior(latent, index, background=background, background_error_std=std)
        records.append(
            {
                "truth": f"prior draw {index}",
                "background_error": float((background - truth).pow(2).mean().sqrt()),
                **_latent_scores(draws, truth),
            }
        )
    return records


if __name__ == "__main__":
    main()
