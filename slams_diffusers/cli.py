"""The slams command line: data assimilation with SLAMS pipelines.

  slams demo                         assimilate a fresh testbed window, offline
  slams assimilate --background xb.nc --stations st.csv --satellite sat.nc \\
      --background-error-std 1.0 --out analysis.nc
  slams cycle --pipeline my-l96-pipeline --model l96 --initial initial.nc \\
      --stations obs.csv --steps-per-cycle 5 --out analyses.nc
  slams evaluate --analysis analysis.nc --truth truth.nc
  slams train --data my_data.zarr    the two accelerate commands of training
  slams simulate qg --out data/qg-default.zarr
  slams simulate l96 --out data/l96.zarr
  slams selftest                     the sampler against exact Kalman posteriors

Bad input stops a command before any work, with one line on stderr naming the argument or file,
what was found and what is expected, and exit status 2 (SLAMS_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: The embedded pretrained pipeline that ``demo`` and ``assimilate`` load by default (found by
#: its name from any folder; see :func:`slams_diffusers.embedded_pipelines`).
DEFAULT_PIPELINE = "slams-qg-tiny"
_PIPELINE_HELP = (
    "a pipeline folder, the name of an embedded pipeline (a folder of that name wins) or a Hub "
    "repo id 'org/name'"
)
#: The training scripts of a source checkout, and their accelerate config (one process).
TRAINING_SCRIPTS = Path(__file__).resolve().parents[1] / "training"
ACCELERATE_CONFIG = TRAINING_SCRIPTS / "configs" / "accelerate.yaml"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _check_input_files(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Each of the file options ``names`` that is given exists and is readable."""
    from .io import check_input_file

    for name in names:
        if getattr(args, name) is not None:
            check_input_file(getattr(args, name), f"--{name}")


# ------------------------------------------------------------------------------ selftest
def _selftest(args: argparse.Namespace) -> int:
    """Assimilate a linear-Gaussian problem and compare with its exact Kalman posterior."""
    from .testing import ar1_trajectory_problem, gaussian_field_problem

    problems = {"field": gaussian_field_problem, "trajectory": ar1_trajectory_problem}
    failed = False
    for name, build in problems.items():
        problem = build(seed=args.seed)
        for covariance in ("moment_matching", "diagonal"):
            problem.pipeline.set_progress_bar_config(
                disable=not args.progress, desc=f"selftest {name}, {covariance}"
            )
            start = time.perf_counter()
            mean_error, variance_ratio = problem.errors(
                covariance, args.members, args.steps, seed=args.seed
            )
            ok = mean_error < 0.1 and abs(variance_ratio - 1) < 0.1
            failed |= covariance == "moment_matching" and not ok
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
                ),
                flush=True,
            )
    return 1 if failed else 0


# ------------------------------------------------------------------------------ shared
def _load_pipeline(name: str, device=None, progress: bool = True):
    """``SLAMSPipeline.from_pretrained`` with its checks; errors name ``--pipeline``. Without
    ``progress`` diffusers' loading bar stays hidden."""
    from diffusers.utils import logging as diffusers_logging

    from .pipelines import SLAMSPipeline

    hide = not progress and diffusers_logging.is_progress_bar_enabled()
    if hide:
        diffusers_logging.disable_progress_bar()
    try:
        pipe = SLAMSPipeline.from_pretrained(name)
    except (ValueError, OSError) as error:
        raise ValueError(f"--pipeline {name!r}: {' '.join(str(error).split())}") from error
    finally:
        if hide:
            diffusers_logging.enable_progress_bar()
    return pipe if device is None else pipe.to(device)


def _process_state():
    """accelerate's ``PartialState``: one process, or those of ``accelerate launch`` (CPU-only
    machines form a gloo group, as in training)."""
    from accelerate import PartialState

    from .training import has_accelerator_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return PartialState(cpu=world_size > 1 and not has_accelerator_device())


# ------------------------------------------------------------------------------ assimilate
def _background_error(args: argparse.Namespace, pipe, levels: int):
    """``(background_error_std, background_error_covariance)`` from the options: a std (one or
    one per level), a saved covariance folder, or the pipeline's own ``background_covariance``."""
    from . import covariance as covariances
    from .io import check_input_file

    if args.background_error_std is not None and args.background_covariance is not None:
        raise ValueError(
            "--background-error-std and --background-covariance: give one of them, not both"
        )
    if args.background_error_length_scale is not None and args.background_error_std is None:
        raise ValueError(
            "--background-error-length-scale: correlates the errors of --background-error-std; "
            "give both (or a saved covariance with --background-covariance)"
        )
    if args.background_error_std is not None:
        std = args.background_error_std
        if len(std) not in (1, levels):
            raise ValueError(
                f"--background-error-std: {len(std)} values; expected 1 or one per level ({levels})"
            )
        return (std[0] if len(std) == 1 else list(std)), None
    if args.background_covariance is not None:
        folder = check_input_file(args.background_covariance, "--background-covariance")
        config = folder / "config.json"
        try:
            name = json.loads(config.read_text())["_class_name"]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"--background-covariance {str(folder)!r}: no readable config.json with a "
                "_class_name; expected a folder written by a covariance's save_pretrained"
            ) from error
        kinds = ("DiagonalCovariance", "SpectralCovariance")
        if name not in kinds:
            raise ValueError(
                f"--background-covariance {str(folder)!r}: holds a {name}; expected one of {kinds}"
            )
        return None, getattr(covariances, name).from_pretrained(folder)
    if pipe.background_covariance is not None:
        return None, None  # the pipeline's own
    raise ValueError(
        "--background-error-std or --background-covariance: the background's error is needed "
        "(K, one value or one per level; or a saved covariance) and the pipeline has none"
    )


def _periodic(choice: str, pipe, spatial_dims: tuple[str, ...]) -> tuple[bool, ...]:
    from .validation import periodic_axes

    if choice == "auto":
        wraps = bool(getattr(pipe.autoencoder.config, "periodic", False))
        choice = "x" if wraps else "none"
    return periodic_axes([d for d in spatial_dims if d in choice] or "none", len(spatial_dims))


def _add_qc_arguments(add) -> None:
    """``--qc-threshold`` and ``--no-qc`` (the pipeline's ``qc_threshold`` and ``qc``)."""
    from .defaults import QC_THRESHOLD

    add(
        "--qc-threshold",
        type=_positive_float,
        default=QC_THRESHOLD,
        help="quality control: a value whose innovation exceeds k sqrt(σ_y² + (A B Aᵀ)_ii) "
        "(against the climatology without a background) is rejected; this is k (default "
        f"{QC_THRESHOLD:g})",
    )
    add(
        "--no-qc",
        dest="qc",
        action="store_false",
        help="assimilate every value (one more than 10 climatological std away stops the run)",
    )


