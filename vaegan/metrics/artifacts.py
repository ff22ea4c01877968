"""Metrics that noise and periodic artefacts cannot fool.

- ``grid_peak_ratio``: stride-2 upsampling leaves spikes in an image's spectrum at the
  frequencies of its pixel grid (period 2, 4 and 8 pixels: 1/2, 1/4 and 1/8 cycles/pixel along
  each axis, and their combinations). Per image: luma, mean removed, Hann window, power
  spectrum; at each of those bins its power over the mean power on a ring two bins away (the
  window spreads a pure tone over the adjacent bins), averaged over the bins. Natural images have smooth spectra (a
  ratio of a few); a checkerboard makes it large. Reported generated / reference, so 1 is real.
  Broadband speckle raises the high-frequency fraction (``sharpness``) but not this ratio; the
  two together separate detail from noise and from checkerboards.
- ``pixel_fd``: the Frechet distance between Gaussian fits of the images shrunk to 8x8 pixels
  (192 numbers): colour, layout and their correlations, with no network involved.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vaegan.metrics.frechet import fid_from_features

LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def _spectra(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> windowed luma power spectra (N, H, W), float64."""
    h, w = images.shape[-2:]
    gray = torch.einsum("bchw,c->bhw", images.double() / 255, LUMA)
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                         torch.hann_window(w, periodic=False, dtype=torch.float64))
    mean = (gray * window).sum(dim=(1, 2), keepdim=True) / window.sum()
    return torch.fft.fft2((gray - mean) * window).abs().square()


def _grid_bins(size: int) -> list[int]:
    """Indices of the frequencies 0, +-1/8, +-1/4, +-3/8, 1/2 cycles/pixel on an FFT of ``size``."""
    return sorted({(k * size // 8) % size for k in range(-4, 5)})


def grid_peak_per_image(images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per image: the mean over the grid frequencies (all but DC) of each one's power over the mean
    power on the ring 2 bins away from it."""
    out = []
    for batch in images.split(batch_size):
        power = _spectra(batch)
        h, w = power.shape[-2:]
        ratios = []
        for fy in _grid_bins(h):
            for fx in _grid_bins(w):
                if fy == 0 and fx == 0:
                    continue
                ring = [((fy + dy) % h, (fx + dx) % w) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if dy or dx]
                ring_power = torch.stack([power[:, y, x] for y, x in ring]).mean(0)
                ratios.append(power[:, fy, fx] / ring_power.clamp_min(1e-20))
        out.append(torch.stack(ratios).mean(0))
    return torch.cat(out)


def grid_peak_ratio(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean grid-peak statistic of each uint8 set and generated / reference (1: as real)."""
    gen = grid_peak_per_image(generated).mean().item()
    ref = grid_peak_per_image(reference).mean().item()
    return {"grid_peak_generated": gen, "grid_peak_reference": ref, "grid_peak_ratio": gen / max(ref, 1e-20)}


def pixel_fd(generated: torch.Tensor, reference: torch.Tensor, size: int = 8) -> float:
    """Frechet distance of Gaussian fits to the images area-downsampled to size x size (in [0, 1])."""
    def stats(images):
        x = F.adaptive_avg_pool2d(images.double() / 255, size).flatten(1)
        return x.mean(0), torch.cov(x.T)
    return fid_from_features(*stats(generated), *stats(reference))
