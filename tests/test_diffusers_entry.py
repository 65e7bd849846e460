"""The diffusers way in: after ``import slams_diffusers``, ``DiffusionPipeline.from_pretrained``
of a saved folder gives a working ``SLAMSPipeline``, without running code from the folder; the
model cards' snippet runs as written."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

import slams_diffusers
from slams_diffusers import SLAMSPipeline, StateAutoencoder
from slams_diffusers.cli import EMBEDDED_PIPELINE

REPO = Path(__file__).resolve().parents[1]


def analysis(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    mean = torch.tensor(pipe.autoencoder.config.level_mean).reshape(1, 5, 1, 1)
    background = mean + torch.randn(5, 5, 64, 64, generator=torch.Generator().manual_seed(0))
    out = pipe(
        background=background,
        num_members=2,
        num_inference_steps=2,
        background_error_std=1.0,
        generator=[torch.Generator().manual_seed(m) for m in range(2)],
        output_type="pt",
    )
    return out.members


def test_diffusion_pipeline_loads_a_working_slams_pipeline():
    assert not list(EMBEDDED_PIPELINE.rglob("*.py"))  # nothing to run in the folder
    pipe = DiffusionPipeline.from_pretrained(EMBEDDED_PIPELINE)
    assert type(pipe) is SLAMSPipeline
    assert isinstance(pipe.autoencoder, StateAutoencoder)
    assert pipe.observation_encoder.modality_names == ["gridded", "satellite", "stations"]
    reference = SLAMSPipeline.from_pretrained(EMBEDDED_PIPELINE)
    members = analysis(pipe)
    assert torch.isfinite(members).all()
    assert torch.equal(members, analysis(reference))


def test_code_planted_in_a_pipeline_folder_never_runs(tmp_path):
    """A module file next to each component (where diffusers looks for custom code) and a
    pipeline.py: loading refuses custom code unless trusted, and nothing is executed."""
    folder = tmp_path / "pipeline"
    shutil.copytree(EMBEDDED_PIPELINE, folder)
    marker = tmp_path / "executed"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    (folder / "pipeline.py").write_text(payload)
    index = json.loads((folder / "model_index.json").read_text())
    components = {k: v[0] for k, v in index.items() if isinstance(v, list)}
    assert set(components) == {"score_model", "autoencoder", "observation_encoder", "scheduler"}
    for component, module in components.items():
        (folder / component / f"{module}.py").write_text(payload)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)
    assert not marker.exists()


def test_the_registration_does_not_replace_a_diffusers_class():
    import diffusers

    assert diffusers.SLAMSPipeline is slams_diffusers.SLAMSPipeline
    assert diffusers.DiffusionPipeline is DiffusionPipeline  # diffusers' own names untouched


@pytest.mark.parametrize("name", ["slams-qg-tiny", "sda-qg-tiny"])
def test_the_model_card_snippet_runs_as_written(name, monkeypatch):
    card = (REPO / "pipelines" / name / "README.md").read_text()
    assert card == (REPO / "model_cards" / f"{name}.md").read_text()
    section = card.split("## How to load", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "DiffusionPipeline.from_pretrained" in snippet
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(snippet, f"{name}/README.md", "exec"), namespace)
    assert type(namespace["pipe"]) is SLAMSPipeline
