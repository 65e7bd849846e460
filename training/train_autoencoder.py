"""Stage 1 of SLAMS training: the state autoencoder, then the observation encoders.

    accelerate launch training/train_autoencoder.py \
        --config training/configs/qg-tiny-autoencoder.yaml

Phase ``autoencoder`` (``--autoencoder_steps``): ``StateAutoencoder`` on single states with the
level-normalised reconstruction loss. Then the EMA weights are frozen and ``scaling_factor`` is set
so the latent has unit variance, and its per-channel mean and std are recorded as the observation
encoder's latent prior. Phase ``encoder`` (``--encoder_steps``): each modality of the
``ObservationEncoder`` maps observations of a state, degraded at random on the fly
(``random_observations``: station sets and counts, noise, footprints, coarsening, clouds, dropped
modalities), to that state's latent, with a Gaussian NLL so each latent cell learns its variance.

Then, on the ``--eval_split`` part of the data (default ``val``), it calibrates the modalities'
likelihoods (``fit_likelihood_calibration``: each encoder's approximation variance and the
correlation of their errors, stored in the encoder's config and used when it fuses them) and
reports the autoencoder's per-level reconstruction RMSE [K] (the floor of the latent route's
accuracy), each encoder's calibration (mean squared z-score of its latent error, 1 when its
variances are honest) and the fused posterior's calibration and error for every subset of
modalities to the output, the trackers (tensorboard) and ``autoencoder_training.json`` (which
``train_score.py`` puts in the model card). ``--fit_fusion_only`` recalibrates an encoder already
trained (OUTPUT_DIR).

Any store :func:`~slams_diffusers.data.datasets.open_store` reads trains: one continuous run is
split by time (``--split_by``, ``--split_fractions``, ``--split_gap``), ``--levels`` takes a subset
of its levels, the level pressures are recorded in the autoencoder's config (``levels_hpa``), and
satellite channel peaks outside the data's levels are refused before any work.

Writes ``OUTPUT_DIR/autoencoder`` and ``OUTPUT_DIR/observation_encoder`` (safetensors), the input
of ``training/train_score.py --autoencoder OUTPUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from slams_diffusers import ObservationEncoder, StateAutoencoder
from slams_diffusers.data.datasets import LevelStatistics, level_pressures
from slams_diffusers.data.observing import (
    MODALITIES,
    TRAINING_NOISE_STD,
    log_uniform_rms,
    random_observations,
)
from slams_diffusers.observations import gaussian_weighting_functions, pressures_hpa
from slams_diffusers.training import (
    MetricsLog,
    ObservationEncoderLoss,
    add_training_arguments,
    batch_indices,
    encoder_batches,
    encoder_calibration,
    final_weights,
    fit_likelihood_calibration,
    fused_calibration,
    latent_prior_statistics,
    latent_scaling_factor,
    load_training_data,
    make_accelerator,
    make_ema,
    make_optimizer,
    optimise,
    parse_args,
    reconstruction_loss,
    reconstruction_rmse,
    restore_progress,
    run_main,
    run_record,
    seeded_generator,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    add = parser.add_argument
    add("--autoencoder_steps", type=int, default=2000)
    add("--encoder_steps", type=int, default=2000)
    add("--latent_channels", type=int, default=4)
    add("--downsample_factor", type=int, default=4)
    add("--hidden_channels", type=int, nargs="+", default=[32, 64, 128])
    add("--layers_per_block", type=int, default=1)
    add(
        "--periodic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the domain wraps in x (circular padding of the models)",
    )
    add(
        "--periodic_y",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="it also wraps in y (a doubly periodic testbed): simulated stations and clouds wrap",
    )
    add("--encoder_hidden_channels", type=int, default=32)
    add("--modalities", nargs="+", default=list(MODALITIES), choices=list(MODALITIES))
    add(
        "--satellite_peaks",
        type=float,
        nargs="+",
        default=[700.0, 500.0, 300.0],
        help="peak pressures [hPa] of the fixed satellite instrument's channels",
    )
    add("--satellite_width", type=float, default=0.5)
    add("--keep_probability", type=float, default=0.75, help="of each modality per state")
    add("--scaling_states", type=int, default=256, help="states used to set scaling_factor")
    add("--eval_states", type=int, default=64, help="states of --eval_split evaluated (at most)")
    add(
        "--fit_fusion_only",
        action="store_true",
        help="no training: recalibrate the likelihoods of the encoder saved in OUTPUT_DIR "
        "(OUTPUT_DIR/autoencoder, OUTPUT_DIR/observation_encoder) on --eval_split, save it and "
        "report the fused calibration before and after",
    )
    add(
        "--in_memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the training states into memory (else read lazily per batch)",
    )
    return parser


def check_observation_settings(args, pressures: list[float] | None, data) -> None:
    """Refuse, before any work, observation settings the data cannot support: a satellite
    without pressure levels, channel peaks outside the data's levels, a grid the autoencoder
    cannot downsample."""
    space = {str(d): data.sizes[d] for d in data.dims if d in ("y", "x")}
    if any(n % args.downsample_factor for n in space.values()):
        raise ValueError(
            f"--downsample_factor {args.downsample_factor}: the grid {space} is not divisible "
            "by it; expected a factor of every grid size (1, 2, 4 or 8)"
        )
    if "satellite" not in args.modalities:
        return
    if pressures is None:
        found = (
            f"level coordinate {data.coords['level'].values.tolist()} with attributes "
            f"{data.coords['level'].attrs}"
            if "level" in data.coords
            else "no level coordinate"
        )
        raise ValueError(
            f"--modalities includes satellite, but the data's levels are not pressure levels "
            f"({found}); a satellite channel is a weighted sum over pressure levels: pass "
            "--modalities stations gridded (or give the level coordinate units hPa or Pa)"
        )
    peaks = pressures_hpa(args.satellite_peaks, "--satellite_peaks")
    top, bottom = min(pressures), max(pressures)
    outside = [p for p in peaks if not top * (1 - 1e-6) <= p <= bottom * (1 + 1e-6)]
    if outside:
        inside = " ".join(f"{p:g}" for p in sorted(set(pressures), reverse=True))
        raise ValueError(
            f"--satellite_peaks {peaks} hPa: {outside} lie outside the data's levels "
            f"({top:g} to {bottom:g} hPa); a channel peaking there would be trained on a "
            f"truncated weighting function. Expected peaks within that range, e.g. "
            f"--satellite_peaks {inside}, or --modalities without satellite"
        )


def modality_specs(args, stats: LevelStatistics, pressures: list[float] | None) -> dict:
    """Encoder inputs: levels for stations / gridded fields, the instrument's channels for the
    satellite, normalised with the level statistics (columns: weighted means and stds); the noise
    std each encoder's variance is calibrated for (the rms of its training noise range)."""
    specs = {}
    for name in args.modalities:
        if name == "satellite":
            weights = gaussian_weighting_functions(
                torch.tensor(pressures), torch.tensor(args.satellite_peaks), args.satellite_width
            ).double()
            mean = (weights @ torch.tensor(stats.mean, dtype=torch.float64)).tolist()
            std = (weights @ torch.tensor(stats.std, dtype=torch.float64)).tolist()
            specs[name] = {"in_channels": len(mean), "input_mean": mean, "input_std": std}
        else:
            specs[name] = {
                "in_channels": len(stats.mean),
                "input_mean": list(stats.mean),
                "input_std": list(stats.std),
            }
        specs[name]["reference_noise_std"] = log_uniform_rms(*TRAINING_NOISE_STD[name])
    return specs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(build_parser(), argv)
    if args.fit_fusion_only:
        refit_fusion(args)
        return
    started = time.perf_counter()
    data = load_training_data(args, args.split)
    pressures = level_pressures(data)
    check_observation_settings(args, pressures, data)  # before any work
    accelerator = make_accelerator(args, find_unused_parameters=True)
    torch.manual_seed(args.seed)

    if args.in_memory:
        data = data.load()
    stats = LevelStatistics.compute(data)
    data = as_samples(data)
    spatial_dims = data.ndim - 2
    num_states = data.sizes["sample"]

    def states(indices: torch.Tensor, source=data) -> torch.Tensor:
        values = np.array(source.isel(sample=indices.numpy()).values, dtype=np.float32)
        return torch.from_numpy(values).to(accelerator.device)

    autoencoder = StateAutoencoder(
        levels=data.sizes["level"],
        latent_channels=args.latent_channels,
        spatial_dims=spatial_dims,
        downsample_factor=args.downsample_factor,
        hidden_channels=args.hidden_channels,
        layers_per_block=args.layers_per_block,
        periodic=args.periodic,
        levels_hpa=pressures,
        grid_shape=data.shape[2:],
        **stats.as_config(),
    )
    encoder = ObservationEncoder(
        modalities=modality_specs(args, stats, pressures),
        latent_channels=args.latent_channels,
        spatial_dims=spatial_dims,
        hidden_channels=args.encoder_hidden_channels,
        periodic=args.periodic,
    )
    encoder_loss = ObservationEncoderLoss(encoder)
    ae_ema, encoder_ema = make_ema(autoencoder, args), make_ema(encoder, args)
    processes = accelerator.num_processes
    ae_opt, ae_lr = make_optimizer(
        args, autoencoder.parameters(), args.autoencoder_steps, processes
    )
    enc_opt, enc_lr = make_optimizer(args, encoder.parameters(), args.encoder_steps, processes)
    autoencoder, encoder_loss, ae_opt, ae_lr, enc_opt, enc_lr = accelerator.prepare(
        autoencoder, encoder_loss, ae_opt, ae_lr, enc_opt, enc_lr
    )
    progress = restore_progress(accelerator, args, ae_ema, encoder_ema)
    log = MetricsLog(accelerator, args, "train_autoencoder")
    rank = accelerator.process_index
    batch = args.train_batch_size

    def indices(micro_step: int) -> torch.Tensor:
        return batch_indices(num_states, batch, micro_step, args.seed, rank, processes)

    def autoencoder_step(micro_step: int) -> torch.Tensor:
        return reconstruction_loss(autoencoder, states(indices(micro_step))[:, None])

    held_out = validation_states(args, batch * args.validation_batches, accelerator.device)

    def autoencoder_validation() -> float:
        chunks = held_out.split(batch) if held_out is not None else ()
        return sum(float(reconstruction_loss(autoencoder, c[:, None])) for c in chunks) / max(
            len(chunks), 1
        )

    # ---------------------------------------------------------------- phase 1
    optimise(
        accelerator,
        args,
        model=autoencoder,
        optimizer=ae_opt,
        lr_scheduler=ae_lr,
        ema=ae_ema,
        loss_fn=autoencoder_step,
        progress=progress,
        stop=args.autoencoder_steps,
        log=log,
        items_per_micro_step=batch,
        phase="autoencoder",
        validate=autoencoder_validation if held_out is not None else None,
    )

    # ---------------------------------------------------------------- phase 2
    frozen = accelerator.unwrap_model(autoencoder)
    if "scaling_factor" not in progress.values:  # first time past phase 1 (not a resume)
        final_weights(autoencoder, ae_ema)
        count = min(args.scaling_states, num_states)
        sample = torch.randperm(num_states, generator=seeded_generator(args.seed, 1))[:count]
        progress.values["scaling_factor"] = latent_scaling_factor(frozen, states(sample))
        frozen.register_to_config(scaling_factor=progress.values["scaling_factor"])
        prior_mean, prior_std = latent_prior_statistics(frozen, states(sample))
        progress.values["latent_prior_mean"], progress.values["latent_prior_std"] = (
            prior_mean,
            prior_std,
        )
    frozen.register_to_config(scaling_factor=progress.values["scaling_factor"])
    frozen.requires_grad_(False).eval()
    accelerator.unwrap_model(encoder_loss).encoder.register_to_config(
        latent_prior_mean=progress.values["latent_prior_mean"],
        latent_prior_std=progress.values["latent_prior_std"],
    )
    observe = observer(args, pressures, spatial_dims)

    def encoder_step(micro_step: int) -> torch.Tensor:
        truth = states(indices(micro_step))
        with torch.no_grad():
            latents = frozen.encode(truth[:, None])[:, 0]
        observations = [
            observe(truth[b], seeded_generator(args.seed, 2, micro_step, rank, b))
            for b in range(truth.shape[0])
        ]
        return encoder_loss(encoder_batches(observations, latents, args.modalities))

    def encoder_validation() -> float:
        total = 0.0
        for k, truth in enumerate(held_out.split(batch)):
            latents = frozen.encode(truth[:, None])[:, 0]
            observations = [
                observe(truth[b], seeded_generator(args.seed, 5, k, b))
                for b in range(truth.shape[0])
            ]
            total += float(encoder_loss(encoder_batches(observations, latents, args.modalities)))
        return total / len(held_out.split(batch))

    stop = args.autoencoder_steps + args.encoder_steps
    optimise(
        accelerator,
        args,
        model=encoder_loss,
        optimizer=enc_opt,
        lr_scheduler=enc_lr,
        ema=encoder_ema,
        loss_fn=encoder_step,
        progress=progress,
        stop=stop,
        log=log,
        items_per_micro_step=batch,
        phase="encoder",
        validate=encoder_validation if held_out is not None else None,
    )

    # ---------------------------------------------------------------- save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(args.output_dir)
        final_encoder = final_weights(encoder_loss, encoder_ema).encoder
        fit_fusion(args, frozen, final_encoder, observe, accelerator.device)
        frozen.save_pretrained(out / "autoencoder")
        final_encoder.save_pretrained(out / "observation_encoder")
        record = run_record(args, time.perf_counter() - started, accelerator)
        evaluation = evaluate(args, frozen, final_encoder, pressures, observe, accelerator.device)
        if evaluation is not None:
            record["evaluation"] = evaluation
            accelerator.log(evaluation_metrics(evaluation), step=stop)  # trackers
            accelerator.print(describe_evaluation(evaluation))
        (out / "autoencoder_training.json").write_text(json.dumps(record, indent=2, default=str))
    accelerator.end_training()


