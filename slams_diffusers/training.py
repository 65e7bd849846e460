"""Building blocks of the training scripts (``training/train_autoencoder.py``,
``training/train_score.py``): the losses, deterministic batch and noise streams, the YAML +
flags configuration, checkpoints and the optimisation loop.

Reproducibility: every random draw of optimisation step ``s`` (which windows, which noise, which
degraded observations) comes from a generator seeded by ``(seed, stream, micro-step, process)``,
so a run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn and
ends with the same weights.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import yaml
from torch import Tensor, nn

from .data.splits import add_split, select_split
from .data.stores import open_store
from .models.observation_encoder import error_correlation_matrix, posterior_to_likelihood
from .models.state_autoencoder import StateAutoencoder
from .observations import Observation

__all__ = [
    "add_training_arguments",
    "parse_args",
    "seeded_generator",
    "batch_indices",
    "reconstruction_loss",
    "gaussian_nll",
    "ObservationEncoderLoss",
    "denoising_loss",
    "TrainingProgress",
    "latest_checkpoint",
    "restore_progress",
    "save_checkpoint",
    "optimise",
    "load_training_data",
    "open_training_store",
    "check_split_gap",
    "reconstruction_rmse",
    "encoder_calibration",
    "fit_likelihood_calibration",
    "fused_calibration",
    "latent_prior_statistics",
    "machine_description",
    "run_main",
]

CHECKPOINT_PREFIX = "checkpoint-"


# ------------------------------------------------------------------------- configuration
def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both training scripts share (accelerate, optimiser, checkpoints, Hub)."""
    add = parser.add_argument
    add("--config", default=None, help="YAML file of option values (keys = option names)")
    add("--data", default=None, help="zarr / netCDF store, or a `datasets` folder (save_to_disk)")
    add(
        "--variable",
        default=None,
        help="variable of the store (default: temperature, or the only one)",
    )
    add(
        "--levels",
        type=float,
        nargs="+",
        default=None,
        help="subset of the store's levels (hPa or Pa)",
    )
    add("--split", default="train", help="the part of the data to train on (None: all of it)")
    add(
        "--split_by",
        default="auto",
        choices=["auto", "trajectory", "time"],
        help="auto: the store's `split` coordinate, else trajectories (3 or more), else time",
    )
    add("--split_fractions", type=float, nargs="+", default=[0.8, 0.1, 0.1], help="train val test")
    add(
        "--split_gap",
        type=int,
        default=8,
        help="times left out between splits by time (at least the score net's --window)",
    )
    add("--eval_split", default="val", help="split of the stage-1 evaluation (None: no evaluation)")
    add("--output_dir", default=None, help="where checkpoints, logs and the result go")
    add("--seed", type=int, default=0)
    add("--train_batch_size", type=int, default=16, help="per process")
    add("--learning_rate", type=float, default=1e-3)
    add("--lr_scheduler", default="cosine", help="diffusers.optimization.get_scheduler name")
    add("--lr_warmup_steps", type=int, default=100)
    add("--adam_weight_decay", type=float, default=0.0)
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--max_grad_norm", type=float, default=1.0, help="0 disables clipping")
    add("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    add("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    add("--ema_decay", type=float, default=0.999)
    add("--checkpointing_steps", type=int, default=500)
    add("--checkpoints_total_limit", type=int, default=3)
    add("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    add("--logging_steps", type=int, default=10)
    add(
        "--validation_steps",
        type=int,
        default=250,
        help="every N steps, the loss on fixed batches of --eval_split with the EMA weights",
    )
    add("--validation_batches", type=int, default=4, help="fixed batches of the validation loss")
    add(
        "--snapshot_steps",
        type=int,
        default=0,
        help="every N steps, the model's EMA weights as OUTPUT_DIR/snapshots/step-N (a "
        "save_pretrained folder: the training-budget study); 0: none",
    )
    add("--report_to", default="tensorboard", help="tensorboard, all or none")
    add("--progress_bar", action=argparse.BooleanOptionalAction, default=True)
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", default=None, help="ORG/NAME of the Hub repo")
    add("--hub_private", action="store_true")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None):
    """Parse ``argv``: defaults < values of the ``--config`` YAML file < flags.

    YAML keys are option names without dashes (``learning_rate: 3e-4``); an unknown key raises
    ``ValueError`` naming it and the known ones.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        path = Path(known.config)
        if not path.is_file():
            raise ValueError(f"--config: no such file {str(path)!r}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(
                f"--config {str(path)!r}: expected a mapping of options, got "
                f"{type(values).__name__}"
            )
        dests = {a.dest for a in parser._actions if a.dest != "help"}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise ValueError(
                f"--config {str(path)!r}: unknown options {unknown}; expected among {sorted(dests)}"
            )
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    for name in ("data", "output_dir"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name} is required (as a flag or in the --config file)")
    positive = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.snapshot_steps < 0:
        raise ValueError(f"--snapshot_steps must be >= 0, got {args.snapshot_steps}")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
    for name in ("split", "eval_split"):
        if getattr(args, name) in ("None", "none", ""):
            setattr(args, name, None)
    if args.split_gap < 0:
        raise ValueError(f"--split_gap must be >= 0 (times between splits), got {args.split_gap}")
    fractions = args.split_fractions
    if not 1 <= len(fractions) <= 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(
            f"--split_fractions: expected 1 to 3 non-negative fractions (train val test), "
            f"got {fractions}"
        )
    return args


def _split_settings(args: argparse.Namespace) -> tuple[str, list[float], int]:
    return (
        getattr(args, "split_by", "auto"),
        list(getattr(args, "split_fractions", [0.8, 0.1, 0.1])),
        int(getattr(args, "split_gap", 8)),
    )


def open_training_store(
    args: argparse.Namespace, levels: Sequence[float] | None = None
) -> xr.DataArray:
    """``--data`` as a canonical, lazy array (``(trajectory?, time, level, *space)``): its
    ``--levels`` (or ``levels``, e.g. those a stage-1 autoencoder was trained on) and a
    ``split`` coordinate as ``--split_by`` says.

    ``--split_by auto`` keeps the store's own ``split`` coordinate; without one it splits
    trajectories (3 or more) or else time (``--split_fractions``, ``--split_gap`` times between
    splits): one continuous run trains as it is. ``trajectory`` / ``time`` replace the store's
    coordinate. A folder written by ``datasets.Dataset.save_to_disk`` (from
    :func:`~slams_diffusers.data.datasets.to_hf_dataset`) is read with ``datasets``; anything
    else with :func:`~slams_diffusers.data.datasets.open_store`.
    """
    path = Path(args.data)
    if not path.exists():
        raise ValueError(f"--data: no such file or folder {str(path)!r}")
    if path.is_dir() and (path / "dataset_info.json").is_file():
        import datasets

        from .data.hf import from_hf_dataset

        data = from_hf_dataset(datasets.load_from_disk(str(path)))
        if args.variable is not None:
            data = data.rename(args.variable)
        data = open_store(data)
    else:
        data = open_store(args.data, args.variable)
    chosen = levels if levels is not None else getattr(args, "levels", None)
    if chosen:
        try:
            data = open_store(data, levels=chosen)
        except ValueError as error:
            raise ValueError(f"--levels {list(chosen)}: {error}") from error
    split_by, fractions, gap = _split_settings(args)
    automatic = split_by == "auto"
    if automatic:
        if "split" in data.coords:
            return data
        split_by = "trajectory" if data.sizes.get("trajectory", 0) >= 3 else "time"
    try:
        return add_split(data, fractions, gap if split_by == "time" else 0, by=split_by)
    except ValueError as error:
        if automatic:  # too short to split: fine with --split None, else select_split says so
            return data
        raise ValueError(
            f"--split_by {split_by} --split_fractions {fractions} --split_gap {gap}: {error}"
        ) from error


def load_training_data(
    args: argparse.Namespace,
    split: str | None = None,
    levels: Sequence[float] | None = None,
    window: int | None = None,
) -> xr.DataArray:
    """The states of ``--data`` (``(trajectory?, time, level, *space)``), one split: see
    :func:`open_training_store`; with ``window``, :func:`check_split_gap` first."""
    store = open_training_store(args, levels)
    if window is not None:
        check_split_gap(store, window)
    try:
        return select_split(store, split)
    except ValueError as error:
        raise ValueError(f"--split {split}: {error}") from error


def check_split_gap(store: xr.DataArray, window: int) -> None:
    """``ValueError`` when ``store`` was split by time (:func:`open_training_store`) with fewer
    gap times than a training window: its windows would nearly touch those of the next split."""
    split = store.coords.get("split")
    gap = None if split is None or "time" not in split.dims else split.attrs.get("gap")
    if gap is not None and int(gap) < window:
        raise ValueError(
            f"--split_gap {gap} is shorter than --window {window}: the training windows would "
            f"touch the validation ones; pass --split_gap {window} (or more) to both stages"
        )


def run_main(main: Callable[[], None]) -> None:
    """Run a training script's ``main``: a ``ValueError`` (bad options or data, raised before
    any work) is printed as one ``error: ...`` line and exits with status 2, no traceback."""
    try:
        main()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def machine_description() -> str:
    """One line: CPU/GPU, cores, torch version (for model cards and benchmark tables)."""
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    return f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


# ------------------------------------------------------------------------- random streams
def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by the tuple ``(seed, *keys)`` (via numpy's ``SeedSequence``)."""
    state = np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_indices(
    num_items: int,
    batch_size: int,
    micro_step: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> Tensor:
    """This process's items of micro-batch ``micro_step``.

    The items are visited as an endless sequence of seeded permutations of ``range(num_items)``
    (one per epoch); micro-batch ``m`` is positions ``[m B P, (m + 1) B P)`` of it, and process
    ``p`` takes ``[m B P + p B, m B P + (p + 1) B)`` (``B`` = ``batch_size``, ``P`` =
    ``num_processes``). Every item is seen once per epoch across processes.
    """
    if num_items < 1:
        raise ValueError(f"`num_items` must be >= 1, got {num_items}: no training data.")
    position = (micro_step * num_processes + process_index) * batch_size
    parts, left = [], batch_size
    while left:
        epoch, offset = divmod(position, num_items)
        permutation = torch.randperm(num_items, generator=seeded_generator(seed, 0, epoch))
        take = min(left, num_items - offset)
        parts.append(permutation[offset : offset + take])
        position, left = position + take, left - take
    return torch.cat(parts)


# ------------------------------------------------------------------------- losses
def reconstruction_loss(autoencoder: nn.Module, states: Tensor) -> Tensor:
    r"""Level-normalised reconstruction error of the state autoencoder.

    .. math:: \mathcal{L} = \operatorname{mean}\big(((D(E(x)) - x) / s_l)^2\big),

    ``x`` ``(B, T, levels, *space)`` in K, ``s_l`` the per-level std of the autoencoder's config.
    ``autoencoder`` may be wrapped (DDP): it is called, not its methods.
    """
    reconstruction = autoencoder(states, return_dict=False)[0]
    std = torch.as_tensor(
        _unwrap(autoencoder).config.level_std, dtype=states.dtype, device=states.device
    )
    std = std.reshape(-1, *([1] * (states.ndim - 3)))
    return ((reconstruction - states) / std).pow(2).mean()


def gaussian_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    r"""Mean Gaussian negative log-likelihood, without the constant:
    :math:`\tfrac12 \operatorname{mean}\big(\log v + (z - \mu)^2 / v\big)`, ``v = exp(logvar)``,
    in float32 at least (mixed-precision outputs are upcast)."""
    mean, logvar, target = (
        t.to(torch.promote_types(t.dtype, torch.float32)) for t in (mean, logvar, target)
    )
    return 0.5 * (logvar + (target - mean).pow(2) * torch.exp(-logvar)).mean()


@dataclass
class EncoderBatch:
    """Observations of one modality on one grid, stacked: ``values``, ``mask``
    ``(n, C, *grid)``, and the latents ``targets`` ``(n, c, *latent)`` of their true states."""

    modality: str
    values: Tensor
    mask: Tensor
    targets: Tensor


def encoder_batches(
    observations: Sequence[Sequence[Observation]], latents: Tensor, modalities: Iterable[str]
) -> list[EncoderBatch]:
    """Group the observations of a batch of states by (modality, grid): one
    :class:`EncoderBatch` per group. ``observations[b]`` are observations of state ``b`` whose
    latent is ``latents[b]``; modalities not in ``modalities`` are skipped."""
    known = set(modalities)
    groups: dict[tuple[str, tuple[int, ...]], list[tuple[Tensor, Tensor, int]]] = {}
    for b, items in enumerate(observations):
        for observation in items:
            if observation.modality not in known:
                continue
            values, mask = observation.to_grid()
            groups.setdefault((observation.modality, tuple(values.shape)), []).append(
                (values, mask, b)
            )
    batches = []
    for (modality, _), members in sorted(groups.items()):
        device, dtype = latents.device, latents.dtype
        batches.append(
            EncoderBatch(
                modality,
                torch.stack([v for v, _, _ in members]).to(device, dtype),
                torch.stack([m for _, m, _ in members]).to(device, dtype),
                latents[[b for _, _, b in members]],
            )
        )
    return batches


class ObservationEncoderLoss(nn.Module):
    r"""Gaussian NLL of each modality encoder's latent against the true state's latent.

    .. math:: \mathcal{L} = \frac{1}{N} \sum_{(m, y, z)} \mathrm{NLL}\big(z;\, \mu_m(y),
              e^{\ell_m(y)}\big),

    summed over the :class:`EncoderBatch` groups (weighted by their size, so every degraded
    observation counts the same), ``z = E(x)`` the frozen autoencoder's latent. Each modality is
    fitted alone, so its variance is calibrated for that modality; the pipeline fuses them.

    A module so that DDP sees one forward per backward whatever the number of groups.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batches: Sequence[EncoderBatch]) -> Tensor:
        if not batches:
            raise ValueError("`batches` is empty: no observation of a known modality.")
        total, count = 0.0, 0
        for batch in batches:
            latent_shape = tuple(batch.targets.shape[2:])
            mean, logvar = self.encoder.encode_modality(
                batch.modality, batch.values, batch.mask, latent_shape
            )
            total = total + gaussian_nll(mean, logvar, batch.targets) * batch.values.shape[0]
            count += batch.values.shape[0]
        return total / count


def denoising_loss(score_model: nn.Module, scheduler: Any, clean: Tensor, generator) -> Tensor:
    r"""The ε (denoising score matching) loss on windows ``clean`` ``(B, window, C, *space)``.

    .. math:: \mathcal{L} = \operatorname{mean}\,\lVert \epsilon_\theta(\alpha_t z + \sigma_t
              \epsilon, t) - \epsilon \rVert^2,\quad t \sim \mathcal{U}(0, 1),\ \epsilon \sim
              \mathcal{N}(0, I),

    ``alpha_t, sigma_t`` from ``scheduler.alpha_sigma`` (DESIGN §2). ``t`` and ``ε`` are drawn on
    the CPU from ``generator`` (same draws on every device).
    """
    b = clean.shape[0]
    t = torch.rand(b, generator=generator, dtype=torch.float32).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    noise = noise.to(clean.device, clean.dtype)
    noisy = scheduler.add_noise(clean, noise, t.to(clean.dtype))
    prediction = score_model(noisy, t, return_dict=False)[0]
    return (prediction.float() - noise.float()).pow(2).mean()


# ------------------------------------------------------------------------- evaluation
def reconstruction_rmse(autoencoder: nn.Module, states: Tensor, batch: int = 64) -> list[float]:
    r"""Per-level RMSE [K] of the autoencoder's reconstruction of ``states`` ``(N, levels,
    *space)``:

    .. math:: \mathrm{RMSE}_l = \sqrt{\operatorname{mean}_{n,\,\text{space}}
              \big(D(E(x_n))_l - x_{n,l}\big)^2},

    the floor of the latent route's accuracy (docs/method.md). Accumulated in float64.
    """
    squared = torch.zeros(states.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(states), batch):
            x = states[i : i + batch, None]
            error = autoencoder(x, return_dict=False)[0] - x
            squared += error.double().pow(2).sum(dim=(0, 1, *range(3, x.ndim))).cpu()
    count = len(states) * math.prod(states.shape[2:])
    return (squared / count).sqrt().tolist()


def encoder_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> dict[str, float]:
    r"""Calibration of each modality encoder: the mean squared z-score of its latent error,

    .. math:: \overline{z^2}_m = \operatorname{mean}\big((E(x) - \mu_m(y))^2 / e^{\ell_m(y)}\big),

    over latent cells and cases (``observations[b]`` observe the state of latent ``latents[b]``
    ``(c, *latent)``). 1 when the encoder's variances match its errors; above 1 it is
    over-confident, below 1 under-confident. Modalities never observed are left out.
    """
    totals: dict[str, list[float]] = {}
    names = list(_unwrap(encoder).config.modalities)
    with torch.no_grad():
        for batch in encoder_batches(observations, latents, names):
            mean, logvar = _unwrap(encoder).encode_modality(
                batch.modality, batch.values, batch.mask, tuple(batch.targets.shape[2:])
            )
            z2 = (batch.targets.double() - mean.double()).pow(2) * torch.exp(-logvar.double())
            entry = totals.setdefault(batch.modality, [0.0, 0.0])
            entry[0] += float(z2.sum())
            entry[1] += z2.numel()
    return {name: total / count for name, (total, count) in sorted(totals.items())}


def _likelihood_errors(
    encoder: nn.Module, latent: Tensor, observations: Sequence[Observation]
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per modality observed in ``observations`` (of the state whose latent is ``latent``
    ``(c, *latent)``), over the latent cells it informs: its likelihood's error ``u − z``, the
    error variance ``1 / I_0`` the encoder claims and the gain ``g = P / I_0``
    (:func:`~slams_diffusers.models.observation_encoder.posterior_to_likelihood`), float64."""
    encoder = _unwrap(encoder)
    prior_mean, prior_logvar = encoder.latent_prior(torch.float64, latent.device)
    errors = {}
    with torch.no_grad():
        for observation in observations:
            if observation.modality not in encoder.config.modalities:
                continue
            values, mask = observation.to_grid()
            mean, logvar = encoder.encode_modality(
                observation.modality,
                values[None].to(latent.device, latent.dtype),
                mask[None].to(latent.device, latent.dtype),
                tuple(latent.shape[1:]),
            )
            mean, logvar = mean[0].double(), logvar[0].double()
            u, information = posterior_to_likelihood(mean, logvar, prior_mean, prior_logvar)
            informed = information > 0
            errors[observation.modality] = (
                (u - latent.double())[informed],
                1 / information[informed],
                torch.exp(-logvar)[informed] / information[informed],
                informed,
            )
    return errors


