"""``slams demo``: simulate a testbed window, assimilate it with a saved pipeline, print scores."""

import json
import math

import pytest
import torch

import slams_diffusers.data.testbed as testbed
from slams_diffusers import LevelNormalizer, ScoreNet, SLAMSPipeline, VPPredictorCorrectorScheduler
from slams_diffusers.cli import main
from slams_diffusers.metrics import rmse
from slams_diffusers.pipelines import AssimilationOutput

KEYS = {
    "pipeline",
    "observations",
    "members",
    "steps",
    "background_rmse_K",
    "analysis_rmse_K",
    "spread_K",
    "finite",
    "seconds",
}
ARGV = ["--members", "2", "--steps", "2", "--spinup-steps", "50"]


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    torch.manual_seed(0)
    pipe = SLAMSPipeline(
        score_model=ScoreNet(in_channels=5, window=5, hidden_channels=(8, 16), layers_per_block=1),
        scheduler=VPPredictorCorrectorScheduler(),
        autoencoder=LevelNormalizer(
            levels=5,
            spatial_dims=2,
            level_mean=[268.0, 258.0, 242.0, 224.0, 217.0],
            level_std=[4.0, 4.0, 3.0, 3.0, 2.0],
        ),
    )
    folder = tmp_path_factory.mktemp("demo-pipe")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture
def captured_cases(monkeypatch):
    """The cases the demo builds (``_demo`` imports ``assimilation_cases`` when it runs)."""
    cases = []
    original = testbed.assimilation_cases

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        cases.extend(out)
        return out

    monkeypatch.setattr(testbed, "assimilation_cases", spy)
    return cases


def run_demo(folder, capsys):
    status = main(["demo", "--pipeline", str(folder), *ARGV])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return status, json.loads(lines[0])


def test_demo_prints_one_json_line_and_a_consistent_status(pipeline_folder, capsys, captured_cases):
    status, result = run_demo(pipeline_folder, capsys)
    (case,) = captured_cases
    assert case.truth.shape == case.background.shape == (5, 5, 64, 64)
    assert result["background_rmse_K"] == round(float(rmse(case.background, case.truth)), 3)
    assert set(result) == KEYS
    assert result["pipeline"] == str(pipeline_folder)
    assert result["observations"] == 10  # stations + satellite at each of the 5 steps
    assert result["members"] == 2 and result["steps"] == 2
    assert result["finite"] is True
    for key in ("background_rmse_K", "analysis_rmse_K", "spread_K", "seconds"):
        assert isinstance(result[key], float | int) and math.isfinite(result[key])
        assert result[key] >= 0
    # a 24-h forecast from a 1.5 K perturbation: around 1.4 K
    assert 0.5 < result["background_rmse_K"] < 3.0
    assert status in (0, 1)
    assert status == (0 if result["analysis_rmse_K"] < result["background_rmse_K"] else 1)
    # seeded: the same command prints the same scores
    again_status, again = run_demo(pipeline_folder, capsys)
    assert again_status == status
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"
    }


@pytest.mark.parametrize("offset, expected_status", [(0.05, 0), (3.0, 1)])
def test_demo_status_follows_the_scores(
    pipeline_folder, capsys, captured_cases, monkeypatch, offset, expected_status
):
    """A stand-in pipeline returning the truth plus ``offset`` K (± 0.1 K member noise): the
    analysis beats the background (~1.4 K) by a wide margin, or loses by one."""

    def assimilate(self, background, observations, num_members, generator, **kwargs):
        (case,) = captured_cases
        assert torch.equal(background, case.background) and observations is case.observations
        assert kwargs["num_inference_steps"] == 2 and kwargs["output_type"] == "pt"
        assert kwargs["background_error_std"] == 0.6 and len(generator) == num_members == 2
        noise = torch.randn(num_members, *case.truth.shape, generator=generator[0])
        members = case.truth + offset + 0.1 * noise
        return AssimilationOutput(members, members.mean(0), members.std(0), members)

    monkeypatch.setattr(SLAMSPipeline, "__call__", assimilate)
    status, result = run_demo(pipeline_folder, capsys)
    assert status == expected_status
    assert result["analysis_rmse_K"] == pytest.approx(math.hypot(offset, 0.1 / 2**0.5), abs=2e-3)
    assert result["spread_K"] == pytest.approx(0.1, rel=0.05)
    assert (result["analysis_rmse_K"] < result["background_rmse_K"]) == (status == 0)
