"""Fit a pipeline's spread inflation ``ρ_l`` on validation windows of a testbed store and save it
in the pipeline's ``model_index.json`` (docs/method.md §Spread inflation).

The pipeline assimilates ``--windows`` windows of the validation split (the default observing
network, ``B`` estimated from other validation pairs), uninflated; ``ρ_l`` makes the
finite-ensemble spread-skill ratio of each level one over those windows
(:func:`slams_diffusers.inflation.fit_spread_inflation`). No test window is used.

    OMP_NUM_THREADS=1 python training/fit_spread_inflation.py \
        --pipeline pipelines/slams-qg-tiny --data data/qg-default.zarr --windows 6

``--dry_run`` prints the factors without writing them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import xarray as xr

from slams_diffusers import SLAMSPipeline
from slams_diffusers.data.testbed import assimilation_cases, validation_covariance
from slams_diffusers.inflation import fit_spread_inflation
from slams_diffusers.metrics import spread_skill_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", required=True, help="a saved SLAMSPipeline folder")
    parser.add_argument("--data", required=True, help="a testbed store with a validation split")
    parser.add_argument("--windows", type=int, default=6, help="validation windows to fit on")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2, help="validation windows and members")
    parser.add_argument("--dry_run", action="store_true", help="print, do not save")
    args = parser.parse_args()
    if args.windows < 1 or args.members < 2:
        parser.error("--windows must be >= 1 and --members >= 2")

    dataset = xr.open_zarr(args.data)
    covariance = validation_covariance(dataset)
    cases = assimilation_cases(dataset, "val", 5, 2, seed=args.seed)[: args.windows]
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    ensembles, truths = [], []
    for index, case in enumerate(cases):
        generators = [
            torch.Generator().manual_seed(args.seed * 100_000 + index * 1000 + m)
            for m in range(args.members)
        ]
        members = pipe(
            background=case.background,
            observations=case.observations,
            background_error_covariance=covariance,
            num_members=args.members,
            num_inference_steps=args.steps,
            spread_inflation=1.0,
            generator=generators,
            output_type="pt",
        ).members
        ensembles.append(members)
        truths.append(case.truth)
        ratio = float(spread_skill_ratio(members, case.truth))
        print(f"validation window {index}: spread/skill {ratio:.3f}", flush=True)
    factors = [round(f, 3) for f in fit_spread_inflation(ensembles, truths, level_dim=1)]
    print(json.dumps({"spread_inflation": factors}))
    if not args.dry_run:
        index = Path(args.pipeline) / "model_index.json"
        config = json.loads(index.read_text())
        config["spread_inflation"] = factors
        index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        print(f"saved in {index}")


if __name__ == "__main__":
    main()
