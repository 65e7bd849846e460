"""Quality control of observations on the testbed (issue 19; docs/method.md §Quality control).

On windows of the testbed (a 24-h forecast background, the default network: 64 stations at 0.5 K,
10 % missing, and 3 satellite channels at 1 K over 4 × 4 footprints, 30 % cloud, every step of
5), with the testbed's ``B`` (spectral, estimated on validation pairs, never on the windows
checked), every observed value's departure ``z = (y − A(x_b)) / σ_d``,
``σ_d² = σ_y² + (A B Aᵀ)_ii``, is computed once, and for thresholds ``k``:

- the **false rejections**: the fraction of correct values with ``|z| > k`` (or outside the gross
  range), per modality;
- the **detection** of a gross error ``g = ±m σ_d`` (sign at random) added to a value:
  ``|z ± m| > k`` (the background check alone: a lower bound), for ``m`` = 5, 10 and of
  ``g = ±m σ_y`` (a multiple of the observation's own error) for ``m`` = 10, 30.

``k`` is chosen on validation windows; on fresh test windows at the default ``k``
(``QC_THRESHOLD``), the numbers are also measured end to end: gross errors of 10 σ_d are added to
a random 10 % of the values of each window and 30 σ_y to another 10 %, and ``quality_control``
itself runs on them (the rejections it reports are counted, the untouched values give the false
rejections).

    OMP_NUM_THREADS=1 python benchmarks/qc.py --data data/qg-default.zarr

Writes ``results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import xarray as xr
from _common import ROOT, machine, write

from slams_diffusers.data.testbed import assimilation_cases, validation_covariance
from slams_diffusers.models.state_autoencoder import StateAutoencoder
from slams_diffusers.pipelines.inputs import background_observations
from slams_diffusers.quality_control import QC_THRESHOLD, departures, quality_control

THRESHOLDS = (3.0, 4.0, 5.0, 6.0, 7.0)
SIGMA_D_ERRORS = (5.0, 10.0)
SIGMA_Y_ERRORS = (10.0, 30.0)
INJECTED = 0.1  # fraction of a window's values given each kind of gross error (end to end)


def window_departures(case, covariance, climate) -> dict[str, dict[str, np.ndarray]]:
    """Per modality, the departures ``z``, ``σ_y / σ_d`` and the gross-range flags of every
    observed value of ``case`` (:func:`~slams_diffusers.quality_control.departures`)."""
    backgrounds = {b.time_index: b for b in background_observations(case.background, covariance)}
    out: dict[str, dict[str, list]] = {}
    for o in case.observations:
        reference, expected, std, gross = departures(
            o, backgrounds[o.time_index], climate.level_mean, climate.level_std
        )
        mask = o.mask
        z = ((o.values.double() - expected) / std)[mask]
        entry = out.setdefault(o.modality, {"z": [], "ratio": [], "gross": []})
        entry["z"].append(z.numpy())
        entry["ratio"].append((o.noise_variance().double().sqrt() / std)[mask].numpy())
        entry["gross"].append(gross[mask].numpy())
    return {m: {k: np.concatenate(v) for k, v in e.items()} for m, e in out.items()}


def pooled(windows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for modality in sorted({m for w in windows for m in w}):
        out[modality] = {
            k: np.concatenate([w[modality][k] for w in windows if modality in w])
            for k in ("z", "ratio", "gross")
        }
    out["all"] = {
        k: np.concatenate([out[m][k] for m in list(out)]) for k in ("z", "ratio", "gross")
    }
    return out


def sweep(values: dict[str, dict[str, np.ndarray]], seed: int) -> list[dict]:
    """Per ``k`` and modality: false rejections and detection (background check alone for the
    gross errors, a lower bound), from the departures."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in THRESHOLDS:
        for modality, v in values.items():
            z, ratio, gross = v["z"], v["ratio"], v["gross"]
            sign = rng.choice([-1.0, 1.0], size=z.shape)
            row = {
                "k": k,
                "modality": modality,
                "values": int(z.size),
                "false rejections %": 100 * float(np.mean((np.abs(z) > k) | gross)),
                "max |z|": float(np.abs(z).max()),
            }
            for m in SIGMA_D_ERRORS:
                row[f"detected {m:g} σ_d %"] = 100 * float(np.mean(np.abs(z + sign * m) > k))
            for m in SIGMA_Y_ERRORS:
                shifted = z + sign * m * ratio
                row[f"detected {m:g} σ_y %"] = 100 * float(np.mean(np.abs(shifted) > k))
            rows.append(row)
    return rows


