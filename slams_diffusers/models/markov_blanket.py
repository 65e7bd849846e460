"""Markov-blanket composition: a window score model over trajectories of any length."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .score_net import ScoreNetOutput

__all__ = ["MarkovBlanketScore"]


class MarkovBlanketScore(nn.Module):
    """ε over a trajectory ``(B, T, c, *space)``, ``T >= window``, from a model of windows of
    ``window = 2k + 1`` consecutive states (SDA, Rozet & Louppe 2023, §3.2; docs/method.md
    §Markov blanket).

    The trajectory is cut into its ``T - 2k`` windows; state ``i`` takes the ε of the window
    centred on it, the first and last ``k`` states that of the first and last window. With
    ``T == window`` this is the window model itself.

    Args:
        model: ``model(sample (B', window, c, *space), timestep (B',)).sample`` is ε; its
            ``config.window`` is odd.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def window(self) -> int:
        return int(self.model.config.window)

    def forward(self, sample: Tensor, timestep: Tensor | float) -> ScoreNetOutput:
        batch, length = sample.shape[:2]
        window = self.window
        if length < window:
            raise ValueError(
                f"`sample` has {length} time steps; the Markov-blanket window needs >= {window}"
            )
        k = window // 2
        windows = sample.unfold(1, window, 1)  # (B, n, c, *space, window)
        count = windows.shape[1]
        windows = windows.movedim(-1, 2).reshape(batch * count, window, *sample.shape[2:])
        t = torch.as_tensor(timestep, dtype=sample.dtype, device=sample.device)
        t = t.reshape(-1, 1).expand(batch, count).reshape(-1) if t.ndim else t.expand(batch * count)
        eps = self.model(windows, t).sample.reshape(batch, count, window, *sample.shape[2:])
        eps = torch.cat((eps[:, 0, :k], eps[:, :, k], eps[:, -1, k + 1 :]), dim=1)
        return ScoreNetOutput(sample=eps)
