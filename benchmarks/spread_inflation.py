"""Is the ensemble calibrated? Spread-skill, CRPS and RMSE of a pipeline on fresh held-out testbed
windows, uninflated and with the spread inflation fitted on validation windows and saved in the
pipeline's config (``training/fit_spread_inflation.py``; docs/method.md §Spread inflation), next
to the background and OI/3D-Var with the same ``B``.

For each window (``assimilation_cases(dataset, "test", 5, 2, seed=--seed)``, a seed no choice was
made on) and observing network (the default one and the harder one of ``trustworthy.py``), the
pipeline assimilates the background alone and with both modalities, uninflated (``ρ = 1``); the
inflated ensemble is the same members widened about their mean (inflation is a deterministic
post-processing, so both rows come from one run). 16 members × 32 steps, spectral ``B`` from the
validation split; nothing tuned on test.

    OMP_NUM_THREADS=1 python benchmarks/spread_inflation.py --pipeline pipelines/slams-qg-tiny \
        --windows 3

Writes ``results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_window_arguments, fresh_windows, machine, write
from trustworthy import assimilate, harder_observations

from slams_diffusers import SLAMSPipeline
from slams_diffusers.baselines import optimal_interpolation
from slams_diffusers.inflation import inflate_spread
from slams_diffusers.metrics import crps, rmse, spread_skill_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, windows=3, seed=23, name="spread_inflation")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset, covariance, cases = fresh_windows(args)
    pressures = [float(p) for p in dataset["level"].values]
    levels = [f"{p:g}" for p in pressures]
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    fitted = pipe.config.get("spread_inflation")
    if fitted is None:
        parser.error(f"{args.pipeline} has no fitted spread_inflation in its config")
    generator = torch.Generator().manual_seed(args.seed)

    records, rows = [], []
    for index, case in enumerate(cases):
        background_per_level = rmse(case.background, case.truth, dims=(0, 2, 3)).tolist()
        for network in ("default", "harder"):
            observations = case.observations
            if network == "harder":
                observations = harder_observations(case.truth, pressures, generator)
            oi = optimal_interpolation(case.background, observations, covariance)
            for label, chosen in (("background only", []), ("+ both", observations)):
                members, seconds = assimilate(
                    pipe,
                    case.background,
                    chosen,
                    covariance,
                    args.members,
                    args.steps,
                    index,
                    spread_inflation=1.0,
                )
                for variant, ensemble in (
                    ("uninflated", members),
                    ("inflated", inflate_spread(members, fitted, level_dim=2)),
                ):
                    mean = ensemble.mean(0)
                    record = {
                        "window": index,
                        "network": network,
                        "observations": label,
                        "variant": variant,
                        "rmse": float(rmse(mean, case.truth)),
                        "per_level": rmse(mean, case.truth, dims=(0, 2, 3)).tolist(),
                        "background_per_level": background_per_level,
                        "oi_rmse": float(rmse(oi, case.truth)) if chosen else None,
                        "crps": float(crps(ensemble, case.truth)),
                        "spread_skill": float(spread_skill_ratio(ensemble, case.truth)),
                        "spread_skill_per_level": spread_skill_ratio(
                            ensemble, case.truth, dims=(0, 2, 3)
                        ).tolist(),
                        "seconds": seconds,
                    }
                    records.append(record)
                    rows.append(
                        {
                            "window": index,
                            "network": network,
                            "observations": label,
                            "ρ": "fitted" if variant == "inflated" else "1",
                            "RMSE": f"{record['rmse']:.3f}",
                            "÷ OI": f"{record['rmse'] / record['oi_rmse']:.2f}" if chosen else "",
                            "CRPS": f"{record['crps']:.3f}",
                            "spread/skill": f"{record['spread_skill']:.2f}",
                            **{
                                f"{p} hPa": f"{v:.2f}"
                                for p, v in zip(
                                    levels, record["spread_skill_per_level"], strict=True
                                )
                            },
                        }
                    )
                print(rows[-1], flush=True)

    summary = {}
    for variant in ("uninflated", "inflated"):
        chosen = [r for r in records if r["variant"] == variant]
        ratios = torch.tensor([r["spread_skill"] for r in chosen])
        summary[variant] = {
            "spread_skill_mean": float(ratios.mean()),
            "spread_skill_min": float(ratios.min()),
            "spread_skill_max": float(ratios.max()),
            "crps_mean": float(torch.tensor([r["crps"] for r in chosen]).mean()),
            "rmse_mean": float(torch.tensor([r["rmse"] for r in chosen]).mean()),
        }
    payload = {
        "machine": machine("cpu"),
        "pipeline": args.pipeline,
        "spread_inflation": fitted,
        "test_seed": args.seed,
        "windows": len(cases),
        "members": args.members,
        "steps": args.steps,
        "summary": summary,
        "records": records,
        "minutes": (time.perf_counter() - started) / 60,
    }
    columns = list(rows[0])
    write(
        args.name,
        payload,
        columns,
        rows,
        f"Spread-skill uninflated and with the validation-fitted spread inflation ρ = {fitted} "
        f"({len(cases)} fresh test windows, seed {args.seed}; {args.members} members × "
        f"{args.steps} steps; spectral B from validation; spread/skill per level in the last "
        "columns)",
    )
    print(summary)


if __name__ == "__main__":
    main()
