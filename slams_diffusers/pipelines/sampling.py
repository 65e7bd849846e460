"""The sampling loop of :class:`~slams_diffusers.SLAMSPipeline` (docs/method.md §Sampling)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..guidance import GuidedScore

__all__ = ["sample_latents"]


def sample_latents(
    pipe: Any,
    guided: GuidedScore,
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    num_members: int,
    num_inference_steps: int,
    corrector_steps: int,
    tau: float,
    member_batch_size: int | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback_on_step_end: Callable[[Any, int, Tensor, dict], dict] | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
) -> Tensor:
    """The loop of ``pipe`` (its scheduler, progress bar and the callback's first argument;
    docs/method.md §Sampling): ``num_members`` latents of ``shape`` (per member), ``device`` and
    ``dtype``, from ``N(0, init_noise_sigma² I)``, each predictor step followed by
    ``corrector_steps`` Langevin corrections with the guided ε, members in batches of
    ``member_batch_size`` (a list of generators, one per member, makes the draws
    independent of it)."""
    pipe.scheduler.set_timesteps(num_inference_steps, device=device)
    batch = member_batch_size or num_members
    chunks = [
        range(start, min(start + batch, num_members)) for start in range(0, num_members, batch)
    ]
    results = []
    with pipe.progress_bar(total=num_inference_steps * len(chunks)) as progress:
        for chunk in chunks:
            generators = (
                generator[chunk.start : chunk.stop] if isinstance(generator, list) else generator
            )
            latents = randn_tensor(
                (len(chunk), *shape), generator=generators, device=device, dtype=dtype
            )
            latents = latents * pipe.scheduler.init_noise_sigma
            for step, t in enumerate(pipe.scheduler.timesteps):
                latents = pipe.scheduler.step(guided(latents, t), t, latents).prev_sample
                s = torch.as_tensor(pipe.scheduler.next_timestep(t), device=device)
                for _ in range(corrector_steps):
                    latents = pipe.scheduler.step_correct(
                        guided(latents, s), s, latents, generator=generators, tau=tau
                    ).prev_sample
                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    callback_kwargs = {
                        name: available[name] for name in callback_on_step_end_tensor_inputs
                    }
                    returned = callback_on_step_end(pipe, step, t, callback_kwargs) or {}
                    latents = returned.get("latents", latents)
                progress.update()
            results.append(latents)
    return torch.cat(results)
