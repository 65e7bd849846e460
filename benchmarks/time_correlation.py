"""Where the missing spread comes from: errors correlated in time across the window, counted as
independent (issue 15, calibration).

The pipeline takes one background term and one encoded-observation term per step of the window,
each with independent errors. A window's background is one forecast, and an encoder's error is a
function of the slowly varying state, so both are nearly the same error at consecutive steps.
This benchmark measures, on validation windows,

- the correlation ``C_ts`` of background errors between steps (``e = x_b − x``, summed over
  cases, levels and cells) and the effective number of independent steps ``T_eff = 1ᵀ C⁻¹ 1``
  (what a window of ``T`` perfectly correlated steps is worth: 1; independent: ``T``);
- the correlation between consecutive steps of each encoder's normalised likelihood error
  ``(u_t − E(x_t)) √I_t`` (docs/method.md §Fusing modalities) for the default observations;

and, on fresh test windows (16 members × 32 steps), the analysis with ``B`` as declared against
``B`` inflated by ``T / T_eff`` (the background's temporal-mean information counted once), with the
background alone and with the default observations.

    OMP_NUM_THREADS=1 python benchmarks/time_correlation.py --pipeline pipelines/slams-qg-tiny

Writes ``results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_window_arguments, fresh_windows, machine, write

from slams_diffusers import SLAMSPipeline
from slams_diffusers.data.testbed import assimilation_cases
from slams_diffusers.metrics import rmse, spread_skill_ratio


def step_correlation(errors: torch.Tensor) -> torch.Tensor:
    """``C_ts = Σ e_t e_s / √(Σ e_t² Σ e_s²)`` for errors ``(cases, T, ...)``."""
    flat = errors.double().flatten(2).transpose(0, 1).flatten(1)
    cross = flat @ flat.T
    scale = cross.diagonal().sqrt()
    return cross / (scale[:, None] * scale[None, :])


def encoder_step_correlation(pipe: SLAMSPipeline, cases) -> dict[str, float]:
    """Per modality, the correlation of the normalised likelihood errors at steps ``t`` and
    ``t + 1`` over the cells informed at both, on ``cases`` (their default observations)."""
    encoder, sums = pipe.observation_encoder, {}
    with torch.no_grad():
        for case in cases:
            latents = pipe.autoencoder.encode(case.truth[None])[0]
            errors: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
            for observation in case.observations:
                values, mask = observation.to_grid()
                name, t = observation.modality, observation.time_index
                mean, logvar = encoder.encode_modality(
                    name, values[None], mask[None], tuple(latents.shape[2:])
                )
                u, information = encoder.likelihood(name, mean[0], logvar[0])
                errors.setdefault(name, {})[t] = (
                    ((u - latents[t]) * information.sqrt()).double(),
                    information > 0,
                )
            for name, steps in errors.items():
                for t in sorted(steps)[:-1]:
                    if t + 1 not in steps:
                        continue
                    (a, ma), (b, mb) = steps[t], steps[t + 1]
                    both = ma & mb
                    entry = sums.setdefault(name, [0.0, 0.0, 0.0])
                    entry[0] += float((a[both] * b[both]).sum())
                    entry[1] += float(a[both].square().sum())
                    entry[2] += float(b[both].square().sum())
    return {name: c / (a * b) ** 0.5 for name, (c, a, b) in sorted(sums.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, windows=2, seed=23, name="time_correlation")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset, covariance, cases = fresh_windows(args)
    validation = assimilation_cases(dataset, "val", 5, 2, seed=1)
    correlation = step_correlation(
        torch.stack([c.background for c in validation]) - torch.stack([c.truth for c in validation])
    )
    ones = torch.ones(correlation.shape[0], dtype=torch.float64)
    effective = float(ones @ torch.linalg.solve(correlation, ones))
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    encoders = encoder_step_correlation(pipe, validation)
    inflation = correlation.shape[0] / effective

    records, rows = [], []
    for label, b in (
        ("B as declared", covariance),
        ("B × T / T_eff", covariance.scaled(inflation**0.5)),
    ):
        for observing in ("background only", "default observations"):
            errors, ratios = [], []
            for index, case in enumerate(cases):
                members = pipe(
                    background=case.background,
                    observations=case.observations if observing != "background only" else [],
                    background_error_covariance=b,
                    num_members=args.members,
                    num_inference_steps=args.steps,
                    generator=[
                        torch.Generator().manual_seed(index * 1000 + m) for m in range(args.members)
                    ],
                    output_type="pt",
                ).members
                errors.append(float(rmse(members.mean(0), case.truth)))
                ratios.append(float(spread_skill_ratio(members, case.truth)))
            records.append(
                {"B": label, "observations": observing, "rmse": errors, "spread_skill": ratios}
            )
            rows.append(
                {
                    "B": label,
                    "observations": observing,
                    "RMSE per window": " / ".join(f"{v:.3f}" for v in errors),
                    "spread/skill per window": " / ".join(f"{v:.2f}" for v in ratios),
                }
            )
    payload = {
        "machine": machine("cpu"),
        "pipeline": args.pipeline,
        "background_step_correlation": correlation.tolist(),
        "effective_steps": effective,
        "encoder_consecutive_step_correlation": encoders,
        "background_rmse": [float(rmse(c.background, c.truth)) for c in cases],
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "records": records,
    }
    lag = ", ".join(f"{float(correlation[0, k]):.2f}" for k in range(1, correlation.shape[0]))
    enc = ", ".join(f"{k} {v:.2f}" for k, v in encoders.items())
    write(
        args.name,
        payload,
        list(rows[0]),
        rows,
        f"Errors correlated in time (validation: background error correlation with step 0 at "
        f"lags 1.. {lag}; T_eff = {effective:.2f} of {correlation.shape[0]} steps; encoders' "
        f"consecutive-step error correlation {enc}); {len(cases)} fresh test windows, seed "
        f"{args.seed}, {args.members} × {args.steps} [K]",
    )


if __name__ == "__main__":
    main()