def fit_likelihood_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    r"""The encoders' likelihoods calibrated on held-out cases (docs/method.md §Fusing
    modalities): per modality the approximation variance ``τ_m²`` of its posterior mean, then the
    correlation of the modalities' likelihood errors.

    With ``d = u − z`` (``z = E(x)``), the claimed variance ``1 / I_0`` and the gain
    ``g = P / I_0`` per latent cell the modality informs, ``τ_m² >= 0`` solves

    .. math:: \operatorname{mean}\, \frac{d^2}{1 / I_0 + g^2 \tau_m^2} = 1

    (0 when the encoder is not over-confident; bisection in ``log τ²``). Then, with
    ``ε_m = d / \sqrt{1 / I_0 + g^2 τ_m^2}``, for each pair observed together

    .. math:: \rho_{mn} = \frac{\sum \varepsilon_m \varepsilon_n}
              {\sqrt{\sum \varepsilon_m^2 \sum \varepsilon_n^2}}

    over the cells both inform and the cases (``observations[b]`` observe the state of latent
    ``latents[b]``); the matrix is shrunk towards the identity until positive definite (factors
    0.9, 0.81, …). Returns ``({name: τ²}, {name: {other: ρ}})`` for
    ``ObservationEncoder(modality_approximation_variance=..., modality_error_correlation=...)``;
    pairs never observed together are left out (uncorrelated).
    """
    cases = [
        _likelihood_errors(encoder, latent, items)
        for latent, items in zip(latents, observations, strict=True)
    ]
    names = sorted({name for case in cases for name in case})
    variances = {}
    for name in names:
        d, claimed, gain = (torch.cat([c[name][k] for c in cases if name in c]) for k in range(3))
        variances[name] = _approximation_variance(d.square(), claimed, gain.square())
    sums: dict[tuple[str, str], list[float]] = {}
    for case in cases:
        normalised = {}
        for name, (d, claimed, gain, informed) in case.items():
            full = torch.zeros(informed.shape, dtype=torch.float64)
            full[informed] = d / torch.sqrt(claimed + gain.square() * variances[name])
            normalised[name] = (full, informed)
        present = sorted(normalised)
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                both = normalised[a][1] & normalised[b][1]
                ea, eb = normalised[a][0][both], normalised[b][0][both]
                entry = sums.setdefault((a, b), [0.0, 0.0, 0.0])
                entry[0] += float((ea * eb).sum())
                entry[1] += float(ea.square().sum())
                entry[2] += float(eb.square().sum())
    paired = sorted({name for pair in sums for name in pair})
    rho = torch.eye(len(paired), dtype=torch.float64)
    for (a, b), (cross, aa, bb) in sums.items():
        if aa > 0 and bb > 0:
            i, j = paired.index(a), paired.index(b)
            rho[i, j] = rho[j, i] = cross / math.sqrt(aa * bb)
    eye = torch.eye(len(paired), dtype=torch.float64)
    while torch.linalg.cholesky_ex(rho).info != 0 or float(rho.sub(eye).abs().max()) >= 1:
        rho = 0.9 * rho + 0.1 * eye
    error_correlation_matrix(rho, len(paired))
    pairs = {frozenset(pair) for pair in sums}
    correlation = {
        a: {b: float(rho[i, j]) for j, b in enumerate(paired) if frozenset((a, b)) in pairs}
        for i, a in enumerate(paired)
    }
    return variances, correlation


