"""LETKF and SLAMS cycled side by side on the QG testbed, with the QG model as the forecast model
(issue 17, item 4; docs/method.md §Cycling).

A case is a held-out trajectory of ``--data`` (:func:`~slams_diffusers.data.testbed.
assimilation_cases`, ``--cycles`` snapshots 6 h apart, the default stations and satellite at every
snapshot). Both filters start from the same PV ensemble, made as the testbed makes its backgrounds
(the true PV 24 h before the first cycle perturbed by 1.5 K, ``--members`` perturbations of that,
forecast 24 h: :func:`~slams_diffusers.baselines.qg_ensemble.forecast_ensemble`), and cycle it
with the QG model between snapshots:

- LETKF: PV members updated through ``H = A ∘ T(q)`` (``T`` the temperature diagnostic), ρ and
  the Gaspari–Cohn half-width as tuned on validation windows (``results/enkf_tuning.md``);
- SLAMS: :class:`~slams_diffusers.SLAMSFilter` on temperature, ``B`` the forecast ensemble's
  spectral (homogeneous) covariance times ``--inflations``, no spread inflation (the filter's
  default), the PV of each analysis member made by ``QGModel.with_temperature`` from its
  forecast member (the barotropic flow kept).

Scores per cycle against the true temperature, averaged over cycles and cases: RMSE of the
analysis mean, CRPS, spread / RMSE, the forecast (background) RMSE, and the seconds per cycle on
one CPU thread. "free forecast" is the case's background run through the window without any
assimilation.

    python benchmarks/qg_cycling.py                        # results/qg_cycling, ~15 min
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import xarray as xr
from _common import ROOT, machine, write

from slams_diffusers import SLAMSFilter, SLAMSPipeline
from slams_diffusers.baselines.qg_ensemble import (
    case_generator,
    forecast_ensemble,
    qg_ensemble_filter,
)
from slams_diffusers.data.qg import QGConfig, QGModel
from slams_diffusers.data.testbed import assimilation_cases
from slams_diffusers.forecast import StateMap
from slams_diffusers.metrics import crps, rmse, spread_skill_ratio

LETKF = {"inflation": 1.1, "localization_radius": 4.0}  # results/enkf_tuning.md


def scores(members: torch.Tensor, forecasts: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-cycle scores of analysis ``members`` ``(N, T, levels, ny, nx)`` averaged over cycles."""
    cycles = truth.shape[0]

    def mean_over_cycles(f) -> float:
        return sum(float(f(t)) for t in range(cycles)) / cycles

    out = {
        "rmse": mean_over_cycles(lambda t: rmse(members[:, t].mean(0), truth[t])),
        "rmse_last": float(rmse(members[:, -1].mean(0), truth[-1])),
        "forecast_rmse": mean_over_cycles(lambda t: rmse(forecasts[:, t].mean(0), truth[t])),
    }
    if members.shape[0] > 1:
        out["crps"] = mean_over_cycles(lambda t: crps(members[:, t], truth[t]))
        out["spread_skill"] = mean_over_cycles(
            lambda t: spread_skill_ratio(members[:, t], truth[t])
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/qg-default.zarr")
    parser.add_argument("--pipelines", nargs="+", default=["pipelines/sda-qg-tiny"])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--inflations", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--name", default="qg_cycling")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = xr.open_zarr(ROOT / args.data)
    cases = assimilation_cases(dataset, "test", args.cycles, 1, seed=args.seed)[: args.cases]
    config = QGConfig(**json.loads(dataset.attrs["qg_config"]))
    interval = int(dataset.attrs["interval_steps"])
    model = QGModel(config)
    state_map = StateMap(model.temperature, model.with_temperature)
    results: dict[str, list[dict]] = {}

    def record(name: str, members, forecasts, truth, seconds: float) -> None:
        row = scores(members, forecasts, truth) | {"s_per_cycle": seconds / truth.shape[0]}
        results.setdefault(name, []).append(row)
        print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)

    for case in cases:
        truth = case.truth
        free = case.background[None]
        record("free forecast", free, free, truth, 0.0)
        start = time.perf_counter()
        analysis, forecasts = qg_ensemble_filter(
            dataset, case, members=args.members, seed=0, return_forecasts=True, **LETKF
        )
        record(f"LETKF N={args.members}", analysis, forecasts, truth, time.perf_counter() - start)
        lead_steps = round(float(case.lead_hours) * 3600 / config.dt)
        prior = forecast_ensemble(
            model,
            case.initial_pv,
            lead_steps,
            case.perturbation_std,
            args.members,
            case_generator(0, case.trajectory, case.start),
        )
        observations = [
            [o for o in case.observations if o.time_index == t] for t in range(args.cycles)
        ]
        for path in args.pipelines:
            pipe = SLAMSPipeline.from_pretrained(ROOT / path)
            pipe.set_progress_bar_config(disable=True)
            for inflation in args.inflations:
                start = time.perf_counter()
                cycling = SLAMSFilter(
                    pipe,
                    model.run,
                    prior,
                    steps_per_cycle=interval,
                    state_map=state_map,
                    covariance_inflation=inflation,
                    num_inference_steps=args.steps,
                    seed=0,
                )
                outputs = list(cycling.cycles(observations))
                seconds = time.perf_counter() - start
                members = torch.stack([o.analysis for o in outputs], dim=1).float()
                forecasts = torch.stack([o.forecast for o in outputs], dim=1).float()
                name = f"SLAMS {path.rstrip('/').split('/')[-1]} ρ={inflation}"
                record(name, members, forecasts, truth, seconds)

    columns = ["method", "RMSE", "RMSE last", "CRPS", "spread/RMSE", "forecast RMSE", "s/cycle"]
    rows = []
    for name, per_case in results.items():

        def mean(key: str, per_case=per_case) -> float:
            return sum(r.get(key, float("nan")) for r in per_case) / len(per_case)

        rows.append(
            {
                "method": name,
                "RMSE": f"{mean('rmse'):.3f}",
                "RMSE last": f"{mean('rmse_last'):.3f}",
                "CRPS": f"{mean('crps'):.3f}",
                "spread/RMSE": f"{mean('spread_skill'):.2f}",
                "forecast RMSE": f"{mean('forecast_rmse'):.3f}",
                "s/cycle": f"{mean('s_per_cycle'):.1f}",
            }
        )
    write(
        args.name,
        {"machine": machine("cpu"), "args": vars(args), "letkf": LETKF, "results": results},
        columns,
        rows,
        f"QG testbed cycled: LETKF and SLAMS with the QG model ({len(cases)} test trajectories, "
        f"{args.cycles} cycles of 6 h, {args.members} members, {args.steps} steps)",
    )


if __name__ == "__main__":
    main()
