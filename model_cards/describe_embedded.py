"""Rewrite the model cards of the embedded pipelines with their descriptions (after training and
``benchmarks/embedded_skill.py --update-cards``, whose evaluation tables the cards keep), and copy
them to ``model_cards/``.

    python model_cards/describe_embedded.py
"""

import json
import shutil
from pathlib import Path

from slams_diffusers.hub import pipeline_card

ROOT = Path(__file__).resolve().parents[1]
#: The comparison both cards end with.
SIDE_BY_SIDE = (
    "Side by side (benchmarks/results/skill_full.md: 3 held-out test windows, default "
    "multimodal case; B spectral from validation; EnKF/LETKF N = 32 tuned on validation; "
    "diffusion methods 16 members x 16 steps with their validation-fitted spread inflation; "
    "python benchmarks/skill.py --windows 3 --members 16 --steps 16 --sda extremes, 75 min on "
    "a 2-core CPU): RMSE / CRPS [K] — background 1.337 / 0.997, OI/3D-Var 1.102 / 0.808, "
    "EnKF 1.064 / 0.542, LETKF 1.037 / 0.523, SDA (sda-qg-tiny, pixel space, same training "
    "budget) 0.710 / 0.369, SLAMS (slams-qg-tiny) 0.806 / 0.420, SLAMS with stations decoded "
    "and the satellite latent 0.736 / 0.379; spread-skill 0.91-0.92 for the diffusion methods, "
    "0.92-1.06 for the filters. SLAMS beats the background at every level, OI/3D-Var and both "
    "ensemble filters in the default case and in sparse, coarse or noisy settings (12-31 % "
    "below LETKF in RMSE), at a seventh of SDA's cost; pixel-space SDA is more accurate (SLAMS "
    "1.06-1.20x its RMSE at the sweeps' harshest points, 1.14x in the default case, 1.65x with "
    "2 x 2 block means), and with dense accurate observations (r <= 4 or >= 6 % of the grid "
    "at 0.25 climatological std) SLAMS is 1.23-1.50x worse than LETKF. Uninflated, both "
    "diffusion pipelines are under-dispersed (spread-skill 0.48-0.63): the window's errors, "
    "correlated in time, are counted as independent. Each pipeline carries a spread inflation "
    "fitted on validation windows (spread_inflation in model_index.json, "
    "training/fit_spread_inflation.py; docs/method.md, Spread inflation): on 3 fresh test "
    "windows with two networks slams-qg-tiny's spread-skill goes from 0.63-0.68 to 0.98-1.05 "
    "at the same RMSE (benchmarks/results/spread_inflation.md). The evaluation below includes "
    "it."
)
DESCRIPTIONS = {
    "slams-qg-tiny": (
        "Tiny SLAMS pipeline for the QG testbed, shipped with slams-diffusers so that it "
        "works offline. Latent space 4x16x16 per step (StateAutoencoder, f = 4), observation "
        "encoders for stations, a 3-channel satellite (peaks 700/500/300 hPa) and gridded "
        "fields, and a score net over Markov-blanket windows of 5 steps (0.77 M parameters; "
        "1.15 M in all). Trained on the CPU of a 2-core x86_64 VM on the testbed's default "
        "dataset (`slams simulate qg --out data/qg-default.zarr`: 32 trajectories x 128 six-"
        "hourly snapshots of 5-level (850-200 hPa) 64x64 temperature, 26 for training, 3 "
        "validation, 3 test), with\n"
        "\n"
        "    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no "
        "training/train_autoencoder.py --config training/configs/qg-tiny-autoencoder.yaml\n"
        "    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no "
        "training/train_score.py --config training/configs/qg-tiny-score.yaml\n"
        "\n"
        "(36 min on 1 thread while the SDA twin trained beside it, then 11 min on 2 threads; "
        "the per-run records below).\n"
        "\n" + SIDE_BY_SIDE
    ),
    "sda-qg-tiny": (
        "Pixel-space twin of slams-qg-tiny (the SDA baseline): the same score-net options on "
        "the level-normalised 5x64x64 state, no autoencoder, observations through their "
        "operators. Trained with the latent score model's budget — 3000 optimisation steps of"
        " 16 windows, the same as slams-qg-tiny's stage 2 — so that latent vs pixel compares "
        "methods, not training budgets: 70 min on 1 thread of the project's 2-core x86_64 CPU"
        " (shared with other jobs), against about 47 min for both stages of slams-qg-tiny. "
        "Trained on the testbed's default dataset (`slams simulate qg --out data/qg-"
        "default.zarr`: 32 trajectories x 128 six-hourly snapshots of 5-level (850-200 hPa) "
        "64x64 temperature, 26 for training, 3 validation, 3 test), with\n"
        "\n"
        "    accelerate launch --config_file training/configs/accelerate.yaml "
        "training/train_score.py --config training/configs/qg-tiny-sda.yaml\n"
        "\n"
        "Evaluated like slams-qg-tiny (spectral background-error covariance from validation "
        "cases; its own spread inflation fitted on validation windows); see "
        "benchmarks/results/skill.md for the side-by-side "
        "comparison.\n"
        "\n" + SIDE_BY_SIDE
    ),
}