def _approximation_variance(squared: Tensor, claimed: Tensor, gain2: Tensor) -> float:
    """``τ² >= 0`` with ``mean(squared / (claimed + gain2 τ²)) = 1`` (0 if already <= 1)."""

    def excess(tau2: float) -> float:
        return float((squared / (claimed + gain2 * tau2)).mean()) - 1

    if squared.numel() == 0 or excess(0.0) <= 0:
        return 0.0
    low, high = -30.0, 10.0  # log τ², latent units (unit-variance latent)
    if excess(math.exp(high)) > 0:
        return math.exp(high)
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if excess(math.exp(middle)) > 0 else (low, middle)
    return math.exp(high)


def fused_calibration(
    encoder: nn.Module, latents: Tensor, observations: Sequence[Sequence[Observation]]
) -> dict[str, dict[str, float]]:
    r"""For every subset of the modalities observed together, the fused posterior's (the
    encoder's ``forward``: prior, likelihoods, their correlation) mean squared z-score
    :math:`\overline{z^2}` (1 when calibrated) and mean squared error ``mse`` of its mean against
    ``z = E(x)``, over latent cells and the cases where every modality of the subset is observed.
    Keys are the subset's names joined by ``+``, sorted; adding a modality should lower ``mse``
    and keep :math:`\overline{z^2}` near 1."""
    encoder = _unwrap(encoder)
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for latent, items in zip(latents, observations, strict=True):
            grids = {
                o.modality: tuple(t[None].to(latent.device, latent.dtype) for t in o.to_grid())
                for o in items
                if o.modality in encoder.config.modalities
            }
            names = sorted(grids)
            for size in range(1, len(names) + 1):
                for subset in itertools.combinations(names, size):
                    mean, logvar = encoder(
                        {n: grids[n] for n in subset}, tuple(latent.shape[1:]), return_dict=False
                    )
                    error = (mean[0].double() - latent.double()).square()
                    entry = totals.setdefault("+".join(subset), [0.0, 0.0, 0.0])
                    entry[0] += float((error * torch.exp(-logvar[0].double())).sum())
                    entry[1] += float(error.sum())
                    entry[2] += error.numel()
    return {
        key: {"mean_z2": z2 / count, "mse": mse / count}
        for key, (z2, mse, count) in sorted(totals.items())
    }


