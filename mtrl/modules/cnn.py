"""Convolutional torsos for pixel observations."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

TORSOS = ("auto", "nature-cnn", "none")


class NatureCNN(nn.Module):
    """The DQN torso of Mnih et al. 2015 ("Human-level control through deep reinforcement
    learning", Nature 518, Methods: "Model architecture"): on a ``[C, 84, 84]`` stack of frames,
    32 8×8 filters stride 4, 64 4×4 stride 2, 64 3×3 stride 1, each followed by a ReLU, then a
    fully connected layer of ``out_dim`` (512) ReLU units. The same torso is the A2C/A3C
    feed-forward network of Mnih et al. 2016 and of stable-baselines3's ``CnnPolicy``.

    Input: ``uint8`` frames (scaled by 1/255 here, so storage and host→device copies stay 1 byte
    per pixel) or floats already in [0, 1]. Output ``[B, out_dim]`` (post-ReLU features).
    """

    def __init__(self, in_shape: tuple[int, ...], out_dim: int = 512) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"NatureCNN needs [C, H, W] observations, got shape {in_shape}")
        c, h, w = in_shape
        self.in_shape = tuple(in_shape)
        self.out_dim = out_dim
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.convs(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n, out_dim), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        return self.fc(self.convs(x))


def make_torso(obs_shape: Sequence[int], torso: str = "auto") -> tuple[nn.Module, int]:
    """The feature extractor of a policy/value network and its output size: a
    :class:`NatureCNN` with orthogonal weights (gain √2, zero biases, as OpenAI baselines and
    stable-baselines3 initialize A2C's CNN; Saxe et al. 2014) for ``[C, H, W]`` observations
    (``auto``) or when asked (``nature-cnn``); otherwise ``nn.Flatten`` (``none``)."""
    if torso not in TORSOS:
        raise ValueError(f"unknown torso {torso!r}; allowed: {', '.join(TORSOS)}")
    shape = tuple(int(d) for d in obs_shape)
    if torso == "nature-cnn" or (torso == "auto" and len(shape) == 3):
        cnn = NatureCNN(shape)
        orthogonal_init(cnn, gain=math.sqrt(2.0))
        return cnn, cnn.out_dim
    return nn.Flatten(), int(math.prod(shape))


def torso_input(torso: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """``obs`` as ``torso`` takes it: uint8 frames stay uint8 for a :class:`NatureCNN` (it
    scales them), everything else becomes float32."""
    return obs if isinstance(torso, NatureCNN) and obs.dtype == torch.uint8 else obs.float()


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal weights and zero biases for conv/linear layers (Saxe et al. 2014)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.orthogonal_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
