"""The pretrained pipelines shipped in ``pipelines/``: complete, safetensors only, loadable
offline by their names from any folder, documented, and the latent one beats its background on a
fresh testbed window."""

import json
import shutil
from pathlib import Path

import pytest
from diffusers import DiffusionPipeline

from slams_diffusers import LevelNormalizer, SLAMSPipeline, StateAutoencoder, embedded_pipelines
from slams_diffusers.cli import build_parser, main
from slams_diffusers.hub import EMBEDDED_ROOT

PIPELINES = Path(__file__).parents[1] / "pipelines"
ALL = ["sda-l96", "sda-qg-tiny", "sda-raob-column", "slams-qg-tiny"]
NAMES = ["slams-qg-tiny", "sda-qg-tiny"]


@pytest.mark.parametrize("name", NAMES)
def test_embedded_pipeline_folder(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = PIPELINES / name
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pkl", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in weights) < 8e6  # a few MB
    card = (folder / "README.md").read_text()
    for text in ("data-assimilation", "weather", "train_score.py", "hardware", "analysis RMSE"):
        assert text in card
    model_card = (PIPELINES.parent / "model_cards" / f"{name}.md").read_text()
    assert model_card == card
    pipe = SLAMSPipeline.from_pretrained(folder)
    latent = name == "slams-qg-tiny"
    assert isinstance(pipe.autoencoder, StateAutoencoder if latent else LevelNormalizer)
    assert pipe.window == 5
    assert len(pipe.autoencoder.config.level_mean) == len(pipe.autoencoder.config.level_std) == 5
    if latent:
        assert pipe.observation_encoder.modality_names == ["gridded", "satellite", "stations"]
    else:
        assert pipe.observation_encoder is None
        assert "level_mean" not in pipe.score_model.config
        assert pipe.score_model.config.in_channels == 5
    stored = json.loads((folder / "model_card.json").read_text())
    evaluation = stored["evaluation"]
    analysis, background = (
        evaluation["analysis RMSE (ensemble mean) [K]"],
        evaluation["background RMSE [K]"],
    )
    assert 0 < analysis < 10 and 0 < background < 10
    if name == "slams-qg-tiny":  # the SDA twin is a baseline; the benchmark issue compares them
        assert analysis < 0.8 * background


def test_embedded_lorenz96_prior(monkeypatch):
    """``pipelines/sda-l96``: the pixel-space Lorenz-96 prior of the cycling benchmark; its card
    carries the benchmark's rows, those of the twin that observes every variable (σ = 1) better
    than the observations themselves."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = PIPELINES / "sda-l96"
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pkl", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in weights) < 8e6
    card = (folder / "README.md").read_text()
    for text in ("Lorenz-96", "train_score.py", "hardware", "SLAMSFilter", "RMSE"):
        assert text in card
    assert (PIPELINES.parent / "model_cards" / "sda-l96.md").read_text() == card
    pipe = SLAMSPipeline.from_pretrained(folder)
    assert isinstance(pipe.autoencoder, LevelNormalizer)
    assert (pipe.window, pipe.levels, pipe.spatial_dims) == (3, 1, 1)
    evaluation = json.loads((folder / "model_card.json").read_text())["evaluation"]
    rmse = {k: v for k, v in evaluation.items() if "RMSE (inflation" in k}
    assert len(rmse) == 3 and all(0 < v < 10 for v in rmse.values())
    assert all(v < 1.0 for k, v in rmse.items() if "(all)" in k)


def test_embedded_column_prior(monkeypatch):
    """``pipelines/sda-raob-column``: the prior of real radiosonde columns, its card naming the
    data and its licence and carrying the held-out scores."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = PIPELINES / "sda-raob-column"
    weights = [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pkl")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in weights) < 8e6
    card = (folder / "README.md").read_text()
    for text in ("SHARPpy", "NOAA", "BSD-3-Clause", "train_score.py", "hardware", "1D-Var"):
        assert text in card
    assert (PIPELINES.parent / "model_cards" / "sda-raob-column.md").read_text() == card
    pipe = SLAMSPipeline.from_pretrained(folder)
    assert isinstance(pipe.autoencoder, LevelNormalizer)
    assert (pipe.window, pipe.levels, pipe.spatial_dims) == (1, 16, 0)
    assert pipe.autoencoder.config.levels_hpa == [850.0 - 50.0 * i for i in range(16)]
    evaluation = json.loads((folder / "model_card.json").read_text())["evaluation"]
    assert evaluation["held-out launches (2005-2008)"] > 100


# ---------------------------------------------------------------- found by name
def test_embedded_names_are_the_repository_pipelines():
    assert embedded_pipelines() == ALL
    assert sorted(p.name for p in PIPELINES.iterdir() if p.is_dir()) == ALL
    assert EMBEDDED_ROOT.resolve() == PIPELINES.resolve()  # a checkout: the one copy, no other


def test_an_embedded_name_loads_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    pipe = SLAMSPipeline.from_pretrained("sda-l96")
    assert (pipe.window, pipe.levels, pipe.spatial_dims) == (3, 1, 1)
    entry = DiffusionPipeline.from_pretrained("sda-l96")  # after `import slams_diffusers`
    assert type(entry) is SLAMSPipeline and entry.window == 3


def test_a_local_folder_of_the_same_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(PIPELINES / "sda-raob-column", tmp_path / "sda-l96")  # a column, not a ring
    for load in (SLAMSPipeline.from_pretrained, DiffusionPipeline.from_pretrained):
        pipe = load("sda-l96")
        assert (pipe.window, pipe.levels, pipe.spatial_dims) == (1, 16, 0)


@pytest.mark.parametrize("name", ["no-such-pipeline", "org/no-such-pipeline", "./slams-qg-tiny"])
def test_an_unknown_name_lists_the_embedded_names(name, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="pretrained_model_name_or_path") as error:
        SLAMSPipeline.from_pretrained(name, cache_dir=str(tmp_path / "cache"))
    assert repr(name) in str(error.value) and str(ALL) in str(error.value)


def test_the_cli_takes_an_embedded_name_and_lists_them_for_an_unknown_one(tmp_path, capsys):
    for command in (["demo"], ["assimilate", "--background", "xb.nc", "--out", "xa.nc"]):
        assert build_parser().parse_args(command).pipeline == "slams-qg-tiny"
    argv = ["demo", "--out", str(tmp_path), "--no-progress", "--pipeline", "no-such-pipeline"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "--pipeline 'no-such-pipeline'" in error and str(ALL) in error
