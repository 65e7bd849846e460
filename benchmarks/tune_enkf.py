"""Tune the ensemble Kalman baselines (stochastic EnKF, LETKF) on validation windows of the testbed.

For every method, Gaspari–Cohn half-width ``c`` (grid cells) and multiplicative inflation ``ρ`` of
a small grid, the QG ensemble (N members, perturbed like the testbed's backgrounds and forecast
to the window) is cycled through each validation window with the default observations
(``slams_diffusers.baselines.qg_ensemble``). The score is the fair CRPS of the analysis members
against the truth over all steps, levels and cells, averaged over windows: a proper score, so it
rewards a small error and a spread that matches it together (RMSE alone prefers over-dispersed
ensembles when the error barely changes with inflation). The chosen values go to
``results/enkf_tuning.{json,md}`` for use on the test windows; the RMSE-best ones are recorded too.

    python benchmarks/tune_enkf.py            # 6 windows, 4 × 3 grid per method: ~12 min, 1 thread
    python benchmarks/tune_enkf.py --quick    # 1 window, 2 × 2 grid: ~1 min (enkf_tuning_quick)

Runs reproduce ``qg_ensemble_filter(dataset, case, seed=…)`` exactly (same generator); the prior
forecast of each window is computed once and shared by the grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import xarray as xr
from _common import RESULTS, machine, write

from slams_diffusers.baselines.qg_ensemble import case_generator, cycle_ensemble, forecast_ensemble
from slams_diffusers.data.qg import QGConfig, QGModel
from slams_diffusers.data.testbed import assimilation_cases
from slams_diffusers.metrics import crps, ensemble_spread, rmse, spread_skill_ratio

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("letkf", "enkf")
GRID = {"radius": (2.0, 4.0, 8.0, 12.0), "inflation": (1.0, 1.1, 1.25)}
QUICK_GRID = {"radius": (3.0, 8.0), "inflation": (1.0, 1.2)}


def scores(members: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """``members`` ``(N, T, levels, y, x)``: RMSE of the mean (all steps, last step, per level), the
    fair CRPS, the spread and the spread–skill ratio ``sqrt((N+1)/N) spread / RMSE``."""
    mean = members.mean(dim=0)
    return {
        "crps": float(crps(members, truth)),
        "rmse": float(rmse(mean, truth)),
        "rmse_last": float(rmse(mean[-1], truth[-1])),
        "spread": float(ensemble_spread(members)),
        "spread_skill": float(spread_skill_ratio(members, truth)),
        "rmse_per_level": rmse(mean, truth, dims=(0, 2, 3)).tolist(),
    }


def average(records: list[dict]) -> dict:
    keys = ("crps", "rmse", "rmse_last", "spread", "spread_skill", "seconds")
    out = {k: sum(r[k] for r in records) / len(records) for k in keys}
    levels = len(records[0]["rmse_per_level"])
    out["rmse_per_level"] = [
        sum(r["rmse_per_level"][i] for r in records) / len(records) for i in range(levels)
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data/qg-default.zarr"))
    parser.add_argument("--quick", action="store_true", help="1 window, 2 × 2 grid")
    parser.add_argument("--windows", type=int, default=2, help="validation windows per trajectory")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = xr.open_zarr(args.data)
    cases = assimilation_cases(dataset, "val", cases_per_trajectory=args.windows)
    grid = QUICK_GRID if args.quick else GRID
    if args.quick:
        cases = cases[:1]
    config = QGConfig(**json.loads(dataset.attrs["qg_config"]))
    model = QGModel(config)
    interval = int(dataset.attrs["interval_steps"])
    cell_km = config.L / config.nx / 1e3
    start_time = time.perf_counter()

    priors, reference = [], []
    for case in cases:
        generator = case_generator(args.seed, case.trajectory, case.start)
        lead = round(case.lead_hours * 3600 / config.dt)
        tic = time.perf_counter()
        prior = forecast_ensemble(
            model, case.initial_pv, lead, case.perturbation_std, args.members, generator
        )
        priors.append((prior, generator.get_state()))
        free = cycle_ensemble(model, prior, [], case.truth.shape[0], interval)  # no analysis
        reference.append(
            {
                "trajectory": case.trajectory,
                "start": case.start,
                "background_rmse": float(rmse(case.background, case.truth)),
                "background_rmse_per_level": rmse(
                    case.background, case.truth, dims=(0, 2, 3)
                ).tolist(),
                "free_ensemble": {
                    **scores(free.float(), case.truth),
                    "seconds": time.perf_counter() - tic,
                },
            }
        )
        print(
            f"window {case.trajectory}/{case.start}: background "
            f"{reference[-1]['background_rmse']:.3f} K"
        )

    runs = []
    for method, radius, inflation in itertools.product(METHODS, grid["radius"], grid["inflation"]):
        records = []
        for case, (prior, state) in zip(cases, priors, strict=True):
            generator = torch.Generator()
            generator.set_state(state)
            tic = time.perf_counter()
            members = cycle_ensemble(
                model,
                prior,
                case.observations,
                case.truth.shape[0],
                interval,
                method=method,
                inflation=inflation,
                localization_radius=radius,
                generator=generator,
            ).float()
            records.append({**scores(members, case.truth), "seconds": time.perf_counter() - tic})
        run = {"method": method, "localization_radius": radius, "inflation": inflation}
        run.update(average(records))
        run["windows"] = records
        runs.append(run)
        print(
            f"{method} c={radius:g} rho={inflation:g}: crps {run['crps']:.4f} "
            f"rmse {run['rmse']:.3f} last {run['rmse_last']:.3f} "
            f"spread/skill {run['spread_skill']:.2f} ({run['seconds']:.1f} s/window)"
        )

    def summary_of(run: dict) -> dict:
        return {
            "localization_radius": run["localization_radius"],
            "localization_radius_km": run["localization_radius"] * cell_km,
            "inflation": run["inflation"],
            "members": args.members,
            **{k: run[k] for k in ("crps", "rmse", "rmse_last", "spread_skill", "rmse_per_level")},
        }

    chosen, best_rmse = {}, {}
    for method in METHODS:
        candidates = [r for r in runs if r["method"] == method]
        chosen[method] = summary_of(min(candidates, key=lambda r: r["crps"]))
        best_rmse[method] = summary_of(min(candidates, key=lambda r: r["rmse"]))
    background = sum(r["background_rmse"] for r in reference) / len(reference)
    free = sum(r["free_ensemble"]["rmse"] for r in reference) / len(reference)
    payload = {
        "description": (
            "Grid search of the Gaspari-Cohn half-width (grid cells; cut-off at twice it) and the "
            "multiplicative covariance inflation of the stochastic EnKF and the LETKF, cycled "
            "through validation windows of the testbed with the default observations; chosen by "
            "the fair CRPS (K) of the analysis members over all steps, levels and cells, averaged "
            "over windows (best_rmse: chosen by the analysis-mean RMSE instead)."
        ),
        "machine": machine("cpu"),
        "settings": {
            "data": str(args.data),
            "split": "val",
            "windows": len(cases),
            "window_steps": int(cases[0].truth.shape[0]),
            "lead_hours": cases[0].lead_hours,
            "perturbation_std": cases[0].perturbation_std,
            "members": args.members,
            "seed": args.seed,
            "grid": grid,
            "grid_cell_km": cell_km,
            "quick": args.quick,
        },
        "wall_seconds": time.perf_counter() - start_time,
        "chosen": chosen,
        "best_rmse": best_rmse,
        "reference": reference,
        "runs": runs,
    }
    rows = [
        {
            "method": r["method"],
            "c (cells)": f"{r['localization_radius']:g}",
            "c (km)": f"{r['localization_radius'] * cell_km:.0f}",
            "inflation": f"{r['inflation']:g}",
            "CRPS [K]": f"{r['crps']:.4f}",
            "RMSE all steps [K]": f"{r['rmse']:.3f}",
            "RMSE last step [K]": f"{r['rmse_last']:.3f}",
            "spread-skill": f"{r['spread_skill']:.2f}",
            "s/window": f"{r['seconds']:.1f}",
            "chosen": "**yes**"
            if chosen[r["method"]]["localization_radius"] == r["localization_radius"]
            and chosen[r["method"]]["inflation"] == r["inflation"]
            else "",
        }
        for r in runs
    ]
    name = "enkf_tuning_quick" if args.quick else "enkf_tuning"
    title = (
        f"EnKF / LETKF tuning on {len(cases)} validation window(s) (N = {args.members}, "
        f"{cases[0].truth.shape[0]} steps of 6 h, default observations)"
    )
    write(name, payload, list(rows[0]), rows, title)
    summary = [
        "",
        f"Background RMSE {background:.3f} K; the ensemble mean without analysis "
        f"{free:.3f} K. Chosen (lowest CRPS over all steps):",
        "",
    ]
    for method, c in chosen.items():
        summary.append(
            f"- {method}: c = {c['localization_radius']:g} cells "
            f"({c['localization_radius_km']:.0f} km), inflation {c['inflation']:g}: "
            f"CRPS {c['crps']:.4f} K, RMSE {c['rmse']:.3f} K (last step {c['rmse_last']:.3f} K), "
            f"spread-skill {c['spread_skill']:.2f}"
        )
    summary.append("\nLowest RMSE instead (`best_rmse` in the JSON):\n")
    for method, c in best_rmse.items():
        summary.append(
            f"- {method}: c = {c['localization_radius']:g} cells, inflation {c['inflation']:g}: "
            f"RMSE {c['rmse']:.3f} K, CRPS {c['crps']:.4f} K, spread-skill {c['spread_skill']:.2f}"
        )
    summary.append(f"\nWall time {payload['wall_seconds']:.0f} s.\n")
    with open(RESULTS / f"{name}.md", "a") as f:
        f.write("\n".join(summary))
    print("\n".join(summary))


if __name__ == "__main__":
    main()
