"""Larsen et al. 2016 decoder (the GAN's generator): FC to 8x8x256, 5x5 transposed convs, tanh.

``upsample="resize"`` replaces each stride-2 transposed convolution by a nearest-neighbour 2x
resize and a 3x3 convolution (Odena et al. 2016, "Deconvolution and checkerboard artifacts"):
every output pixel then sums the same number of kernel taps, so the decoder cannot paint the
period-2 checkerboard that a discriminator's gradient pushes a transposed convolution towards.
"""
from __future__ import annotations

import torch
from torch import nn

from vaegan.models.layers import Norm, channels, levels

# Transposed-conv widths per number of stride-2 stages; 3 stages (64 px) is the paper's 256/128/32.
DECODER_CHANNELS = {2: (256, 64), 3: (256, 128, 32), 4: (256, 128, 64, 32)}


def _upsampler(kind: str, in_ch: int, out_ch: int, bias: bool) -> nn.Module:
    """A 2x upsampling layer: Larsen's 5x5 stride-2 transposed conv, or resize then 3x3 conv."""
    if kind == "deconv":
        return nn.ConvTranspose2d(in_ch, out_ch, 5, stride=2, padding=2, output_padding=1, bias=bias)
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias))
    raise ValueError(f"unknown upsample {kind!r}; choose deconv or resize")


class Decoder(nn.Module):
    """z: (B, latent_dim) -> images (B, 3, R, R) in [-1, 1]."""

    def __init__(self, resolution: int = 64, latent_dim: int = 128, width: float = 1.0, norm: str = "batch",
                 upsample: str = "deconv"):
        super().__init__()
        widths = [channels(c, width) for c in DECODER_CHANNELS[levels(resolution)]]
        self.base = channels(256, width)
        self.fc = nn.Linear(latent_dim, self.base * 8 * 8, bias=norm == "none")
        self.fc_norm = Norm(norm, self.base, prior_statistics=True)
        self.deconvs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = self.base
        for out_ch in widths:
            self.deconvs.append(_upsampler(upsample, in_ch, out_ch, bias=norm == "none"))
            self.norms.append(Norm(norm, out_ch, prior_statistics=True))
            in_ch = out_ch
        self.to_rgb = nn.Conv2d(in_ch, 3, 5, padding=2)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive adversarial weight measures gradient norms at."""
        return self.to_rgb.weight

    def forward(self, z: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        """``from_prior``: z are N(0, I) draws, not codes of images; batch norm then uses (eval) or
        trains (train mode) its statistics of such draws (:class:`vaegan.models.layers.BatchNorm`)."""
        h = self.fc(z).view(z.shape[0], self.base, 8, 8)
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        h = torch.relu(self.fc_norm(h, from_prior))
        for deconv, norm in zip(self.deconvs, self.norms):
            h = torch.relu(norm(deconv(h), from_prior))
        return torch.tanh(self.to_rgb(h))
