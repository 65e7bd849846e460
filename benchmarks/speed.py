"""Time one assimilation in pixel space (SDA) and in latent space (SLAMS, f = 4).

Untrained models of the default sizes, a 5-level 64x64 state, stations + satellite +
background, 32 members, 64 steps, 1 correction, in one run; each space runs in its own
process so that its peak memory is its own.

    OMP_NUM_THREADS=2 python benchmarks/speed.py [--covariance moment_matching] [--device cpu]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch
from _common import machine, write

LEVELS, SIZE = 5, 64
PRESSURES = [850.0, 700.0, 500.0, 300.0, 200.0]
MEAN = [282.0, 273.0, 252.0, 228.0, 218.0]
STD = [4.0, 4.0, 3.5, 3.0, 3.0]


def build(space: str):
    from slams_diffusers import (
        LevelNormalizer,
        ObservationEncoder,
        ScoreNet,
        SLAMSPipeline,
        StateAutoencoder,
        VPPredictorCorrectorScheduler,
    )

    torch.manual_seed(0)
    if space == "pixel":
        return SLAMSPipeline(
            score_model=ScoreNet(in_channels=LEVELS),
            scheduler=VPPredictorCorrectorScheduler(),
            autoencoder=LevelNormalizer(
                levels=LEVELS, spatial_dims=2, level_mean=MEAN, level_std=STD
            ),
        )
    return SLAMSPipeline(
        score_model=ScoreNet(),
        scheduler=VPPredictorCorrectorScheduler(),
        autoencoder=StateAutoencoder(levels=LEVELS, level_mean=MEAN, level_std=STD),
        observation_encoder=ObservationEncoder(
            modalities={
                "stations": {"in_channels": LEVELS, "input_mean": MEAN, "input_std": STD},
                "satellite": {"in_channels": 3, "input_mean": MEAN[1:4], "input_std": STD[1:4]},
            }
        ),
    )


def problem():
    from slams_diffusers import Satellite, Stations, gaussian_weighting_functions

    generator = torch.Generator().manual_seed(0)
    truth = torch.tensor(MEAN)[:, None, None] + torch.tensor(STD)[:, None, None] * torch.randn(
        LEVELS, SIZE, SIZE, generator=generator
    )
    stations = Stations.simulate(
        truth,
        positions=torch.rand(64, 2, generator=generator) * (SIZE - 1),
        levels=list(range(LEVELS)),
        noise_std=0.5,
        generator=generator,
    )
    satellite = Satellite.simulate(
        truth,
        weights=gaussian_weighting_functions(PRESSURES, [700.0, 500.0, 300.0]),
        footprint=4,
        noise_std=1.0,
        generator=generator,
    )
    background = truth + torch.randn(truth.shape, generator=generator)
    return background, [stations, satellite]


def run(space: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    pipe = build(space).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    background, observations = problem()
    counts = {"forward": 0, "backward": 0, "forward_samples": 0}

    def count_backward(gradient):
        counts["backward"] += 1

    def count_forward(module, inputs, output):
        counts["forward"] += 1
        counts["forward_samples"] += inputs[0].shape[0]
        if output.sample.requires_grad:
            output.sample.register_hook(count_backward)

    pipe.score_model.register_forward_hook(count_forward)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe(
        background=background,
        background_error_std=1.0,
        observations=observations,
        num_members=args.members,
        num_inference_steps=args.steps,
        corrector_steps=args.corrector_steps,
        likelihood_covariance=args.covariance,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    return {
        "space": space,
        "seconds": round(time.perf_counter() - start, 2),
        "score_net_forward_passes": counts["forward"],
        "score_net_backward_passes": counts["backward"],
        "members_x_forward_passes": counts["forward_samples"],
        "peak_memory_MiB": round(peak, 1),
        "peak_memory_kind": "cuda max allocated" if args.device != "cpu" else "process max RSS",
        "diffusion_shape": "5x64x64" if space == "pixel" else "4x16x16",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--corrector_steps", type=int, default=1)
    parser.add_argument(
        "--covariance",
        default="moment_matching",
        choices=["moment_matching", "tweedie", "diagonal"],  # "tweedie": moment matching
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--name", default="speed")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for space in ("latent", "pixel"):
        with context.Pool(1) as pool:
            rows.append(pool.apply(run, (space, args)))
        print(rows[-1], flush=True)
    latent, pixel = rows
    ratio = pixel["seconds"] / latent["seconds"]
    write(
        args.name,
        {
            "machine": machine(args.device) | {"torch_threads": args.threads},
            "members": args.members,
            "steps": args.steps,
            "corrector_steps": args.corrector_steps,
            "likelihood_covariance": args.covariance,
            "rows": rows,
            "pixel_over_latent_time": round(ratio, 2),
        },
        list(rows[0]),
        rows,
        f"One assimilation, {args.members} members, {args.steps} steps, "
        f"{args.corrector_steps} correction(s), {args.covariance} covariance: "
        f"pixel / latent time = {ratio:.1f}x",
    )


if __name__ == "__main__":
    main()
