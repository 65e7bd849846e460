"""A real-data twin on ERA5's global 3° grid (issue 18): one EDA member is the truth, the mean of
the other nine the background, their spread its error covariance.

The data are the 10 members of ERA5's ensemble of data assimilations at 850 and 500 hPa
(:mod:`slams_diffusers.data.era5`). Every member at the test time (2017-01-02 12 UTC) is the truth
of one case; the prior (``training/configs/era5-sda.yaml``) saw the three earlier times only.

- **background**: the mean of the nine other members; its ensemble, those nine.
- ``B`` (every method that takes one): the zonal ensemble covariance of the nine
  (:func:`~slams_diffusers.ensemble.ensemble_covariance`, ``structure="zonal"``: homogeneous in
  longitude, Gaspari–Cohn localised in latitude) times ``1 + 1/9``, the factor by which the mean of
  nine members exchangeable with the truth errs beyond their spread.
- **OI/3D-Var**: :func:`~slams_diffusers.baselines.optimal_interpolation` with ``B``; its RMSE is
  that of the analysis ``x_a`` (the exact posterior mean), its CRPS and spread/skill those of
  draws by perturbed background and observations (exact posterior draws for a Gaussian ``B``).
- **LETKF**: the nine members with the same inflation ``1 + 1/9``, localised in grid cells.
- **SDA**: the pixel-space pipeline with the background and ``B``.

Observations, from the truth: radiosonde-like **stations** at ``--stations`` fixed sites drawn
uniformly on the sphere, both levels, noise ``--noise`` K; a **satellite** sounder of two channels
peaking at 850 and 500 hPa (Gaussian in ln p) in every 3° cell, noise ``--satellite_noise`` K,
with coherent clouds over ``--cloud_fraction`` of the globe. New noise and clouds per case.
Scores are area-weighted (cos φ): RMSE of the ensemble mean, fair CRPS and spread/skill over all
cases, and RMSE per level. The localisation radii were chosen on the last training time
(``--time 2``; the classical methods do not use the prior), not on the test time.

    accelerate launch --config_file training/configs/accelerate.yaml training/train_score.py \\
        --config training/configs/era5-sda.yaml
    OMP_NUM_THREADS=1 python benchmarks/era5_twin.py --pipeline runs/sda-era5/pipeline
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine, write

from slams_diffusers import SLAMSPipeline
from slams_diffusers.baselines import letkf, optimal_interpolation
from slams_diffusers.data.era5 import packaged_era5, twin_case
from slams_diffusers.data.observing import cloud_mask
from slams_diffusers.ensemble import ensemble_covariance
from slams_diffusers.metrics import area_weights, crps, rmse, spread_skill_ratio
from slams_diffusers.observations import Satellite, Stations, gaussian_weighting_functions

SETS = {"stations": ("stations",), "stations + satellite": ("stations", "satellite")}
METHODS = ("OI/3D-Var", "LETKF", "SDA")


def station_sites(count: int, latitude: torch.Tensor, longitude: torch.Tensor, seed: int):
    """``count`` sites uniform on the sphere, as fractional indices ``(y, x)`` of a regular grid
    with ascending ``latitude`` and ``longitude`` (degrees), ``(count, 2)``."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    lat = torch.rad2deg(torch.asin(2 * u[:, 0] - 1))
    lon = 360 * u[:, 1]
    dlat = float(latitude[1] - latitude[0])
    dlon = float(longitude[1] - longitude[0])
    y = ((lat - float(latitude[0])) / dlat).clamp(0, len(latitude) - 1)
    x = (lon - float(longitude[0])) / dlon
    return torch.stack([y, x], dim=-1)


