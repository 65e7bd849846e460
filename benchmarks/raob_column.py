"""Real radiosondes, held out by time: the column prior against 1D-Var (issue 18).

Every complete radiosonde launch of the test years (from 2005; the prior trained on launches and
analyses before 2003, :mod:`slams_diffusers.data.soundings`) is a case. The observations are the
real surface report (bias-corrected, with its error std from the training launches) and sounder
channels computed from the launch itself with noise (``column_cases``); the truth is the launch.

- **climatology** (the background): the mean of the training profiles, with their covariance ``B``
  (16 × 16) as its error covariance. Its ensemble: draws of ``N(μ, B)``.
- **1D-Var**: the exact Gaussian posterior given climatology and the observations (the OI/3D-Var
  of :func:`~slams_diffusers.baselines.optimal_interpolation` with ``B``); its ensemble: draws of
  ``N(x_a, B − K H B)``.
- **SDA**: the column pipeline (a pixel-space prior), prior and observations only. Its prior
  *is* the climatology, learned, so the climatological background is not given again (that
  would count it twice).

Per observation set (surface, satellite, both): RMSE, fair CRPS and spread/skill over all cases
and levels, and RMSE per level.

    OMP_NUM_THREADS=1 python benchmarks/raob_column.py --pipeline pipelines/sda-raob-column
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import ROOT, machine, write

from slams_diffusers import SLAMSPipeline
from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.covariance import DenseCovariance
from slams_diffusers.data.soundings import column_cases, complete_profiles, packaged_soundings
from slams_diffusers.metrics import crps, rmse, spread_skill_ratio
from slams_diffusers.testing import GaussianPosterior

SETS = {
    "surface": ("surface",),
    "satellite": ("satellite",),
    "surface + satellite": ("surface", "satellite"),
}


def gaussian_members(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` draws of ``N(mean, cov)``, ``(n, 1, levels)``."""
    values, vectors = torch.linalg.eigh(cov)
    root = vectors * values.clamp_min(0).sqrt()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, len(values), generator=generator, dtype=cov.dtype)
    return (mean.reshape(1, -1) + noise @ root.T)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "sda-raob-column"))
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--cases", type=int, default=None, help="first N test launches (all)")
    parser.add_argument("--seed", type=int, default=0, help="of the sounder noise")
    parser.add_argument("--split", default="test", help="test, or val to choose a model on")
    parser.add_argument("--name", default="raob_column")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = packaged_soundings()
    train = complete_profiles(data, "train")
    profiles = torch.as_tensor(train.t.values[:, 0], dtype=torch.float64)
    mean, cov = profiles.mean(0), torch.cov(profiles.T)
    levels = len(mean)
    covariance = DenseCovariance.from_matrix(cov, levels, ())
    cases = column_cases(data, args.split, "raob", seed=args.seed)[: args.cases]
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)

    estimates: dict[tuple[str, str], list[torch.Tensor]] = {}
    truths = torch.stack([c.truth.double() for c in cases])  # (cases, 1, levels)
    started = {"SDA": 0.0}
    for k, case in enumerate(cases):
        estimates.setdefault(("climatology", "none"), []).append(
            gaussian_members(mean, cov, args.members, k)
        )
        for name, modalities in SETS.items():
            observations = [case.observations[m] for m in modalities]
            analysis = optimal_interpolation(mean[None], observations, covariance)[0]
            exact = GaussianPosterior.from_observations(mean[None], cov, observations)
            posterior = exact.covariance
            estimates.setdefault(("1D-Var", name), []).append(
                gaussian_members(analysis, 0.5 * (posterior + posterior.T), args.members, k)
            )
            tic = time.perf_counter()
            out = pipe(
                observations=observations,
                num_members=args.members,
                num_inference_steps=args.steps,
                output_type="pt",
                generator=[
                    torch.Generator().manual_seed(1000 * k + m) for m in range(args.members)
                ],
            )
            started["SDA"] += time.perf_counter() - tic
            estimates.setdefault(("SDA", name), []).append(out.members.double())
        if k % 20 == 0:
            print(f"case {k + 1}/{len(cases)}", flush=True)

    rows, results = [], {}
    background_rmse = rmse(torch.stack(estimates[("climatology", "none")]).mean(1), truths)
    for (method, name), members in estimates.items():
        ens = torch.stack(members, dim=1)  # (members, cases, 1, levels)
        per_level = rmse(ens.mean(0), truths, dims=(0, 1))
        scores = {
            "rmse": float(rmse(ens.mean(0), truths)),
            "crps": float(crps(ens, truths)),
            "spread_skill": float(spread_skill_ratio(ens, truths)),
            "rmse_per_level": [round(float(v), 4) for v in per_level],
        }
        results[f"{method}, {name}"] = scores
        rows.append(
            {
                "method": method,
                "observations": name,
                "RMSE": f"{scores['rmse']:.3f}",
                "÷ background": f"{scores['rmse'] / float(background_rmse):.2f}",
                "CRPS": f"{scores['crps']:.3f}",
                "spread/skill": f"{scores['spread_skill']:.2f}",
                "RMSE per level (850→100 hPa)": " ".join(f"{v:.2f}" for v in per_level),
            }
        )
    payload = {
        "machine": machine("cpu"),
        "cases": len(cases),
        "members": args.members,
        "steps": args.steps,
        "levels_hpa": data.level.values.tolist(),
        "seconds_per_analysis": started["SDA"] / (len(cases) * len(SETS)),
        "results": results,
    }
    title = (
        f"Real radiosondes held out by time ({len(cases)} {args.split} launches; {args.members} "
        f"members × {args.steps} steps; background = training climatology) [K]"
    )
    write(args.name, payload, list(rows[0]), rows, title)


if __name__ == "__main__":
    main()
