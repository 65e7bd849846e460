"""The training scripts' options: shared flags, YAML configs under them, and the scripts' entry
(a bad option or store is one ``error:`` line, exit status 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

__all__ = ["add_training_arguments", "parse_args", "run_main"]


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


def run_main(main: Callable[[], None]) -> None:
    """Run a training script's ``main``: a ``ValueError`` (bad options or data, raised before
    any work) is printed as one ``error: ...`` line and exits with status 2, no traceback."""
    try:
        main()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