def oi_members(background, observations, covariance, count: int, seed: int) -> torch.Tensor:
    """``count`` draws of the OI posterior by perturbing the background with ``B`` and the
    values with their noise."""
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(count):
        shift = covariance.sample(1, generator=generator, dtype=torch.float64)
        perturbed = [
            o.replace_values(
                o.values
                + o.noise_std
                * torch.randn(o.values.shape, generator=generator, dtype=torch.float64)  # fmt: skip
            )
            for o in observations
        ]
        draws.append(optimal_interpolation(background + shift, perturbed, covariance)[0])
    return torch.stack(draws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="runs/sda-era5/pipeline")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--cases", type=int, default=10, help="truth members 0 … N-1")
    parser.add_argument("--time", type=int, default=-1, help="time index (-1: the test time)")
    parser.add_argument("--stations", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.5, help="station error std (K)")
    parser.add_argument("--satellite_noise", type=float, default=0.3, help="K")
    parser.add_argument("--cloud_fraction", type=float, default=0.3)
    parser.add_argument("--localization", type=float, default=1.0, help="B, latitude rows")
    parser.add_argument("--letkf_radius", type=float, default=1.0, help="grid cells")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seed", type=int, default=0, help="of the station sites")
    parser.add_argument("--name", default="era5_twin")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = packaged_era5()
    latitude = torch.tensor(data.y.values.copy(), dtype=torch.float64)
    longitude = torch.tensor(data.x.values.copy(), dtype=torch.float64)
    weights = area_weights(latitude)
    grid = tuple(data.shape[-2:])
    sites = station_sites(args.stations, latitude, longitude, args.seed)
    channels = gaussian_weighting_functions(data.level.values, data.level.values).double()
    if "SDA" in args.methods:
        pipe = SLAMSPipeline.from_pretrained(args.pipeline)
        pipe.set_progress_bar_config(disable=True)

    estimates: dict[tuple[str, str], list[torch.Tensor]] = {}
    means: dict[tuple[str, str], list[torch.Tensor]] = {}
    seconds: dict[tuple[str, str], float] = {}
    truths = []
    for k in range(args.cases):
        case = twin_case(data, k, args.time)
        truths.append(case.truth)
        covariance = ensemble_covariance(
            case.members,
            localization_radius=args.localization,
            periodic="x",
            inflation=case.error_inflation,
            structure="zonal",
        )
        generator = torch.Generator().manual_seed(10_000 + k)
        modalities = {
            "stations": Stations.simulate(
                case.truth, sites, [0, 1], args.noise, periodic="x", generator=generator
            ),
            "satellite": Satellite.simulate(
                case.truth, channels, 1, args.satellite_noise, generator=generator,
                cloud_mask=cloud_mask(grid, args.cloud_fraction, 2.0, periodic="x",
                                      generator=generator),
            ),
        }  # fmt: skip
        estimates.setdefault(("background", "none"), []).append(case.members)
        for name in args.sets:
            observations = [modalities[m] for m in SETS[name]]
            for method in args.methods:
                tic = time.perf_counter()
                if method == "OI/3D-Var":
                    background = case.background[None]
                    means.setdefault((method, name), []).append(
                        optimal_interpolation(background, observations, covariance)[0]
                    )
                    members = oi_members(background, observations, covariance, args.members, k)
                elif method == "LETKF":
                    members = letkf(
                        case.members, observations, inflation=case.error_inflation,
                        localization_radius=args.letkf_radius, periodic="x",
                    )  # fmt: skip
                else:
                    members = pipe(
                        background=case.background[None].float(),
                        background_error_covariance=covariance,
                        observations=observations,
                        num_members=args.members,
                        num_inference_steps=args.steps,
                        output_type="pt",
                        generator=[
                            torch.Generator().manual_seed(1000 * k + m) for m in range(args.members)
                        ],
                    ).members[:, 0]
                seconds[(method, name)] = seconds.get((method, name), 0.0) + (
                    time.perf_counter() - tic
                )
                estimates.setdefault((method, name), []).append(members.double())
        print(f"case {k + 1}/{args.cases}", flush=True)

    truth = torch.stack(truths)  # (cases, levels, y, x)
    background_rmse = float(
        rmse(torch.stack(estimates[("background", "none")]).mean(1), truth, weights=weights)
    )
    rows, results = [], {}
    for (method, name), members in estimates.items():
        ensemble = torch.stack(members, dim=1)  # (members, cases, levels, y, x)
        mean = torch.stack(means[(method, name)]) if (method, name) in means else ensemble.mean(0)
        per_level = [
            float(rmse(mean[:, i], truth[:, i], weights=weights)) for i in range(truth.shape[1])
        ]
        scores = {
            "rmse": float(rmse(mean, truth, weights=weights)),
            "crps": float(crps(ensemble, truth, weights=weights)),
            "spread_skill": float(spread_skill_ratio(ensemble, truth, weights=weights)),
            "rmse_per_level": per_level,
            "members": ensemble.shape[0],
            "seconds_per_case": seconds.get((method, name), 0.0) / args.cases,
        }
        results[f"{method}, {name}"] = scores
        rows.append(
            {
                "method": method,
                "observations": name,
                "members": ensemble.shape[0],
                "RMSE": f"{scores['rmse']:.3f}",
                "÷ background": f"{scores['rmse'] / background_rmse:.3f}",
                "CRPS": f"{scores['crps']:.3f}",
                "spread/skill": f"{scores['spread_skill']:.2f}",
                "RMSE 850 / 500 hPa": " / ".join(f"{v:.3f}" for v in per_level),
                "s per case": f"{scores['seconds_per_case']:.1f}",
            }
        )
    when = str(data.time.values[args.time])[:13]
    payload = {
        "machine": machine("cpu"),
        "pipeline": args.pipeline if "SDA" in args.methods else None,
        "time": when,
        "cases": args.cases,
        "stations": args.stations,
        "station_noise": args.noise,
        "satellite_noise": args.satellite_noise,
        "cloud_fraction": args.cloud_fraction,
        "localization_rows": args.localization,
        "letkf_radius_cells": args.letkf_radius,
        "steps": args.steps,
        "results": results,
    }
    title = (
        f"ERA5 real-data twin at {when} UTC, 850/500 hPa on 61 × 120 (3°): {args.cases} cases "
        f"(each EDA member the truth once); {args.stations} stations (σ = {args.noise} K) and a "
        f"2-channel sounder (σ = {args.satellite_noise} K, {args.cloud_fraction:.0%} cloud); "
        "area-weighted [K]"
    )
    write(args.name, payload, list(rows[0]), rows, title)


if __name__ == "__main__":
    main()
