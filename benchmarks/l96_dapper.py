"""DAPPER's ensemble filters on DAPPER's own Lorenz-96 twin: a cross-check of the classical rows of
``benchmarks/l96.py`` (issue 17) by an independent implementation.

DAPPER's ``mods.Lorenz96.sakov2008`` twin (Sakov & Oke 2008): 40 variables, F = 8, RK4 with
dt = 0.05, every variable observed with noise N(0, 1) every 0.05, here 1000 burn-in + 4000 scored
cycles as in ``results/l96_classical.md``. The filters use the settings ``l96.py`` tuned for ours
(``results/l96_classical.md``): ETKF (DAPPER's ``EnKF("Sqrt")``) N = 20, ρ = 1.04; stochastic
EnKF (``EnKF("PertObs")``) N = 40, ρ = 1.1; LETKF N = 40, ρ = 1.02 and a Gaspari–Cohn half-width
of 12 cells, which is DAPPER's ``loc_rad = 12 / 1.82`` (DAPPER scales its radius by sqrt(10/3)
so that the taper is exp(-1/2) at ``loc_rad``). DAPPER's ``infl`` multiplies the anomalies, ours
the covariance, so DAPPER gets ``infl = sqrt(ρ)``; it inflates the analysis, ours the forecast,
which over a cycle is the same factor at another place. Our filters differ in the integration step
(dt = 0.01, five steps a cycle), the truths and the seeds, so the numbers should agree to within
their seed-to-seed spread, not exactly.

DAPPER pins versions of its own, so it runs in an environment of its own, given by ``--python``:

    python -m venv /tmp/dapper && /tmp/dapper/bin/pip install dapper==1.7.1
    python benchmarks/l96_dapper.py --python /tmp/dapper/bin/python   # ~3 min, one thread
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

from _common import machine, write

#: Run in DAPPER's environment: argv = seeds; prints one JSON row per filter and seed.
DAPPER_PROGRAM = """
import json, sys, time
import dapper.da_methods as da
from dapper import set_seed
from dapper.mods.Lorenz96.sakov2008 import HMM as twin
from dapper.tools.chronos import Chronology

FILTERS = {
    "ETKF N=20": lambda: da.EnKF("Sqrt", N=20, infl=1.04**0.5, rot=True),
    "EnKF N=40": lambda: da.EnKF("PertObs", N=40, infl=1.1**0.5),
    "LETKF N=40": lambda: da.LETKF(N=40, infl=1.02**0.5, rot=True, loc_rad=12 / 1.82),
}
for seed in map(int, sys.argv[1:]):
    for name, make in FILTERS.items():
        hmm = twin.copy()
        hmm.tseq = Chronology(dt=0.05, dko=1, Ko=5000, BurnIn=50.0)  # 1000 + 4000 cycles
        set_seed(seed)
        truth, observations = hmm.simulate()
        method = make()
        start = time.perf_counter()
        method.assimilate(hmm, truth, observations, liveplots=False)
        seconds = time.perf_counter() - start
        method.stats.average_in_time()
        scores = method.avrgs
        row = {"method": name, "seed": seed, "rmse": float(scores.err.rms.a.val),
               "spread": float(scores.spread.rms.a.val), "ms_per_cycle": 1000 * seconds / 5000}
        print(json.dumps(row), flush=True)
"""

#: The rows of ``results/l96_classical.md`` (this project's filters) for the same settings.
OURS = {"ETKF N=20": 0.186, "EnKF N=40": 0.216, "LETKF N=40": 0.184}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="a Python with dapper installed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="DAPPER refuses 0")
    parser.add_argument("--name", default="l96_dapper")
    args = parser.parse_args()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    done = subprocess.run(
        [args.python, "-c", DAPPER_PROGRAM, *map(str, args.seeds)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if done.returncode:
        raise SystemExit(f"DAPPER failed ({args.python}):\n{done.stderr[-2000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    version = subprocess.run(
        [args.python, "-c", "import dapper; print(dapper.__version__)"],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    ).stdout.strip()
    rows = []
    for name, ours in OURS.items():
        runs = [r for r in results if r["method"] == name]
        rmse = [r["rmse"] for r in runs]
        rows.append(
            {
                "filter": name,
                "DAPPER RMSE per seed": ", ".join(f"{x:.3f}" for x in rmse),
                "DAPPER RMSE mean": f"{sum(rmse) / len(rmse):.3f}",
                "DAPPER spread mean": f"{sum(r['spread'] for r in runs) / len(runs):.3f}",
                "ours (l96_classical.md)": f"{ours:.3f}",
                "DAPPER ms/cycle": f"{sum(r['ms_per_cycle'] for r in runs) / len(runs):.1f}",
            }
        )
    write(
        args.name,
        {"machine": machine("cpu"), "dapper": version, "seeds": args.seeds, "results": results},
        list(rows[0]),
        rows,
        f"DAPPER {version} on its Lorenz-96 twin (sakov2008; 1000 + 4000 cycles, seeds "
        f"{', '.join(map(str, args.seeds))}) against this project's filters",
    )


if __name__ == "__main__":
    main()
