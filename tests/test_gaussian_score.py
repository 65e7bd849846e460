"""GaussianScoreModel: the exact ε of a Gaussian prior."""

import pytest
import torch

from slams_diffusers import GaussianScoreModel, VPPredictorCorrectorScheduler
from slams_diffusers.testing import squared_exponential_covariance


@pytest.fixture
def model() -> GaussianScoreModel:
    mean = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    return GaussianScoreModel.from_moments(mean, squared_exponential_covariance((4, 4), 1.5))


def test_epsilon_is_the_exact_gaussian_noise_prediction(model):
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    alpha, sigma = VPPredictorCorrectorScheduler().alpha_sigma(t)
    sample = torch.randn(
        2, 1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    covariance = squared_exponential_covariance((4, 4), 1.5)
    for i in range(2):
        marginal = alpha[i] ** 2 * covariance + sigma[i] ** 2 * torch.eye(16, dtype=torch.float64)
        centred = sample[i].reshape(-1) - alpha[i] * model.mean
        expected = sigma[i] * torch.linalg.solve(marginal, centred)
        torch.testing.assert_close(model(sample, t).sample[i].reshape(-1), expected)


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = GaussianScoreModel.from_pretrained(tmp_path, torch_dtype=torch.float64)
    sample = torch.randn(3, 1, 1, 4, 4, dtype=torch.float64)
    assert loaded.mean.dtype == torch.float64
    assert torch.equal(model(sample, 0.5).sample, loaded(sample, 0.5).sample)


def test_moment_shapes_are_checked():
    with pytest.raises(ValueError, match="covariance"):
        GaussianScoreModel.from_moments(torch.zeros(1, 1, 4, 4), torch.eye(15))
    with pytest.raises(ValueError, match="mean"):
        GaussianScoreModel.from_moments(torch.zeros(2, 1, 4, 4), torch.eye(32))
