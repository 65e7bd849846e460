"""The diffusers way in: after ``import slams_diffusers``, ``DiffusionPipeline.from_pretrained``
of a saved folder gives a working ``SLAMSPipeline``, without running code from the folder; the
model cards' snippet runs as written."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

import slams_diffusers
from slams_diffusers import SLAMSPipeline, StateAutoencoder
from slams_diffusers.hub import EMBEDDED_ROOT

REPO = Path(__file__).resolve().parents[1]
EMBEDDED_PIPELINE = EMBEDDED_ROOT / "slams-qg-tiny"


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
    components = {  # [module, class] pairs; settings such as spread_inflation are not components
        k: v[0]
        for k, v in index.items()
        if isinstance(v, list) and len(v) == 2 and all(isinstance(e, str) for e in v)
    }
    assert set(components) == {"score_model", "autoencoder", "observation_encoder", "scheduler"}
    for component, module in components.items():
        (folder / component / f"{module}.py").write_text(payload)
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.parametrize("first", ["slams_diffusers", "diffusers"])
def test_a_fresh_process_loads_by_name_whichever_is_imported_first(first):
    """``import slams_diffusers`` loads no torch (its names load on first use), yet makes
    ``DiffusionPipeline.from_pretrained`` load a SLAMSPipeline, imported before diffusers or
    after it."""
    second = {"slams_diffusers": "diffusers", "diffusers": "slams_diffusers"}[first]
    code = (
        f"import sys, {first}\n"
        "print('torch' in sys.modules)\n"
        f"import {second}\n"
        "pipe = diffusers.DiffusionPipeline.from_pretrained('sda-l96')\n"
        "print(type(pipe) is slams_diffusers.SLAMSPipeline is diffusers.SLAMSPipeline)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    loaded_torch, registered = done.stdout.split()
    assert loaded_torch == ("False" if first == "slams_diffusers" else "True")
    assert registered == "True"


def test_the_registration_does_not_replace_a_diffusers_class():
    import diffusers

    assert diffusers.SLAMSPipeline is slams_diffusers.SLAMSPipeline
    assert diffusers.DiffusionPipeline is DiffusionPipeline  # diffusers' own names untouched


@pytest.mark.parametrize("name", ["slams-qg-tiny", "sda-qg-tiny"])
def test_the_model_card_snippet_runs_as_written(name, tmp_path, monkeypatch):
    card = (REPO / "pipelines" / name / "README.md").read_text()
    assert card == (REPO / "model_cards" / f"{name}.md").read_text()
    section = card.split("## How to load", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert f'DiffusionPipeline.from_pretrained("{name}")' in snippet  # an embedded name
    monkeypatch.chdir(tmp_path)  # anywhere, not only in a checkout
    namespace: dict = {}
    exec(compile(snippet, f"{name}/README.md", "exec"), namespace)
    assert type(namespace["pipe"]) is SLAMSPipeline


def test_diffusion_pipeline_loads_a_hub_id(tmp_path, monkeypatch):
    """A Hub repo id through diffusers' own download step (model listing, config, snapshot),
    served here from a local copy of the embedded pipeline instead of the network: the components'
    libraries are this package's modules, not files of the repository, and must pass its checks."""
    from types import SimpleNamespace

    from diffusers.pipelines import pipeline_utils

    repo = tmp_path / "hub" / "org--slams"
    shutil.copytree(EMBEDDED_PIPELINE, repo)
    files = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()]
    calls = []

    def model_info(repo_id, **kwargs):
        calls.append(("model_info", repo_id))
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=f) for f in files])

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append(("hf_hub_download", repo_id))
        return str(repo / filename)

    def snapshot_download(repo_id, **kwargs):
        calls.append(("snapshot_download", repo_id))
        return str(repo)

    monkeypatch.setattr(pipeline_utils, "_resolve_revision", lambda *a, **k: None)
    monkeypatch.setattr(pipeline_utils, "model_info", model_info)
    monkeypatch.setattr(pipeline_utils, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(pipeline_utils, "snapshot_download", snapshot_download)
    pipe = DiffusionPipeline.from_pretrained("org/slams")
    assert isinstance(pipe, SLAMSPipeline)
    assert ("model_info", "org/slams") in calls
    assert torch.equal(analysis(pipe), analysis(SLAMSPipeline.from_pretrained(EMBEDDED_PIPELINE)))
