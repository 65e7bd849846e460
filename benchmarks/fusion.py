"""Do the modalities add up? The modality ablation of a latent pipeline per level on fresh
held-out testbed windows, with the encoders' likelihoods calibrated (approximation variances and
error correlation fitted on validation states) and uncalibrated (docs/method.md §Fusing
modalities).

For each window (``assimilation_cases(dataset, "test", 5, 2, seed=--seed)``, a seed no choice was
made on) and observing network (the default one, and the harder one of ``trustworthy.py``: 16
clustered stations, 30 % missing, 60 % clouds): the analysis from the background alone, with the
stations, with the satellite and with both; the last three once with the calibration stored in
the encoder's config (``modality_approximation_variance``, ``modality_error_correlation``,
fitted on validation states by stage 1 or ``train_autoencoder.py --fit_fusion_only``) and once
without (exact encoders, independent likelihoods). B is spectral, estimated from the validation
split; 16 members × 32 steps + 1 correction; nothing tuned on test.

    OMP_NUM_THREADS=1 python benchmarks/fusion.py --pipeline pipelines/slams-qg-tiny \
        --data data/qg-default.zarr --windows 3

Writes ``results/<name>.{json,md}``: RMSE per level and overall, spread/error, and whether
``+ both`` beats the better single modality at every level.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_window_arguments, fresh_windows, machine, write
from trustworthy import assimilate, harder_observations

from slams_diffusers import SLAMSPipeline
from slams_diffusers.metrics import ensemble_spread, rmse

SUBSETS = {
    "background only": (),
    "+ stations": ("stations",),
    "+ satellite": ("satellite",),
    "+ both": ("stations", "satellite"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_arguments(parser, windows=3, seed=23, name="fusion")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset, covariance, cases = fresh_windows(args)
    pressures = [float(p) for p in dataset["level"].values]
    levels = [f"{p:g}" for p in pressures]
    pipe = SLAMSPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    encoder = pipe.observation_encoder
    calibration = {
        "calibrated": {
            "modality_approximation_variance": encoder.config.modality_approximation_variance,
            "modality_error_correlation": encoder.config.modality_error_correlation,
        },
        "uncalibrated": {
            "modality_approximation_variance": None,
            "modality_error_correlation": None,
        },
    }
    generator = torch.Generator().manual_seed(args.seed)

    records, rows = [], []
    for index, case in enumerate(cases):
        for network in ("default", "harder"):
            observations = case.observations
            if network == "harder":
                observations = harder_observations(case.truth, pressures, generator)
            runs = [("background only", (), "calibrated")] + [
                (
                    label if variant == "calibrated" else f"{label}, uncalibrated",
                    modalities,
                    variant,
                )
                for variant in calibration
                for label, modalities in SUBSETS.items()
                if modalities
            ]
            for label, modalities, variant in runs:
                encoder.register_to_config(**calibration[variant])
                chosen = [o for o in observations if o.modality in modalities]
                members, seconds = assimilate(
                    pipe, case.background, chosen, covariance, args.members, args.steps, index
                )
                mean = members.mean(0)
                error = float(rmse(mean, case.truth))
                record = {
                    "window": index,
                    "network": network,
                    "observations": label,
                    "rmse": error,
                    "per_level": rmse(mean, case.truth, dims=(0, 2, 3)).tolist(),
                    "background_per_level": rmse(
                        case.background, case.truth, dims=(0, 2, 3)
                    ).tolist(),
                    "spread_over_error": float(ensemble_spread(members)) / error,
                    "seconds": seconds,
                }
                records.append(record)
                rows.append(
                    {
                        "window": index,
                        "network": network,
                        "observations": label,
                        "RMSE": f"{error:.3f}",
                        **{
                            f"{p} hPa": f"{v:.3f}"
                            for p, v in zip(levels, record["per_level"], strict=True)
                        },
                        "spread/error": f"{record['spread_over_error']:.2f}",
                        "s": f"{seconds:.0f}",
                    }
                )
    encoder.register_to_config(**calibration["calibrated"])

    per_level = {(r["window"], r["network"], r["observations"]): r["per_level"] for r in records}

    def beats_each_alone(both, stations, satellite) -> bool:
        return all(b < min(s, t) for b, s, t in zip(both, stations, satellite, strict=True))

    summary = []
    for network in ("default", "harder"):
        means = {}
        for label in dict.fromkeys(r["observations"] for r in records):
            chosen = [v for (w, n, o), v in per_level.items() if n == network and o == label]
            if chosen:
                means[label] = torch.tensor(chosen).mean(0).tolist()
        entry = {"network": network, "mean_per_level": means}
        for variant, suffix in (("calibrated", ""), ("uncalibrated", ", uncalibrated")):
            singles = [f"{label}{suffix}" for label in ("+ both", "+ stations", "+ satellite")]
            entry[variant] = {
                "both_beats_each_alone_at_every_level": beats_each_alone(
                    *(means[label] for label in singles)
                ),
                "windows_where_both_beats_each_alone_at_every_level": sum(
                    beats_each_alone(*(per_level[(w, network, label)] for label in singles))
                    for w in range(len(cases))
                ),
            }
        summary.append(entry)
        for label, values in means.items():
            rows.append(
                {
                    "window": "mean",
                    "network": network,
                    "observations": label,
                    "RMSE": "",
                    **{f"{p} hPa": f"{v:.3f}" for p, v in zip(levels, values, strict=True)},
                    "spread/error": "",
                    "s": "",
                }
            )
    payload = {
        "machine": machine("cpu"),
        "pipeline": args.pipeline,
        "calibration": calibration["calibrated"],
        "test_seed": args.seed,
        "windows": len(cases),
        "members": args.members,
        "steps": args.steps,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "summary": summary,
        "records": records,
    }
    write(
        args.name,
        payload,
        list(rows[0]),
        rows,
        f"Modality ablation per level, encoders' likelihoods calibrated and uncalibrated "
        f"({len(cases)} fresh test windows, seed {args.seed}; {args.members} members × "
        f"{args.steps} steps; spectral B from validation) [K]",
    )


if __name__ == "__main__":
    main()
