"""Sampler against exact linear-Gaussian posteriors: tweedie vs diagonal, with/without corrector.

OMP_NUM_THREADS=1 python benchmarks/exactness.py [--members 512 --steps 256]
"""

from __future__ import annotations

import argparse
import time

from _common import machine, write

from slams_diffusers.testing import ar1_trajectory_problem, gaussian_field_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=512)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = {
        "field 1x8x8": gaussian_field_problem(seed=args.seed),
        "AR(1) T=9, window 5": ar1_trajectory_problem(seed=args.seed),
    }
    rows = []
    for name, problem in problems.items():
        for covariance in ("tweedie", "diagonal"):
            for corrector_steps in (0, 1):
                start = time.perf_counter()
                mean_error, variance_ratio = problem.errors(
                    covariance,
                    args.members,
                    args.steps,
                    seed=args.seed,
                    corrector_steps=corrector_steps,
                )
                rows.append(
                    {
                        "problem": name,
                        "likelihood_covariance": covariance,
                        "corrector_steps": corrector_steps,
                        "mean error / posterior std": round(mean_error, 3),
                        "variance ratio": round(variance_ratio, 3),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                print(rows[-1], flush=True)
    write(
        "exactness",
        {"machine": machine("cpu"), "members": args.members, "steps": args.steps, "rows": rows},
        list(rows[0]),
        rows,
        f"Exact linear-Gaussian posteriors ({args.members} members, {args.steps} steps, "
        "cosine schedule, tau 0.5, gamma 1e-2, 3 CG iterations)",
    )


if __name__ == "__main__":
    main()