# ------------------------------------------------------------------------- checkpoints
class TrainingProgress:
    """The optimisation step and run-level values a checkpoint must restore
    (registered with ``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0
        self.values: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "values": dict(self.values)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.values = dict(state["values"])


def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not path.is_dir() or not name.startswith(CHECKPOINT_PREFIX):
        return None
    suffix = name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (``output_dir/checkpoints/checkpoint-N``)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(s, p) for p in folder.iterdir() if (s := _checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def restore_progress(accelerator, args: argparse.Namespace, *emas) -> TrainingProgress:
    """Register the run's progress and EMAs (``None`` skipped, moved to the device) for
    checkpointing, then load ``--resume_from_checkpoint`` if given: the progress to continue."""
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    for ema in emas:
        if ema is not None:
            ema.to(accelerator.device)
            accelerator.register_for_checkpointing(ema)
    resume = resume_path(args.resume_from_checkpoint, args.output_dir)
    if resume is not None:
        accelerator.load_state(str(resume))
        accelerator.print(f"resumed from {resume} at step {progress.step}")
    return progress


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def resume_path(resume_from_checkpoint: str | None, output_dir: str | os.PathLike) -> Path | None:
    """``--resume_from_checkpoint``: ``None``, ``"latest"`` (``None`` when there is none yet) or
    a checkpoint folder (``ValueError`` if missing)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ValueError(
            f"--resume_from_checkpoint: no checkpoint folder {str(path)!r}; expected a folder "
            f"written by save_state or 'latest' (found {[p.name for p in checkpoints(output_dir)]})"
        )
    return path


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, total_limit: int
) -> Path:
    """``accelerator.save_state`` into ``checkpoints/.checkpoint-N.tmp``, then renamed to
    ``checkpoint-N``: a run killed while writing never leaves a partial "latest" checkpoint.
    Keeps the newest ``total_limit`` (``<= 0``: all)."""
    folder = Path(output_dir) / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    partial = folder / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        if total_limit > 0:
            for old in checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------- accelerator
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def make_accelerator(args: argparse.Namespace, find_unused_parameters: bool = False):
    """One ``Accelerator`` for the run: mixed precision, accumulation, logging to
    ``output_dir/logs`` with tensorboard when it is installed and asked for."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    report_to = args.report_to
    if report_to in ("tensorboard", "all") and not (
        importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    ):
        report_to = None
    if report_to == "none":
        report_to = None
    # `accelerate launch --multi_gpu` (torchrun: WORLD_SIZE, LOCAL_RANK) on a machine without
    # GPUs: unless told `cpu`, accelerate makes every process an independent single-process run
    # (all writing output_dir); with cpu=True they form one DDP group over gloo.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        cpu=world_size > 1 and not has_accelerator_device(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "logs")
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        ],
    )
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"launched as {world_size} processes (WORLD_SIZE) but accelerate runs "
            f"{accelerator.num_processes}: they would train independently into the same output_dir"
        )
    if (
        accelerator.num_processes == 1
        and "MASTER_PORT" in os.environ
        and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    ):
        print(
            "warning: `accelerate launch --cpu --num_processes N` starts ONE process (several "
            "need --mpirun_hostfile); for N CPU processes use `accelerate launch --multi_gpu "
            "--num_processes N` (CPU-only machines are detected)",
            file=sys.stderr,
            flush=True,
        )
    return accelerator


def has_accelerator_device() -> bool:
    """Whether torch sees a GPU-like device (``torch.accelerator``, else CUDA)."""
    api = getattr(torch, "accelerator", None)
    if api is not None and hasattr(api, "is_available"):
        return bool(api.is_available())
    return torch.cuda.is_available()


def make_optimizer(args: argparse.Namespace, parameters, total_steps: int, num_processes: int):
    """AdamW and the ``--lr_scheduler`` schedule (counted per process step, as accelerate steps
    a prepared scheduler once per process)."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(
        parameters, lr=args.learning_rate, weight_decay=args.adam_weight_decay
    )
    schedule = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=total_steps * num_processes,
    )
    return optimizer, schedule


