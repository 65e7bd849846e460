"""Diagnostics of the default QG testbed, its speed, and the time to generate the default dataset.

1. Linear stability of the default configuration (growth rate, most unstable wavelength).
2. A long free run (``--members`` members, ``--days`` days from random states): energy
   time series (bounded? statistically steady?), CFL number, temperature standard
   deviation per level, isotropic KE spectrum (energy-containing scale in grid cells),
   decorrelation time of temperature at a point, share of zonal-mean (jet) energy.
3. The larger grid (128 × 128, same domain) over a shorter run.
4. Forecast-background error against lead time.
5. Throughput: member-steps per second for 64 members at 6 × 64 × 64 (CPU).
6. Wall time of ``simulate_dataset`` with the CLI defaults, written to zarr.

    OMP_NUM_THREADS=2 python benchmarks/qg_diagnostics.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, write

from slams_diffusers.data.qg import (
    DAY,
    DEFAULT_STEPS,
    DEFAULT_TRAJECTORIES,
    QGConfig,
    QGModel,
    simulate_dataset,
    write_dataset,
)


def linear_stability(model: QGModel) -> dict:
    rates = model.linear_growth_rates()
    index = int(rates.argmax())
    kappa = float(model.wv2.reshape(-1)[index].sqrt())
    return {
        "max_growth_rate_per_day": float(rates.max()) * DAY,
        "e_folding_days": 1 / (float(rates.max()) * DAY),
        "most_unstable_wavelength_km": 2 * math.pi / kappa / 1e3,
        "deformation_radii_km": (model.config.deformation_radii / 1e3).round(1).tolist(),
    }


def autocorrelation_efolding(series: np.ndarray, dt_days: float) -> float:
    """e-folding lag (days) of the mean autocorrelation of ``series`` ``(time, points)``."""
    x = series - series.mean(axis=0)
    x = x / x.std(axis=0)
    n = x.shape[0]
    acf = [1.0] + [float((x[:-lag] * x[lag:]).mean()) for lag in range(1, n // 4)]
    acf = np.array(acf)
    below = np.flatnonzero(acf < 1 / math.e)
    if len(below) == 0:
        return float("nan")
    i = below[0]  # linear interpolation between lags i-1 and i
    return float((i - 1 + (acf[i - 1] - 1 / math.e) / (acf[i - 1] - acf[i])) * dt_days)


def free_run(config: QGConfig, members: int, days: int, spinup_days: int, seed: int) -> dict:
    model = QGModel(config)
    per_day = round(DAY / config.dt)
    every = max(1, round(6 * 3600 / config.dt))  # 6-hourly samples
    q0 = model.initial_state(members, torch.Generator().manual_seed(seed))
    dx = min(config.L / config.nx, config.W / config.ny)
    stride = max(1, config.nx // 8)
    energy, cfl, zonal, t_std, points, spectra, t_max = [], [], [], [], [], [], 0.0
    t_mean = model.mean_temperature[:, None, None]
    start = time.perf_counter()
    for i, q in enumerate(model.iterate(q0, days * per_day, every=every), 1):
        temperature = model.temperature(q)
        points.append(temperature[..., ::stride, ::stride].reshape(members, -1).numpy())
        if i % (per_day // every) != 0:
            continue
        day = i * every // per_day
        u, v = model.velocity(q)
        energy.append(model.energy(q).tolist())
        cfl.append(float((u.abs() + v.abs()).amax() * config.dt / dx))
        eddy_u = u - model.Ubg
        zonal.append(float(eddy_u.mean(-1).pow(2).mean() / (eddy_u.pow(2) + v.pow(2)).mean() * 2))
        if day > spinup_days:
            t_std.append(temperature.std(dim=(-2, -1)).mean(0).tolist())
            t_max = max(t_max, float((temperature - t_mean).abs().amax()))
            if day % 5 == 0:
                spectra.append(model.kinetic_energy_spectrum(q)[1].numpy())
        if not math.isfinite(energy[-1][0]):
            raise RuntimeError(f"blew up at day {day}")
    seconds = time.perf_counter() - start
    energy = np.array(energy)  # (days, members)
    steady = energy[spinup_days:]
    blocks = np.array_split(steady.mean(axis=1), 5)
    block_means = [float(b.mean()) for b in blocks]
    days_axis = np.arange(spinup_days + 1, days + 1)
    # linear trend in % of the mean per 100 days, per member (spread = its uncertainty)
    trends = [np.polyfit(days_axis, e, 1)[0] * 100 / e.mean() * 100 for e in steady.T]
    spectrum = np.mean(spectra, axis=0)
    kappa = np.arange(len(spectrum))
    peak = int(kappa[1:][np.argmax(spectrum[1:])])
    centroid = float((kappa * spectrum).sum() / spectrum.sum())
    series = np.array(points)[spinup_days * per_day // every :]  # (time, members, points)
    series = series.reshape(series.shape[0], members, len(config.pressure_levels), -1)
    decorrelation = [
        autocorrelation_efolding(
            series[:, :, level].reshape(series.shape[0], -1), every * config.dt / DAY
        )
        for level in range(series.shape[2])
    ]
    return {
        "grid": f"{config.n_layers}x{config.ny}x{config.nx}",
        "members": members,
        "days": days,
        "spinup_days": spinup_days,
        "seconds": round(seconds, 1),
        "energy_daily": energy.round(3).tolist(),
        "energy_mean": float(steady.mean()),
        "energy_std_daily": float(steady.mean(axis=1).std()),
        "energy_block_means": block_means,
        "energy_trend_percent_per_100_days": float(np.mean(trends)),
        "energy_trend_percent_per_100_days_members": [float(x) for x in trends],
        "energy_min_max_after_spinup": [float(steady.min()), float(steady.max())],
        "cfl_max": float(max(cfl)),
        "cfl_max_after_spinup": float(max(cfl[spinup_days:])),
        "zonal_mean_ke_fraction": float(np.mean(zonal[spinup_days:])),
        "zonal_mean_ke_fraction_blocks": [
            float(b.mean()) for b in np.array_split(np.array(zonal[spinup_days:]), 5)
        ],
        "temperature_std_per_level": np.mean(t_std, axis=0).tolist(),
        "temperature_anomaly_max_abs": t_max,
        "ke_spectrum": spectrum.tolist(),
        "ke_spectrum_peak_cycles_per_domain": peak,
        "ke_spectrum_centroid_cycles_per_domain": centroid,
        "energy_containing_wavelength_cells": config.nx / centroid,
        "energy_containing_wavelength_km": config.L / centroid / 1e3,
        "decorrelation_days_per_level": decorrelation,
    }


def background_error_growth(config: QGConfig, days: int, spinup_days: int) -> dict:
    model = QGModel(config)
    per_day = round(DAY / config.dt)
    q = model.run(model.initial_state(2, torch.Generator().manual_seed(7)), spinup_days * per_day)
    members = 4
    truth = q.repeat_interleave(members, 0)
    perturbed = model.perturb(truth, 0.5, torch.Generator().manual_seed(0))
    both = torch.cat([truth, perturbed])
    t = model.temperature(both)
    errors = [float((t[len(truth) :] - t[: len(truth)]).pow(2).mean().sqrt())]
    per_level = [(t[len(truth) :] - t[: len(truth)]).pow(2).mean(dim=(0, 2, 3)).sqrt().tolist()]
    for x in model.iterate(both, days * per_day, every=per_day):
        t = model.temperature(x)
        d = t[len(truth) :] - t[: len(truth)]
        errors.append(float(d.pow(2).mean().sqrt()))
        per_level.append(d.pow(2).mean(dim=(0, 2, 3)).sqrt().tolist())
    return {"lead_days": list(range(days + 1)), "rmse_K": errors, "rmse_K_per_level": per_level}


def throughput(config: QGConfig, members: int, dtype: torch.dtype, threads: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = QGModel(config, dtype=dtype)
    state = model.init(model.initial_state(members, torch.Generator().manual_seed(0)))
    for _ in range(5):
        state = model.step(state)
    n = 40
    start = time.perf_counter()
    for _ in range(n):
        state = model.step(state)
    seconds = time.perf_counter() - start
    torch.set_num_threads(previous)
    return members * n / seconds


def dataset_time(threads: int) -> dict:
    torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        ds = simulate_dataset(DEFAULT_TRAJECTORIES, DEFAULT_STEPS, seed=0, progress=True)
        simulated = time.perf_counter() - start
        path = write_dataset(ds, str(folder / "qg.zarr"))
        total = time.perf_counter() - start
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    finally:
        shutil.rmtree(folder)
    return {
        "trajectories": DEFAULT_TRAJECTORIES,
        "steps": DEFAULT_STEPS,
        "dims": dict(ds.sizes),
        "spinup_steps": ds.attrs["spinup_steps"],
        "interval_steps": ds.attrs["interval_steps"],
        "simulate_seconds": round(simulated, 1),
        "total_seconds_with_zarr_write": round(total, 1),
        "zarr_megabytes": round(size / 1e6, 1),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--days", type=int, default=1440)
    parser.add_argument("--spinup-days", type=int, default=100)
    parser.add_argument("--large-days", type=int, default=160)
    parser.add_argument("--skip-dataset", action="store_true")
    parser.add_argument(
        "--render", metavar="JSON", help="only rewrite the tables from a results JSON"
    )
    args = parser.parse_args()
    if args.render:
        render(json.loads(Path(args.render).read_text()))
        return
    torch.set_num_threads(args.threads)
    config = QGConfig()
    results: dict = {"config": config.to_dict(), "machine": machine("cpu")}
    results["linear_stability"] = linear_stability(QGModel(config))
    print("linear stability", results["linear_stability"], flush=True)
    results["throughput_member_steps_per_s"] = {
        f"64 members 6x64x64 float32, {t} thread(s)": throughput(config, 64, torch.float32, t)
        for t in sorted({1, args.threads})
    }
    results["throughput_member_steps_per_s"][
        f"64 members 6x64x64 float64, {args.threads} thread(s)"
    ] = throughput(config, 64, torch.float64, args.threads)
    results["throughput_member_steps_per_s"][
        f"16 members 6x128x128 float32, {args.threads} thread(s)"
    ] = throughput(QGConfig(nx=128), 16, torch.float32, args.threads)
    print("throughput", results["throughput_member_steps_per_s"], flush=True)
    results["free_run"] = free_run(config, args.members, args.days, args.spinup_days, seed=0)
    print("free run done", results["free_run"]["seconds"], "s", flush=True)
    results["background_error"] = background_error_growth(config, 12, args.spinup_days)
    results["free_run_128"] = free_run(
        QGConfig(nx=128), 2, args.large_days, args.spinup_days, seed=1
    )
    print("128 run done", results["free_run_128"]["seconds"], "s", flush=True)
    if not args.skip_dataset:
        results["dataset"] = dataset_time(args.threads)
        print("dataset", results["dataset"], flush=True)
    render(results)


def render(results: dict) -> None:
    """``results/qg_diagnostics.{json,md}`` from the results."""
    config = QGConfig(**results["config"])
    run, large = results["free_run"], results["free_run_128"]
    levels = config.pressure_levels

    def fmt(x, digits=2):
        return ", ".join(f"{v:.{digits}f}" for v in x) if isinstance(x, list) else f"{x:.{digits}f}"

    rows = [
        ("layers / levels (hPa)", f"{config.n_layers} / {list(levels)}", "ISA heights"),
        ("layer thickness H, km (top→bottom)", fmt([h / 1e3 for h in config.H]), ""),
        ("reduced gravity g', m/s² (top→bottom)", fmt(list(config.reduced_gravity), 3), "ISA Δθ"),
        ("U, m/s (top→bottom)", fmt(list(config.U), 1), f"shear {config.shear} 1/s"),
        ("deformation radii, km", fmt(results["linear_stability"]["deformation_radii_km"], 0), ""),
        ("f0, beta", f"{config.f0:g} 1/s, {config.beta:g} 1/(m s)", "45° N"),
        ("bottom drag rek", f"1/({1 / config.rek / DAY:.2g} d)", "bottom layer only"),
        ("Newtonian cooling", f"1/({1 / config.thermal_damping / DAY:.3g} d)", "interfaces"),
        ("domain, grid, dt", f"{config.L / 1e3:.0f} km, {config.nx}², {config.dt:.0f} s", ""),
        (
            "most unstable mode",
            f"{results['linear_stability']['most_unstable_wavelength_km']:.0f}"
            f" km, e-fold {results['linear_stability']['e_folding_days']:.1f} d",
            "linear",
        ),
    ]
    for name, r in (("64²", run), ("128²", large)):
        rows += [
            (
                f"[{name}] free run",
                f"{r['members']} members × {r['days']} d ({r['seconds']:.0f} s)",
                f"stats after day {r['spinup_days']}",
            ),
            (
                f"[{name}] energy mean ± daily std, m²/s²",
                f"{r['energy_mean']:.1f} ± {r['energy_std_daily']:.1f}",
                "eddy KE + APE",
            ),
            (
                f"[{name}] energy in 5 blocks",
                fmt(r["energy_block_means"], 1),
                f"trend {r['energy_trend_percent_per_100_days']:+.1f} %/100 d "
                f"(members {fmt(r['energy_trend_percent_per_100_days_members'], 1)})"
                if r["days"] - r["spinup_days"] >= 300
                else f"{r['days'] - r['spinup_days']} d: too short for a trend",
            ),
            (
                f"[{name}] energy min/max after spin-up",
                fmt(r["energy_min_max_after_spinup"], 1),
                "bounded",
            ),
            (
                f"[{name}] CFL max (after spin-up)",
                f"{r['cfl_max']:.2f} ({r['cfl_max_after_spinup']:.2f})",
                "(|u|+|v|) dt/dx",
            ),
            (
                f"[{name}] T std per level, K",
                fmt(r["temperature_std_per_level"]),
                ", ".join(f"{p:.0f}" for p in levels),
            ),
            (f"[{name}] max abs T anomaly, K", f"{r['temperature_anomaly_max_abs']:.1f}", ""),
            (
                f"[{name}] KE spectrum peak / centroid",
                f"{r['ke_spectrum_peak_cycles_per_domain']} / "
                f"{r['ke_spectrum_centroid_cycles_per_domain']:.1f} cycles per domain",
                f"wavelength {r['energy_containing_wavelength_km']:.0f} km = "
                f"{r['energy_containing_wavelength_cells']:.0f} cells",
            ),
            (
                f"[{name}] T decorrelation (e-fold), days",
                fmt(r["decorrelation_days_per_level"]),
                ", ".join(f"{p:.0f}" for p in levels),
            ),
            (
                f"[{name}] zonal-mean share of eddy KE",
                f"{r['zonal_mean_ke_fraction']:.2f}",
                f"jets; 5 blocks {fmt(r['zonal_mean_ke_fraction_blocks'])}",
            ),
        ]
    err = results["background_error"]
    rows.append(
        (
            "background rmse vs lead (0.5 K initial), K",
            ", ".join(
                f"{d}d {e:.2f}"
                for d, e in zip(err["lead_days"], err["rmse_K"], strict=True)
                if d in (0, 1, 2, 3, 4, 6, 8, 10, 12)
            ),
            "8 forecasts, all levels",
        )
    )
    for key, value in results["throughput_member_steps_per_s"].items():
        rows.append((f"throughput, {key}", f"{value:.0f} member-steps/s", "CPU"))
    if "dataset" in results:
        d = results["dataset"]
        rows.append(
            (
                "default dataset (CLI defaults)",
                f"{d['total_seconds_with_zarr_write']:.0f} s, {d['zarr_megabytes']:.0f} MB",
                f"{d['trajectories']} traj × {d['steps']} snapshots, spin-up "
                f"{d['spinup_steps']} + {d['steps'] - 1}×{d['interval_steps']} steps, "
                f"{d['threads']} threads",
            )
        )
    rows = [{"quantity": a, "value": b, "note": c} for a, b, c in rows]
    write(
        "qg_diagnostics",
        results,
        ["quantity", "value", "note"],
        rows,
        "QG testbed: parameters, free-run diagnostics, speed",
    )


if __name__ == "__main__":
    main()