def end_to_end(cases, covariance, climate, threshold: float, seed: int) -> dict:
    """``quality_control`` on each window with gross errors injected (module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    counts: dict[str, dict[str, int]] = {}
    seconds = []
    for case in cases:
        backgrounds = background_observations(case.background, covariance)
        by_step = {b.time_index: b for b in backgrounds}
        injected, kinds = [], []
        for o in case.observations:
            _, _, std, _ = departures(o, by_step[o.time_index], None, None)
            draw = torch.rand(o.values.shape, generator=generator, dtype=torch.float64)
            sign = torch.where(torch.rand(o.values.shape, generator=generator) < 0.5, -1.0, 1.0)
            kind = torch.zeros(o.values.shape, dtype=torch.long)  # 0 clean, 1 σ_d, 2 σ_y
            kind[draw < INJECTED] = 1
            kind[(draw >= INJECTED) & (draw < 2 * INJECTED)] = 2
            error = torch.where(kind == 1, 10.0 * std, 0.0)
            error = torch.where(kind == 2, 30.0 * o.noise_variance().double().sqrt(), error)
            values = o.values.double() + sign.double() * error
            injected.append(o.replace_values(values.to(o.values.dtype)))
            kinds.append(torch.where(o.mask, kind, -1))
        started = time.perf_counter()
        _, report = quality_control(
            [*injected, *backgrounds],
            threshold=threshold,
            level_mean=climate.level_mean,
            level_std=climate.level_std,
        )
        seconds.append(time.perf_counter() - started)
        rejected = [torch.zeros_like(k, dtype=torch.bool) for k in kinds]
        for r in report.rejections:
            rejected[r.observation][r.index] = True
        for o, kind, hit in zip(case.observations, kinds, rejected, strict=True):
            entry = counts.setdefault(o.modality, {})
            for label, code in (("clean", 0), ("10 σ_d", 1), ("30 σ_y", 2)):
                entry[f"{label} values"] = entry.get(f"{label} values", 0) + int(
                    (kind == code).sum()
                )
                entry[f"{label} rejected"] = entry.get(f"{label} rejected", 0) + int(
                    (hit & (kind == code)).sum()
                )
    return {"counts": counts, "seconds_per_window": float(np.mean(seconds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "qg-default.zarr"))
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "slams-qg-tiny"))
    parser.add_argument("--validation-cases", type=int, default=8, help="per val trajectory")
    parser.add_argument("--test-cases", type=int, default=16, help="per test trajectory")
    parser.add_argument("--seed", type=int, default=23, help="test windows (fresh: not 11)")
    parser.add_argument("--name", default="qc")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    dataset = xr.open_zarr(args.data)
    covariance = validation_covariance(dataset)
    climate = StateAutoencoder.from_pretrained(args.pipeline, subfolder="autoencoder").config
    validation = assimilation_cases(dataset, "val", 5, args.validation_cases, seed=2)
    test = assimilation_cases(dataset, "test", 5, args.test_cases, seed=args.seed)
    chosen = {
        "validation": sweep(
            pooled([window_departures(c, covariance, climate) for c in validation]), 0
        ),
        "test": sweep(pooled([window_departures(c, covariance, climate) for c in test]), 1),
    }
    measured = end_to_end(test, covariance, climate, QC_THRESHOLD, args.seed)

    rows = []
    for split, records in chosen.items():
        for r in records:
            rows.append(
                {
                    "windows": split,
                    **{
                        k: (f"{v:.3f}" if isinstance(v, float) and "%" in k else v)
                        for k, v in r.items()
                    },
                }
            )
            if isinstance(rows[-1]["max |z|"], float):
                rows[-1]["max |z|"] = f"{r['max |z|']:.2f}"
    payload = {
        "machine": machine("cpu"),
        "data": args.data,
        "windows": {"validation": len(validation), "test": len(test)},
        "thresholds": THRESHOLDS,
        "default_threshold": QC_THRESHOLD,
        "sweep": chosen,
        "end_to_end_test": measured,
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    lines = []
    for modality, c in measured["counts"].items():
        lines.append(
            f"{modality}: false rejections {c['clean rejected']} of {c['clean values']} "
            f"({100 * c['clean rejected'] / max(c['clean values'], 1):.3f} %), 10 σ_d errors "
            f"detected {c['10 σ_d rejected']} of {c['10 σ_d values']} "
            f"({100 * c['10 σ_d rejected'] / max(c['10 σ_d values'], 1):.2f} %), 30 σ_y errors "
            f"detected {c['30 σ_y rejected']} of {c['30 σ_y values']} "
            f"({100 * c['30 σ_y rejected'] / max(c['30 σ_y values'], 1):.2f} %)"
        )
    payload["end_to_end_summary"] = lines
    write(
        args.name,
        payload,
        list(rows[0]),
        rows,
        f"Quality control on the testbed's default network: {len(validation)} validation and "
        f"{len(test)} fresh test windows (seed {args.seed}), B spectral from validation pairs; "
        f"end to end on the test windows at k = {QC_THRESHOLD:g}: " + "; ".join(lines),
    )


if __name__ == "__main__":
    main()
