"""Hub helpers, offline: model cards and push_folder_to_hub with a fake HfApi."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from slams_diffusers import ScoreNet, SLAMSPipeline, VPPredictorCorrectorScheduler
from slams_diffusers.hub import model_card, pipeline_card, push_folder_to_hub, save_model_card

REPO = "slams/tiny-qg-latent"


@pytest.fixture
def card() -> ModelCard:
    return model_card(
        repo_id=REPO,
        base_description="A tiny latent SLAMS pipeline trained on QG turbulence.",
        datasets=["slams/qg-2layer"],
        training={"steps": 1000, "lr": 3e-4, "hidden_channels": [8, 16]},
        evaluation={"rmse": 0.1234, "crps": 0.0567, "spread_skill": 0.98},
    )


def test_model_card_contents(card):
    assert set(card.data.tags) == {"diffusers", "data-assimilation", "weather", "slams"}
    assert card.data.library_name == "diffusers"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["slams/qg-2layer"]
    text = str(card)
    assert f'DiffusionPipeline.from_pretrained("{REPO}")' in text
    assert "| Metric | Value |" in text
    for cell in ("| rmse | 0.1234 |", "| crps | 0.0567 |", "| spread_skill | 0.98 |"):
        assert cell in text
    assert "```yaml" in text and "steps: 1000" in text
    assert "## Intended use" in text and "## Limitations" in text


def test_model_card_optional_sections_and_nested_table():
    local = model_card(repo_id=None, base_description="Local pipeline.")
    text = str(local)
    assert 'from_pretrained("path/to/pipeline")' in text
    assert "## Evaluation results" not in text and "## Training configuration" not in text
    nested = model_card(
        repo_id=REPO,
        base_description="d",
        evaluation={"slams": {"rmse": 1.0, "crps": 0.5}, "3dvar": {"rmse": 2.0}},
    )
    assert "| | rmse | crps |" in str(nested)
    assert "| 3dvar | 2 |  |" in str(nested)


def test_model_card_round_trip(card, tmp_path):
    path = save_model_card(card, tmp_path / "card")
    assert path == tmp_path / "card" / "README.md" and path.is_file()
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.text == card.text


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"base_description": ""}, "base_description"),
        ({"repo_id": ""}, "repo_id"),
        ({"datasets": "one"}, "datasets"),
        ({"evaluation": [1.0]}, "evaluation"),
        ({"training": "lr=1"}, "training"),
    ],
)
def test_model_card_bad_input(kwargs, name):
    args = {"repo_id": REPO, "base_description": "d", **kwargs}
    with pytest.raises(ValueError, match=name):
        model_card(**args)


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    torch.manual_seed(0)
    pipe = SLAMSPipeline(
        score_model=ScoreNet(in_channels=2, hidden_channels=(8, 16), layers_per_block=1),
        scheduler=VPPredictorCorrectorScheduler(),
    )
    folder = tmp_path_factory.mktemp("pipe")
    pipe.save_pretrained(folder)
    return folder


def test_push_folder_to_hub(fake_api, pipeline_folder):
    url = push_folder_to_hub(
        pipeline_folder, REPO, token="hf_fake", private=True, commit_message="msg"
    )
    assert url == f"https://huggingface.co/{REPO}/commit/abc123"
    assert fake_api.calls == [
        ("init", {"token": "hf_fake"}),
        ("create_repo", {"repo_id": REPO, "private": True, "exist_ok": True}),
        (
            "upload_folder",
            {"repo_id": REPO, "folder_path": str(pipeline_folder), "commit_message": "msg"},
        ),
    ]


def test_push_refuses_pickle_weights(fake_api, pipeline_folder, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(pipeline_folder, folder)
    (folder / "score_model" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="folder") as err:
        push_folder_to_hub(folder, REPO)
    assert "safetensors" in str(err.value)
    assert fake_api.calls == []


def test_push_requires_model_index(fake_api, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="folder.*model_index.json"):
        push_folder_to_hub(tmp_path, REPO)
    with pytest.raises(ValueError, match="folder"):
        push_folder_to_hub(tmp_path / "missing", REPO)
    assert fake_api.calls == []


def test_pipeline_save_pretrained_writes_the_model_card(tmp_path):
    from huggingface_hub import ModelCard

    from slams_diffusers import ScoreNet, SLAMSPipeline, VPPredictorCorrectorScheduler
    from slams_diffusers.hub import model_card

    pipe = SLAMSPipeline(
        score_model=ScoreNet(in_channels=2, hidden_channels=(8, 16), layers_per_block=1),
        scheduler=VPPredictorCorrectorScheduler(),
    )
    card = model_card(repo_id="org/slams-tiny", base_description="A tiny test pipeline.")
    pipe.save_pretrained(tmp_path, model_card=card)
    assert (tmp_path / "model_index.json").exists()
    loaded = ModelCard.load(tmp_path / "README.md")
    assert 'DiffusionPipeline.from_pretrained("org/slams-tiny")' in loaded.text
    assert "data-assimilation" in loaded.data.tags


def test_pipeline_card_writes_readme_and_inputs(tmp_path):
    import json

    from slams_diffusers.hub import CARD_INPUTS

    training = {"steps": 1000, "lr": 3e-4, "hidden_channels": (8, 16), "seed": None}
    card = pipeline_card(
        tmp_path,
        repo_id=REPO,
        base_description="A tiny pixel-space SLAMS pipeline.",
        datasets=["slams/qg-2layer"],
        training=training,
    )
    assert CARD_INPUTS == "model_card.json"
    readme, inputs = tmp_path / "README.md", tmp_path / CARD_INPUTS
    assert readme.is_file() and inputs.is_file()
    assert ModelCard.load(readme).text == card.text
    stored = json.loads(inputs.read_text())
    assert stored == {
        "repo_id": REPO,
        "base_description": "A tiny pixel-space SLAMS pipeline.",
        "datasets": ["slams/qg-2layer"],
        "training": {"steps": 1000, "lr": 3e-4, "hidden_channels": [8, 16], "seed": None},
    }
    text = str(card)
    assert f'DiffusionPipeline.from_pretrained("{REPO}")' in text
    assert "steps: 1000" in text and "lr: 0.0003" in text
    assert "## Evaluation results" not in text
    assert card.data.datasets == ["slams/qg-2layer"]


def test_pipeline_card_adds_evaluation_and_keeps_the_training_record(tmp_path):
    import json

    from slams_diffusers.hub import CARD_INPUTS

    pipeline_card(
        tmp_path,
        repo_id=None,
        base_description="Trained on the QG testbed.",
        training={"score": {"steps": 200, "lr": 1e-3}},
    )
    first = json.loads((tmp_path / CARD_INPUTS).read_text())
    evaluation = {
        "analysis RMSE (ensemble mean) [K]": 0.61234567,
        "background RMSE [K]": 1.4,
        "test cases": 12,
        "members / steps / corrections": "8 / 32 / 1",
    }
    card = pipeline_card(tmp_path, evaluation=evaluation)
    stored = json.loads((tmp_path / CARD_INPUTS).read_text())
    assert stored == {**first, "evaluation": evaluation}  # exact round trip of the values
    assert type(stored["evaluation"]["test cases"]) is int
    assert stored["evaluation"]["analysis RMSE (ensemble mean) [K]"] == 0.61234567
    text = (tmp_path / "README.md").read_text()
    assert text == str(card)
    assert "Trained on the QG testbed." in text
    assert 'from_pretrained("path/to/pipeline")' in text  # repo_id=None kept
    assert "score:" in text and "steps: 200" in text and "lr: 0.001" in text
    assert "## Evaluation results" in text and "| Metric | Value |" in text
    for cell in (
        "| analysis RMSE (ensemble mean) [K] | 0.6123 |",
        "| background RMSE [K] | 1.4 |",
        "| test cases | 12 |",
        "| members / steps / corrections | 8 / 32 / 1 |",
    ):
        assert cell in text
    # a new evaluation replaces the old one; new card inputs update the stored ones
    pipeline_card(tmp_path, evaluation={"rmse": 0.5}, base_description="Retrained.")
    stored = json.loads((tmp_path / CARD_INPUTS).read_text())
    assert stored["evaluation"] == {"rmse": 0.5}
    assert stored["base_description"] == "Retrained."
    assert stored["training"] == first["training"]
    text = (tmp_path / "README.md").read_text()
    assert "| rmse | 0.5 |" in text and "analysis RMSE" not in text and "steps: 200" in text


def test_pipeline_card_next_to_a_saved_pipeline(pipeline_folder, tmp_path):
    import shutil

    from slams_diffusers.hub import pipeline_card

    folder = tmp_path / "pipe"
    shutil.copytree(pipeline_folder, folder)
    pipeline_card(folder, repo_id=REPO, base_description="d", evaluation={"crps": 0.25})
    assert (folder / "model_index.json").is_file()
    loaded = ModelCard.load(folder / "README.md")
    assert "data-assimilation" in loaded.data.tags and "| crps | 0.25 |" in loaded.text
    reloaded = SLAMSPipeline.from_pretrained(folder)
    assert isinstance(reloaded.score_model, ScoreNet)


def test_pipeline_card_keeps_numpy_and_torch_numbers(tmp_path):
    import numpy as np
    import torch

    pipeline_card(
        tmp_path,
        base_description="d",
        evaluation={"rmse": np.float32(0.5), "per_level": torch.tensor([1.0, 2.0])},
    )
    stored = json.loads((tmp_path / "model_card.json").read_text())
    assert stored["evaluation"] == {"rmse": 0.5, "per_level": [1.0, 2.0]}