def _qc_records(report, observations, start: int, times) -> list[dict]:
    """The rejected values of ``report`` (positions into ``observations``) as plain records: their
    step ``start + time_index`` and its time on the file's ``times``, a station's grid position and
    model level."""
    from dataclasses import asdict

    records = []
    for r in report.rejections:
        record = {**asdict(r), "index": list(r.index), "time_index": start + r.time_index}
        record["time"] = str(times[start + r.time_index])
        observation = observations[r.observation]
        if hasattr(observation, "positions"):
            record["position"] = observation.positions[r.index[0]].tolist()
            record["level"] = int(observation.levels[r.index[1]])
        del record["observation"]
        records.append(record)
    return records


def _qc_attrs(args: argparse.Namespace, parts: list[dict]) -> dict:
    """The file's global attributes of quality control, summed over ``parts`` (``{"checked",
    "rejected", "rejections"}`` of each window or cycle): ``slams_qc``, ``slams_qc_threshold``,
    ``slams_qc_checked_<modality>``, ``slams_qc_rejected_<modality>`` and
    ``slams_qc_rejections`` (JSON of :func:`_qc_records`)."""
    if not args.qc:
        return {"slams_qc": "off"}
    checked: dict[str, int] = {}
    rejected: dict[str, int] = {}
    rejections: list[dict] = []
    for part in parts:
        for key, total in (("checked", checked), ("rejected", rejected)):
            for modality, count in part[key].items():
                total[modality] = total.get(modality, 0) + int(count)
        rejections += part["rejections"]
    attrs: dict = {"slams_qc": "on", "slams_qc_threshold": float(args.qc_threshold)}
    for modality in sorted({*checked, *rejected}):
        attrs[f"slams_qc_checked_{modality}"] = checked.get(modality, 0)
        attrs[f"slams_qc_rejected_{modality}"] = rejected.get(modality, 0)
    attrs["slams_qc_rejections"] = json.dumps(rejections)
    return attrs


def _qc_printed(attrs: dict) -> dict | str:
    """The printed summary's ``qc_rejected``: per modality, or ``"off"``."""
    if attrs["slams_qc"] == "off":
        return "off"
    prefix = "slams_qc_rejected_"
    return {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}


