"""Quiet logs: a default assimilation on well-formed input emits no warning (Python warnings or
log lines), so that the warnings that do appear are about the user's input."""

import warnings

import torch

from slams_diffusers import SLAMSPipeline
from slams_diffusers.cli import EMBEDDED_PIPELINE
from slams_diffusers.data.qg import simulate_dataset
from slams_diffusers.data.testbed import assimilation_cases


def test_a_default_assimilation_is_quiet(capfd, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = SLAMSPipeline.from_pretrained(EMBEDDED_PIPELINE)
        pipe.set_progress_bar_config(disable=True)
        run = simulate_dataset(1, 12, seed=7, spinup=100, splits=(0, 0, 1), store_pv="all")
        (case,) = assimilation_cases(run, "test", window=5, cases_per_trajectory=1)
        out = pipe(
            background=case.background,
            observations=case.observations,
            background_error_std=1.0,
            background_error_length_scale=4.0,  # a white B would warn (a trap, not an error)
            num_members=2,
            num_inference_steps=4,
            generator=[torch.Generator().manual_seed(m) for m in range(2)],
        )
    assert torch.isfinite(torch.as_tensor(out.mean.values)).all()
    # third-party deprecations (e.g. torch.jit.script inside a dependency) are hidden by Python's
    # default filters outside tests; everything else would reach the user
    shown = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    captured = capfd.readouterr()
    assert "warn" not in (captured.out + captured.err).lower(), captured
