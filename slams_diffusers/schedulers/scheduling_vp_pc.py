"""Variance-preserving predictor-corrector scheduler (continuous time).

Notation (docs/method.md §Noise schedule): ``z_t = alpha_t z + sigma_t ε`` for ``t ∈ [0, 1]``;
Tweedie denoiser ``ẑ = (z_t − sigma_t ε) / alpha_t``; score ``s = −ε / sigma_t``.

- Predictor (:meth:`VPPredictorCorrectorScheduler.step`): exponential integrator
  (DDIM, η = 0) from ``t`` to the next grid time ``s < t``, with ``r = alpha_s / alpha_t``:
  ``z_s = r z_t + (sigma_s − r sigma_t) ε``.
- Corrector (:meth:`VPPredictorCorrectorScheduler.step_correct`): one Langevin step at
  ``t`` with a per-sample step size ``δ_b = τ / mean(s_b²)``:
  ``z ← z + δ s + √(2δ) ξ``, ``ξ ~ N(0, I)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .denoising import tweedie_denoise

__all__ = ["VPPredictorCorrectorScheduler", "VPPredictorCorrectorSchedulerOutput"]

_SCHEDULES = ("cosine", "linear")


@dataclass
class VPPredictorCorrectorSchedulerOutput(BaseOutput):
    """Output of :meth:`VPPredictorCorrectorScheduler.step` and ``step_correct``.

    Args:
        prev_sample: the updated sample (``z_s`` for the predictor, the corrected ``z_t``
            for the corrector), same shape and dtype as the input sample.
        pred_original_sample: the Tweedie denoised estimate
            ``ẑ = (z_t − sigma_t ε) / alpha_t`` at the input time ``t``.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class VPPredictorCorrectorScheduler(SchedulerMixin, ConfigMixin):
    """Continuous-time VP scheduler with an exponential-integrator predictor and a
    per-sample Langevin corrector, for ε-prediction models.

    Schedules (``η`` = ``eta``, keeps ``sigma_0 = η > 0``):

    - ``"cosine"``: ``alpha_t = cos(arccos(√η) t)²``, ``sigma_t = √(1 − alpha_t² + η²)``;
      so ``alpha_0 = 1``, ``sigma_0 = η``, ``alpha_1 = η``, ``sigma_1 = 1``.
    - ``"linear"`` (linear-β VP): ``alpha_t = exp(−¼ t² (β_max − β_min) − ½ t β_min)``,
      ``sigma_t = √(1 − alpha_t² + η²)``.

    Sampling runs on the grid ``linspace(1, sampling_eps, n + 1)``; ``timesteps`` holds its
    first ``n`` points, and each ``step`` moves a sample to the next grid point.

    Args:
        schedule: ``"cosine"`` or ``"linear"``.
        eta: noise floor ``η`` in ``(0, 1)``.
        beta_min: ``β_min ≥ 0`` of the linear schedule.
        beta_max: ``β_max > β_min`` of the linear schedule.
        corrector_steps: default number of Langevin corrections per predictor step
            (read by pipelines; the scheduler itself does one per ``step_correct`` call).
        tau: default Langevin step-size factor ``τ > 0``.
        sampling_eps: last time of the sampling grid, in ``[0, 1)``.
    """

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        schedule: str = "cosine",
        eta: float = 1e-3,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        corrector_steps: int = 1,
        tau: float = 0.5,
        sampling_eps: float = 1e-3,
    ) -> None:
        if schedule not in _SCHEDULES:
            raise ValueError(f"`schedule` must be one of {_SCHEDULES}, got {schedule!r}.")
        if not (isinstance(eta, (int, float)) and 0.0 < eta < 1.0):
            raise ValueError(f"`eta` must be a float in (0, 1), got {eta!r}.")
        if not (isinstance(tau, (int, float)) and tau > 0.0 and math.isfinite(tau)):
            raise ValueError(f"`tau` must be a finite float > 0, got {tau!r}.")
        if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int):
            raise ValueError(f"`corrector_steps` must be an int >= 0, got {corrector_steps!r}.")
        if corrector_steps < 0:
            raise ValueError(f"`corrector_steps` must be an int >= 0, got {corrector_steps!r}.")
        if not (isinstance(sampling_eps, (int, float)) and 0.0 <= sampling_eps < 1.0):
            raise ValueError(f"`sampling_eps` must be a float in [0, 1), got {sampling_eps!r}.")
        if not (isinstance(beta_min, (int, float)) and beta_min >= 0.0):
            raise ValueError(f"`beta_min` must be a float >= 0, got {beta_min!r}.")
        if not (isinstance(beta_max, (int, float)) and beta_max > beta_min):
            raise ValueError(
                f"`beta_max` must be a float > beta_min ({beta_min!r}), got {beta_max!r}."
            )

        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self._grid: torch.Tensor | None = None  # float64, CPU, length n + 1

    # ------------------------------------------------------------------ schedule

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(alpha_t, sigma_t)`` elementwise.

        A tensor ``t`` keeps its dtype and device (integer tensors become the default float
        dtype); a python number gives 0-d float64 tensors.
        """
        if isinstance(t, torch.Tensor):
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
        else:
            t = torch.tensor(float(t), dtype=torch.float64)
        eta = float(self.config.eta)
        if self.config.schedule == "cosine":
            alpha = torch.cos(math.acos(math.sqrt(eta)) * t) ** 2
        else:
            b0, b1 = float(self.config.beta_min), float(self.config.beta_max)
            alpha = torch.exp(-0.25 * t**2 * (b1 - b0) - 0.5 * t * b0)
        sigma = torch.sqrt(1.0 - alpha**2 + eta**2)
        return alpha, sigma

    def _alpha_sigma_float(self, t: float) -> tuple[float, float]:
        alpha, sigma = self.alpha_sigma(float(t))
        return alpha.item(), sigma.item()

    # ------------------------------------------------------------------ grid

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None
    ) -> None:
        """Build the grid ``linspace(1, sampling_eps, n + 1)``; ``timesteps`` = its first ``n``
        points (float32, on ``device``)."""
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or num_inference_steps < 1
        ):
            raise ValueError(
                f"`num_inference_steps` must be an int >= 1, got {num_inference_steps!r}."
            )
        n = num_inference_steps
        self._grid = torch.linspace(
            1.0, float(self.config.sampling_eps), n + 1, dtype=torch.float64
        )
        self.timesteps = self._grid[:-1].to(device=device, dtype=torch.float32)
        self.num_inference_steps = n

    @staticmethod
    def _timestep_value(timestep: float | torch.Tensor) -> float:
        """A python float from a float, a 0-d tensor or a ``(B,)`` tensor of equal entries."""
        if isinstance(timestep, bool):
            raise ValueError(f"`timestep` must be a float or a tensor, got {timestep!r}.")
        if isinstance(timestep, (int, float)):
            return float(timestep)
        if isinstance(timestep, torch.Tensor):
            if timestep.ndim == 0:
                return float(timestep.item())
            if timestep.ndim == 1 and timestep.numel() > 0:
                if not bool((timestep == timestep[0]).all()):
                    raise ValueError(
                        "`timestep` given as a (B,) tensor must have equal entries, got "
                        f"{timestep.tolist()}."
                    )
                return float(timestep[0].item())
            raise ValueError(
                "`timestep` must be a float, a 0-d tensor or a non-empty (B,) tensor, got a "
                f"tensor of shape {tuple(timestep.shape)}."
            )
        raise ValueError(f"`timestep` must be a float or a tensor, got {type(timestep).__name__}.")

    def index_for_timestep(self, timestep: float | torch.Tensor) -> int:
        """Index ``i`` of ``timestep`` in ``timesteps`` (nearest grid point, so float32 and
        float64 values both match). Raises ``ValueError`` if it is not a grid time."""
        if self._grid is None:
            raise ValueError("`num_inference_steps` is None: call `set_timesteps` before stepping.")
        t = self._timestep_value(timestep)
        n = self.num_inference_steps
        idx = int(torch.argmin((self._grid[:-1] - t).abs()).item())
        spacing = (1.0 - float(self.config.sampling_eps)) / n
        nearest = float(self._grid[idx])
        if abs(nearest - t) > min(1e-5, 0.25 * spacing):
            raise ValueError(
                f"`timestep` {t!r} is not on the sampling grid (nearest {nearest!r}); "
                "expected one of `scheduler.timesteps`."
            )
        return idx

    def next_timestep(self, timestep: float | torch.Tensor) -> float:
        """The grid time ``s < t`` that :meth:`step` moves ``timestep`` to (float64 value)."""
        return float(self._grid[self.index_for_timestep(timestep) + 1])

    # ------------------------------------------------------------------ steps

    def scale_model_input(
        self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Identity (the model sees ``z_t`` unscaled)."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> VPPredictorCorrectorSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Predictor: exponential-integrator (DDIM, η = 0) step from ``t`` to the next grid
        time ``s``: ``z_s = r z_t + (sigma_s − r sigma_t) ε`` with ``r = alpha_s / alpha_t``;
        also returns ``ẑ = (z_t − sigma_t ε) / alpha_t``. Deterministic (``generator`` unused).

        Args:
            model_output: ``ε`` (possibly guided) at ``(sample, timestep)``.
            timestep: a value of ``timesteps`` (float, 0-d or ``(B,)`` tensor of equal entries).
            sample: ``z_t``, any shape.
            return_dict: return a :class:`VPPredictorCorrectorSchedulerOutput` or a tuple.
        """
        idx = self.index_for_timestep(timestep)
        t, s = float(self._grid[idx]), float(self._grid[idx + 1])
        alpha_t, sigma_t = self._alpha_sigma_float(t)
        alpha_s, sigma_s = self._alpha_sigma_float(s)
        eps = model_output.to(sample.dtype)
        r = alpha_s / alpha_t
        prev_sample = r * sample + (sigma_s - r * sigma_t) * eps
        pred_original_sample = tweedie_denoise(sample, eps, alpha_t, sigma_t)
        output = VPPredictorCorrectorSchedulerOutput(prev_sample, pred_original_sample)
        return output if return_dict else output.to_tuple()

    def step_correct(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        tau: float | None = None,
        return_dict: bool = True,
    ) -> VPPredictorCorrectorSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Corrector: one Langevin step at time ``t`` (any ``t``, not only grid times).

        With ``s = −ε / sigma_t`` and, per batch element ``b`` (dim 0, no coupling across the
        batch), ``δ_b = τ / mean(s_b²)`` over all other dims:
        ``z ← z + δ s + √(2δ) ξ``, ``ξ ~ N(0, I)`` drawn with ``randn_tensor`` (a list of
        generators, one per batch element, gives batch-size-independent noise).

        Args:
            model_output: ``ε`` (possibly guided) at ``(sample, timestep)``.
            timestep: ``t`` (float, 0-d or ``(B,)`` tensor of equal entries).
            sample: ``z_t`` with the batch on dim 0 (``ndim >= 1``).
            generator: a generator or a list of ``B`` generators.
            tau: step-size factor ``τ``; defaults to ``config.tau``.
            return_dict: return a :class:`VPPredictorCorrectorSchedulerOutput` or a tuple.
        """
        if sample.ndim < 1:
            raise ValueError("`sample` must have a batch dimension (ndim >= 1), got a 0-d tensor.")
        tau = float(self.config.tau) if tau is None else float(tau)
        if not (tau > 0.0 and math.isfinite(tau)):
            raise ValueError(f"`tau` must be a finite float > 0, got {tau!r}.")
        batch = sample.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(
                f"`generator` list must have one generator per batch element ({batch}), "
                f"got {len(generator)}."
            )
        t = self._timestep_value(timestep)
        alpha_t, sigma_t = self._alpha_sigma_float(t)
        eps = model_output.to(sample.dtype)
        score = -eps / sigma_t
        if sample.ndim == 1:
            mean_sq = score**2
        else:
            mean_sq = (score**2).mean(dim=tuple(range(1, sample.ndim)), keepdim=True)
        mean_sq = mean_sq.clamp_min(torch.finfo(sample.dtype).eps)
        delta = tau / mean_sq
        noise = randn_tensor(
            tuple(sample.shape), generator=generator, device=sample.device, dtype=sample.dtype
        )
        prev_sample = sample + delta * score + torch.sqrt(2.0 * delta) * noise
        pred_original_sample = tweedie_denoise(sample, eps, alpha_t, sigma_t)
        output = VPPredictorCorrectorSchedulerOutput(prev_sample, pred_original_sample)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ training

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: float | torch.Tensor,
    ) -> torch.Tensor:
        """``z_t = alpha_t z + sigma_t ε`` for samples of any rank; ``timesteps`` is a scalar
        (float or 0-d tensor) or a ``(B,)`` tensor broadcast over the trailing dims."""
        x = original_samples
        if isinstance(timesteps, torch.Tensor):
            t = timesteps
        elif isinstance(timesteps, (int, float)) and not isinstance(timesteps, bool):
            t = torch.tensor(float(timesteps), dtype=torch.float64)
        else:
            raise ValueError(
                f"`timesteps` must be a float or a tensor, got {type(timesteps).__name__}."
            )
        if t.ndim > 1 or (t.ndim == 1 and (x.ndim < 1 or t.shape[0] not in (1, x.shape[0]))):
            raise ValueError(
                "`timesteps` must be a scalar or a (B,) tensor with B = original_samples.shape[0]"
                f" = {x.shape[0] if x.ndim else None}, got shape {tuple(t.shape)}."
            )
        if noise.shape != x.shape:
            raise ValueError(
                f"`noise` must have the shape of `original_samples` {tuple(x.shape)}, "
                f"got {tuple(noise.shape)}."
            )
        alpha, sigma = self.alpha_sigma(t)
        if t.ndim == 1:
            view = (-1,) + (1,) * (x.ndim - 1)
            alpha, sigma = alpha.reshape(view), sigma.reshape(view)
        alpha = alpha.to(device=x.device, dtype=x.dtype)
        sigma = sigma.to(device=x.device, dtype=x.dtype)
        return alpha * x + sigma * noise.to(x.dtype)
