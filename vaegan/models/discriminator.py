"""Larsen et al. 2016 discriminator, returning both its logit and the Dis_l feature layer."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from vaegan.models.layers import Norm, channels, levels

# Stride-2 conv widths after the first 32-channel conv; 3 stages (64 px) is the paper's 128/256/256.
DISCRIMINATOR_CHANNELS = {2: (128, 256), 3: (128, 256, 256), 4: (64, 128, 256, 256)}


class Discriminator(nn.Module):
    """x: (B, 3, R, R) in [-1, 1] -> (logits (B,), features: one tensor per stride-2 conv).

    features[i] is the (i+1)-th stride-2 conv's output before its norm, finest first; the last,
    (B, C, 8, 8), is Dis_l (the 4th conv at 64 px), the layer whose distance replaces pixel
    error as the reconstruction loss. ``loss.feature_layers`` > 1 adds the finer ones.
    ``spectral_norm``: every conv and linear layer's weight divided by its largest singular
    value (Miyato et al. 2018), which bounds how fast the discriminator can sharpen its logits.
    """

    def __init__(self, resolution: int = 64, width: float = 1.0, fc: int = 512, norm: str = "batch",
                 spectral_norm: bool = False):
        super().__init__()
        first = channels(32, width)
        self.conv_in = nn.Conv2d(3, first, 5, padding=2)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = first
        for out_ch in (channels(c, width) for c in DISCRIMINATOR_CHANNELS[levels(resolution)]):
            self.convs.append(nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=2, bias=norm == "none"))
            self.norms.append(Norm(norm, out_ch))
            in_ch = out_ch
        self.fc = nn.Linear(in_ch * 8 * 8, fc, bias=norm == "none")
        self.fc_norm = Norm(norm, fc)
        self.to_logit = nn.Linear(fc, 1)
        if spectral_norm:
            for module in [self.conv_in, *self.convs, self.fc, self.to_logit]:
                _spectral_norm(module)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h = torch.relu(self.conv_in(x))
        features = []
        for conv, norm in zip(self.convs, self.norms):
            features.append(conv(h))
            h = torch.relu(norm(features[-1]))
        h = torch.relu(self.fc_norm(self.fc(h.flatten(1))))
        return self.to_logit(h).squeeze(1), tuple(features)
