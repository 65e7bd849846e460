"""Stage 1 of SLAMS training: the state autoencoder, then the observation encoders.

    accelerate launch training/train_autoencoder.py \
        --config training/configs/qg-tiny-autoencoder.yaml

Phase ``autoencoder`` (``--autoencoder_steps``): ``StateAutoencoder`` on single states with the
level-normalised reconstruction loss. Then the EMA weights are frozen and ``scaling_factor`` is set
so the latent has unit variance. Phase ``encoder`` (``--encoder_steps``): each modality of the
``ObservationEncoder`` maps observations of a state, degraded at random on the fly
(``random_observations``: station sets and counts, noise, footprints, coarsening, clouds, dropped
modalities), to that state's latent, with a Gaussian NLL so each latent cell learns its variance.

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
from slams_diffusers.data.datasets import LevelStatistics
from slams_diffusers.data.observing import (
    MODALITIES,
    TRAINING_NOISE_STD,
    log_uniform_rms,
    random_observations,
)
from slams_diffusers.observations import gaussian_weighting_functions
from slams_diffusers.training import (
    MetricsLog,
    ObservationEncoderLoss,
    add_training_arguments,
    batch_indices,
    encoder_batches,
    final_weights,
    latent_scaling_factor,
    load_training_data,
    make_accelerator,
    make_ema,
    make_optimizer,
    optimise,
    parse_args,
    reconstruction_loss,
    restore_progress,
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
    add(
        "--in_memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load the training states into memory (else read lazily per batch)",
    )
    return parser


def modality_specs(args, stats: LevelStatistics, pressures: np.ndarray) -> dict:
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
    started = time.perf_counter()
    accelerator = make_accelerator(args, find_unused_parameters=True)
    torch.manual_seed(args.seed)

    data = load_training_data(args, args.split)
    if args.in_memory:
        data = data.load()
    stats = LevelStatistics.compute(data)
    if "trajectory" in data.dims:
        data = data.stack(sample=("trajectory", "time")).transpose("sample", ...)
    else:
        data = data.rename(time="sample")
    pressures = np.asarray(data["level"].values, dtype=np.float64)
    spatial_dims = data.ndim - 2
    num_states = data.sizes["sample"]

    def states(indices: torch.Tensor) -> torch.Tensor:
        values = np.asarray(data.isel(sample=indices.numpy()).values, dtype=np.float32)
        return torch.from_numpy(values).to(accelerator.device)

    autoencoder = StateAutoencoder(
        levels=len(pressures),
        latent_channels=args.latent_channels,
        spatial_dims=spatial_dims,
        downsample_factor=args.downsample_factor,
        hidden_channels=args.hidden_channels,
        layers_per_block=args.layers_per_block,
        periodic=args.periodic,
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

    # ---------------------------------------------------------------- phase 1
    optimise(
        accelerator,
        args,
        autoencoder,
        ae_opt,
        ae_lr,
        ae_ema,
        autoencoder_step,
        progress,
        args.autoencoder_steps,
        log,
        batch,
        "autoencoder",
    )

    # ---------------------------------------------------------------- phase 2
    frozen = accelerator.unwrap_model(autoencoder)
    if "scaling_factor" not in progress.values:  # first time past phase 1 (not a resume)
        final_weights(autoencoder, ae_ema)
        count = min(args.scaling_states, num_states)
        sample = torch.randperm(num_states, generator=seeded_generator(args.seed, 1))[:count]
        progress.values["scaling_factor"] = latent_scaling_factor(frozen, states(sample))
    frozen.register_to_config(scaling_factor=progress.values["scaling_factor"])
    frozen.requires_grad_(False).eval()
    periodic = (args.periodic_y, args.periodic)[-spatial_dims:]  # stations and clouds: (y, x)

    def encoder_step(micro_step: int) -> torch.Tensor:
        truth = states(indices(micro_step))
        with torch.no_grad():
            latents = frozen.encode(truth[:, None])[:, 0]
        observations = []
        for b in range(truth.shape[0]):
            generator = seeded_generator(args.seed, 2, micro_step, rank, b)
            observations.append(
                random_observations(
                    truth[b].cpu(),
                    generator,
                    model_pressures=pressures,
                    modalities=args.modalities,
                    keep_probability=args.keep_probability,
                    satellite_peaks=args.satellite_peaks,
                    satellite_width=(args.satellite_width, args.satellite_width),
                    periodic=periodic,
                )
            )
        return encoder_loss(encoder_batches(observations, latents, args.modalities))

    stop = args.autoencoder_steps + args.encoder_steps
    optimise(
        accelerator,
        args,
        encoder_loss,
        enc_opt,
        enc_lr,
        encoder_ema,
        encoder_step,
        progress,
        stop,
        log,
        batch,
        "encoder",
    )

    # ---------------------------------------------------------------- save
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(args.output_dir)
        frozen.save_pretrained(out / "autoencoder")
        final_weights(encoder_loss, encoder_ema).encoder.save_pretrained(
            out / "observation_encoder"
        )
        record = run_record(args, time.perf_counter() - started, accelerator)
        (out / "autoencoder_training.json").write_text(json.dumps(record, indent=2, default=str))
    accelerator.end_training()


if __name__ == "__main__":
    main()
