"""Default values shared by the library and the ``slams`` command line, in a module that imports
nothing heavy: the command line builds its parser (and answers ``--help``) from them before it
imports torch."""

__all__ = ["DEFAULT_STEPS", "DEFAULT_TRAJECTORIES", "INTERVAL_HOURS", "QC_THRESHOLD", "SPINUP_DAYS"]

QC_THRESHOLD = 5.0
"""Default ``k`` of the check: ``|d| > k σ_d`` is rejected. Chosen on 24 validation windows of the
testbed (``benchmarks/qc.py``, ``results/qc.md``): the smallest of ``k`` = 3…7 that rejects none
of their 99,000 correct values (the largest ``|d|/σ_d`` was 4.91; ``k`` = 4 rejects 0.009 %,
``k`` = 3 0.33 %), while every gross error of 10 σ_d is rejected and +15 K at a 0.5 K station
(30 σ_y) 99.6 % of the time. Larger ``k`` lets more of the latter through (6: 97 %)."""

#: The QG testbed's dataset (``slams simulate qg``): days of spin-up discarded, hours between
#: snapshots, trajectories and snapshots per trajectory.
SPINUP_DAYS = 100.0
INTERVAL_HOURS = 6.0
DEFAULT_TRAJECTORIES = 32
DEFAULT_STEPS = 128