def observer(args, pressures: list[float] | None, spatial_dims: int):
    """``observe(truth, generator, keep_probability)``: the random degraded observations of one
    state that the encoders train on (``random_observations`` with the run's settings)."""
    periodic = (args.periodic_y, args.periodic)[-spatial_dims:]  # stations and clouds: (y, x)

    def observe(
        truth: torch.Tensor, generator: torch.Generator, keep_probability: float | None = None
    ) -> list:
        return random_observations(
            truth.cpu(),
            generator,
            model_pressures=pressures,
            modalities=args.modalities,
            keep_probability=args.keep_probability
            if keep_probability is None
            else keep_probability,
            satellite_peaks=args.satellite_peaks,
            satellite_width=(args.satellite_width, args.satellite_width),
            periodic=periodic,
        )

    return observe


def evaluation_states(args, device) -> torch.Tensor | None:
    """Up to ``--eval_states`` evenly spaced states of ``--eval_split`` ``(n, levels, *space)``;
    ``None`` (with a note) when there is no such split."""
    if args.eval_split is None or args.eval_states < 1:
        return None
    try:
        data = as_samples(load_training_data(args, args.eval_split))
    except ValueError as error:
        print(f"no stage-1 evaluation: {error}", flush=True)
        return None
    count = min(args.eval_states, data.sizes["sample"])
    chosen = np.unique(np.linspace(0, data.sizes["sample"] - 1, count).round().astype(int))
    states = torch.from_numpy(np.array(data.isel(sample=chosen).values, dtype=np.float32))
    return states.to(device)