DESCRIPTIONS["sda-l96"] = (
    "Pixel-space prior of Lorenz-96 (40 variables, F = 8) for cycled assimilation with "
    "SLAMSFilter: a score net over Markov-blanket windows of 3 states 0.05 time units apart "
    "(0.33 M parameters), no autoencoder. Trained on `slams simulate l96 --out "
    "data/l96.zarr --trajectories 64 --snapshots 2048` (51 trajectories for training, 7 "
    "validation, 6 test), 8000 steps of 64 windows (validation loss 0.1465, still falling "
    "slowly), 12 min on 1 thread of the project's 2-core x86_64 CPU, with\n"
    "\n"
    "    accelerate launch --config_file training/configs/accelerate.yaml "
    "training/train_score.py --config training/configs/l96-pixel-score.yaml\n"
    "\n"
    "Evaluation: benchmarks/l96.py --slams pipelines/sda-l96 (benchmarks/results/"
    "l96_slams.md): the twin's model as forecast, 20 members, 16 steps, the diagonal "
    "likelihood covariance, Gaspari-Cohn half-width 7, covariance inflation 2.2 chosen for "
    "the filter on another truth (the smoother and the sparse twin use it as is); 100 burn-in "
    "+ 300 scored cycles. The classical filters on the same twins "
    "(benchmarks/results/l96_classical.md) are far better: the sampler's error at each "
    "cycle is what limits the filter (docs/method.md, Cycling)."
)


DESCRIPTIONS["sda-raob-column"] = (
    "Pixel-space prior of real temperature profiles: one column of 16 pressure levels, 850 to "
    "100 hPa every 50 hPa (ScoreNet with spatial_dims 0, a residual MLP of width 256; 1.0 M "
    "parameters), no autoencoder (a 16-value column gains nothing from compression, and 8 EOFs "
    "already leave 0.46 K: docs/method.md, Columns and real radiosondes). Trained on the "
    "profiles launched before 2003 of SHARPpy's sounding database (observed radiosonde launches "
    "of US sites and RUC-2 analysis profiles; NOAA data, distributed with SHARPpy under the "
    "BSD-3-Clause licence; 1,241 complete profiles, interpolated linearly in ln p, nothing "
    "extrapolated), 3000 steps of 64 columns, chosen on the 2003-2004 validation launches, "
    "with\n"
    "\n"
    "    python training/build_soundings.py --out data/raob-columns.nc\n"
    "    accelerate launch --config_file training/configs/accelerate.yaml "
    "training/train_score.py --config training/configs/raob-column-sda.yaml\n"
    "\n"
    "Evaluation: benchmarks/raob_column.py (benchmarks/results/raob_column.md), every complete "
    "launch from 2005 on (held out by time): the real surface report (bias-corrected) and six "
    "simulated sounder channels (peaks 700-150 hPa, 0.5 K), no background term; against "
    "climatology and the exact 1D-Var with the training profiles' covariance."
)


def raob_evaluation() -> dict[str, float]:
    """The rows of ``benchmarks/results/raob_column.json`` as model-card results."""
    payload = json.loads((ROOT / "benchmarks/results/raob_column.json").read_text())
    results: dict[str, float] = {"held-out launches (2005-2008)": payload["cases"]}
    for row, scores in payload["results"].items():
        results[f"{row} RMSE [K]"] = round(scores["rmse"], 3)
        if not row.startswith("climatology"):
            results[f"{row} spread-skill"] = round(scores["spread_skill"], 2)
    return results


def l96_evaluation() -> dict[str, float]:
    """The scored rows of ``benchmarks/results/l96_slams.json`` as model-card results."""
    rows = json.loads((ROOT / "benchmarks/results/l96_slams.json").read_text())["rows"]
    results = {}
    for row in rows:
        results[f"{row['row']} RMSE (inflation {row['inflation']:g})"] = round(row["rmse"], 3)
        results[f"{row['row']} spread / RMSE"] = round(row["spread_skill"], 2)
    return results


for name, description in DESCRIPTIONS.items():
    folder = ROOT / "pipelines" / name
    evaluations = {"sda-l96": l96_evaluation, "sda-raob-column": raob_evaluation}
    evaluation = evaluations[name]() if name in evaluations else None
    pipeline_card(
        folder, repo_id=name, base_description=description, evaluation=evaluation
    )
    shutil.copyfile(folder / "README.md", ROOT / "model_cards" / f"{name}.md")
