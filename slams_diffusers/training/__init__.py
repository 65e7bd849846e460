"""Building blocks of the training scripts (``training/train_autoencoder.py``,
``training/train_score.py``), one module per concept, all importable from here:

- :mod:`.config`: the shared flags, YAML configs, the scripts' entry (:func:`run_main`);
- :mod:`.data`: ``--data`` opened, split and checked; the seeded batch streams;
- :mod:`.losses`: reconstruction, the observation encoders' Gaussian NLL, the ε loss;
- :mod:`.accelerator`: accelerator, optimiser and LR schedule, EMA;
- :mod:`.loop`: :func:`optimise`, the optimisation loop of both stages;
- :mod:`.checkpoints`: progress, saving and resuming checkpoints;
- :mod:`.records`: the loss log and the run record of a model card;
- :mod:`.calibration`: post-training measurements and calibration fits.

Reproducibility: every random draw of optimisation step ``s`` (which windows, which noise, which
degraded observations) comes from a generator seeded by ``(seed, stream, micro-step, process)``,
so a run resumed from a checkpoint draws exactly what the uninterrupted run would have drawn and
ends with the same weights.
"""

from .accelerator import has_accelerator_device, make_accelerator, make_ema, make_optimizer, unwrap
from .calibration import (
    encoder_calibration,
    fit_likelihood_calibration,
    fused_calibration,
    latent_prior_statistics,
    latent_scaling_factor,
    reconstruction_rmse,
)
from .checkpoints import (
    CHECKPOINT_PREFIX,
    TrainingProgress,
    checkpoints,
    latest_checkpoint,
    restore_progress,
    resume_path,
    save_checkpoint,
)
from .config import add_training_arguments, parse_args, run_main
from .data import (
    batch_indices,
    check_split_gap,
    load_training_data,
    open_training_store,
    seeded_generator,
)
from .loop import final_weights, optimise
from .losses import (
    EncoderBatch,
    ObservationEncoderLoss,
    denoising_loss,
    encoder_batches,
    gaussian_nll,
    reconstruction_loss,
)
from .records import MetricsLog, machine_description, run_record

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
    "CHECKPOINT_PREFIX",
    "EncoderBatch",
    "MetricsLog",
    "checkpoints",
    "encoder_batches",
    "final_weights",
    "has_accelerator_device",
    "latent_scaling_factor",
    "make_accelerator",
    "make_ema",
    "make_optimizer",
    "resume_path",
    "run_record",
    "unwrap",
]
