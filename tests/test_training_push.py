"""``train_score.py --push_to_hub``: the saved pipeline goes to ``huggingface_hub`` (faked)."""

import importlib.util
import json
from pathlib import Path

import pytest

from slams_diffusers.data.qg import QGConfig, simulate_dataset, write_dataset

REPO = Path(__file__).parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_score_pushes_the_pipeline_folder(tmp_path, fake_api):
    data = simulate_dataset(
        trajectories=2, steps=6, config=QGConfig(nx=16), spinup=10, interval=2, splits=(0.5, 0.5)
    )
    store = write_dataset(data, str(tmp_path / "tiny.zarr"))
    train_score = _load_script("train_score")
    output = tmp_path / "run"
    flags = ["--data", store, "--output_dir", str(output), "--max_train_steps", "1"]
    flags += ["--window", "3", "--hidden_channels", "8", "--layers_per_block", "1"]
    flags += ["--train_batch_size", "2", "--report_to", "none", "--no-progress_bar"]
    with pytest.raises(ValueError, match="--hub_model_id"):
        train_score.main([*flags, "--push_to_hub"])
    train_score.main([*flags, "--push_to_hub", "--hub_model_id", "org/sda-test", "--hub_private"])

    calls = dict(fake_api.calls)
    assert calls["create_repo"] == {"repo_id": "org/sda-test", "private": True, "exist_ok": True}
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "org/sda-test"
    assert Path(upload["folder_path"]) == output / "pipeline"
    card = (output / "pipeline" / "README.md").read_text()
    assert 'from_pretrained("org/sda-test")' in card
    assert json.loads((output / "pipeline" / "model_card.json").read_text())["repo_id"] == (
        "org/sda-test"
    )
