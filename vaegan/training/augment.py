"""Differentiable augmentation of what the discriminator reads (Zhao et al. 2020, DiffAugment).

With few training images a discriminator memorises them and its gradients stop telling the
decoder anything; showing it randomly translated, cut-out and colour-jittered images, real and
fake alike, keeps it honest. The transforms are differentiable in the image, so the decoder
learns through them. One draw of parameters per image index is applied to every source (the
real image, its reconstruction, the prior sample at that index), so Dis_l still compares a real
image and its reconstruction under the same transform.

Images are (B, 3, H, W) in [-1, 1]; parameters come from uniform [0, 1) numbers the caller
draws (the trainer draws them from its noise shared by all processes).
"""
from __future__ import annotations

from typing import Callable

import torch

from vaegan.config import DIS_AUGMENT_KINDS as KINDS

TRANSLATION = 1 / 8  # largest shift, as a fraction of the side (DiffAugment's default)
CUTOUT = 1 / 2  # cut-out square side, as a fraction of the side


def parse(spec: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'), in application order."""
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {list(KINDS)}")
    return kinds


def draw(kinds: tuple[str, ...], batch: int, uniform: Callable[[tuple[int, ...]], torch.Tensor]) -> dict:
    """Per-image parameters: uniform(shape) returns numbers in [0, 1) of that shape."""
    params = {}
    if "color" in kinds:
        params["color"] = uniform((batch, 3))
    if "translation" in kinds:
        params["translation"] = uniform((batch, 2))
    if "cutout" in kinds:
        params["cutout"] = uniform((batch, 2))
    return params


def apply(x: torch.Tensor, params: dict) -> torch.Tensor:
    """x: (B, 3, H, W) in [-1, 1] -> augmented, same shape; the identity for empty params."""
    if "color" in params:
        x = _color(x, params["color"].to(x))
    if "translation" in params:
        x = _translate(x, params["translation"])
    if "cutout" in params:
        x = _cutout(x, params["cutout"])
    return x


def _color(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Brightness shift in [-0.5, 0.5), saturation x[0, 2), contrast x[0.5, 1.5)."""
    view = lambda t: t.view(-1, 1, 1, 1)
    x = x + view(u[:, 0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * view(u[:, 1] * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * view(u[:, 2] + 0.5) + mean


def _translate(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Shift by whole pixels in [-s, s] (s = side / 8) each way, zero-filled."""
    b, _, h, w = x.shape
    s = int(h * TRANSLATION + 0.5)
    shift = (u.to(x.device) * (2 * s + 1)).long() - s  # (B, 2): dy, dx
    rows = (torch.arange(h, device=x.device).view(1, h) + shift[:, :1] + s).view(b, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + shift[:, 1:] + s).view(b, 1, w)
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=_format(x))


def _cutout(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Zero (grey) a square of half the side, centred anywhere in the image."""
    b, _, h, w = x.shape
    size = int(h * CUTOUT + 0.5)
    centre = (u.to(x.device) * torch.tensor([h, w], device=x.device)).long()  # (B, 2)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = (centre - size // 2).split(1, dim=1)
    inside = (ys >= top.view(b, 1, 1)) & (ys < top.view(b, 1, 1) + size) & \
             (xs >= left.view(b, 1, 1)) & (xs < left.view(b, 1, 1) + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