def _assimilate(args: argparse.Namespace) -> int:
    """Assimilate the observation files into the background file, window by window."""
    from .io import (
        check_output_file,
        read_background,
        read_satellite,
        read_stations,
        split_windows,
        window_observations,
        write_analysis,
    )
    from .seeding import member_generators

    start = time.perf_counter()
    out = check_output_file(args.out, "--out", args.overwrite, (".nc",))
    plot = check_output_file(args.plot, "--plot", args.overwrite, (".png",)) if args.plot else None
    _check_input_files(args, ("background", "stations", "satellite"))
    state = _process_state()
    pipe = _load_pipeline(args.pipeline, state.device, args.progress)
    background = read_background(
        args.background,
        variable=args.variable,
        trajectory=args.trajectory,
        levels=pipe.autoencoder.config.get("levels_hpa"),
    )
    if plot is not None and len(background.spatial_dims) != 2:
        raise ValueError(
            f"--plot: draws maps of (y, x) fields; --background {args.background!r} has the "
            f"spatial dims {background.spatial_dims}"
        )
    std, covariance = _background_error(args, pipe, background.data.sizes["level"])
    periodic = _periodic(args.periodic, pipe, background.spatial_dims)
    observations = []
    if args.stations:
        observations += read_stations(args.stations, background, periodic=periodic)
    if args.satellite:
        observations += read_satellite(args.satellite, background, error=args.satellite_error)
    length = args.window_length or pipe.window
    if length < pipe.window:
        raise ValueError(
            f"--window-length: {length} is shorter than the score model's window {pipe.window}"
        )
    windows = split_windows(background.data.sizes["time"], length)

    parts = out.with_name(f".{out.name}.parts")
    if state.is_main_process:
        parts.mkdir(exist_ok=True)
    state.wait_for_everyone()
    try:
        with state.split_between_processes(list(range(len(windows)))) as mine:
            for w in mine:
                window = windows[w]
                pipe.set_progress_bar_config(
                    disable=not (args.progress and state.is_main_process),
                    desc=f"window {w + 1}/{len(windows)}",
                )
                observed = window_observations(observations, window)
                analysis = pipe(
                    background=background.data.isel(time=window),
                    observations=observed,
                    num_members=args.members,
                    num_inference_steps=args.steps,
                    guidance=args.guidance,
                    **({} if args.analysis is None else {"analysis": args.analysis}),
                    background_error_std=std,
                    background_error_covariance=covariance,
                    background_error_length_scale=args.background_error_length_scale,
                    spread_inflation=args.spread_inflation,
                    qc=args.qc,
                    qc_threshold=args.qc_threshold,
                    generator=member_generators(args.seed, w, args.members),
                    output_type="xarray",
                )
                part = analysis.dataset  # its slams_qc_* are the window's: the file gets the sum
                part.attrs = {k: v for k, v in part.attrs.items() if not k.startswith("slams_qc")}
                report = analysis.quality_control
                if report is not None:
                    times = background.data["time"].values
                    record = {
                        "checked": report.checked,
                        "rejected": report.rejected,
                        "rejections": _qc_records(report, observed, window.start, times),
                    }
                    part.attrs["slams_qc_window"] = json.dumps(record)
                part.to_netcdf(parts / f"window-{w:06d}.nc")
    except BaseException:
        shutil.rmtree(parts, ignore_errors=True)
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        import xarray as xr

        files = [parts / f"window-{w:06d}.nc" for w in range(len(windows))]
        pieces = [xr.load_dataset(f) for f in files]
        quality = _qc_attrs(
            args, [json.loads(p.attrs.pop("slams_qc_window", "{}")) for p in pieces]
        )
        dataset = xr.concat(pieces, dim="time") if len(pieces) > 1 else pieces[0]
        command = "slams assimilate " + " ".join(map(shlex.quote, args.argv))
        history = str(background.attrs.get("history", "")).strip()
        stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {command}"
        write_analysis(
            dataset,
            out,
            background=background,
            overwrite=args.overwrite,
            attrs={
                "history": f"{history}\n{stamp}" if history else stamp,
                "slams_pipeline": str(args.pipeline),
                "slams_members": args.members,
                "slams_steps": args.steps,
                "slams_seed": args.seed,
                "slams_guidance": args.guidance,
                "slams_windows": len(windows),
                "slams_processes": state.num_processes,
                **quality,
            },
        )
        for f in files:
            f.unlink()
        parts.rmdir()
        if plot is not None:
            _plot_analysis(dataset, background, observations, plot)
        print(
            json.dumps(
                {
                    "out": str(out),
                    "windows": len(windows),
                    "members": args.members,
                    "steps": args.steps,
                    "observations": len(observations),
                    "processes": state.num_processes,
                    "qc_rejected": _qc_printed(quality),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
        )
    state.wait_for_everyone()
    return 0


def _plot_analysis(dataset, background, observations, path: Path) -> None:
    """Maps of the last window's last step: background, observations, mean, spread, on the
    file's coordinates."""
    from .io import window_observations
    from .plotting import plot_analysis_maps

    times = dataset.sizes["time"]
    last = slice(times - 1, times)
    level_names = [f"{float(v):g} hPa" for v in dataset["level"].values]
    y, x = (dataset[d] for d in background.spatial_dims[-2:])
    time_units = dataset["time"].attrs.get("units")  # datetimes come decoded, without
    drawn = f"{dataset['time'].values[-1]}{f' {time_units}' if time_units else ''}"
    plot_analysis_maps(
        mean=dataset["mean"].values[-1],
        std=dataset["std"].values[-1],
        background=background.data.values[-1],
        observations=window_observations(observations, last),
        level_names=level_names,
        x=x.rename(background.dim_names.get(x.name, x.name)),
        y=y.rename(background.dim_names.get(y.name, y.name)),
        title=f"slams assimilate: the last time step, {drawn}",
        path=path,
    )


# ------------------------------------------------------------------------------ cycle
def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _import_forecast_model(spec: str):
    """The user's forecast callable from ``module:callable`` (``module`` found on ``sys.path``
    or in the current folder). Importing it runs the user's module."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"--model {spec!r}: expected 'l96' or a Python import path module:callable "
            "(e.g. mymodel:forecast)"
        )
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module may raise anything on import
        raise ValueError(
            f"--model {spec!r}: cannot import {module_name!r} ({type(error).__name__}: {error}); "
            "expected a module on PYTHONPATH or in the current folder"
        ) from error
    finally:
        if added:
            sys.path.remove(os.getcwd())
    model = module
    for part in attribute.split("."):
        if not hasattr(model, part):
            raise ValueError(
                f"--model {spec!r}: {module_name!r} has no attribute {attribute!r}; expected "
                "a forecast callable (states, steps) -> states"
            )
        model = getattr(model, part)
    if not callable(model):
        raise ValueError(
            f"--model {spec!r}: is a {type(model).__name__}, not callable; expected a forecast "
            "callable (states, steps) -> states"
        )
    return model


def _forecast_model(args: argparse.Namespace, initial):
    """The forecast model of ``--model``: ``l96`` (Lorenz-96 on the initial file's ring) or the
    user's ``module:callable``."""
    if args.model == "l96":
        from .data.lorenz96 import Lorenz96

        dims = tuple(map(str, initial.data.dims))
        if initial.spatial_dims != ("x",) or initial.data.sizes["level"] != 1:
            raise ValueError(
                f"--model l96: the Lorenz-96 ring is one level along x; --initial "
                f"{args.initial!r} has dims {dims} of sizes {tuple(initial.data.shape)}; "
                "expected (member, level = 1, x)"
            )
        try:
            return Lorenz96(
                num_variables=initial.data.sizes["x"],
                forcing=8.0 if args.forcing is None else args.forcing,
                dt=0.01 if args.dt is None else args.dt,
            )
        except ValueError as error:
            raise ValueError(f"--model l96: {error}") from error
    for name in ("forcing", "dt"):
        if getattr(args, name) is not None:
            raise ValueError(
                f"--{name}: sets the Lorenz-96 model (--model l96); --model {args.model!r} takes "
                "its own parameters"
            )
    return _import_forecast_model(args.model)


def _cycle_qc(report, per_cycle: list, k: int, lag: int, times) -> dict:
    """What quality control did with cycle ``k``'s own observations ``per_cycle[k]``, the last of
    the filter's window ``[background, per_cycle[k − ℓ] … per_cycle[k]]`` (:func:`_qc_attrs`)."""
    import dataclasses

    from .quality_control import QualityControlReport

    first = 1 + sum(len(per_cycle[j]) for j in range(max(0, k - lag), k))
    own = [
        dataclasses.replace(r, observation=r.observation - first, time_index=0)
        for r in report.rejections
        if r.observation >= first
    ]
    checked: dict[str, int] = {}
    for observation in per_cycle[k]:
        checked[observation.modality] = checked.get(observation.modality, 0)
        checked[observation.modality] += observation.num_observed
    rejected = {m: sum(r.modality == m for r in own) for m in checked}
    records = _qc_records(
        QualityControlReport(report.threshold, rejections=own), per_cycle[k], k, times
    )
    return {"checked": checked, "rejected": rejected, "rejections": records}


def _cycle(args: argparse.Namespace) -> int:
    """Cycle forecast -> assimilate over the observation files' times (``SLAMSFilter``)."""
    import numpy as np
    import torch
    import xarray as xr

    from .cycling import SLAMSFilter
    from .data.writing import to_xarray
    from .forecast import run_forecast
    from .io import (
        BackgroundFile,
        check_output_file,
        cycle_times,
        read_initial_ensemble,
        read_satellite,
        read_stations,
        satellite_times,
        station_times,
        write_analysis,
    )
    from .pipelines.outputs import DEFAULT_ATTRS, MEMBER_ATTRS, ensemble_attrs

    start = time.perf_counter()
    out = check_output_file(args.out, "--out", args.overwrite, (".nc",))
    _check_input_files(args, ("initial", "stations", "satellite"))
    if args.stations is None and args.satellite is None:
        raise ValueError(
            "--stations / --satellite: none given; expected at least one observation file (the "
            "cycles are its times)"
        )
    state = _process_state()
    if state.num_processes > 1:
        raise ValueError(
            f"slams cycle: {state.num_processes} processes; expected one (cycles run in "
            "sequence), without accelerate launch"
        )
    pipe = _load_pipeline(args.pipeline, state.device, args.progress)
    initial = read_initial_ensemble(
        args.initial, variable=args.variable, levels=pipe.autoencoder.config.get("levels_hpa")
    )
    data = initial.data
    where = f"--initial {args.initial!r}"
    if data.sizes["level"] != pipe.levels or len(initial.spatial_dims) != pipe.spatial_dims:
        raise ValueError(
            f"{where}: states of {data.sizes['level']} level(s) over {initial.spatial_dims}; "
            f"expected the pipeline's {pipe.levels} level(s) over {pipe.spatial_dims} spatial "
            "dim(s)"
        )
    available = data.sizes["member"]
    members = available if args.members is None else args.members
    if members > available:
        raise ValueError(f"--members: {members}; {where} has {available} members, at most those")
    model = _forecast_model(args, initial)
    choice = "x" if args.periodic == "auto" and args.model == "l96" else args.periodic
    periodic = _periodic(choice, pipe, initial.spatial_dims)

    # cycles: the observation files' times on a regular grid from the initial time
    sources = {}
    if args.stations:
        sources[f"--stations {args.stations!r}"] = station_times(args.stations)
    if args.satellite:
        sources[f"--satellite {args.satellite!r}"] = satellite_times(args.satellite)
    initial_time = data.coords["time"].values if "time" in data.coords else None
    times, interval = cycle_times(sources, initial_time, start_where=where)
    if isinstance(interval, np.timedelta64):
        import pandas as pd

        interval = pd.Timedelta(interval)  # "0 days 06:00:00" in the file, not nanoseconds
    time_attrs = dict(data.coords["time"].attrs) if "time" in data.coords else {}
    template = data.mean("member").drop_vars("time", errors="ignore").expand_dims(time=times)
    template = template.assign_coords(time=("time", times, time_attrs))
    grid = BackgroundFile(data=template, dim_names=initial.dim_names, attrs=initial.attrs)
    observations = []
    if args.stations:
        observations += read_stations(args.stations, grid, periodic=periodic)
    if args.satellite:
        observations += read_satellite(args.satellite, grid, error=args.satellite_error)
    per_cycle = [[o for o in observations if o.time_index == k] for k in range(len(times))]

    ensemble = torch.from_numpy(np.ascontiguousarray(data.values[:members])).to(pipe.device)
    label = f"--model {args.model!r}"
    try:  # one step on two members: a wrong model stops here, before any assimilation
        run_forecast(model, ensemble[:2].clone(), 1, name=label)
    except ValueError:
        raise
    except Exception as error:  # the user's model may raise anything
        raise ValueError(
            f"{label}: raised {type(error).__name__}: {error} on a 1-step forecast of 2 members "
            f"{tuple(ensemble[:2].shape)}; expected (states, steps) -> states"
        ) from error
    filter_ = SLAMSFilter(
        pipe,
        model,
        ensemble,
        steps_per_cycle=args.steps_per_cycle,
        lag=args.lag,
        localization_radius=args.localization_radius,
        periodic=periodic,
        covariance_inflation=args.inflation,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        qc=args.qc,
        qc_threshold=args.qc_threshold,
    )
    analyses, forecasts, smoothed = [], [], [None] * len(times)
    checks = []  # per cycle, what quality control did with that cycle's own observations
    for k, cycle_observations in enumerate(per_cycle):
        pipe.set_progress_bar_config(disable=not args.progress, desc=f"cycle {k + 1}/{len(times)}")
        try:
            output = filter_.step(cycle_observations)
        except ValueError as error:
            text = str(error)
            if not text.startswith("forecast_model:"):
                raise
            raise ValueError(f"{label}: cycle {k}: {text.split(':', 1)[1].strip()}") from error
        analyses.append(output.analysis.cpu())
        forecasts.append(output.forecast.cpu())
        if output.quality_control is not None:
            checks.append(_cycle_qc(output.quality_control, per_cycle, k, args.lag, times))
        if output.smoothed is not None:
            smoothed[k - args.lag] = output.smoothed.cpu()

    # the file: slams assimilate's layout (member, time, level, *space), a cycle per time
    attrs = dict(data.attrs)
    if "units" not in attrs:  # read as K, as a background without units is
        attrs = {**DEFAULT_ATTRS, **attrs}
    name = str(attrs.get("long_name", data.name))
    template.attrs = attrs
    template = template.rename(None).assign_coords(cycle=("time", np.arange(len(times))))
    dataset = xr.Dataset()

    def add(prefix: str, stack: torch.Tensor, what: str) -> None:
        values = stack.double().numpy()
        state_attrs = {**template.attrs, "long_name": f"{what}{name}"}
        dataset[f"{prefix}members"] = to_xarray(
            values.astype(np.float32), template, leading_dims=("member",)
        ).assign_coords(member=("member", np.arange(members), MEMBER_ATTRS))
        dataset[f"{prefix}members"].attrs = state_attrs
        dataset[f"{prefix}mean"] = to_xarray(values.mean(0).astype(np.float32), template)
        dataset[f"{prefix}mean"].attrs = ensemble_attrs(state_attrs, "mean")
        dataset[f"{prefix}std"] = to_xarray(values.std(0, ddof=1).astype(np.float32), template)
        dataset[f"{prefix}std"].attrs = ensemble_attrs(state_attrs, "standard_deviation")

    add("", torch.stack(analyses, dim=1), "")
    add("forecast_", torch.stack(forecasts, dim=1), "forecast (background) of ")
    del dataset["forecast_members"]
    if args.lag:
        missing = torch.full_like(analyses[0], float("nan"))
        stack = torch.stack([missing if s is None else s for s in smoothed], dim=1)
        add("smoothed_", stack, f"lag-{args.lag} smoothed ")
    command = "slams cycle " + " ".join(map(shlex.quote, args.argv))
    history = str(initial.attrs.get("history", "")).strip()
    stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {command}"
    extra = {
        "history": f"{history}\n{stamp}" if history else stamp,
        "slams_pipeline": str(args.pipeline),
        "slams_model": args.model,
        "slams_members": members,
        "slams_num_inference_steps": args.num_inference_steps,
        "slams_seed": args.seed,
        "slams_steps_per_cycle": args.steps_per_cycle,
        "slams_lag": args.lag,
        "slams_inflation": args.inflation,
        "slams_cycles": len(times),
        "slams_cycle_interval": str(interval) if interval is not None else "",
    }
    if args.localization_radius is not None:
        extra["slams_localization_radius"] = args.localization_radius
    extra.update(_qc_attrs(args, checks))
    write_analysis(dataset, out, background=initial, overwrite=args.overwrite, attrs=extra)
    print(
        json.dumps(
            {
                "out": str(out),
                "cycles": len(times),
                "cycle_interval": str(interval) if interval is not None else None,
                "members": members,
                "observations": len(observations),
                "qc_rejected": _qc_printed(extra),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0


# ------------------------------------------------------------------------------ evaluate
def _level_table(names: list[str], columns: dict[str, list[float]], overall: dict) -> str:
    """A plain-text table: one row per level and an ``all`` row, one column per score."""
    header = ["level", *columns]
    rows = [
        [name, *(f"{values[i]:.3f}" for values in columns.values())] for i, name in enumerate(names)
    ]
    rows.append(["all", *(f"{overall[key]:.3f}" for key in columns)])
    widths = [max(len(str(row[c])) for row in [header, *rows]) for c in range(len(header))]
    lines = [
        "  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    """Score an analysis file against a truth file (and a background file), per level."""
    import torch

    from .io import align_truth, check_output_file, read_analysis, read_background
    from .metrics import level_dims, rmse, score_ensemble

    out = check_output_file(args.json, "--json", args.overwrite, (".json",)) if args.json else None
    analysis = read_analysis(args.analysis)
    members = analysis.data
    truth_file = read_background(
        args.truth, variable=args.variable, trajectory=args.trajectory, argument="--truth"
    )
    truth = align_truth(truth_file, members, argument=f"--truth {args.truth!r}")
    background = None
    if args.background is not None:
        background_file = read_background(args.background, argument="--background")
        background = align_truth(
            background_file, members, argument=f"--background {args.background!r}"
        )
    spatial_dims = members.ndim - 3  # (member, time, level, *space)
    latitude = None
    if analysis.dim_names.get("y") in ("latitude", "lat"):
        latitude = torch.as_tensor(members.coords["y"].values, dtype=torch.float64)
    truth_t = torch.as_tensor(truth.values, dtype=torch.float64)
    scores = score_ensemble(
        torch.as_tensor(members.values, dtype=torch.float64),
        truth_t,
        spatial_dims=spatial_dims,
        latitude=latitude,
    )
    columns = {"RMSE": scores["rmse"]["per_level"], "CRPS": scores["crps"]["per_level"]}
    overall = {"RMSE": scores["rmse"]["overall"], "CRPS": scores["crps"]["overall"]}
    if scores["spread"] is not None:
        columns["spread"] = scores["spread"]["per_level"]
        overall["spread"] = scores["spread"]["overall"]
        columns["spread/skill"] = scores["spread_skill_ratio"]["per_level"]
        overall["spread/skill"] = scores["spread_skill_ratio"]["overall"]
    if background is not None:
        weights = None
        if latitude is not None:
            from .metrics import area_weights

            weights = area_weights(latitude)[:, None]
        b = torch.as_tensor(background.values, dtype=torch.float64)
        per_level = rmse(b, truth_t, level_dims(b.ndim, spatial_dims), weights=weights)
        scores["background_rmse"] = {
            "per_level": per_level.tolist(),
            "overall": rmse(b, truth_t, weights=weights).item(),
        }
        columns = {"background RMSE": scores["background_rmse"]["per_level"], **columns}
        overall["background RMSE"] = scores["background_rmse"]["overall"]
    names = [f"{float(v):g} hPa" for v in members.coords["level"].values]
    print(f"{args.analysis}: {scores['members']} members, {members.sizes['time']} times [K]")
    print(_level_table(names, columns, overall))
    if out is not None:
        record = {"analysis": str(args.analysis), "truth": str(args.truth), "levels": names}
        out.write_text(json.dumps({**record, **scores}, indent=1))
    return 0


# ------------------------------------------------------------------------------ train
def _load_script(name: str):
    """The module of ``training/<name>.py`` (its ``build_parser``), imported by path."""
    import importlib.util

    path = TRAINING_SCRIPTS / f"{name}.py"
    if not path.is_file():
        raise ValueError(
            f"slams train: {str(path)!r} not found; the training scripts come with a source "
            "checkout of slams-diffusers (git clone), not with the installed package"
        )
    spec = importlib.util.spec_from_file_location(f"_slams_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown(path: Path) -> str:
    """``path`` as a command shows it: relative to the current folder when inside it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _train_commands(args: argparse.Namespace) -> list[tuple[str, list[str], list[str]]]:
    """The two training stages as ``(comment, accelerate launch ... script, script options)``,
    the options checked by the scripts' own parsers (so a typo fails now, not after stage 1).
    Without ``--output-dir`` the stages write where their configs say, and stage 2 reads stage
    1's output (``--autoencoder``, given only where its config reads another folder)."""
    from .data.stores import open_store
    from .io import open_dataset
    from .training import parse_args

    parsers = {
        name: _load_script(name).build_parser() for name in ("train_autoencoder", "train_score")
    }
    data = args.data
    if not Path(data).exists():
        raise ValueError(f"--data: no such file or folder {data!r}")
    if not (Path(data) / "dataset_info.json").exists():  # a `datasets` folder is read by training
        try:
            open_store(open_dataset(Path(data), "--data"), args.variable)
        except ValueError as error:
            raise ValueError(f"--data {data!r}: {' '.join(str(error).split())}") from error
    for option, config in (
        ("--autoencoder-config", args.autoencoder_config),
        ("--score-config", args.score_config),
    ):
        if not Path(config).is_file():
            raise ValueError(f"{option}: no such file {config!r}")
    common = ["--data", data, *(["--variable", args.variable] if args.variable else [])]
    stage1 = ["--config", _shown(Path(args.autoencoder_config)), *common]
    stage2 = ["--config", _shown(Path(args.score_config)), *common]
    if args.output_dir is not None:
        output = Path(args.output_dir)
        stage1 += ["--output_dir", str(output / "autoencoder")]
        stage2 += [
            "--autoencoder",
            str(output / "autoencoder"),
            "--output_dir",
            str(output / "score"),
        ]
    stage1 += shlex.split(args.autoencoder_args)
    extra2 = shlex.split(args.score_args)
    parsed = {}
    for name, argv in (("train_autoencoder", stage1), ("train_score", [*stage2, *extra2])):
        parser = parsers[name]

        def refuse(message: str, name: str = name, argv: list[str] = argv) -> None:
            raise ValueError(f"{name}.py rejects the options {argv}: {message}")

        parser.error = refuse  # one line, no usage text, no exit
        try:
            parsed[name] = parse_args(parser, argv)
        except ValueError as error:
            raise ValueError(f"{name}.py options {argv}: {error}") from error
    autoencoder = parsed["train_autoencoder"].output_dir
    if parsed["train_score"].autoencoder != autoencoder:
        stage2 += ["--autoencoder", autoencoder]
    stage2 += extra2
    pipeline = Path(parsed["train_score"].output_dir) / "pipeline"
    launch = ["accelerate", "launch", "--quiet", "--config_file", _shown(ACCELERATE_CONFIG)]
    if args.num_processes > 1:
        launch += ["--multi_gpu", "--num_processes", str(args.num_processes)]
    if args.mixed_precision != "no":
        launch += ["--mixed_precision", args.mixed_precision]
    return [
        (
            f"# stage 1: the autoencoder and the observation encoders, written to {autoencoder}",
            [*launch, _shown(TRAINING_SCRIPTS / "train_autoencoder.py")],
            stage1,
        ),
        (
            f"# stage 2: the score network, then the pipeline (with its model card): {pipeline}",
            [*launch, _shown(TRAINING_SCRIPTS / "train_score.py")],
            stage2,
        ),
    ]


def _relay_stderr(process: subprocess.Popen) -> list[str]:
    """Copy ``process``'s stderr to ours as it comes (progress bars included), except its
    ``error: ...`` lines (a training script's one-line error), which are returned."""
    prefix = b"error: "
    held: list[str] = []
    line = b""  # the start of the current line while it may be an error line
    passing = False  # the current line is not one: it goes through as it comes
    out = sys.stderr.buffer
    while chunk := process.stderr.read1(4096):
        for piece in chunk.splitlines(keepends=True):
            ends = piece.endswith((b"\n", b"\r"))
            if not passing:
                line += piece
                if line.startswith(prefix) or (prefix.startswith(line) and not ends):
                    if ends:
                        held.append(line.decode(errors="replace").strip())
                        line = b""
                    continue
                piece, line, passing = line, b"", True
            out.write(piece)
            out.flush()
            passing = not ends
    if line:
        held.append(line.decode(errors="replace").strip())
    return held


def _train(args: argparse.Namespace) -> int:
    """Print (or with ``--run`` run) the two training stages for a data file. A stage that fails
    stops the run with one line (the script's own error, or its exit status) and status 2."""
    stages = _train_commands(args)
    for number, (comment, launch, options) in enumerate(stages, start=1):
        print(comment)
        print(f"{shlex.join(launch)} \\\n    {shlex.join(options)}", flush=True)
        if not args.execute:
            continue
        process = subprocess.Popen([*launch, *options], stderr=subprocess.PIPE)
        errors = _relay_stderr(process)
        if process.wait():
            status = f"exit status {process.returncode}"
            what = errors[-1].removeprefix("error: ") if errors else status
            stopped = ", stage 2 not started" if number == 1 else ""
            script = Path(launch[-1]).name
            print(
                f"slams train: error: stage {number} ({script}) failed{stopped}: {what}",
                file=sys.stderr,
            )
            return 2
        for error in errors:
            print(error, file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ demo
def _demo(args: argparse.Namespace) -> int:
    """Simulate a fresh testbed window, assimilate it with OI/3D-Var and SLAMS (the same spectral
    ``B``, estimated on validation windows), print per-level scores, write analysis.nc and
    demo.png. Each phase is announced on stderr (with ``--progress``); the long ones have bars."""

    def phase(text: str) -> None:
        if args.progress:
            print(f"slams demo: {text}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    folder = Path(args.out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out: {str(folder)!r} is a file; expected a folder")
    if not folder.parent.is_dir():
        raise ValueError(f"--out: the folder {str(folder.parent)!r} does not exist")
    phase(f"loading the pipeline {args.pipeline}")
    import numpy as np
    import torch

    from .baselines import optimal_interpolation
    from .covariance import estimate_background_covariance
    from .data.qg import simulate_dataset
    from .data.testbed import assimilation_cases
    from .io import BackgroundFile, check_output_file, write_analysis
    from .metrics import crps, ensemble_spread, level_dims, rmse
    from .plotting import check_matplotlib, plot_analysis_maps
    from .seeding import member_generators

    try:
        check_matplotlib()
    except ImportError as error:
        raise ValueError(f"slams demo draws demo.png: {error}") from error

    folder.mkdir(exist_ok=True)
    nc = check_output_file(folder / "analysis.nc", "--out", args.overwrite, (".nc",))
    png = check_output_file(folder / "demo.png", "--out", args.overwrite, (".png",))
    pipe = _load_pipeline(args.pipeline, progress=args.progress)
    pipe.set_progress_bar_config(disable=not args.progress)

    window, lead_hours = pipe.window, 24.0
    steps = round(lead_hours / 6) + window + 6
    phase(f"simulating 2 QG trajectories of {steps} steps of 6 h after their spin-up")
    dataset = simulate_dataset(
        trajectories=2,  # one for validation (B), one to assimilate
        steps=steps,
        seed=args.seed + 10_000,  # not a trajectory of the default training dataset
        spinup=args.spinup_steps,
        splits=(0.0, 0.5, 0.5),
        store_pv="all",
        progress=args.progress,
    )
    phase(f"{lead_hours:g}-h forecasts as backgrounds; B estimated on 4 validation windows")
    validation = assimilation_cases(
        dataset, "val", window, 4, lead_hours, seed=args.seed + 1, observations=False
    )
    covariance = estimate_background_covariance(
        torch.stack([c.background for c in validation]), torch.stack([c.truth for c in validation])
    )
    (case,) = assimilation_cases(dataset, "test", window, 1, lead_hours, seed=args.seed)
    test = dataset["t"].isel(trajectory=int(np.flatnonzero(dataset["split"].values == "test")[0]))
    template = test.isel(time=slice(case.start, case.start + window)).drop_vars(
        ["trajectory", "split"]
    )
    background = template.copy(data=case.background.numpy())
    phase(
        f"assimilating {len(case.observations)} observations with {args.pipeline}: "
        f"{args.members} members x {args.steps} steps"
    )
    out = pipe(
        background=background,
        observations=case.observations,
        num_members=args.members,
        num_inference_steps=args.steps,
        background_error_covariance=covariance,
        generator=member_generators(args.seed, 0, args.members),
        output_type="xarray",
    )
    phase("OI/3D-Var with the same B")
    oi = optimal_interpolation(case.background.double(), case.observations, covariance).float()

    truth = case.truth.double()
    members = torch.as_tensor(out.members.values, dtype=torch.float64)
    dims = level_dims(truth.ndim, truth.ndim - 2)
    estimates = {"background": case.background.double(), "OI/3D-Var": oi.double()}
    columns = {f"RMSE {k}": rmse(v, truth, dims).tolist() for k, v in estimates.items()}
    columns["RMSE SLAMS"] = rmse(members.mean(0), truth, dims).tolist()
    overall = {f"RMSE {k}": rmse(v, truth).item() for k, v in estimates.items()}
    overall["RMSE SLAMS"] = rmse(members.mean(0), truth).item()
    for name, value in estimates.items():
        columns[f"CRPS {name}"] = crps(value[None], truth, dims).tolist()
        overall[f"CRPS {name}"] = crps(value[None], truth).item()
    columns["CRPS SLAMS"] = crps(members, truth, dims).tolist()
    overall["CRPS SLAMS"] = crps(members, truth).item()
    if args.members > 1:
        columns["spread SLAMS"] = ensemble_spread(members, dims).tolist()
        overall["spread SLAMS"] = ensemble_spread(members).item()

    phase(f"writing {nc}")
    analysis = out.dataset
    for name, value in (("truth", case.truth), ("background", case.background), ("oi", oi)):
        analysis[name] = template.copy(data=value.numpy())
        analysis[name].attrs = {**template.attrs, "long_name": f"{name} air temperature"}
    write_analysis(
        analysis,
        nc,
        background=BackgroundFile(background, {}, {"Conventions": "CF-1.8"}),
        overwrite=args.overwrite,
        attrs={"title": "slams demo: one testbed window", "slams_seed": args.seed},
    )
    phase(f"drawing {png}")
    names = [f"{float(v):g} hPa" for v in template.coords["level"].values]
    days = float(template["time"].values[-1])
    plot_analysis_maps(
        mean=analysis["mean"].values,
        std=analysis["std"].values,
        truth=case.truth,
        background=case.background,
        observations=case.observations,
        level_names=names,
        time_index=window - 1,
        x=analysis["x"],
        y=analysis["y"],
        title=f"slams demo (seed {args.seed}), {args.pipeline}, {args.members} members: "
        f"{days:g} days after the spin-up",
        path=png,
    )
    print(
        f"slams demo: {len(case.observations)} observations over {window} steps (stations, "
        f"satellite), {args.members} members, {args.steps} steps; B spectral, estimated on "
        f"{len(validation)} validation windows [K]"
    )
    print(_level_table(names, columns, overall))
    print(out.quality_control.summary())
    print(f"wrote {nc} and {png} ({time.perf_counter() - start:.0f} s)")
    return 0 if overall["RMSE SLAMS"] < overall["RMSE background"] else 1


# ---------------------------------------------------------------------------- simulate qg
def add_simulate_qg_arguments(parser) -> None:
    """Options of ``slams simulate qg`` (see :func:`~slams_diffusers.data.qg.simulate_dataset`)."""
    from .defaults import DEFAULT_STEPS, DEFAULT_TRAJECTORIES, INTERVAL_HOURS, SPINUP_DAYS

    parser.add_argument("--out", required=True, help="output path: *.zarr or netCDF (*.nc)")
    parser.add_argument("--trajectories", type=int, default=DEFAULT_TRAJECTORIES)
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="snapshots kept per trajectory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spinup-days", type=float, default=SPINUP_DAYS)
    parser.add_argument(
        "--interval-hours", type=float, default=INTERVAL_HOURS, help="time between snapshots"
    )
    parser.add_argument("--nx", type=int, default=64, help="grid size (nx = ny)")
    parser.add_argument("--store-pv", choices=["all", "eval", "none"], default="eval")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--float64", action="store_true", help="integrate in float64")
    parser.add_argument("--no-progress", action="store_true")


def simulate_qg(args) -> int:
    """Run ``slams simulate qg`` from parsed :func:`add_simulate_qg_arguments` options."""
    import numpy as np
    import torch

    from .data.qg import DAY, QGConfig, simulate_dataset, write_dataset

    config = QGConfig(nx=args.nx)
    start = time.perf_counter()
    ds = simulate_dataset(
        args.trajectories,
        args.steps,
        args.seed,
        config=config,
        spinup=round(args.spinup_days * DAY / config.dt),
        interval=max(1, round(args.interval_hours * 3600 / config.dt)),
        store_pv=args.store_pv,
        batch_size=args.batch_size,
        device=args.device,
        dtype=torch.float64 if args.float64 else torch.float32,
        progress=not args.no_progress,
    )
    write_dataset(ds, args.out)
    summary = {
        "out": args.out,
        "dims": dict(ds.sizes),
        "splits": {s: int((ds.split == s).sum()) for s in np.unique(ds.split.values)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- simulate l96
def _split_option(text: str) -> str | list[float]:
    """``--split``: a label (``train``) or fractions by trajectory (``0.8,0.1,0.1``)."""
    if "," not in text:
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a label (e.g. train) or fractions such as 0.8,0.1,0.1, got {text!r}"
        ) from None


def add_simulate_l96_arguments(parser) -> None:
    """Options of ``slams simulate l96`` (:func:`~slams_diffusers.data.lorenz96.lorenz96_store`)."""
    parser.add_argument("--out", required=True, help="output path: *.zarr or netCDF (*.nc)")
    parser.add_argument("--trajectories", type=_positive_int, default=64)
    parser.add_argument(
        "--snapshots", type=_positive_int, default=512, help="states kept per trajectory"
    )
    parser.add_argument(
        "--interval", type=_positive_int, default=5, help="model steps (dt = 0.01) between states"
    )
    parser.add_argument("--forcing", type=float, default=8.0, help="F")
    parser.add_argument("--variables", type=_positive_int, default=40, help="ring size n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        type=_split_option,
        default=[0.8, 0.1, 0.1],
        help="a label for all trajectories, or fractions by trajectory (default 0.8,0.1,0.1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def simulate_l96(args) -> int:
    """Run ``slams simulate l96`` from parsed :func:`add_simulate_l96_arguments` options."""
    import numpy as np

    from .data.datasets import open_store
    from .data.lorenz96 import Lorenz96, lorenz96_store

    start = time.perf_counter()
    model = Lorenz96(num_variables=args.variables, forcing=args.forcing)
    path = lorenz96_store(
        args.out,
        args.trajectories,
        args.snapshots,
        args.interval,
        model=model,
        seed=args.seed,
        split=args.split,
        overwrite=args.overwrite,
    )
    store = open_store(path)
    summary = {
        "out": path,
        "dims": {str(k): int(v) for k, v in store.sizes.items()},
        "splits": {str(s): int((store.split == s).sum()) for s in np.unique(store.split.values)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slams", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    selftest_help = "assimilate linear-Gaussian problems and compare with the exact posterior"
    selftest = commands.add_parser(
        "selftest",
        help=selftest_help,
        description=f"{selftest_help[0].upper()}{selftest_help[1:]}: a correlated 1x8x8 field "
        "observed every second cell, and an AR(1) trajectory of 9 fields through a window-5 "
        "score model, each with moment matching and the diagonal likelihood covariance. One JSON "
        "line per run; exit status 1 when moment matching misses the posterior (mean error above "
        "0.1 posterior std, variance ratio off 1 by more than 0.1).",
    )
    selftest.add_argument(
        "--members", type=_positive_int, default=512, help="members per run (default: %(default)s)"
    )
    selftest.add_argument(
        "--steps", type=_positive_int, default=256, help="sampling steps (default: %(default)s)"
    )
    selftest.add_argument(
        "--seed", type=int, default=0, help="seed of the problems and draws (default: %(default)s)"
    )
    selftest.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars (stderr)"
    )
    selftest.set_defaults(run=_selftest)

    demo_help = (
        "assimilate a freshly simulated testbed window with the embedded pipeline, compare "
        "with the background and OI/3D-Var, write analysis.nc and demo.png"
    )
    demo = commands.add_parser(
        "demo",
        help=demo_help,
        description=f"{demo_help[0].upper()}{demo_help[1:]}. Offline; progress (bars and a "
        "line per phase) goes to stderr, the table of scores to stdout. Exit status 1 when SLAMS "
        "does not beat the background.",
    )
    demo.add_argument(
        "--pipeline", default=DEFAULT_PIPELINE, help=f"{_PIPELINE_HELP} (default: %(default)s)"
    )
    demo.add_argument(
        "--members", type=_positive_int, default=16, help="ensemble members (default: %(default)s)"
    )
    demo.add_argument(
        "--steps",
        type=_positive_int,
        default=32,
        help="sampling steps, each with the pipeline's Langevin corrections (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the simulated window, its observations and the members (default: "
        "%(default)s)",
    )
    demo.add_argument(
        "--out", default=".", help="folder for analysis.nc and demo.png (default: %(default)s)"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace existing files")
    demo.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars or phase lines (stderr)",
    )
    demo.add_argument(
        "--spinup-steps",
        type=int,
        default=None,
        help="model steps before the window (default: 100 days, the testbed's: the states the "
        "pipeline was trained on)",
    )
    demo.set_defaults(run=_demo)

    assimilate = commands.add_parser(
        "assimilate",
        help="assimilate station / satellite files into a background file; write the analysis",
        description="Assimilate observation files into a background file and write the analysis "
        "ensemble (mean, std, members) as netCDF. Under `accelerate launch -m slams_diffusers.cli "
        "assimilate ...` the analysis windows are shared among the processes.",
    )
    add = assimilate.add_argument
    add("--pipeline", default=DEFAULT_PIPELINE, help=f"{_PIPELINE_HELP} (default: %(default)s)")
    add("--background", required=True, help="netCDF / zarr: temperature (time, level, y?, x) in K")
    add("--variable", default=None, help="the background's variable (default: guessed)")
    add("--trajectory", type=int, default=None, help="index along a trajectory dim, if any")
    add(
        "--background-error-std",
        type=_positive_float,
        nargs="+",
        default=None,
        help="K: one value, or one per level",
    )
    add(
        "--background-error-length-scale",
        type=_positive_float,
        default=None,
        help="grid cells: the errors of --background-error-std correlated horizontally as "
        "exp(-r^2 / 2L^2) (without it B is white: the background's large scales count as exact)",
    )
    add("--background-covariance", default=None, help="folder of a saved covariance (B)")
    add(
        "--stations",
        default=None,
        help="CSV / Parquet: station,time,y,x|lat,lon,pressure|level,value,error",
    )  # noqa: E501
    add(
        "--satellite",
        default=None,
        help="netCDF: radiance(time,channel,y,x), weights(channel,level)",
    )  # noqa: E501
    add("--satellite-error", type=_positive_float, default=None, help="K, if the file has none")
    add(
        "--periodic",
        choices=["auto", "none", "x", "y", "xy"],
        default="auto",
        help="axes that wrap (auto: x if the pipeline's models are periodic)",
    )
    add("--members", type=_positive_int, default=16)
    add("--steps", type=_positive_int, default=32)
    add("--guidance", choices=["auto", "latent", "decoded"], default="auto")
    add("--analysis", default=None, help="how latents become states (SLAMSPipeline's analysis)")
    add(
        "--spread-inflation",
        type=_positive_float,
        nargs="+",
        default=None,
        help="one factor, or one per level, widening the members about their mean (default: the "
        "pipeline's, fitted on validation windows; 1: uninflated)",
    )
    add("--window-length", type=_positive_int, default=None, help="default: the model's window")
    _add_qc_arguments(add)
    add("--seed", type=int, default=0, help="window w, member m draw from seed (seed, w, m)")
    add("--out", required=True, help="the analysis file (.nc)")
    add("--plot", default=None, help="also draw the last step as a PNG")
    add("--overwrite", action="store_true", help="replace existing output files")
    add("--no-progress", dest="progress", action="store_false")
    assimilate.set_defaults(run=_assimilate)

    cycle = commands.add_parser(
        "cycle",
        help="cycled assimilation: forecast the ensemble, assimilate each time of the "
        "observation files, repeat; write every cycle's analysis",
        description="Cycle forecast -> assimilate with SLAMSFilter (docs/method.md, Cycling). The "
        "cycles are the observation files' times on a regular grid: from the initial ensemble's "
        "time (else the first observation time) to the last observation time, one cycle every "
        "smallest gap between the times (cycles in between have no observations). The forecast "
        "model advances the members --steps-per-cycle model steps from one cycle to the next. "
        "--model module:callable imports and runs your own Python code (your forecast model).",
    )
    add = cycle.add_argument
    add("--pipeline", required=True, help=_PIPELINE_HELP)
    add(
        "--model",
        required=True,
        help="the forecast model: l96 (Lorenz-96 on the initial file's ring) or module:callable, "
        "your own (states (members, level, *space), steps) -> states; importing it runs your code",
    )
    add("--forcing", type=float, default=None, help="--model l96: F (default 8)")
    add("--dt", type=_positive_float, default=None, help="--model l96: RK4 step (default 0.01)")
    add(
        "--initial",
        required=True,
        help="netCDF / zarr: the forecast members of the first cycle (member, level, y?, x?)",
    )
    add("--variable", default=None, help="the initial file's variable (default: guessed)")
    add("--stations", default=None, help="CSV / Parquet, as slams assimilate reads (with time)")
    add("--satellite", default=None, help="netCDF, as slams assimilate reads (with time)")
    add("--satellite-error", type=_positive_float, default=None, help="if the file has none")
    add(
        "--steps-per-cycle",
        type=_positive_int,
        required=True,
        help="forecast-model steps from one cycle to the next",
    )
    add("--lag", type=_nonnegative_int, default=0, help="0: the filter; L: also smooth L back")
    add(
        "--localization-radius",
        type=_positive_float,
        default=None,
        help="Gaspari-Cohn half-width of the forecast covariance, grid cells (default: none)",
    )
    add("--inflation", type=_positive_float, default=1.0, help="covariance inflation rho")
    add(
        "--periodic",
        choices=["auto", "none", "x", "y", "xy"],
        default="auto",
        help="axes that wrap (auto: x for l96, else x if the pipeline's models are periodic)",
    )
    add("--members", type=_positive_int, default=None, help="default: the initial file's")
    add("--num-inference-steps", type=_positive_int, default=32)
    _add_qc_arguments(add)
    add("--seed", type=_nonnegative_int, default=0, help="cycle k, member m draw from (seed, k, m)")
    add("--out", required=True, help="the analyses file (.nc)")
    add("--overwrite", action="store_true", help="replace an existing --out")
    add("--no-progress", dest="progress", action="store_false")
    cycle.set_defaults(run=_cycle)

    evaluate = commands.add_parser(
        "evaluate", help="score an analysis file against a truth file, per level"
    )
    evaluate.add_argument("--analysis", required=True, help="a file written by slams assimilate")
    evaluate.add_argument("--truth", required=True, help="netCDF / zarr with the true states")
    evaluate.add_argument("--variable", default=None, help="the truth's variable")
    evaluate.add_argument("--trajectory", type=int, default=None, help="index in the truth file")
    evaluate.add_argument("--background", default=None, help="also score this background")
    evaluate.add_argument("--json", default=None, help="write every score to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    train = commands.add_parser(
        "train",
        help="print (or --run) the accelerate commands of both training stages for a data file",
        description="Print (or --run) the accelerate commands of both training stages for a data "
        "file, their options checked first: the configs of slams-qg-tiny (from the checkout's "
        "training/configs) with your --data. Paths are shown relative to the current folder.",
    )
    add = train.add_argument
    add("--data", required=True, help="zarr / netCDF store or datasets folder")
    add("--variable", default=None, help="the store's variable (default: guessed)")
    add(
        "--output-dir",
        default=None,
        help="write stage 1 to DIR/autoencoder and stage 2 to DIR/score (default: the configs' "
        "output_dir, runs/qg-tiny-autoencoder and runs/slams-qg-tiny)",
    )
    add(
        "--autoencoder-config",
        default=str(TRAINING_SCRIPTS / "configs" / "qg-tiny-autoencoder.yaml"),
        help="YAML of stage 1 options (default: training/configs/qg-tiny-autoencoder.yaml)",
    )
    add(
        "--score-config",
        default=str(TRAINING_SCRIPTS / "configs" / "qg-tiny-score.yaml"),
        help="YAML of stage 2 options (default: training/configs/qg-tiny-score.yaml)",
    )
    add("--autoencoder-args", default="", help="more stage-1 options, one string")
    add("--score-args", default="", help="more stage-2 options, one string")
    add(
        "--num-processes",
        type=_positive_int,
        default=1,
        help="processes (more than 1: --multi_gpu; on CPUs a gloo group) (default: %(default)s)",
    )
    add("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    add(
        "--run",
        dest="execute",
        action="store_true",
        help="run the commands; a failing stage stops with one line and exit status 2",
    )
    train.set_defaults(run=_train)

    simulate = commands.add_parser("simulate", help="generate a testbed dataset")
    testbeds = simulate.add_subparsers(dest="testbed", required=True)
    qg = testbeds.add_parser(
        "qg", help="multi-layer quasi-geostrophic atmosphere: t(trajectory, time, level, y, x)"
    )
    add_simulate_qg_arguments(qg)
    qg.set_defaults(run=simulate_qg)
    l96 = testbeds.add_parser(
        "l96", help="Lorenz-96 ring (F = 8, 40 variables, RK4): u(trajectory, time, level, x)"
    )
    add_simulate_l96_arguments(l96)
    l96.set_defaults(run=simulate_l96)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        if os.environ.get("SLAMS_DEBUG"):
            raise
        print(f"slams {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
