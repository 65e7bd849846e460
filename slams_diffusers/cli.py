"""The ``slams`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time


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