def make_ema(model: nn.Module, args: argparse.Namespace):
    """diffusers' ``EMAModel`` of ``model`` (``None`` without ``--use_ema``)."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(), decay=args.ema_decay, model_cls=type(model), model_config=model.config
    )


class MetricsLog:
    """Losses to the accelerate trackers and, on the main process, to ``train_log.jsonl``
    (appended across resumes; one JSON object per logged step)."""

    def __init__(self, accelerator, args: argparse.Namespace, project: str) -> None:
        self.accelerator = accelerator
        self.path = Path(args.output_dir) / "train_log.jsonl"
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        if accelerator.log_with:
            accelerator.init_trackers(project, config=config)

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        self.accelerator.log(dict(values), step=step)
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")


def optimise(
    accelerator,
    args: argparse.Namespace,
    model: nn.Module,
    optimizer,
    lr_scheduler,
    ema,
    loss_fn: Callable[[int], Tensor],
    progress: TrainingProgress,
    stop: int,
    log: MetricsLog,
    items_per_micro_step: int,
    phase: str,
    validate: Callable[[], float] | None = None,
    snapshot: Callable[[Path], None] | None = None,
) -> None:
    """Run optimisation steps ``progress.step .. stop - 1`` of ``model``.

    Each step accumulates ``--gradient_accumulation_steps`` micro-steps of ``loss_fn(m)``
    (``m`` the global micro-step index, the key of every random draw), clips the gradient norm,
    steps the optimiser, the LR schedule and the EMA, logs the mean loss over processes every
    ``--logging_steps`` and checkpoints every ``--checkpointing_steps`` (and at ``stop``). Every
    ``--validation_steps`` (and at ``stop``) it logs ``validate()`` — a loss on fixed held-out
    batches — computed with the EMA weights, and the run's wall time so far (``wall_seconds``,
    carried across resumes): the training curves. Every ``--snapshot_steps`` (if > 0) the main
    process calls ``snapshot(OUTPUT_DIR/snapshots/step-N)`` with the EMA weights in ``model``.
    """
    from tqdm.auto import tqdm

    accumulation = args.gradient_accumulation_steps
    bar = tqdm(
        total=stop,
        initial=progress.step,
        desc=phase,
        disable=not (accelerator.is_local_main_process and args.progress_bar),
    )
    running, count, start = 0.0, 0, time.perf_counter()
    clock = time.perf_counter()
    while progress.step < stop:
        step = progress.step
        for micro in range(accumulation):
            with accelerator.accumulate(model):
                loss = loss_fn(step * accumulation + micro)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += accelerator.reduce(loss.detach().float(), "mean").item() / accumulation
        count += 1
        if ema is not None:
            ema.step(_unwrap(model).parameters())
        progress.step = step + 1
        bar.update(1)
        if progress.step % args.logging_steps == 0 or progress.step == stop:
            elapsed = time.perf_counter() - start
            items = count * accumulation * items_per_micro_step * accelerator.num_processes
            values = {
                f"{phase}/loss": running / count,
                f"{phase}/lr": lr_scheduler.get_last_lr()[0],
                f"{phase}/items_per_second": items / max(elapsed, 1e-9),
            }
            now = time.perf_counter()
            progress.values["wall_seconds"] = progress.values.get("wall_seconds", 0.0) + now - clock
            clock = now
            values["wall_seconds"] = progress.values["wall_seconds"]
            if validate is not None and (
                progress.step % args.validation_steps == 0 or progress.step == stop
            ):
                values[f"{phase}/val_loss"] = float(_with_ema_weights(model, ema, validate))
            log(progress.step, values)
            bar.set_postfix(loss=f"{running / count:.4g}")
            running, count, start = 0.0, 0, time.perf_counter()
        every = args.snapshot_steps
        if snapshot is not None and every > 0 and progress.step % every == 0:
            if accelerator.is_main_process:
                folder = Path(args.output_dir) / "snapshots" / f"step-{progress.step}"
                _with_ema_weights(model, ema, functools.partial(snapshot, folder))
            accelerator.wait_for_everyone()
        if progress.step % args.checkpointing_steps == 0 or progress.step == stop:
            path = save_checkpoint(
                accelerator, args.output_dir, progress.step, args.checkpoints_total_limit
            )
            if accelerator.is_main_process:
                print(f"saved checkpoint {path}", flush=True)
    bar.close()


def _with_ema_weights(model: nn.Module, ema, fn: Callable[[], Any]) -> Any:
    """``fn()`` without gradients, with the EMA weights in ``model`` (restored after)."""
    parameters = list(_unwrap(model).parameters())
    if ema is not None:
        ema.store(parameters)
        ema.copy_to(parameters)
    try:
        with torch.no_grad():
            return fn()
    finally:
        if ema is not None:
            ema.restore(parameters)


def final_weights(model: nn.Module, ema) -> nn.Module:
    """The unwrapped model, with the EMA weights copied in when there is an EMA."""
    model = _unwrap(model)
    if ema is not None:
        ema.copy_to(model.parameters())
    return model


def run_record(args: argparse.Namespace, seconds: float, accelerator) -> dict[str, Any]:
    """What a model card records about a run: the command, options, time and hardware."""
    return {
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "options": {k: v for k, v in vars(args).items() if k not in ("hub_token",)},
        "wall_time_minutes": round(seconds / 60, 2),
        "processes": accelerator.num_processes,
        "hardware": machine_description(),
    }


def latent_prior_statistics(
    autoencoder: StateAutoencoder, states: Tensor, batch: int = 64
) -> tuple[list[float], list[float]]:
    """Per latent channel, the mean and std of ``E(x)`` over ``states`` ``(N, levels, *space)``
    and their cells: the prior the observation encoders' posteriors shrink towards
    (``ObservationEncoder(latent_prior_mean=..., latent_prior_std=...)``)."""
    with torch.no_grad():
        latents = torch.cat(
            [autoencoder.encode(states[i : i + batch, None]) for i in range(0, len(states), batch)]
        )[:, 0].double()
    per_channel = latents.transpose(0, 1).reshape(latents.shape[1], -1)
    return per_channel.mean(1).tolist(), per_channel.std(1).tolist()


def latent_scaling_factor(autoencoder: StateAutoencoder, states: Tensor, batch: int = 64) -> float:
    """``1 / std(E(x))`` over ``states`` ``(N, levels, *space)`` with the current
    ``scaling_factor`` divided out: the value that gives the latent unit variance."""
    current = float(autoencoder.config.scaling_factor)
    with torch.no_grad():
        latents = torch.cat(
            [autoencoder.encode(states[i : i + batch, None]) for i in range(0, len(states), batch)]
        )
    std = float(latents.double().std()) / abs(current)
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"the autoencoder's latents have std {std}; cannot scale them")
    return 1.0 / std
