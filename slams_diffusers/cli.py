"""The ``slams`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: The embedded pretrained pipeline of a source checkout (``pipelines/`` next to the package).
EMBEDDED_PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "slams-qg-tiny"


def _selftest(args: argparse.Namespace) -> int:
    """Assimilate a linear-Gaussian problem and compare with its exact Kalman posterior."""
    from .testing import ar1_trajectory_problem, gaussian_field_problem

    problems = {"field": gaussian_field_problem, "trajectory": ar1_trajectory_problem}
    failed = False
    for name, build in problems.items():
        problem = build(seed=args.seed)
        for covariance in ("tweedie", "diagonal"):
            start = time.perf_counter()
            mean_error, variance_ratio = problem.errors(
                covariance, args.members, args.steps, seed=args.seed
            )
            ok = mean_error < 0.1 and abs(variance_ratio - 1) < 0.1
            failed |= covariance == "tweedie" and not ok
            print(
                json.dumps(
                    {
                        "problem": name,
                        "likelihood_covariance": covariance,
                        "members": args.members,
                        "steps": args.steps,
                        "mean_error_in_posterior_std": round(mean_error, 4),
                        "variance_ratio": round(variance_ratio, 4),
                        "within_tolerance": ok,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
            )
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    """Simulate a fresh testbed window, assimilate it with a pretrained pipeline, score it."""
    import torch

    from .data.qg import simulate_dataset
    from .data.testbed import assimilation_cases
    from .metrics import ensemble_spread, rmse
    from .pipelines import SLAMSPipeline

    start = time.perf_counter()
    lead_snapshots = round(args.lead_hours / 6)
    dataset = simulate_dataset(
        trajectories=1,
        steps=lead_snapshots + 5,
        seed=args.seed + 10_000,  # not a trajectory of the default dataset
        spinup=args.spinup_steps,
        splits=(0.0, 0.0, 1.0),
        store_pv="all",
    )
    (case,) = assimilation_cases(dataset, "test", 5, 1, lead_hours=args.lead_hours, seed=args.seed)
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=not args.progress)
    out = pipe(
        background=case.background,
        observations=case.observations,
        num_members=args.members,
        num_inference_steps=args.steps,
        background_error_std=args.background_error_std,
        generator=[torch.Generator().manual_seed(args.seed + m) for m in range(args.members)],
        output_type="pt",
    )
    analysis = float(rmse(out.members.mean(0), case.truth))
    background = float(rmse(case.background, case.truth))
    print(
        json.dumps(
            {
                "pipeline": str(args.pipeline),
                "observations": len(case.observations),
                "members": args.members,
                "steps": args.steps,
                "background_rmse_K": round(background, 3),
                "analysis_rmse_K": round(analysis, 3),
                "spread_K": round(float(ensemble_spread(out.members)), 3),
                "finite": bool(torch.isfinite(out.members).all()),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0 if analysis < background else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slams", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    selftest = commands.add_parser(
        "selftest",
        help="assimilate linear-Gaussian problems and compare with the exact posterior",
    )
    selftest.add_argument("--members", type=int, default=512)
    selftest.add_argument("--steps", type=int, default=256)
    selftest.add_argument("--seed", type=int, default=0)
    selftest.set_defaults(run=_selftest)
    demo = commands.add_parser(
        "demo",
        help="assimilate a freshly simulated testbed window with a pretrained pipeline "
        "(exit status 1 if the analysis is not better than the background)",
    )
    demo.add_argument("--pipeline", default=str(EMBEDDED_PIPELINE), help="folder or Hub id")
    demo.add_argument("--members", type=int, default=8)
    demo.add_argument("--steps", type=int, default=32)
    demo.add_argument("--lead-hours", type=float, default=24.0)
    demo.add_argument(
        "--background-error-std",
        type=float,
        default=0.6,
        help="K; about half the testbed's 24-h background rmse, the inflation chosen on "
        "validation cases for slams-qg-tiny (see its model card)",
    )
    demo.add_argument("--spinup-steps", type=int, default=4800, help="model steps (100 days)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--progress", action="store_true")
    demo.set_defaults(run=_demo)
    simulate = commands.add_parser("simulate", help="generate a testbed dataset")
    testbeds = simulate.add_subparsers(dest="testbed", required=True)
    qg = testbeds.add_parser(
        "qg", help="multi-layer quasi-geostrophic atmosphere: t(trajectory, time, level, y, x)"
    )
    from .data.qg import add_simulate_arguments, simulate_main

    add_simulate_arguments(qg)
    qg.set_defaults(run=simulate_main)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
