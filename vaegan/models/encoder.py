"""Larsen et al. 2016 encoder: 5x5 stride-2 convs + BN + ReLU, FC, then mean and log-variance."""
from __future__ import annotations

import torch
from torch import nn

from vaegan.models.distributions import DiagonalGaussian
from vaegan.models.layers import Norm, channels, levels

# Conv widths per number of stride-2 stages; 3 stages (64 px) is the paper's 64/128/256.
ENCODER_CHANNELS = {2: (128, 256), 3: (64, 128, 256), 4: (32, 64, 128, 256)}


class Encoder(nn.Module):
    """x: (B, 3, R, R) in [-1, 1] -> DiagonalGaussian over (B, latent_dim)."""

    def __init__(self, resolution: int = 64, latent_dim: int = 128, width: float = 1.0, fc: int = 1024,
                 norm: str = "batch", logvar_min: float = -30.0, logvar_max: float = 20.0):
        super().__init__()
        widths = [channels(c, width) for c in ENCODER_CHANNELS[levels(resolution)]]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = 3
        for out_ch in widths:
            self.convs.append(nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=2, bias=norm == "none"))
            self.norms.append(Norm(norm, out_ch))
            in_ch = out_ch
        self.fc = nn.Linear(in_ch * 8 * 8, fc, bias=norm == "none")
        self.fc_norm = Norm(norm, fc)
        self.to_stats = nn.Linear(fc, 2 * latent_dim)
        self.logvar_range = (logvar_min, logvar_max)

    def forward(self, x: torch.Tensor) -> DiagonalGaussian:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = torch.relu(norm(conv(h)))
        h = torch.relu(self.fc_norm(self.fc(h.flatten(1))))
        mean, logvar = self.to_stats(h).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar, *self.logvar_range)
