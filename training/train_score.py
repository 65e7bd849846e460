"""Stage 2 of SLAMS training: the score network on Markov-blanket windows of trajectories.

    accelerate launch training/train_score.py --config training/configs/qg-tiny-score.yaml

With ``--autoencoder DIR`` (the output of ``train_autoencoder.py``) the training trajectories are
encoded once with the frozen autoencoder and kept (the latent cache); without it the score net
learns the level-normalised states themselves (pixel space: the SDA baseline; the "autoencoder" is
a ``LevelNormalizer`` with the training data's per-level statistics). Windows of
``--window = 2k + 1`` consecutive steps never cross trajectories; the loss is the ε loss. At the end
the whole ``SLAMSPipeline`` is saved to ``OUTPUT_DIR/pipeline`` (EMA weights, level statistics in
the autoencoder's config, a model card as README.md, its inputs in model_card.json), then uploaded
with ``--push_to_hub``.

The data are read as in stage 1 (same ``--split_by``, ``--split_fractions``, ``--split_gap``; the
levels the autoencoder records, or ``--levels``); a time split needs ``--split_gap`` of at least
``--window``. Stage 1's evaluation (``autoencoder_training.json``) goes into the model card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from slams_diffusers import (
    LevelNormalizer,
    ObservationEncoder,
    ScoreNet,
    SLAMSPipeline,
    StateAutoencoder,
    VPPredictorCorrectorScheduler,
)
from slams_diffusers.data.datasets import LevelStatistics, level_pressures
from slams_diffusers.hub import pipeline_card, push_folder_to_hub
from slams_diffusers.training import (
    MetricsLog,
    add_training_arguments,
    batch_indices,
    denoising_loss,
    final_weights,
    load_training_data,
    make_accelerator,
    make_ema,
    make_optimizer,
    optimise,
    parse_args,
    restore_progress,
    run_main,
    run_record,
    seeded_generator,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    add = parser.add_argument
    add(
        "--autoencoder",
        default=None,
        help="stage-1 output folder (autoencoder/, observation_encoder/); none: pixel space",
    )
    add("--max_train_steps", type=int, default=4000)
    add("--window", type=int, default=5, help="2k + 1 steps per training window")
    add("--hidden_channels", type=int, nargs="+", default=[32, 64, 128])
    add("--layers_per_block", type=int, default=2)
    add("--time_embedding_dim", type=int, default=128)
    add("--periodic", action=argparse.BooleanOptionalAction, default=True)
    add("--schedule", default="cosine", choices=["cosine", "linear"])
    add("--encode_batch_size", type=int, default=64, help="states per autoencoder call")
    add("--dataset_name", default=None, help="dataset name or Hub id for the model card")
    add("--description", default=None, help="model card description")
    return parser


def pixel_space(data, divisor: int = 1) -> LevelNormalizer:
    """The pixel-space "autoencoder": ``(x - mean_l) / std_l`` with the per-level statistics of
    ``data`` (``(trajectory?, time, level, *space)``), and its levels' pressures. A 2-D grid whose
    ``y`` size the score net's ``divisor`` does not divide (a 61 × 120 global grid) is padded
    there (``LevelNormalizer(pad_to_multiple=divisor)``)."""
    stats = LevelStatistics.compute(data)
    spatial_dims = data.ndim - (3 if "trajectory" in data.dims else 2)
    grid = data.shape[data.ndim - spatial_dims :]
    pad = divisor if spatial_dims == 2 and grid[0] % divisor else 1
    return LevelNormalizer(
        levels=data.sizes["level"],
        spatial_dims=spatial_dims,
        levels_hpa=level_pressures(data),
        grid_shape=grid,
        pad_to_multiple=pad,
        **stats.as_config(),
    )


def card_evaluation(stage1: dict) -> dict[str, float | str] | None:
    """Stage 1's evaluation (``autoencoder_training.json``) as model-card rows."""
    evaluation = stage1.get("evaluation")
    if not evaluation:
        return None
    where = f"{evaluation['split']}, {evaluation['states']} states"
    units = evaluation.get("units") or "data units"
    rows = {
        f"autoencoder reconstruction RMSE, {level} [{units}] ({where})": value
        for level, value in evaluation["reconstruction_rmse"].items()
    }
    rows.update(
        {
            f"{name} encoder calibration, mean z² (1 = calibrated; {where})": value
            for name, value in evaluation["encoder_mean_z2"].items()
        }
    )
    rows.update(
        {
            f"{subset} fused posterior, mean z² / MSE ({where}, every modality observed)": (
                f"{scores['mean_z2']:.3g} / {scores['mse']:.3g}"
            )
            for subset, scores in (evaluation.get("fused") or {}).items()
        }
    )
    return rows


