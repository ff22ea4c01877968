"""Building blocks shared by the three networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChunkedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken per chunk of the batch.

    The trainer runs the discriminator once over ``cat([real, recon, prior])`` and the decoder
    once over ``cat([z, z_prior])`` for speed. Normalising each chunk on its own keeps that
    identical to separate passes (and keeps real and fake statistics apart, as GAN practice
    asks); running statistics are updated once per chunk, as separate passes would.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:  # type: ignore[override]
        if chunks == 1 or not self.training:
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(chunks)
        return torch.cat(
            [
                F.batch_norm(c, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum, self.eps)
                for c in x.chunk(chunks)
            ]
        )


class Norm(nn.Module):
    """A norm chosen by name: batch (chunk-aware), group, or none."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind == "batch":
            self.norm = ChunkedBatchNorm(channels)
        elif kind == "group":
            self.norm = nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels)
        elif kind == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {kind!r}; choose batch, group or none")
        self.kind = kind

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x, chunks)
        if self.kind == "group" and x.dim() == 2:
            return self.norm(x[:, :, None, None])[:, :, 0, 0]
        return self.norm(x)


def channels(base: int, width: float) -> int:
    """Scale a layer's channel count by the width multiplier (at least 8)."""
    return max(8, int(round(base * width)))


def levels(resolution: int) -> int:
    """Number of stride-2 stages between ``resolution`` and the 8x8 bottleneck."""
    n = {32: 2, 64: 3, 128: 4}.get(resolution)
    if n is None:
        raise ValueError(f"resolution {resolution} not supported; choose 32, 64 or 128")
    return n
