"""Quiet logs: a default assimilation on well-formed input emits no warning (Python warnings of
any category, deprecations included, or log lines), so that the warnings that do appear are about
the user's input."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_RUN = """
import torch
from slams_diffusers import SLAMSPipeline
from slams_diffusers.data.qg import simulate_dataset
from slams_diffusers.data.testbed import assimilation_cases, background_error_std

pipe = SLAMSPipeline.from_pretrained("slams-qg-tiny")
pipe.set_progress_bar_config(disable=True)
run = simulate_dataset(1, 12, seed=7, spinup=100, splits=(0, 0, 1), store_pv="all")
(case,) = assimilation_cases(run, "test", window=5, cases_per_trajectory=1, seed=1)
out = pipe(
    background=case.background,
    observations=case.observations,
    background_error_std=background_error_std([case]).reshape(-1).tolist(),
    background_error_length_scale=4.0,
    num_members=2,
    num_inference_steps=4,
    generator=[torch.Generator().manual_seed(m) for m in range(2)],
)
assert torch.isfinite(torch.as_tensor(out.mean.values)).all()
"""
QUIET_LOGS = "assert out.quality_control.num_rejected == 0\n"


def test_a_default_assimilation_is_quiet(capfd, caplog):
    """The background error is declared as it is (its per-level rms, correlated over 4 cells): a
    white ``B`` warns (a trap, not an error), and quality control rejects good observations
    against a ``B`` that is too tight, and says so. (In the window of ``seed=0`` one station value
    lies 5.1 σ_d from this background, where its error is locally 9 K against a declared 1.75 K:
    quality control rejects it, and warns, rightly; ``seed=1`` is a window without such a value.)"""
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(DEFAULT_RUN, namespace)  # noqa: S102  (the same run as the fresh process's)
    out = namespace["out"]
    assert torch.isfinite(torch.as_tensor(out.mean.values)).all()
    assert out.quality_control.num_rejected == 0
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    captured = capfd.readouterr()
    assert "warn" not in (captured.out + captured.err).lower(), captured


def test_a_fresh_process_shows_no_deprecation():
    """In a new interpreter with every warning shown (``-W always``): torch loads its forward-mode
    AD at the first guided step, scripting 18 functions that each warn ``torch.jit.script is
    deprecated``; the package loads it quietly, so nothing is printed."""
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", DEFAULT_RUN + QUIET_LOGS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and "Loading pipeline components" not in line  # diffusers' loading bar
    ]
    assert not lines and not done.stdout, done.stderr
