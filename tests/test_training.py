"""The training scripts: shared pieces of ``slams_diffusers.training``, both stages end to end,
resuming after a SIGKILL with bitwise-identical weights, and two-process (DDP/gloo) runs.

Scripts run as subprocesses on a tiny 32x32 QG dataset (models of 8/16 channels, a few steps);
the whole file takes about two minutes on two CPU cores.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from slams_diffusers import LevelNormalizer
from slams_diffusers.training import (
    add_training_arguments,
    batch_indices,
    checkpoints,
    denoising_loss,
    gaussian_nll,
    latest_checkpoint,
    parse_args,
    resume_path,
    save_checkpoint,
    seeded_generator,
)

REPO = Path(__file__).parents[1]
TIMEOUT = 300  # seconds per script run, a guard only

STAGE1_FLAGS = [
    "--autoencoder_steps", "4",
    "--encoder_steps", "4",
    "--hidden_channels", "8", "16", "16",
    "--encoder_hidden_channels", "8",
    "--checkpointing_steps", "2",
    "--checkpoints_total_limit", "0",
    "--logging_steps", "2",
    "--lr_warmup_steps", "2",
    "--periodic_y",
    "--no-progress_bar",
    "--report_to", "none",
]  # fmt: skip
SCORE_FLAGS = [
    "--max_train_steps", "8",
    "--window", "3",
    "--hidden_channels", "8", "16",
    "--layers_per_block", "1",
    "--time_embedding_dim", "32",
    "--checkpointing_steps", "4",
    "--logging_steps", "2",
    "--lr_warmup_steps", "2",
    "--no-progress_bar",
    "--report_to", "none",
]  # fmt: skip


# ------------------------------------------------------------------------- helpers
def script_env(tmp: Path | None = None) -> dict[str, str]:
    launcher = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env = {k: v for k, v in env.items() if not k.startswith("ACCELERATE_")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if tmp is not None:  # no user-wide accelerate default_config.yaml
        env["HF_HOME"] = str(tmp / "hf_home")
    return env


# `accelerate launch` flags for two CPU processes: --multi_gpu is torchrun, and
# training.make_accelerator asks accelerate for cpu + gloo when there is no GPU. (`--cpu
# --num_processes 2` starts ONE process: accelerate's CPU multi-process launch needs mpirun.)
TWO_PROCESSES = ["--multi_gpu", "--num_processes", "2"]


def run_script(script: str, *args, launch: list[str] | None = None, tmp: Path | None = None):
    """Run ``training/<script>``, under ``accelerate launch <launch flags>`` when given; return
    its output, failing with it when the exit status is not 0."""
    command = [sys.executable, str(REPO / "training" / script), *map(str, args)]
    if launch is not None:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", *launch,
            "--num_machines", "1",
            "--mixed_precision", "no",
            "--dynamo_backend", "no",
            "--main_process_port", str(free_port()),
            *command[1:],
        ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=REPO,
        env=script_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-6000:]}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(output_dir: Path) -> dict[int, dict]:
    """``train_log.jsonl`` as ``{step: values}`` (the last line of a step wins: a resumed run
    logs again the steps after its checkpoint)."""
    lines = (output_dir / "train_log.jsonl").read_text().splitlines()
    return {(row := json.loads(line))["step"]: row for line in lines}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "diffusion_pytorch_model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)}/{len(a)} tensors differ, e.g. {different[:3]}"


def number_of_processes(checkpoint: Path) -> int:
    """Processes that wrote a checkpoint: accelerate saves one RNG state file per process."""
    return len(list(checkpoint.glob("random_states_*.pkl")))


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from slams_diffusers.data.qg import QGConfig, simulate_dataset, write_dataset

    path = tmp_path_factory.mktemp("data") / "tiny.zarr"
    ds = simulate_dataset(
        trajectories=4,
        steps=12,
        seed=0,
        config=QGConfig(nx=32),
        spinup=50,
        interval=4,
        splits=(0.5, 0.25, 0.25),
    )
    write_dataset(ds, str(path))
    return path


@pytest.fixture(scope="module")
def stage1(tiny_data, tmp_path_factory) -> Path:
    """Stage 1, one process: 4 autoencoder + 4 encoder steps, every checkpoint kept."""
    out = tmp_path_factory.mktemp("stage1")
    run_script(
        "train_autoencoder.py",
        "--data", tiny_data, "--output_dir", out, "--train_batch_size", "4", *STAGE1_FLAGS,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def stage2(tiny_data, stage1, tmp_path_factory) -> Path:
    """Stage 2 in latent space, one process, batch 8: the reference of the resume and the
    two-process tests."""
    out = tmp_path_factory.mktemp("stage2")
    run_script(
        "train_score.py",
        "--data", tiny_data, "--autoencoder", stage1, "--output_dir", out,
        "--train_batch_size", "8", *SCORE_FLAGS,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def test_states(tiny_data) -> torch.Tensor:
    """The test trajectory, ``(time, level, y, x)`` in K."""
    from slams_diffusers.data.datasets import open_store, select_split

    data = select_split(open_store(str(tiny_data)), "test")
    return torch.as_tensor(data.isel(trajectory=0).values, dtype=torch.float32)


@pytest.fixture(scope="module")
def train_statistics(tiny_data):
    from slams_diffusers.data.datasets import LevelStatistics, open_store, select_split

    return LevelStatistics.compute(select_split(open_store(str(tiny_data)), "train").load())


# ------------------------------------------------------------------------- parse_args
def make_parser():
    import argparse

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    parser.add_argument("--hidden_channels", type=int, nargs="+", default=[32])
    return parser


def write_config(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_parse_args_yaml_values_and_flag_override(tmp_path):
    config = write_config(
        tmp_path,
        {
            "data": "runs/data.zarr",
            "output_dir": "runs/out",
            "learning_rate": "3e-4",  # PyYAML reads 3e-4 as a string: argparse converts it
            "train_batch_size": 2,
            "hidden_channels": [8, 16],
            "use_ema": False,
            "split": None,
        },
    )
    args = parse_args(make_parser(), ["--config", config])
    assert args.data == "runs/data.zarr" and args.output_dir == "runs/out"
    assert args.learning_rate == pytest.approx(3e-4) and isinstance(args.learning_rate, float)
    assert args.train_batch_size == 2 and args.hidden_channels == [8, 16]
    assert args.use_ema is False and args.split is None
    assert args.seed == 0  # neither in the file nor a flag: the default

    argv = ["--config", config, "--learning_rate", "0.01", "--hidden_channels", "4"]
    args = parse_args(make_parser(), [*argv, "--use_ema", "--output_dir", "elsewhere"])
    assert args.learning_rate == 0.01 and args.hidden_channels == [4]
    assert args.use_ema is True and args.output_dir == "elsewhere"
    assert args.train_batch_size == 2  # still from the file


def test_parse_args_errors(tmp_path):
    config = write_config(tmp_path, {"data": "d.zarr", "output_dir": "o", "learning_rat": 0.1})
    with pytest.raises(ValueError, match="unknown options \\['learning_rat'\\]"):
        parse_args(make_parser(), ["--config", config])
    with pytest.raises(ValueError, match="--data is required"):
        parse_args(make_parser(), ["--output_dir", "o"])
    with pytest.raises(ValueError, match="--output_dir is required"):
        parse_args(make_parser(), ["--data", "d.zarr"])
    with pytest.raises(ValueError, match="no such file"):
        parse_args(make_parser(), ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="--train_batch_size must be >= 1"):
        parse_args(make_parser(), ["--data", "d", "--output_dir", "o", "--train_batch_size", "0"])
    # the flags alone are enough
    args = parse_args(make_parser(), ["--data", "d.zarr", "--output_dir", "o"])
    assert args.split == "train" and args.learning_rate == 1e-3


# ------------------------------------------------------------------------- random streams
def test_seeded_generator_keys():
    def draw(*keys):
        return torch.rand(4, generator=seeded_generator(*keys))

    assert torch.equal(draw(0, 3, 5), draw(0, 3, 5))
    assert not torch.equal(draw(0, 3, 5), draw(0, 3, 6))
    assert not torch.equal(draw(0, 3, 5), draw(1, 3, 5))
    assert not torch.equal(draw(0, 3, 5, 0), draw(0, 3, 5, 1))


def test_batch_indices_one_process_epochs():
    # 20 items in batches of 5: micro-steps 0-3 are one epoch, 4-7 the next
    first = torch.cat([batch_indices(20, 5, m, seed=0) for m in range(4)])
    second = torch.cat([batch_indices(20, 5, m, seed=0) for m in range(4, 8)])
    assert torch.equal(first.sort().values, torch.arange(20))
    assert torch.equal(second.sort().values, torch.arange(20))
    assert not torch.equal(first, second)  # a new permutation every epoch
    # batches that straddle epochs: positions 0-9 are epoch 0, 10-19 epoch 1, in order
    straddling = torch.cat([batch_indices(10, 3, m, seed=1) for m in range(7)])
    assert torch.equal(straddling[:10].sort().values, torch.arange(10))
    assert torch.equal(straddling[10:20].sort().values, torch.arange(10))
    assert all(len(batch_indices(10, 3, m, seed=1)) == 3 for m in range(7))
    # deterministic, and the seed matters
    assert torch.equal(batch_indices(20, 5, 3, seed=0), batch_indices(20, 5, 3, seed=0))
    assert not torch.equal(first, torch.cat([batch_indices(20, 5, m, seed=1) for m in range(4)]))
    with pytest.raises(ValueError, match="no training data"):
        batch_indices(0, 4, 0, seed=0)


def test_batch_indices_two_processes_shard_the_global_batch():
    seen = []
    for m in range(8):  # 24 items, global batch 6: four micro-steps per epoch
        shards = [batch_indices(24, 3, m, 0, process_index=p, num_processes=2) for p in (0, 1)]
        assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
        assert torch.equal(torch.cat(shards), batch_indices(24, 6, m, 0))
        seen.append(torch.cat(shards))
    epochs = torch.stack(seen).reshape(2, 24)
    assert all(torch.equal(e.sort().values, torch.arange(24)) for e in epochs)


# ------------------------------------------------------------------------- losses
def test_gaussian_nll_formula():
    g = torch.Generator().manual_seed(0)
    mean, logvar, target = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    expected = 0.5 * torch.mean(logvar + (target - mean) ** 2 / torch.exp(logvar))
    assert torch.allclose(gaussian_nll(mean, logvar, target), expected, rtol=1e-6)
    reference = nn.functional.gaussian_nll_loss(mean, target, torch.exp(logvar), eps=1e-12)
    assert torch.allclose(gaussian_nll(mean, logvar, target), reference, rtol=1e-5)
    # by hand: mean 0, variance e^1, target 2 -> (1 + 4 / e) / 2
    value = gaussian_nll(torch.zeros(1), torch.ones(1), torch.full((1,), 2.0))
    assert value.item() == pytest.approx(0.5 * (1 + 4 / math.e), rel=1e-6)


class ZeroModel(nn.Module):
    """Predicts ε = 0: the ε loss is then the mean square of the drawn noise."""

    def forward(self, noisy, t, return_dict=True):
        return (torch.zeros_like(noisy),)


def test_denoising_loss_zero_model_and_reproducibility():
    from slams_diffusers import ScoreNet, VPPredictorCorrectorScheduler

    scheduler = VPPredictorCorrectorScheduler()
    clean = torch.randn(4, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    loss = denoising_loss(ZeroModel(), scheduler, clean, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)
    torch.rand(4, generator=draws)  # the diffusion times come first, then the noise
    noise = torch.randn(clean.shape, generator=draws)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(1.0, abs=0.1)

    torch.manual_seed(0)
    model = ScoreNet(
        in_channels=2, window=3, spatial_dims=2, hidden_channels=(8, 16), layers_per_block=1
    )

    def loss_with(seed):
        with torch.no_grad():
            return denoising_loss(model, scheduler, clean, torch.Generator().manual_seed(seed))

    assert torch.equal(loss_with(5), loss_with(5))
    assert not torch.equal(loss_with(5), loss_with(6))
    assert torch.isfinite(loss_with(5))


# ------------------------------------------------------------------------- checkpoints
def test_save_checkpoint_prunes_and_latest_ignores_partial(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator()
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    assert latest_checkpoint(tmp_path) is None and resume_path("latest", tmp_path) is None
    assert resume_path(None, tmp_path) is None

    saved = {}
    for step in (2, 4, 6, 8, 10):
        with torch.no_grad():
            model.weight.add_(1.0)
        path = save_checkpoint(accelerator, tmp_path, step, total_limit=2)
        assert path == tmp_path / "checkpoints" / f"checkpoint-{step}" and path.is_dir()
        saved[step] = model.weight.detach().clone()
    # the newest two, in numeric (not lexicographic) order, and no partial folder left over
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-10"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint-10",
        "checkpoint-8",
    ]

    # a run killed while writing checkpoint 12 leaves .checkpoint-12.tmp: never the latest
    partial = tmp_path / "checkpoints" / ".checkpoint-12.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    (tmp_path / "checkpoints" / "checkpoint-final").mkdir()  # not a step: ignored
    (tmp_path / "checkpoints" / "checkpoint-99").write_text("a file, not a checkpoint")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-10"
    assert resume_path("latest", tmp_path) == tmp_path / "checkpoints" / "checkpoint-10"
    explicit = str(tmp_path / "checkpoints" / "checkpoint-8")
    assert resume_path(explicit, tmp_path) == Path(explicit)
    with pytest.raises(ValueError, match="no checkpoint folder .*checkpoint-6.*checkpoint-8"):
        resume_path(str(tmp_path / "checkpoints" / "checkpoint-6"), tmp_path)

    # the checkpoints hold the state: loading the latest restores step 10's weights
    with torch.no_grad():
        model.weight.zero_()
    accelerator.load_state(str(latest_checkpoint(tmp_path)))
    assert torch.equal(model.weight.detach(), saved[10])

    # the next save replaces the stale partial folder; total_limit <= 0 keeps everything
    save_checkpoint(accelerator, tmp_path, 12, total_limit=0)
    assert not partial.exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-12"
    names = [p.name for p in checkpoints(tmp_path)]
    assert names == ["checkpoint-8", "checkpoint-10", "checkpoint-12"]


# ------------------------------------------------------------------------- end to end
def check_pipeline_folder(folder: Path, modules: set[str]) -> str:
    files = [p for p in folder.rglob("*") if p.is_file()]
    weight_files = {p.relative_to(folder).as_posix() for p in files if p.suffix == ".safetensors"}
    assert weight_files == {f"{m}/diffusion_pytorch_model.safetensors" for m in modules}
    pickled = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")]
    assert not pickled
    index = json.loads((folder / "model_index.json").read_text())
    present = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    assert present == modules | {"scheduler"}
    readme = (folder / "README.md").read_text()
    assert "data-assimilation" in yaml.safe_load(readme.split("---")[1])["tags"]
    return " ".join(readme.split())  # the YAML training block may fold the command


def assimilate(folder: Path, states: torch.Tensor):
    from slams_diffusers import SLAMSPipeline
    from slams_diffusers.data.observing import station_network

    pipe = SLAMSPipeline.from_pretrained(folder)
    truth = states[:4]
    generator = torch.Generator().manual_seed(0)
    background = truth + torch.randn(truth.shape, generator=generator)
    observations = [
        station_network(
            truth[k], 12, noise_std=0.5, periodic=(True, True), time_index=k, generator=generator
        )
        for k in range(len(truth))
    ]
    out = pipe(
        background=background,
        observations=observations,
        num_members=2,
        num_inference_steps=4,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.members.shape == (2, *truth.shape)
    assert torch.isfinite(out.members).all()
    # plausible temperatures: the mean of each level within 30 K of the truth's
    level_means = out.members.mean(dim=(0, 1, 3, 4))
    assert torch.allclose(level_means, truth.mean(dim=(0, 2, 3)), atol=30.0)
    return pipe, out


def test_latent_pipeline_end_to_end(tiny_data, stage1, stage2, test_states, train_statistics):
    for name in ("autoencoder", "observation_encoder", "autoencoder_training.json"):
        assert (stage1 / name).exists()
    folder = stage2 / "pipeline"
    readme = check_pipeline_folder(folder, {"score_model", "autoencoder", "observation_encoder"})
    command = " ".join(
        ["train_score.py", "--data", str(tiny_data), "--autoencoder", str(stage1)]
        + ["--output_dir", str(stage2), "--train_batch_size", "8", *SCORE_FLAGS]
    )
    assert command in readme
    assert "train_autoencoder.py --data" in readme  # the stage-1 record travels along

    pipe, _ = assimilate(folder, test_states)
    # the level statistics are in the configs (the autoencoder normalises with them)
    config = pipe.autoencoder.config
    assert config.level_mean == pytest.approx(train_statistics.mean, rel=1e-5)
    assert config.level_std == pytest.approx(train_statistics.std, rel=1e-4)
    assert config.scaling_factor > 0 and config.scaling_factor != 1.0
    gridded = pipe.observation_encoder.config.modalities["gridded"]
    assert gridded["input_mean"] == pytest.approx(train_statistics.mean, rel=1e-5)
    assert pipe.score_model.config.window == 3 and pipe.score_model.config.in_channels == 4
    # logged every 2 steps; a checkpoint every 4 steps and at the end
    assert set(read_log(stage2)) == {2, 4, 6, 8}
    assert [p.name for p in checkpoints(stage2)] == ["checkpoint-4", "checkpoint-8"]


def test_pixel_pipeline_end_to_end(tiny_data, test_states, train_statistics, tmp_path):
    """Pixel space (no --autoencoder), launched with `accelerate launch --cpu --num_processes 2`:
    that runs a single process (accelerate starts several CPU processes only through mpirun),
    which the script warns about."""
    stdout = run_script(
        "train_score.py",
        "--data", tiny_data, "--output_dir", tmp_path, "--train_batch_size", "4",
        *SCORE_FLAGS, "--max_train_steps", "4",
        launch=["--cpu", "--num_processes", "2"], tmp=tmp_path,
    )  # fmt: skip
    assert "warning: `accelerate launch --cpu --num_processes N` starts ONE process" in stdout
    assert number_of_processes(latest_checkpoint(tmp_path)) == 1
    assert stdout.count("saved the pipeline") == 1
    folder = tmp_path / "pipeline"
    # pixel space: the "autoencoder" is a level normaliser: its statistics, no parameters
    readme = check_pipeline_folder(folder, {"score_model", "autoencoder"})
    assert "train_score.py --data" in readme and "pixel" in readme
    saved = load_file(folder / "autoencoder" / "diffusion_pytorch_model.safetensors")
    assert set(saved) == {"norm_mean", "norm_std"}
    index = json.loads((folder / "model_index.json").read_text())
    assert index["autoencoder"] == ["slams_diffusers.models.level_normalizer", "LevelNormalizer"]

    pipe, _ = assimilate(folder, test_states)
    assert isinstance(pipe.autoencoder, LevelNormalizer) and pipe.observation_encoder is None
    assert pipe.score_model.config.in_channels == 5  # the levels themselves
    assert "level_mean" not in pipe.score_model.config
    config = pipe.autoencoder.config
    assert config.levels == 5 and config.spatial_dims == 2
    assert config.level_mean == pytest.approx(train_statistics.mean, rel=1e-5)
    assert config.level_std == pytest.approx(train_statistics.std, rel=1e-4)
    assert saved["norm_std"].tolist() == pytest.approx(config.level_std, rel=1e-6)


# ------------------------------------------------------------------------- interruption
def test_score_training_resumes_after_sigkill(tiny_data, stage1, stage2, tmp_path):
    """Kill stage 2 right after its step-4 checkpoint, resume with 'latest': same weights."""
    out = tmp_path / "killed"
    args = [
        "--data", tiny_data, "--autoencoder", stage1, "--output_dir", out,
        "--train_batch_size", "8", *SCORE_FLAGS,
    ]  # fmt: skip
    command = [sys.executable, str(REPO / "training" / "train_score.py"), *map(str, args)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(TIMEOUT, process.kill)
    watchdog.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if "saved checkpoint" in line and line.rstrip().endswith("checkpoint-4"):
                os.kill(process.pid, signal.SIGKILL)  # checkpoint-8 is four steps away
                break
        process.wait()
    finally:
        watchdog.cancel()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, "".join(output)[-6000:]
    assert latest_checkpoint(out) == out / "checkpoints" / "checkpoint-4"
    assert not (out / "pipeline").exists()

    stdout = run_script("train_score.py", *args, "--resume_from_checkpoint", "latest")
    assert "at step 4" in stdout
    assert_identical(
        weights(stage2 / "pipeline/score_model"), weights(out / "pipeline/score_model")
    )
    # the resumed run logs the same losses and learning rates for the steps it redid
    reference, resumed = read_log(stage2), read_log(out)
    assert resumed.keys() == reference.keys()
    for step in reference:
        for key in ("score/loss", "score/lr"):
            assert resumed[step][key] == reference[step][key], (step, key)


@pytest.mark.parametrize("step", [2, 4, 6], ids=["autoencoder-phase", "phase-end", "encoder-phase"])
def test_stage1_resume_is_exact(tiny_data, stage1, tmp_path, step):
    """Resume stage 1 from the uninterrupted run's checkpoint taken inside the autoencoder
    phase, at its end (before the EMA weights are frozen and scaled) and inside the encoder
    phase: identical autoencoder and observation-encoder weights."""
    checkpoint = stage1 / "checkpoints" / f"checkpoint-{step}"
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / checkpoint.name)
    stdout = run_script(
        "train_autoencoder.py",
        "--data", tiny_data, "--output_dir", tmp_path, "--train_batch_size", "4", *STAGE1_FLAGS,
        "--resume_from_checkpoint", "latest",
    )  # fmt: skip
    assert f"at step {step}" in stdout
    for module in ("autoencoder", "observation_encoder"):
        assert_identical(weights(stage1 / module), weights(tmp_path / module))
    reference = json.loads((stage1 / "autoencoder" / "config.json").read_text())
    resumed = json.loads((tmp_path / "autoencoder" / "config.json").read_text())
    assert resumed["scaling_factor"] == reference["scaling_factor"]


# ------------------------------------------------------------------------- two processes
def test_score_training_two_processes_matches_one(tiny_data, stage1, stage2, tmp_path):
    """accelerate launch, 2 CPU processes x batch 4 vs 1 process x batch 8 (the same global
    batch and windows; the noise draws differ by process): same steps, same learning rates,
    losses within 15%."""
    run_script(
        "train_score.py",
        "--data", tiny_data, "--autoencoder", stage1, "--output_dir", tmp_path,
        "--train_batch_size", "4", *SCORE_FLAGS,
        launch=TWO_PROCESSES, tmp=tmp_path,
    )  # fmt: skip
    assert number_of_processes(latest_checkpoint(tmp_path)) == 2
    assert number_of_processes(latest_checkpoint(stage2)) == 1
    single, double = read_log(stage2), read_log(tmp_path)
    assert list(double) == list(single) == [2, 4, 6, 8]
    for step in single:
        # the schedule is not advanced once per process: warm-up to 1e-3 at step 2, then cosine
        assert double[step]["score/lr"] == pytest.approx(single[step]["score/lr"], abs=1e-12)
        assert double[step]["score/loss"] == pytest.approx(single[step]["score/loss"], rel=0.15)
    assert single[8]["score/lr"] == pytest.approx(0.0, abs=1e-12)
    assert (
        weights(tmp_path / "pipeline/score_model").keys()
        == weights(stage2 / "pipeline/score_model").keys()
    )


def test_stage1_two_processes(tiny_data, stage1, tmp_path):
    """Stage 1 with 2 CPU processes x batch 2 (DDP, find_unused_parameters for the encoder
    phase's dropped modalities) vs 1 process x batch 4: the reconstruction losses are the same
    (same states, no noise), the encoder losses close, the learning rates equal."""
    run_script(
        "train_autoencoder.py",
        "--data", tiny_data, "--output_dir", tmp_path, "--train_batch_size", "2", *STAGE1_FLAGS,
        launch=TWO_PROCESSES, tmp=tmp_path,
    )  # fmt: skip
    assert number_of_processes(latest_checkpoint(tmp_path)) == 2
    for name in ("autoencoder", "observation_encoder"):
        assert weights(tmp_path / name).keys() == weights(stage1 / name).keys()
    single, double = read_log(stage1), read_log(tmp_path)
    assert list(double) == list(single) == [2, 4, 6, 8]
    for step, row in single.items():
        phase = "autoencoder" if step <= 4 else "encoder"
        assert double[step][f"{phase}/lr"] == pytest.approx(row[f"{phase}/lr"], abs=1e-12)
        rel = 1e-4 if phase == "autoencoder" else 0.15
        assert double[step][f"{phase}/loss"] == pytest.approx(row[f"{phase}/loss"], rel=rel)


@pytest.mark.parametrize(
    "flags",
    [
        ["--train_batch_size", "4", "--gradient_accumulation_steps", "2"],
        ["--train_batch_size", "8", "--mixed_precision", "bf16"],
    ],
    ids=["accumulation", "bf16"],
)
def test_score_training_accumulation_and_bf16_match_the_reference(
    tiny_data, stage1, stage2, tmp_path, flags
):
    """Two micro-batches of 4 per step (same items as one batch of 8, other noise draws), or
    bfloat16 autocast: the same optimiser steps and LR schedule, and a loss curve close to the
    one-process batch-8 float32 reference."""
    out = tmp_path / "run"
    run_script(
        "train_score.py",
        "--data", tiny_data, "--autoencoder", stage1, "--output_dir", out, *SCORE_FLAGS, *flags,
    )  # fmt: skip
    reference, run = read_log(stage2), read_log(out)
    assert run.keys() == reference.keys()
    for step, row in run.items():
        assert row["score/lr"] == reference[step]["score/lr"]
        assert math.isfinite(row["score/loss"])
        assert abs(row["score/loss"] / reference[step]["score/loss"] - 1) < 0.15, (step, row)
    assert (out / "pipeline" / "score_model" / "diffusion_pytorch_model.safetensors").is_file()