def cache_trajectories(data, autoencoder, batch: int, device) -> torch.Tensor:
    """The training trajectories in diffusion space, ``(N, T, C, *space)``: ``E(x)`` (a learned
    autoencoder, or the level normaliser ``(x - mean_l) / std_l``). Read one trajectory at a time
    (lazy stores)."""
    if "trajectory" not in data.dims:
        data = data.expand_dims("trajectory")
    cached = []
    for i in range(data.sizes["trajectory"]):
        values = np.asarray(data.isel(trajectory=i).values, dtype=np.float32)
        states = torch.from_numpy(values).to(device)
        with torch.no_grad():
            cached.append(
                torch.cat(
                    [
                        autoencoder.encode(states[j : j + batch][None])[0]
                        for j in range(0, len(states), batch)
                    ]
                )
            )
    return torch.stack(cached)


def validation_windows(args, autoencoder, levels, device) -> torch.Tensor | None:
    """``--validation_batches`` batches of evenly spaced windows of ``--eval_split`` in diffusion
    space ``(N, window, C, *space)``: the fixed batches of the validation loss (``None`` without
    such a split)."""
    count = args.train_batch_size * args.validation_batches
    if args.eval_split is None or count < 1:
        return None
    try:
        data = load_training_data(args, args.eval_split, levels=levels, window=args.window)
    except ValueError:
        return None
    cache = cache_trajectories(data, autoencoder, args.encode_batch_size, device)
    per_trajectory = cache.shape[1] - args.window + 1
    if per_trajectory < 1:
        return None
    total = cache.shape[0] * per_trajectory
    index = torch.from_numpy(np.linspace(0, total - 1, count).round().astype(np.int64))
    index = index.to(cache.device)
    offsets = torch.arange(args.window, device=cache.device)
    trajectory, start = index // per_trajectory, index % per_trajectory
    return cache[trajectory[:, None], start[:, None] + offsets]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(build_parser(), argv)
    started = time.perf_counter()
    encoder, levels = None, args.levels
    if args.autoencoder is not None:
        folder = Path(args.autoencoder)
        if not (folder / "autoencoder").is_dir():
            raise ValueError(
                f"--autoencoder {str(folder)!r} has no autoencoder/ folder; expected the "
                "--output_dir of training/train_autoencoder.py"
            )
        autoencoder = StateAutoencoder.from_pretrained(folder / "autoencoder")
        if (folder / "observation_encoder").is_dir():
            encoder = ObservationEncoder.from_pretrained(folder / "observation_encoder")
        if levels is None:  # the levels stage 1 was trained on
            levels = autoencoder.config.levels_hpa
    data = load_training_data(args, args.split, levels=levels, window=args.window)
    if data.sizes["time"] < args.window:
        raise ValueError(
            f"--window {args.window} is longer than the trajectories of --split {args.split} "
            f"({data.sizes['time']} steps)"
        )
    if args.autoencoder is None:
        autoencoder = pixel_space(data, 2 ** (len(args.hidden_channels) - 1))
    elif autoencoder.config.levels != data.sizes["level"]:
        raise ValueError(
            f"--autoencoder was trained on {autoencoder.config.levels} levels; --data has "
            f"{data.sizes['level']}: pass the same --data and --levels as stage 1"
        )
    accelerator = make_accelerator(args)
    torch.manual_seed(args.seed)
    autoencoder.requires_grad_(False).eval().to(accelerator.device)
    cache = cache_trajectories(data, autoencoder, args.encode_batch_size, accelerator.device)
    num_trajectories, steps = cache.shape[:2]
    per_trajectory = steps - args.window + 1
    offsets = torch.arange(args.window, device=cache.device)

    score_model = ScoreNet(
        in_channels=cache.shape[2],
        window=args.window,
        spatial_dims=cache.ndim - 3,
        hidden_channels=args.hidden_channels,
        layers_per_block=args.layers_per_block,
        periodic=args.periodic,
        time_embedding_dim=args.time_embedding_dim,
    )
    scheduler = VPPredictorCorrectorScheduler(schedule=args.schedule)
    ema = make_ema(score_model, args)
    optimizer, lr_scheduler = make_optimizer(
        args, score_model.parameters(), args.max_train_steps, accelerator.num_processes
    )
    score_model, optimizer, lr_scheduler = accelerator.prepare(score_model, optimizer, lr_scheduler)
    progress = restore_progress(accelerator, args, ema)
    log = MetricsLog(accelerator, args, "train_score")
    rank, processes = accelerator.process_index, accelerator.num_processes

    def score_step(micro_step: int) -> torch.Tensor:
        index = batch_indices(
            num_trajectories * per_trajectory,
            args.train_batch_size,
            micro_step,
            args.seed,
            rank,
            processes,
        ).to(cache.device)
        trajectory, start = index // per_trajectory, index % per_trajectory
        windows = cache[trajectory[:, None], start[:, None] + offsets]
        generator = seeded_generator(args.seed, 3, micro_step, rank)
        return denoising_loss(score_model, scheduler, windows, generator)

    held_out = validation_windows(args, autoencoder, levels, accelerator.device)

    def score_validation() -> float:
        batches = held_out.split(args.train_batch_size)
        return sum(
            float(denoising_loss(score_model, scheduler, w, seeded_generator(args.seed, 6, k)))
            for k, w in enumerate(batches)
        ) / len(batches)

    optimise(
        accelerator,
        args,
        model=score_model,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=ema,
        loss_fn=score_step,
        progress=progress,
        stop=args.max_train_steps,
        log=log,
        items_per_micro_step=args.train_batch_size,
        phase="score",
        validate=score_validation if held_out is not None else None,
        snapshot=lambda folder: accelerator.unwrap_model(score_model).save_pretrained(folder),
    )

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        out = Path(args.output_dir) / "pipeline"
        pipeline = SLAMSPipeline(
            score_model=final_weights(score_model, ema),
            scheduler=scheduler,
            autoencoder=autoencoder,
            observation_encoder=encoder,
        )
        training = {"score": run_record(args, time.perf_counter() - started, accelerator)}
        stage1 = Path(args.autoencoder or "") / "autoencoder_training.json"
        evaluation = None
        if args.autoencoder is not None and stage1.is_file():
            record = json.loads(stage1.read_text())
            training = {"autoencoder": record, **training}
            evaluation = card_evaluation(record)
        pipeline.save_pretrained(out)
        pipeline_card(
            out,
            repo_id=args.hub_model_id,
            base_description=args.description or describe(pipeline, cache, args),
            datasets=[args.dataset_name] if args.dataset_name else [],
            training=training,
            evaluation=evaluation,
        )
        accelerator.print(f"saved the pipeline to {out}")
        if args.push_to_hub:
            url = push_folder_to_hub(out, args.hub_model_id, private=args.hub_private)
            accelerator.print(f"uploaded to {url}")
    accelerator.end_training()


def describe(pipeline: SLAMSPipeline, cache: torch.Tensor, args: argparse.Namespace) -> str:
    """Default model card description: the spaces, the window and the model sizes."""
    sizes = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in (
            ("score_model", pipeline.score_model),
            ("autoencoder", pipeline.autoencoder),
            ("observation_encoder", pipeline.observation_encoder),
        )
        if module is not None and any(True for _ in module.parameters())
    }
    pixel = isinstance(pipeline.autoencoder, LevelNormalizer)
    space = "pixel (SDA baseline)" if pixel else "latent"
    shape = "x".join(str(s) for s in cache.shape[2:])
    levels = pipeline.autoencoder.config.get("levels_hpa")
    where = f" on {'/'.join(f'{p:g}' for p in levels)} hPa" if levels else ""
    counts = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in sizes.items())
    return (
        f"SLAMS pipeline: score-based data assimilation in {space} space ({shape} per step), "
        f"Markov-blanket window of {args.window} steps{where}. Parameters: {counts}. "
        f"Trained on {cache.shape[0]} trajectories of {cache.shape[1]} steps."
    )


if __name__ == "__main__":
    run_main(main)
