"""Training throughput of the score network (windows per second), latent and pixel space.

One optimisation step = the ε loss of ``slams_diffusers.training.denoising_loss`` on a batch of
5-step windows, backward, AdamW step; timed after warm-up. Models: the default ``ScoreNet``
(hidden 32/64/128, 2 blocks per level) and the tiny embedded one (``training/configs``: 32/64),
on the latent of a 5-level 64x64 state (4x16x16, f = 4) and on the state itself (pixel space).

    OMP_NUM_THREADS=2 python benchmarks/training_speed.py [--device cuda] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine, write

from slams_diffusers import ScoreNet, VPPredictorCorrectorScheduler
from slams_diffusers.training import denoising_loss

CASES = {
    "default, latent 4x16x16": ({}, (4, 16, 16)),
    "tiny (32/64), latent 4x16x16": ({"hidden_channels": (32, 64)}, (4, 16, 16)),
    "default, pixel 5x64x64": ({}, (5, 64, 64)),
    "tiny (32/64), pixel 5x64x64": ({"hidden_channels": (32, 64)}, (5, 64, 64)),
}


def throughput(kwargs: dict, shape: tuple, args, device: str) -> dict:
    torch.manual_seed(0)
    model = ScoreNet(in_channels=shape[0], window=5, periodic=True, **kwargs).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = VPPredictorCorrectorScheduler()
    windows = torch.randn(args.batch, 5, *shape, device=device)
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        with autocast:
            loss = denoising_loss(model, scheduler, windows, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.iterations):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.iterations
    return {
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "seconds_per_step": round(seconds, 4),
        "windows_per_second": round(args.batch / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    parser.add_argument("--name", default="training_speed")
    args = parser.parse_args()
    rows, results = [], {}
    for name, (kwargs, shape) in CASES.items():
        result = throughput(kwargs, shape, args, args.device)
        results[name] = result
        rows.append({"model": name, "batch": args.batch, **result})
        print(rows[-1], flush=True)
    payload = {"machine": machine(args.device), "settings": vars(args), "results": results}
    title = f"Score-net training throughput ({args.device}, batch {args.batch}, 5-step windows)"
    write(args.name, payload, list(rows[0]), rows, title)


if __name__ == "__main__":
    main()