def fit_fusion(args, autoencoder, encoder, observe, device) -> dict | None:
    """Calibrate the encoders' likelihoods on ``--eval_split`` (every modality observed, draws of
    their own stream): each modality's approximation variance and their error correlation, set
    in ``encoder``'s config (docs/method.md §Fusing modalities). ``None`` and the encoder
    unchanged without held-out states."""
    held_out = fully_observed(args, autoencoder, observe, device, stream=6)
    if held_out is None:
        return None
    variances, correlation = fit_likelihood_calibration(encoder, *held_out)
    encoder.register_to_config(
        modality_approximation_variance=variances,
        modality_error_correlation=correlation or None,
    )
    return {"modality_approximation_variance": variances, "modality_error_correlation": correlation}


def refit_fusion(args) -> None:
    """``--fit_fusion_only``: recalibrate OUTPUT_DIR's encoder (:func:`fit_fusion`), save it (the
    weights unchanged) and write the fused calibration before and after to
    OUTPUT_DIR/fusion_fit.json."""
    out = Path(args.output_dir)
    autoencoder = StateAutoencoder.from_pretrained(out / "autoencoder").eval()
    encoder = ObservationEncoder.from_pretrained(out / "observation_encoder").eval()
    pressures = autoencoder.config.levels_hpa
    observe = observer(args, pressures, autoencoder.config.spatial_dims)
    device = torch.device("cpu")
    encoder.register_to_config(
        modality_approximation_variance=None, modality_error_correlation=None
    )
    before = fusion_evaluation(args, autoencoder, encoder, observe, device)
    fitted = fit_fusion(args, autoencoder, encoder, observe, device)
    if fitted is None:
        raise SystemExit("--fit_fusion_only needs an --eval_split")
    encoder.save_pretrained(out / "observation_encoder")
    after = fusion_evaluation(args, autoencoder, encoder, observe, device)
    record = {**fitted, "uncalibrated": before, "calibrated": after}
    (out / "fusion_fit.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2), flush=True)


def fusion_evaluation(args, autoencoder, encoder, observe, device) -> dict | None:
    """The fused posterior's calibration and error for every subset of the modalities
    (``fused_calibration``) on ``--eval_split``, every modality observed (draws of their own
    stream, not those the correlation is fitted on)."""
    held_out = fully_observed(args, autoencoder, observe, device, stream=7)
    return None if held_out is None else fused_calibration(encoder, *held_out)


def fully_observed(args, autoencoder, observe, device, stream: int) -> tuple | None:
    """``(latents, observations)`` of the ``--eval_split`` states, every modality observed,
    drawn from the random stream ``stream``; ``None`` without such states."""
    states = evaluation_states(args, device)
    if states is None:
        return None
    with torch.no_grad():
        latents = autoencoder.encode(states[:, None])[:, 0]
    observations = [
        observe(states[b], seeded_generator(args.seed, stream, b), keep_probability=1.0)
        for b in range(len(states))
    ]
    return latents, observations


def as_samples(data):
    """``(trajectory?, time, level, *space)`` -> ``(sample, level, *space)``."""
    if "trajectory" in data.dims:
        return data.stack(sample=("trajectory", "time")).transpose("sample", ...)
    return data.rename(time="sample")


def validation_states(args, count: int, device) -> torch.Tensor | None:
    """``count`` evenly spaced states of ``--eval_split`` ``(count, levels, *space)``, the fixed
    batches of the validation loss; ``None`` without such a split."""
    if args.eval_split is None or count < 1:
        return None
    try:
        data = as_samples(load_training_data(args, args.eval_split))
    except ValueError:
        return None
    chosen = np.unique(np.linspace(0, data.sizes["sample"] - 1, count).round().astype(int))
    values = np.array(data.isel(sample=chosen).values, dtype=np.float32)
    return torch.from_numpy(values).to(device)


def evaluate(args, autoencoder, encoder, pressures, observe, device) -> dict | None:
    """Reconstruction RMSE per level [K], encoder calibration (mean z² per modality) and the
    fused calibration of every subset of modalities on up to ``--eval_states`` evenly spaced
    states of ``--eval_split``; ``None`` (with a note) when the data has no such split."""
    states = evaluation_states(args, device)
    if states is None:
        return None
    rmse = reconstruction_rmse(autoencoder, states)
    units = load_training_data(args, args.eval_split).attrs.get("units")
    with torch.no_grad():
        latents = autoencoder.encode(states[:, None])[:, 0]
    observations = [
        observe(states[b], seeded_generator(args.seed, 4, b)) for b in range(len(states))
    ]
    names = (
        [f"{p:g} hPa" for p in pressures]
        if pressures is not None
        else [f"level {i}" for i in range(len(rmse))]
    )
    return {
        "split": args.eval_split,
        "states": len(states),
        "units": str(units) if units else None,
        "reconstruction_rmse": dict(zip(names, rmse, strict=True)),
        "encoder_mean_z2": encoder_calibration(encoder, latents, observations),
        "fused": fusion_evaluation(args, autoencoder, encoder, observe, device),
    }


def evaluation_metrics(evaluation: dict) -> dict[str, float]:
    """The evaluation as flat logged values."""
    values = {f"eval/rmse/{k}": v for k, v in evaluation["reconstruction_rmse"].items()}
    values.update({f"eval/mean_z2/{k}": v for k, v in evaluation["encoder_mean_z2"].items()})
    for subset, scores in (evaluation.get("fused") or {}).items():
        values.update({f"eval/fused/{subset}/{k}": v for k, v in scores.items()})
    return values


def describe_evaluation(evaluation: dict) -> str:
    rmse = ", ".join(f"{k} {v:.3g}" for k, v in evaluation["reconstruction_rmse"].items())
    z2 = ", ".join(f"{k} {v:.3g}" for k, v in evaluation["encoder_mean_z2"].items())
    fused = ", ".join(
        f"{k} {v['mean_z2']:.3g} (mse {v['mse']:.3g})"
        for k, v in (evaluation.get("fused") or {}).items()
    )
    return (
        f"stage-1 evaluation on {evaluation['states']} {evaluation['split']!r} states: "
        f"autoencoder reconstruction RMSE [{evaluation['units'] or 'data units'}] {rmse}; "
        f"encoder calibration, mean z^2 (1 = calibrated) {z2 or 'no observation'}; "
        f"fused, mean z^2 {fused or 'not evaluated'}"
    )


if __name__ == "__main__":
    run_main(main)
